"""The whole graph on the local profile: Delta tables, a model tracked in MLflow with its
experiment record in Dagster metadata, predictions, and a `fail` rule that blocks downstream."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
from pathlib import Path

import dagster as dg
import mlflow
import pandas as pd
import pytest

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.defs.registry.decisions import decision_for
from mlops_assets_tests.conftest import DayRuns, materialize_day, run_lifecycle
from mlops_dev.simulate import simulate

START = dt.date(2026, 1, 1)
DAYS = [START + dt.timedelta(days=offset) for offset in range(4)]


@pytest.fixture
def lifecycle(defs, resources, instance, spec):
    simulate(resources["landing"], spec, START, days=len(DAYS), meters=12, meters_per_file=6, dirty_share=0.03)
    results = [run_lifecycle(defs, spec, instance, day) for day in DAYS]
    return results


def _materialization(result: DayRuns, key: dg.AssetKey) -> dg.AssetMaterialization:
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == key]
    return event.materialization


def test_every_layer_has_every_day(lifecycle, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    for key in (keys.bronze, keys.silver, keys.gold):
        assert lake.days(lake.table_uri(*keys.table(key))) == DAYS
    for key in (keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.decision(keys.forecaster)):
        assert instance.get_materialized_partitions(key) == {day.isoformat() for day in DAYS}
    # A day is scored by the champion for the day before it. The first day's candidate has no
    # seasonal-naive forecast to beat (no 24h lag yet) and is refused; the days after the first
    # day with a champion are scored, the others are not.
    decision_key = keys.decision(keys.forecaster)
    champions = [decision_for(instance, decision_key, day.isoformat()).champion for day in DAYS]
    assert champions[0] is None
    first = next(index for index, champion in enumerate(champions) if champion is not None)
    assert first < len(DAYS) - 1, "some day must be scored for this test to mean anything"
    assert lake.days(lake.table_uri(*keys.table(keys.predictions))) == DAYS[first + 1 :]
    scored_gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), DAYS[first + 1 :]).rows
    assert lake.count_rows(lake.table_uri(*keys.table(keys.predictions))) == len(scored_gold)
    silver = lake.read_days(lake.table_uri(*keys.table(keys.silver)), DAYS).rows
    assert not silver.duplicated([spec.entity_column, spec.timestamp_column]).any()
    assert silver[spec.target_column].between(0, 50).all()


def test_model_metadata_is_the_experiment_record(lifecycle, defs, resources, mlflow_tracking, spec, tmp_path) -> None:
    keys = DatasetKeys(spec)
    last = lifecycle[-1]
    metadata = _materialization(last, keys.forecaster).metadata
    gold_version = _materialization(last, keys.gold).metadata["delta_version"].value

    assert metadata["params"].value == {"family": spec.model.family, **spec.model.params}
    for metric in ("mae", "rmse", "wape", "r2", "skill"):
        assert isinstance(metadata[metric], dg.FloatMetadataValue)
    (table,) = metadata["input_tables"].value
    assert table["uri"] == resources["lake"].table_uri("gold", f"{spec.name}_features")
    assert table["version"] == gold_version == metadata["gold_version"].value
    # Every day of the window, with the rows it held when the model was trained.
    gold = resources["lake"].read_days(table["uri"], DAYS, version=table["version"]).rows
    assert table["partitions"] == {day.isoformat(): int((gold["event_date"] == day).sum()) for day in DAYS}
    assert table["missing"] == [] and metadata["window_partitions_with_data"].value == len(DAYS)
    assert (
        metadata["code_version"].value == defs.resolve_assets_def(keys.forecaster).code_versions_by_key[keys.forecaster]
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert metadata["git_commit"].value.removesuffix("+dirty") == head
    assert metadata["seed"].value == spec.model.seed

    # The model is stored once, in MLflow, with the sha256 of its file in the record.
    folder = Path(mlflow.artifacts.download_artifacts(metadata["model_uri"].value, dst_path=str(tmp_path)))
    assert metadata["artifact_sha256"].value == hashlib.sha256((folder / "model.skops").read_bytes()).hexdigest()
    assert metadata["record"].value["artifact_sha256"] == metadata["artifact_sha256"].value

    run_id = metadata["mlflow_run_id"].value
    assert metadata["mlflow_run"].value.endswith(f"/runs/{run_id}")
    assert metadata["model_uri"].value.startswith("models:/")

    client = mlflow.MlflowClient(mlflow_tracking.tracking_uri)
    run = client.get_run(run_id)
    assert run.data.tags["dagster.run_id"] == last.run_id
    assert run.data.tags["dagster.asset_key"] == keys.forecaster.to_user_string()
    assert run.data.tags["dagster.partition"] == DAYS[-1].isoformat()
    assert run.data.params["seed"] == str(spec.model.seed)
    (dataset_input,) = run.inputs.dataset_inputs
    assert f'"delta_table_version": {gold_version}' in dataset_input.dataset.source
    model = mlflow.sklearn.load_model(metadata["model_uri"].value)
    assert model.named_steps["model"].get_params()["random_state"] == spec.model.seed


def test_model_metrics_are_the_error_on_its_held_out_hours(lifecycle, resources, spec) -> None:
    """Recompute the hold-out error from the stored model and the gold table it names."""
    keys = DatasetKeys(spec)
    metadata = _materialization(lifecycle[-1], keys.forecaster).metadata
    forecaster = mlflow.sklearn.load_model(metadata["model_uri"].value)
    (table,) = metadata["input_tables"].value
    gold = resources["lake"].read_days(table["uri"], DAYS, version=table["version"]).rows
    held_out = gold[gold["timestamp"] >= pd.Timestamp(metadata["holdout_start"].value, unit="s", tz="UTC")]
    assert len(held_out) == metadata["holdout_rows"].value
    error = (held_out["kwh"] - forecaster.predict(held_out)).abs()
    assert metadata["mae"].value == pytest.approx(error.mean())
    with_lag = held_out["kwh_lag_24h"].notna()
    naive_error = (held_out["kwh"] - held_out["kwh_lag_24h"]).abs()[with_lag]
    assert metadata["skill"].value == pytest.approx(1 - error[with_lag].mean() / naive_error.mean())
    assert metadata["mae_seasonal_naive"].value == pytest.approx(naive_error.mean())


def test_predictions_are_made_by_the_champion_of_the_day_before(lifecycle, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    predictions = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [DAYS[-1]]).rows
    day_metadata = _materialization(lifecycle[-1], keys.predictions).metadata
    champion = decision_for(instance, keys.decision(keys.forecaster), DAYS[-2].isoformat()).champion
    assert set(predictions["model"]) == {champion.label} == {day_metadata["model"].value}
    assert set(predictions["model_uri"]) == {champion.model_uri}
    assert set(predictions["mlflow_run_id"]) == {champion.run_id}
    # The champion was fitted on days before this one only: every row is a true forecast.
    assert DAYS[-1].isoformat() not in champion.trained_partitions
    assert not predictions["in_training"].any()
    assert day_metadata["out_of_sample_rows"].value == len(predictions)
    assert day_metadata["day_mae"].value == pytest.approx((predictions["kwh"] - predictions["prediction"]).abs().mean())
    # Scored by that very model: it predicts the same values when loaded from MLflow.
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [DAYS[-1]]).rows
    model = mlflow.pyfunc.load_model(champion.model_uri)
    scored = gold.assign(expected=model.predict(gold)).merge(predictions, on=["meter_id", "timestamp"])
    assert scored["expected"].to_numpy() == pytest.approx(scored["prediction"].to_numpy())


def _drop_rows_without_meter(resources, spec, day: dt.date) -> None:
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(day, 'no-meter.csv')}"
    rows = "".join(f",{day.isoformat()}T{hour:02d}:00:00Z,1.0,2.0\n" for hour in range(24))
    resources["landing"].write_bytes(path, ("meter_id,timestamp,kwh,temperature\n" + rows).encode())


def test_a_failing_fail_rule_blocks_downstream_in_the_run(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    _drop_rows_without_meter(resources, spec, START)

    result = run_lifecycle(defs, spec, instance, START, raise_on_error=False)
    assert not result.success
    checks = {evaluation.check_name: evaluation for evaluation in result.get_asset_check_evaluations()}
    assert checks["meter_id_present"].passed is False
    assert checks["meter_id_present"].metadata["rows_failed"].value == 24
    materialized = {event.asset_key for event in result.get_asset_materialization_events()}
    assert materialized == {keys.bronze, keys.silver}
    assert instance.get_materialized_partitions(keys.gold) == set()


def test_a_new_bronze_day_is_pushed_downstream_in_one_tick(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert initial.total_requested == 0

    # The first day with data is not the spec's first day: the day before it is a gap.
    simulate(resources["landing"], spec, DAYS[1], days=1, meters=2, meters_per_file=2, dirty_share=0.0)
    materialize_day(defs, resources, instance, [keys.bronze], DAYS[1])
    pushed = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    # The next days' features and models look back on this day, but with no data of their
    # own they have nothing to build: no run is launched for them.
    for key in (keys.silver, keys.gold, keys.forecaster, keys.decision(keys.forecaster), keys.predictions):
        assert pushed.get_requested_partitions(key) == {DAYS[1].isoformat()}, key

    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=pushed.cursor)
    assert settled.total_requested == 0


def test_a_day_without_data_of_its_own_builds_nothing(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    simulate(resources["landing"], spec, DAYS[1], days=1, meters=2, meters_per_file=2, dirty_share=0.0)
    run_lifecycle(defs, spec, instance, DAYS[1])
    result = materialize_day(defs, resources, instance, [keys.gold, keys.forecaster, keys.predictions], DAYS[2])
    assert result.success
    assert result.get_asset_materialization_events() == []
    assert instance.get_materialized_partitions(keys.gold) == {DAYS[1].isoformat()}


def test_late_data_for_a_day_rebuilds_the_next_days_features(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    simulate(resources["landing"], spec, DAYS[1], days=1, meters=2, meters_per_file=2, dirty_share=0.0)
    run_lifecycle(defs, spec, instance, DAYS[1])
    gold_uri = lake.table_uri(*keys.table(keys.gold))
    assert lake.read_days(gold_uri, [DAYS[1]]).rows["kwh_lag_24h"].isna().all()
    cursor = dg.evaluate_automation_conditions(defs=defs, instance=instance).cursor

    simulate(resources["landing"], spec, DAYS[0], days=1, meters=2, meters_per_file=2, dirty_share=0.0)
    materialize_day(defs, resources, instance, [keys.bronze], DAYS[0])
    late = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    # The late day first; the next day, whose lags read it, waits until it is rebuilt rather
    # than reading it while another run rewrites it.
    assert late.get_requested_partitions(keys.gold) == {DAYS[0].isoformat()}
    materialize_day(defs, resources, instance, [keys.silver, keys.gold], DAYS[0])
    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=late.cursor)
    assert after.get_requested_partitions(keys.gold) == {DAYS[1].isoformat()}
    materialize_day(defs, resources, instance, [keys.gold], DAYS[1])
    assert lake.read_days(gold_uri, [DAYS[1]]).rows["kwh_lag_24h"].notna().all()


def test_automation_holds_back_a_day_whose_blocking_check_failed(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _drop_rows_without_meter(resources, spec, START)
    result = materialize_day(defs, resources, instance, [keys.bronze, keys.silver], START, raise_on_error=False)
    assert {event.asset_key for event in result.get_asset_materialization_events()} == {keys.bronze, keys.silver}

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    assert after.get_requested_partitions(keys.gold) == set()
    assert after.total_requested == 0


def test_a_later_day_passing_its_checks_does_not_release_a_failed_day(defs, resources, instance, spec) -> None:
    """Quality checks are per day: a blocking failure on one day holds back that day only."""
    keys = DatasetKeys(spec)
    later = START + dt.timedelta(days=1)
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    _drop_rows_without_meter(resources, spec, START)
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver], START, raise_on_error=False)
    simulate(resources["landing"], spec, later, days=1, meters=2, meters_per_file=2, dirty_share=0)
    assert materialize_day(defs, resources, instance, [keys.bronze, keys.silver], later).success

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    assert START.isoformat() not in after.get_requested_partitions(keys.gold)
    assert later.isoformat() in after.get_requested_partitions(keys.gold)
