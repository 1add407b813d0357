"""Records between assets (kept in Dagster's metadata, nothing stored twice), models in MLflow
(the sha256 of the stored file checked on every load), and atomic writes to a storage location."""

import hashlib
from pathlib import Path

import dagster as dg
import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from mlops_assets.resources.mlflow_tracking import MlflowTracking, log_sklearn_model
from mlops_assets.resources.records import (
    ALLOW_MISSING,
    MANY_PARTITIONS,
    RECORD,
    RECORD_TYPE,
    ModelRecord,
    RecordIOManager,
    read_record,
)
from mlops_assets.resources.storage import StorageLocation, TamperedObjectError

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


def _record(partition: str, model_uri: str = "models:/m-0", sha256: str = "") -> ModelRecord:
    return ModelRecord(
        asset="models/toy",
        partition=partition,
        family="ridge",
        model_uri=model_uri,
        run_id="run",
        sha256=f"digest-{partition}",
        artifact_sha256=sha256,
        gold_uri="lake/gold/toy",
        gold_version=3,
        features=("x",),
        trained_partitions=(partition,),
        holdout_partitions=(partition,),
        holdout_start=f"{partition}T12:00:00+00:00",
        metrics={"mae": 0.5},
    )


@dg.asset(partitions_def=DAYS, io_manager_key="records", key=["models", "toy"])
def toy(context: dg.AssetExecutionContext) -> ModelRecord:
    return _record(context.partition_key)


@dg.asset(partitions_def=DAYS, ins={"model": dg.AssetIn(["models", "toy"])})
def consumer(model: ModelRecord) -> str:
    return model.partition


@dg.asset(partitions_def=DAYS, ins={"model": dg.AssetIn(["models", "toy"], metadata={ALLOW_MISSING: True})})
def tolerant(model: ModelRecord | None) -> str:
    return "none" if model is None else model.partition


@dg.asset(
    partitions_def=DAYS,
    ins={
        "earlier": dg.AssetIn(
            ["models", "toy"],
            partition_mapping=dg.TimeWindowPartitionMapping(start_offset=-3, end_offset=-1),
            metadata={MANY_PARTITIONS: True},
        )
    },
)
def window(earlier: dict[str, ModelRecord]) -> list[str]:
    return sorted(earlier)


def _run(selection, instance, partition: str = "2026-01-05") -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [toy, consumer, tolerant, window],
        selection=selection,
        partition_key=partition,
        resources={"records": RecordIOManager()},
        instance=instance,
        raise_on_error=False,
    )


def test_a_record_reaches_the_next_asset_through_the_materialization_metadata(instance) -> None:
    result = _run([toy, consumer], instance)
    assert result.success
    (event,) = [event for event in result.get_asset_materialization_events() if event.asset_key == toy.key]
    metadata = event.materialization.metadata
    assert metadata[RECORD].value == _record("2026-01-05").to_json()
    assert metadata[RECORD_TYPE].value == "mlops_assets.resources.records.ModelRecord"
    assert read_record(metadata) == _record("2026-01-05")
    assert result.output_for_node("consumer") == "2026-01-05"


def test_a_missing_record_fails_the_step_unless_the_input_allows_it(instance) -> None:
    result = _run([consumer], instance)
    assert not result.success
    (failure,) = result.get_step_failure_events()
    assert "models/toy has no record for 2026-01-05: materialize it first" in failure.step_failure_data.error.message
    tolerated = _run([tolerant], instance)
    assert tolerated.success and tolerated.output_for_node("tolerant") == "none"


def test_an_input_of_many_partitions_gets_those_that_have_a_record(instance) -> None:
    for partition in ("2026-01-02", "2026-01-04"):
        assert _run([toy], instance, partition).success
    result = _run([window], instance)
    assert result.success
    assert result.output_for_node("window") == ["2026-01-02", "2026-01-04"]


def test_a_record_of_a_type_outside_the_package_is_refused() -> None:
    metadata = {RECORD: dg.MetadataValue.json({}), RECORD_TYPE: dg.MetadataValue.text("os.system")}
    with pytest.raises(ValueError, match="must be one of this package's"):
        read_record(metadata)


def _logged_model(mlflow_tracking: MlflowTracking) -> tuple[ModelRecord, pd.DataFrame, Ridge]:
    rows = pd.DataFrame({"x": np.arange(20.0)})
    model = Ridge().fit(rows, 2 * rows["x"] + 1)
    mlflow_tracking.prepare()
    mlflow.set_tracking_uri(mlflow_tracking.tracking_uri)
    experiment = mlflow.create_experiment("toy", artifact_location=f"{mlflow_tracking.artifact_root}/toy")
    with mlflow.start_run(experiment_id=experiment):
        logged = log_sklearn_model(model)
    return _record("2026-01-05", logged.uri, logged.sha256), rows, model


def test_a_model_loads_from_mlflow_only_as_it_was_logged(mlflow_tracking, tmp_path) -> None:
    record, rows, model = _logged_model(mlflow_tracking)
    folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=record.model_uri, dst_path=str(tmp_path / "a")))
    stored = next(folder.glob("model.skops"))
    assert record.artifact_sha256 == hashlib.sha256(stored.read_bytes()).hexdigest()
    np.testing.assert_array_equal(mlflow_tracking.load_model(record).predict(rows), model.predict(rows))

    # The same model file, changed where MLflow keeps it.
    artifact_root = Path(mlflow_tracking.artifact_root.removeprefix("file://"))
    (kept,) = [path for path in artifact_root.rglob("model.skops")]
    data = bytearray(kept.read_bytes())
    data[len(data) // 2] ^= 0x01
    kept.write_bytes(bytes(data))
    with pytest.raises(TamperedObjectError, match="was changed after it was logged"):
        mlflow_tracking.load_model(record)


def test_a_write_to_a_local_location_replaces_the_file_whole_and_leaves_nothing_else(tmp_path) -> None:
    location = StorageLocation(uri=(tmp_path / "store").as_uri())
    path = location.path("models", "toy", "2026-01-05.bin")
    location.write_bytes(path, b"first")
    location.write_bytes(path, b"second version")
    assert path.read_bytes() == b"second version"
    assert [entry.name for entry in (tmp_path / "store" / "models" / "toy").iterdir()] == ["2026-01-05.bin"]
    location.write_recorded(path, b"third")
    assert location.read_verified(path)[0] == b"third"
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["2026-01-05.bin", "2026-01-05.bin.sha256"]
    with pytest.raises(FileNotFoundError):
        location.read_verified(location.path("models", "toy", "missing.bin"))
