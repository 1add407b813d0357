"""Drift monitoring: PSI and KS against the champion's training window, and the sensor that
requests retraining for a drifted day only."""

from __future__ import annotations

import datetime as dt

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.landing.simulate import simulate
from mlops_assets.ml.retraining import REASON_TAG, TRIGGER_TAG, retrain_job_name
from mlops_assets.monitoring.drift import ks, psi
from mlops_assets.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day

START = dt.date(2026, 4, 6)
NORMAL = [START + dt.timedelta(days=offset) for offset in range(8)]
DRIFTED = NORMAL[-1] + dt.timedelta(days=1)


def test_psi_and_ks_are_zero_for_the_same_sample_and_grow_with_a_shift() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(0, 1, 5000)
    assert psi(reference, reference, 10) < 1e-9 and ks(reference, reference) == 0.0
    small, large = rng.normal(0.1, 1, 5000), rng.normal(1.5, 1, 5000)
    assert psi(reference, small, 10) < 0.1 < psi(reference, large, 10)
    assert ks(reference, small) < ks(reference, large)


def _write_drifted_day(resources, spec, template: pd.DataFrame, day: dt.date) -> None:
    """A heat wave: the same meters a day later, 25 degrees warmer and using three times the power."""
    rows = template[[spec.entity_column, spec.timestamp_column, spec.target_column, "temperature"]].copy()
    rows[spec.timestamp_column] = rows[spec.timestamp_column] + pd.Timedelta(days=1)
    rows[spec.target_column] = rows[spec.target_column] * 3
    rows["temperature"] = rows["temperature"] + 25
    rows[spec.timestamp_column] = rows[spec.timestamp_column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    path = f"{spec.landing.prefix}/{day:%Y/%m/%d}/heatwave.csv"
    resources["landing"].write_bytes(path, rows.to_csv(index=False).encode())


def test_drift_sensor_requests_retraining_for_the_drifted_day_only(tmp_path, spec, instance, mlflow_tracking) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=len(NORMAL), meters=8, meters_per_file=4, dirty_share=0)
    for day in NORMAL:
        materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], day)
    materialize_day(defs, resources, instance, [keys.forecaster, keys.release(keys.forecaster)], NORMAL[-2])
    lake = resources["lake"]
    template = lake.read_days(lake.table_uri(*keys.table(keys.silver)), [NORMAL[-1]]).rows
    _write_drifted_day(resources, spec, template, DRIFTED)
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], DRIFTED)
    for day in (NORMAL[-1], DRIFTED):
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)

    reports = {
        record.asset_materialization.partition: record.asset_materialization.metadata
        for record in instance.fetch_materializations(keys.drift, limit=10).records
    }
    assert reports[NORMAL[-1].isoformat()]["drifted"].value is False
    assert reports[DRIFTED.isoformat()]["drifted"].value is True
    assert "temperature" in reports[DRIFTED.isoformat()]["drifted_columns"].value

    sensor = defs.resolve_sensor_def(f"{spec.name}_drift_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs) as context:
        result = sensor(context)
    (request,) = result.run_requests
    assert request.partition_key == DRIFTED.isoformat()
    assert request.tags[TRIGGER_TAG] == "drift"
    assert f"drift on {DRIFTED}" in request.tags[REASON_TAG] and "temperature psi" in request.tags[REASON_TAG]
    assert sensor.job_name == retrain_job_name(spec)

    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=result.cursor) as context:
        again = sensor(context)
    assert not again.run_requests, "a drift result is acted on once"
