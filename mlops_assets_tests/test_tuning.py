"""The hyper-parameter search: an Optuna study over the spec's search space, one nested MLflow
run per trial, and the best parameters read back from the asset's materialization."""

from __future__ import annotations

import datetime as dt
import math

import dagster as dg
import mlflow
import pandas as pd
import pytest

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, parse_spec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.training import train_forecaster
from mlops_assets.defs.models.tuning import build_tuning_asset
from mlops_assets.resources.records import latest_record
from mlops_assets_tests.conftest import QUIET, materialize_day
from mlops_dev.simulate import simulate

START = dt.date(2026, 1, 1)
DAYS = [START + dt.timedelta(days=offset) for offset in range(3)]
TRIALS = 4
WINDOW_DAYS = 2


@pytest.fixture
def search_spec(spec: DatasetSpec) -> DatasetSpec:
    """The bundled spec with a short search over a window shorter than the gold days."""
    assert spec.tuning is not None
    raw = spec.model_dump(mode="json", by_alias=True)
    raw["model"]["training_window"] = f"{WINDOW_DAYS}d"
    raw["tuning"]["trials"] = TRIALS
    return parse_spec(raw)


@pytest.fixture
def gold_days(defs, resources, instance, spec) -> list[dt.date]:
    simulate(resources["landing"], spec, START, days=len(DAYS), meters=6, meters_per_file=3, dirty_share=0.0)
    keys = DatasetKeys(spec)
    for day in DAYS:
        materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], day)
    return DAYS


def _tune(search_spec: DatasetSpec, resources, instance) -> dg.AssetMaterialization:
    keys = DatasetKeys(search_spec)
    result = dg.materialize(
        [build_tuning_asset(search_spec)],
        selection=[keys.tuning],
        resources=resources,
        instance=instance,
        run_config=QUIET,
    )
    (event,) = result.get_asset_materialization_events()
    assert event.asset_key == keys.tuning
    return event.materialization


def _tuned(instance, search_spec: DatasetSpec) -> dict | None:
    """The parameters the latest search found, if it found any better than the spec's."""
    found = latest_record(instance, DatasetKeys(search_spec).tuning)
    return found.better_params if found is not None else None


def _trial_runs(mlflow_tracking, parent_run_id: str) -> pd.DataFrame:
    mlflow.set_tracking_uri(mlflow_tracking.tracking_uri)
    return mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'")


def _in_space(name: str, value: str, spec: DatasetSpec) -> bool:
    param = spec.tuning.space[name]
    if param.kind == "categorical":
        return value in {str(choice) for choice in param.choices}
    number = float(value)
    if param.kind == "int" and number != int(number):
        return False
    return param.low <= number <= param.high


def test_the_asset_is_an_unpartitioned_by_hand_search(spec) -> None:
    keys = DatasetKeys(spec)
    asset = build_tuning_asset(spec)
    assert asset.key == keys.tuning
    assert asset.partitions_def is None
    assert asset.group_names_by_key[keys.tuning] == "models"
    assert asset.specs_by_key[keys.tuning].kinds == {"optuna", "mlflow", "scikit-learn"}
    assert asset.automation_conditions_by_key.get(keys.tuning) is None
    assert keys.gold in {dep.asset_key for dep in asset.specs_by_key[keys.tuning].deps}
    retuned = spec.model_copy(update={"tuning": spec.tuning.model_copy(update={"trials": 99})})
    assert build_tuning_asset(retuned).code_versions_by_key[keys.tuning] != asset.code_versions_by_key[keys.tuning]


def test_a_spec_without_tuning_has_no_search(spec) -> None:
    with pytest.raises(ValueError, match="tuning"):
        build_tuning_asset(spec.model_copy(update={"tuning": None}))


def test_search_logs_one_nested_run_per_trial_and_keeps_the_best(
    gold_days, search_spec, resources, instance, mlflow_tracking
) -> None:
    keys = DatasetKeys(search_spec)
    assert _tuned(instance, search_spec) is None

    metadata = _tune(search_spec, resources, instance).metadata
    parent_run_id = metadata["mlflow_run_id"].value
    trials = _trial_runs(mlflow_tracking, parent_run_id)

    assert metadata["trials"].value == TRIALS
    assert len(trials) == TRIALS
    assert sorted(trials["tags.mlflow.runName"]) == sorted(f"trial-{number}" for number in range(TRIALS))
    space = set(search_spec.tuning.space)
    for _, trial in trials.iterrows():
        logged = {
            column.removeprefix("params."): value for column, value in trial.items() if column.startswith("params.")
        }
        assert set(logged) == space
        assert all(_in_space(name, value, search_spec) for name, value in logged.items()), logged
        assert trial["tags.dagster.asset_key"] == keys.tuning.to_user_string()

    best_trial = trials.loc[trials["metrics.mae"].idxmin()]
    best_params = metadata["best_params"].value
    assert {name: str(value) for name, value in best_params.items()} == {
        name: best_trial[f"params.{name}"] for name in space
    }
    assert metadata["best_mae"].value == pytest.approx(best_trial["metrics.mae"])
    assert metadata["best_mae"].value == pytest.approx(trials["metrics.mae"].min())
    assert _tuned(instance, search_spec) == best_params

    # The search is an input of the forecaster: the next training uses what it found.
    trained = materialize_day(
        build_definitions([search_spec], resources), resources, instance, [keys.forecaster], DAYS[-1]
    )
    (model,) = [event.materialization for event in trained.get_asset_materialization_events()]
    assert model.metadata["tuned"].value is True
    assert model.metadata["params"].value == {
        "family": search_spec.model.family,
        **search_spec.model.params,
        **best_params,
    }

    client = mlflow.MlflowClient(mlflow_tracking.tracking_uri)
    parent = client.get_run(parent_run_id)
    assert parent.data.tags["dagster.asset_key"] == keys.tuning.to_user_string()
    assert parent.data.metrics["best_mae"] == pytest.approx(metadata["best_mae"].value)
    assert {name: parent.data.params[f"best_{name}"] for name in space} == {
        name: str(value) for name, value in best_params.items()
    }
    assert metadata["mlflow_run"].value.endswith(f"/runs/{parent_run_id}")


def test_search_reads_the_latest_window_and_scores_as_the_forecaster(
    gold_days, search_spec, resources, instance
) -> None:
    """Retrain the spec's and the best parameters on the days the search names and compare."""
    keys = DatasetKeys(search_spec)
    lake = resources["lake"]
    metadata = _tune(search_spec, resources, instance).metadata
    latest = gold_days[-WINDOW_DAYS:]
    (table,) = metadata["input_tables"].value
    assert table["days"] == [day.isoformat() for day in latest]
    assert table["version"] == metadata["gold_version"].value == lake.version(lake.table_uri(*keys.table(keys.gold)))

    gold = lake.read_days(table["uri"], latest, version=table["version"]).rows
    window = (latest[0], latest[-1])
    baseline = train_forecaster(gold, search_spec, window)
    assert metadata["baseline_mae"].value == pytest.approx(baseline.metrics["mae"])

    best_params = metadata["best_params"].value
    tuned_spec = search_spec.model_copy(
        update={"model": search_spec.model.model_copy(update={"params": {**search_spec.model.params, **best_params}})}
    )
    tuned = train_forecaster(gold, tuned_spec, window)
    assert tuned.forecaster.estimator.get_params()["random_state"] == search_spec.model.seed
    for name, value in best_params.items():
        assert tuned.forecaster.estimator.get_params()[name] == value
    assert metadata["best_mae"].value == pytest.approx(tuned.metrics["mae"])
    assert math.isfinite(metadata["best_mae"].value)


def test_search_is_reproducible_and_the_latest_search_wins(gold_days, search_spec, resources, instance) -> None:
    first = _tune(search_spec, resources, instance).metadata
    second = _tune(search_spec, resources, instance).metadata
    assert second["best_params"].value == first["best_params"].value
    assert second["best_mae"].value == pytest.approx(first["best_mae"].value)
    assert second["mlflow_run_id"].value != first["mlflow_run_id"].value

    reseeded = search_spec.model_copy(
        update={"model": search_spec.model.model_copy(update={"seed": search_spec.model.seed + 1})}
    )
    third = _tune(reseeded, resources, instance).metadata
    assert third["best_params"].value != first["best_params"].value
    assert _tuned(instance, search_spec) == third["best_params"].value
