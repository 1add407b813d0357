"""Shared fixtures: a local-profile home and an MLflow store per test, a real
Dagster instance in a temporary folder, and one "now" for the whole session."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest

from mlops_assets import clock
from mlops_assets.components import ingest_job_name, lifecycle_job_name
from mlops_assets.datasets.spec import DatasetSpec, load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.profiles import local_resources

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The time the sensors go by, the same for every test of a session: a session that runs past
# midnight (UTC) still has one "today".
NOW = dt.datetime.now(dt.UTC)
TODAY = NOW.date()


@pytest.fixture(autouse=True)
def pinned_clock(monkeypatch: pytest.MonkeyPatch) -> dt.datetime:
    monkeypatch.setattr(clock, "utc_now", lambda: NOW)
    return NOW


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


@dataclass
class DayRuns:
    """The runs of one day, end to end: the ingest job's (bronze to gold), then, if it succeeded,
    the lifecycle job's (models, decision, predictions, drift)."""

    runs: list[dg.ExecuteInProcessResult]

    @property
    def success(self) -> bool:
        return all(run.success for run in self.runs)

    @property
    def run_id(self) -> str:
        """The last run's id: the lifecycle run's, which trained the day's model."""
        return self.runs[-1].run_id

    @property
    def all_events(self) -> list[dg.DagsterEvent]:
        return [event for run in self.runs for event in run.all_events]

    def get_asset_materialization_events(self) -> list[dg.DagsterEvent]:
        return [event for run in self.runs for event in run.get_asset_materialization_events()]

    def get_asset_check_evaluations(self) -> list[dg.AssetCheckEvaluation]:
        return [evaluation for run in self.runs for evaluation in run.get_asset_check_evaluations()]


def run_lifecycle(
    defs: dg.Definitions, spec: DatasetSpec, instance: dg.DagsterInstance, day: dt.date, raise_on_error: bool = True
) -> DayRuns:
    """Run the whole graph for one day, as the demo does: ingest, then the lifecycle."""
    runs = []
    for job in (ingest_job_name(spec), lifecycle_job_name(spec)):
        run = defs.resolve_job_def(job).execute_in_process(
            partition_key=day.isoformat(), instance=instance, run_config=QUIET, raise_on_error=raise_on_error
        )
        runs.append(run)
        if not run.success:
            break
    return DayRuns(runs)


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
