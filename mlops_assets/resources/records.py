"""Records: the small values assets hand each other (a model's reference, a registry decision,
the result of a search), kept in the materialization's metadata.

A model asset logs its fitted model to MLflow, the one store of a model, and outputs a
:class:`ModelRecord`: where the model is, the sha256 of its stored file, what it was
fitted on and how it scored. The :class:`RecordIOManager` writes a record into the
metadata of the materialization that made it (where the UI shows it) and gives it to
downstream assets as their input; no second copy of anything is stored.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import dagster as dg
import pandas as pd

from mlops_assets.datasets.spec import PARTITION_COLUMN, DatasetSpec

RECORD = "record"
RECORD_TYPE = "record_type"
# An input's metadata: load every partition the mapping names, as {partition: record}.
MANY_PARTITIONS = "many_partitions"
# An input's metadata: a partition with no record loads as None instead of failing.
ALLOW_MISSING = "allow_missing"


class Record(Protocol):
    def to_json(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ModelRecord:
    """A trained model: where it is, what it was fitted on, and how it scored on its hold-out.

    ``model_uri`` is the model logged to MLflow and ``artifact_sha256`` the sha256 of its
    stored file, checked whenever it is loaded. ``sha256`` is a digest of the fitted model
    itself (family, features and fitted state, not the run that made it), so retraining on
    the same rows gives the same digest. A gold row was seen in training when its
    partition is one of ``trained_partitions`` and its timestamp is before
    ``holdout_start``: the gate and batch scoring judge "seen" by the rows a model was
    fitted on, never by a time cutoff alone. A model that continued the training of an
    earlier one names its ``parent`` partition; ``days_trained`` counts the partitions of
    training behind it.
    """

    asset: str
    partition: str
    family: str
    model_uri: str
    run_id: str
    sha256: str
    gold_uri: str
    gold_version: int
    trained_partitions: tuple[str, ...]
    holdout_partitions: tuple[str, ...]
    holdout_start: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    artifact_sha256: str = ""
    features: tuple[str, ...] = ()
    parent: str | None = None
    days_trained: int = 1

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "trained_partitions": list(self.trained_partitions),
            "holdout_partitions": list(self.holdout_partitions),
            "features": list(self.features),
            "metrics": {name: float(value) for name, value in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ModelRecord:
        known = {item.name for item in dataclasses.fields(cls)}
        return cls(
            **{
                **{name: item for name, item in value.items() if name in known},
                "trained_partitions": tuple(value["trained_partitions"]),
                "holdout_partitions": tuple(value["holdout_partitions"]),
                "features": tuple(value.get("features", ())),
                "metrics": dict(value.get("metrics", {})),
            }
        )

    @property
    def label(self) -> str:
        return f"{self.asset}@{self.partition}"

    def seen(self, rows: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
        """For each gold row, whether this model was fitted on it."""
        partitions = rows[PARTITION_COLUMN].map(lambda value: value.isoformat())
        before = rows[spec.timestamp_column] < pd.Timestamp(self.holdout_start)
        return partitions.isin(set(self.trained_partitions)) & before


def record_metadata(record: Record) -> dict[str, dg.MetadataValue]:
    """The metadata entries that hold ``record``: its JSON and the class to read it back as."""
    kind = type(record)
    return {
        RECORD: dg.MetadataValue.json(record.to_json()),
        RECORD_TYPE: dg.MetadataValue.text(f"{kind.__module__}.{kind.__qualname__}"),
    }


def read_record(metadata: Mapping[str, dg.MetadataValue]) -> Any:
    """The record held in a materialization's metadata."""
    module, _, name = metadata[RECORD_TYPE].value.rpartition(".")
    if not module.startswith("mlops_assets."):
        raise ValueError(f"a record's type must be one of this package's, not {module}.{name}")
    return getattr(importlib.import_module(module), name).from_json(metadata[RECORD].value)


def latest_record(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str | None = None) -> Any | None:
    """The record of the latest materialization of ``key`` (of its ``partition``), or None."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    ).records
    if not records:
        return None
    return read_record(records[0].asset_materialization.metadata)


class RecordIOManager(dg.ConfigurableIOManager):
    """Outputs are records (objects with ``to_json``/``from_json``) kept in the metadata of
    their materialization; an input is the record of its upstream partition's latest
    materialization.

    An input whose metadata sets ``many_partitions`` gets ``{partition: record}`` for every
    upstream partition that has one; with ``allow_missing`` a partition without a record
    loads as None instead of failing the step.
    """

    def handle_output(self, context: dg.OutputContext, obj: Record | None) -> None:
        if obj is None:
            raise dg.Failure(f"{context.asset_key.to_user_string()} returned no record to keep")
        context.add_output_metadata(record_metadata(obj))

    def load_input(self, context: dg.InputContext) -> Any:
        key = context.asset_key
        settings = context.definition_metadata or {}
        partitions = context.asset_partition_keys if context.has_asset_partitions else [None]
        found = {partition: latest_record(context.instance, key, partition) for partition in partitions}
        if settings.get(MANY_PARTITIONS):
            return {partition: record for partition, record in found.items() if record is not None}
        (record,) = found.values()
        if record is None and not settings.get(ALLOW_MISSING):
            where = f" for {partitions[0]}" if partitions[0] is not None else ""
            raise dg.Failure(f"{key.to_user_string()} has no record{where}: materialize it first.")
        return record
