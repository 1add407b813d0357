"""MLflow tracking: one MLflow run per model materialization, tagged with its Dagster origin, and
MLflow as the one store of the models: logged with the sha256 of their stored file, which is
checked whenever a model is loaded back."""

from __future__ import annotations

import fcntl
import functools
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pandas as pd
import sklearn
from mlflow.data.delta_dataset_source import DeltaDatasetSource
from mlflow.environment_variables import MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.tracking import MlflowClient
from pydantic import Field

from mlops_assets.digests import sha256_hex
from mlops_assets.resources.delta_lake import TableRead
from mlops_assets.resources.model_registry import Registry
from mlops_assets.resources.records import ModelRecord
from mlops_assets.resources.storage import TamperedObjectError

# Explicit requirements: inferring them costs seconds per logged model.
MODEL_PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}", f"skops=={version('skops')}"]
# The modules whose types a logged model may hold, and skops may load.
TRUSTED_MODULES = ("sklearn.", "numpy.", "scipy.", "mlops_assets.")
DAGSTER_TAGS = ("dagster.run_id", "dagster.asset_key", "dagster.partition")


class MlflowTracking(dg.ConfigurableResource):
    """An MLflow tracking server or store, and where new experiments keep their artifacts."""

    tracking_uri: str = Field(description="MLflow tracking URI: sqlite:///..., http://host:port, or azureml://...")
    artifact_root: str | None = Field(
        default=None, description="Artifact location for experiments this project creates (file://, wasbs://)."
    )
    ui_url: str | None = Field(
        default=None, description="Base URL of the MLflow UI, used to link runs from Dagster metadata."
    )

    def prepare(self) -> None:
        """Make sure the tracking store exists, creating it once however many processes start at
        the same moment (see :func:`prepare_store`)."""
        # Every model load downloads the model's files; MLflow would draw a progress bar for each
        # into the run's logs. A value the user set stays.
        os.environ.setdefault(MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR.name, "false")
        prepare_store(self.tracking_uri)

    def _experiment_id(self, name: str) -> str:
        existing = mlflow.get_experiment_by_name(name)
        if existing is not None:
            return existing.experiment_id
        try:
            return mlflow.create_experiment(
                name, artifact_location=self.artifact_root and f"{self.artifact_root}/{name}"
            )
        except MlflowException:
            # Another run created it between the lookup and the create.
            created = mlflow.get_experiment_by_name(name)
            if created is None:
                raise
            return created.experiment_id

    @contextmanager
    def start_run(
        self, context: dg.AssetExecutionContext, experiment: str, tags: Mapping[str, str] | None = None
    ) -> Iterator[mlflow.ActiveRun]:
        """An MLflow run in ``experiment``, tagged with the Dagster run, asset key and partition."""
        self.prepare()
        mlflow.set_tracking_uri(self.tracking_uri)
        origin = {
            "dagster.run_id": context.run.run_id,
            "dagster.asset_key": context.asset_key.to_user_string(),
            "dagster.partition": context.partition_key if context.has_partition_key else "",
        }
        run_name = f"{context.asset_key.path[-1]}-{origin['dagster.partition'] or context.run.run_id[:8]}"
        with mlflow.start_run(
            experiment_id=self._experiment_id(experiment), run_name=run_name, tags={**origin, **(tags or {})}
        ) as run:
            yield run

    def run_url(self, run: mlflow.ActiveRun) -> str | None:
        if not self.ui_url:
            return None
        return f"{self.ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"

    def end_runs_of(self, dagster_run_id: str, status: str = "FAILED") -> list[str]:
        """End, as ``status``, the MLflow runs that Dagster run ``dagster_run_id`` opened and left
        running (its worker was killed before it could end them); their ids."""
        self.prepare()
        client = MlflowClient(tracking_uri=self.tracking_uri)
        experiments = [experiment.experiment_id for experiment in client.search_experiments()]
        if not experiments:
            return []
        left_running = client.search_runs(
            experiments, filter_string=f"tags.`dagster.run_id` = '{dagster_run_id}' and attributes.status = 'RUNNING'"
        )
        for run in left_running:
            client.set_terminated(run.info.run_id, status=status)
        return [run.info.run_id for run in left_running]

    def registry(self) -> Registry:
        """The model registry of this tracking server."""
        self.prepare()
        mlflow.set_tracking_uri(self.tracking_uri)
        return Registry(self.tracking_uri)

    def load_model(self, record: ModelRecord) -> Any:
        """The fitted model ``record`` names, a fresh copy from MLflow, once the sha256 of its stored
        file is the one recorded when it was logged."""
        self.prepare()
        mlflow.set_tracking_uri(self.tracking_uri)
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(artifact_uri=record.model_uri, dst_path=folder)
            actual = _model_file_sha256(local)
            if record.artifact_sha256 and actual != record.artifact_sha256:
                raise TamperedObjectError(
                    f"{record.model_uri} ({record.label}) was changed after it was logged: sha256 {actual}, "
                    f"recorded {record.artifact_sha256}"
                )
            return mlflow.sklearn.load_model(local)


@functools.cache
def prepare_store(tracking_uri: str) -> None:
    """Create (or upgrade) a SQLite tracking store under an exclusive file lock beside it.

    MLflow creates and migrates a SQLite store's schema the first time a client touches
    it; two processes doing that at once (two runs starting on a fresh machine) break the
    migration of one of them. The lock makes the first do it and the others wait and find
    it done. A server URI needs nothing: the server owns its store.
    """
    if not tracking_uri.startswith("sqlite:///"):
        return
    database = Path(tracking_uri.removeprefix("sqlite:///"))
    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database.with_name(f".{database.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@dataclass(frozen=True)
class LoggedModel:
    """A model logged to MLflow: its ``models:/`` URI and the sha256 of its stored file."""

    uri: str
    sha256: str


def log_sklearn_model(model: Any) -> LoggedModel:
    """Log a fitted scikit-learn model as the active run's ``model`` artifact.

    MLflow stores it with skops, which loads only the types it is told to trust. Those are
    the types of scikit-learn, NumPy, SciPy and this package that the model holds; a model
    holding any other type (a function of another module, say) is refused rather than
    trusted, since loading it would run that code. The stored file is read back once to
    record its sha256.
    """
    # Imported here: skops imports every scikit-learn module it can trust, which costs each
    # process that loads the definitions (every run) most of a second.
    import skops.io

    found = skops.io.get_untrusted_types(data=skops.io.dumps(model))
    foreign = sorted(name for name in found if not name.startswith(TRUSTED_MODULES))
    if foreign:
        raise ValueError(f"the model holds types outside {', '.join(TRUSTED_MODULES)}: {foreign}")
    info = mlflow.sklearn.log_model(
        model, name="model", pip_requirements=MODEL_PIP_REQUIREMENTS, skops_trusted_types=found
    )
    with tempfile.TemporaryDirectory() as folder:
        stored = mlflow.artifacts.download_artifacts(artifact_uri=info.model_uri, dst_path=folder)
        return LoggedModel(uri=info.model_uri, sha256=_model_file_sha256(stored))


def _model_file_sha256(folder: str) -> str:
    """The sha256 of the serialized model in a downloaded MLflow model folder."""
    model_file = Model.load(folder).flavors["sklearn"]["pickled_model"]
    return sha256_hex((Path(folder) / model_file).read_bytes())


def log_table_input(rows: pd.DataFrame, table: TableRead, name: str, target: str, context: str) -> None:
    """Record ``rows``, read from a Delta table at ``table.version``, as a dataset input of the
    active run, so the MLflow run names the exact table version it learned from."""
    mlflow.log_input(
        mlflow.data.from_pandas(
            rows,
            source=DeltaDatasetSource(path=table.uri, delta_table_version=table.version),
            name=name,
            targets=target,
        ),
        context=context,
    )
