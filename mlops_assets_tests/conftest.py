"""Shared fixtures: a local-profile home and an MLflow store per test, a real
Dagster instance in a temporary folder."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest

from mlops_assets.components import lifecycle_job_name
from mlops_assets.datasets.spec import DatasetSpec, load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.profiles import local_resources

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@pytest.fixture(scope="session")
def spec() -> DatasetSpec:
    (smart_meter,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
    return smart_meter


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite MLflow store with its schema: creating the schema takes seconds, copying it
    takes milliseconds."""
    database = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{database}").search_experiments()
    return database


@pytest.fixture
def mlflow_tracking(tmp_path: Path, mlflow_store_template: Path) -> MlflowTracking:
    """An MLflow store of the test's own, so that each test starts with an empty registry."""
    folder = tmp_path / "mlflow"
    folder.mkdir()
    shutil.copyfile(mlflow_store_template, folder / "mlflow.db")
    return MlflowTracking(
        tracking_uri=f"sqlite:///{folder / 'mlflow.db'}",
        artifact_root=(folder / "artifacts").as_uri(),
        ui_url="http://127.0.0.1:5000",
    )


@pytest.fixture
def resources(tmp_path: Path, mlflow_tracking: MlflowTracking) -> dict[str, Any]:
    return {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}


@pytest.fixture
def defs(spec: DatasetSpec, resources: dict[str, Any]) -> dg.Definitions:
    return build_definitions([spec], resources)


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


def run_lifecycle(
    defs: dg.Definitions, spec: DatasetSpec, instance: dg.DagsterInstance, day: dt.date, raise_on_error: bool = True
) -> dg.ExecuteInProcessResult:
    """Run the whole graph for one day, as the demo and a backfill do."""
    return defs.resolve_job_def(lifecycle_job_name(spec)).execute_in_process(
        partition_key=day.isoformat(), instance=instance, run_config=QUIET, raise_on_error=raise_on_error
    )


def materialize_day(
    defs: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    day: dt.date,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize only ``keys`` for one day."""
    return dg.materialize(
        [*(defs.assets or []), *(defs.asset_checks or [])],
        selection=keys,
        partition_key=day.isoformat(),
        instance=instance,
        resources=resources,
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )
