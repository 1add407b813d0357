"""Drift monitoring: a scored day against the hold-out of the model that scored it. Normal days
do not drift, a heat wave does, and the sensor asks for one retraining once enough recent days
drifted, never while one is still in flight."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.retraining import REASON_TAG, TRIGGER_TAG, retrain_job_name
from mlops_assets.defs.monitoring.statistics import drift_report, ks, monitored_columns, psi
from mlops_assets.resources.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.simulate import simulate

START = dt.date(2026, 4, 6)
NORMAL = [START + dt.timedelta(days=offset) for offset in range(8)]
HEATWAVE = [NORMAL[-1] + dt.timedelta(days=offset) for offset in range(1, 4)]


def test_psi_and_ks_are_zero_for_the_same_sample_and_grow_with_a_shift() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, reference, 10) < 1e-9 and ks(reference, reference) == 0.0
    small, large = rng.normal(0.1, 1, 5000), rng.normal(1.5, 1, 5000)
    assert psi(reference, small, 10) < 0.1 < psi(reference, large, 10)
    assert ks(reference, small) < ks(reference, large)


def _write_heatwave(resources, spec, template: pd.DataFrame, day: dt.date) -> None:
    """A heat wave: the same meters on ``day``, 25 degrees warmer and using three times the power."""
    rows = template[[spec.entity_column, spec.timestamp_column, spec.target_column, "temperature"]].copy()
    rows[spec.timestamp_column] = rows[spec.timestamp_column] + pd.Timedelta(days=(day - NORMAL[-1]).days)
    rows[spec.target_column] = rows[spec.target_column] * 3
    rows["temperature"] = rows["temperature"] + 25
    rows[spec.timestamp_column] = rows[spec.timestamp_column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = f"{spec.landing.prefix}/{day:%Y/%m/%d}/heatwave.csv"
    resources["landing"].write_bytes(path, rows.to_csv(index=False).encode())


def _report(instance, keys, day: dt.date) -> dict:
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=keys.drift, asset_partitions=[day.isoformat()]), limit=1
    ).records
    return {name: value.value for name, value in record.asset_materialization.metadata.items()}


def test_normal_days_do_not_drift_a_heat_wave_does_and_retraining_waits_for_three(
    tmp_path, spec, instance, mlflow_tracking
) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=len(NORMAL), meters=12, meters_per_file=6, dirty_share=0)
    lake = resources["lake"]
    lifecycle = [keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.decision(keys.forecaster)]
    for day in NORMAL:
        materialize_day(defs, resources, instance, lifecycle, day)
    template = lake.read_days(lake.table_uri(*keys.table(keys.silver)), [NORMAL[-1]]).rows
    for day in NORMAL[-4:]:
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)
    for day in NORMAL[-4:]:
        report = _report(instance, keys, day)
        assert report["judged"] and not report["drifted"], (day, report["reason"])
        assert report["error_ratio"] < spec.monitoring.error_ratio

    sensor = defs.resolve_sensor_def(f"{spec.name}_drift_sensor")

    def tick(cursor: str | None) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor) as context:
            return sensor(context)

    cursor = None
    for index, day in enumerate(HEATWAVE):
        _write_heatwave(resources, spec, template, day)
        materialize_day(defs, resources, instance, lifecycle, day)
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)
        report = _report(instance, keys, day)
        assert report["drifted"], report
        assert "temperature" in report["drifted_columns"] and "times the model's hold-out error" in report["reason"]
        result = tick(cursor)
        cursor = result.cursor
        if index < spec.monitoring.retrain_after_drifted - 1:
            assert not result.run_requests, f"{index + 1} drifted day(s) are not yet a reason to retrain"
    (request,) = result.run_requests
    assert request.partition_key == HEATWAVE[-1].isoformat()
    assert request.tags[TRIGGER_TAG] == "drift"
    assert f"3 of the last 7 judged days drifted; latest: drift on {HEATWAVE[-1]}" in request.tags[REASON_TAG]
    assert sensor.job_name == retrain_job_name(spec)
    assert not tick(cursor).run_requests, "a drift result is acted on once"

    # Another drifted day while a retraining is still queued: no second request.
    instance.create_run_for_job(defs.resolve_job_def(retrain_job_name(spec)), status=dg.DagsterRunStatus.STARTED)
    later = HEATWAVE[-1] + dt.timedelta(days=1)
    _write_heatwave(resources, spec, template, later)
    materialize_day(defs, resources, instance, lifecycle, later)
    materialize_day(defs, resources, instance, [keys.predictions, keys.drift], later)
    held = tick(cursor)
    assert not held.run_requests and "still in flight" in held.skip_reason.skip_message


def test_moved_inputs_with_a_normal_error_are_not_drift_but_without_actuals_they_are(spec) -> None:
    """A warm month moves every input; if the model still forecasts as well as on its hold-out,
    that is no reason to retrain. Before the actuals are known, the inputs are all there is."""
    rng = np.random.default_rng(8)
    columns = monitored_columns(spec)

    def frame(level: float, rows: int = 200) -> pd.DataFrame:
        values = {column: rng.normal(level, 1.0, rows) for column in columns}
        return pd.DataFrame({**values, spec.target_column: values[columns[0]]})

    reference, warm = frame(0.0), frame(6.0)
    # The model forecasts the warm month as well as its hold-out: same error.
    predicted = warm[spec.target_column].to_numpy() + rng.normal(0, 0.3, len(warm))
    report = drift_report(spec, START, reference, warm, reference[spec.target_column], predicted, expected_mae=0.25)
    assert report.judged and not report.drifted
    assert set(columns) <= set(report.drifted_columns), "the inputs did move"
    worse = drift_report(spec, START, reference, warm, reference[spec.target_column], predicted + 3, expected_mae=0.25)
    assert worse.drifted and "times the model's hold-out error" in worse.reason()
    no_actuals = warm.assign(**{spec.target_column: np.nan})
    blind = drift_report(spec, START, reference, no_actuals, reference[spec.target_column], predicted)
    assert blind.drifted and f"{len(columns)} of {len(columns)} features moved" in blind.reason()
