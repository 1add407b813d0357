"""The object IO manager on a real folder: partitioned paths, sealed payloads, atomic commits."""

import hashlib
import pickle
from pathlib import Path

import dagster as dg
import pytest

from mlops_assets.storage.object_store import MAGIC, ObjectStore, TamperedObjectError, seal, unseal

DAYS = dg.DailyPartitionsDefinition(start_date="2026-01-01")


@dg.asset(partitions_def=DAYS, io_manager_key="object_store", key=["models", "toy"])
def toy(context: dg.AssetExecutionContext) -> dict:
    return {"day": context.partition_key, "weights": list(range(1000))}


@dg.asset(partitions_def=DAYS, ins={"model": dg.AssetIn(["models", "toy"])})
def consumer(model: dict) -> int:
    return len(model["weights"])


def _run(root: Path, selection, instance) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [toy, consumer],
        selection=selection,
        partition_key="2026-01-02",
        resources={"object_store": ObjectStore(root=root.as_uri())},
        instance=instance,
        raise_on_error=False,
    )


def test_objects_round_trip_with_their_sha256(tmp_path: Path, instance) -> None:
    result = _run(tmp_path, [toy, consumer], instance)
    assert result.success
    stored = tmp_path / "models" / "toy" / "2026-01-02.pkl"
    (materialization,) = [
        event.materialization for event in result.get_asset_materialization_events() if event.asset_key == toy.key
    ]
    payload = stored.read_bytes().split(b"\n", 2)[2]
    assert stored.read_bytes().startswith(MAGIC)
    assert materialization.metadata["sha256"].value == hashlib.sha256(payload).hexdigest()
    assert result.output_for_node("consumer") == 1000
    assert [path.name for path in stored.parent.iterdir()] == ["2026-01-02.pkl"]


def test_a_tampered_object_is_refused(tmp_path: Path, instance) -> None:
    assert _run(tmp_path, [toy], instance).success
    stored = tmp_path / "models" / "toy" / "2026-01-02.pkl"
    data = bytearray(stored.read_bytes())
    data[-5] ^= 0x01
    stored.write_bytes(bytes(data))

    result = _run(tmp_path, [consumer], instance)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert failure.step_failure_data.error.cause.cls_name == TamperedObjectError.__name__
    assert "was changed after it was written" in failure.step_failure_data.error.cause.message


def test_an_object_without_its_seal_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TamperedObjectError, match="not a sealed object"):
        unseal(b"\x80\x05plain pickle", "somewhere")


def test_an_object_resealed_with_other_content_is_refused(tmp_path: Path, instance) -> None:
    assert _run(tmp_path, [toy], instance).success
    stored = tmp_path / "models" / "toy" / "2026-01-02.pkl"
    forged, _ = seal(pickle.dumps({"day": "2026-01-02", "weights": [0]}))
    stored.write_bytes(forged)

    result = _run(tmp_path, [consumer], instance)
    assert not result.success
    (failure,) = [event for event in result.all_events if event.is_step_failure]
    assert "does not hold what Dagster recorded" in failure.step_failure_data.error.cause.message
