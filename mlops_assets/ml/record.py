"""The experiment record: what a training materialization says about the model it made, and
the short record of a model that the gate, the registry and batch scoring pass around."""

from __future__ import annotations

import json
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import dagster as dg
import pandas as pd

from mlops_assets.datasets.spec import PARTITION_COLUMN, DatasetSpec
from mlops_assets.digests import sha256_hex, short_digest


@dataclass(frozen=True)
class ModelRecord:
    """A trained model: where it is, what it was fitted on, and how it scored on its hold-out.

    ``sha256`` is a digest of the fitted model itself (family, features and fitted state,
    not the run that made it), so retraining on the same rows gives the same digest.
    A gold row was seen in training when its partition is one of ``trained_partitions``
    and its timestamp is before ``holdout_start``: the gate and batch scoring judge
    "seen" by the rows a model was fitted on, never by a time cutoff alone.
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

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "trained_partitions": list(self.trained_partitions),
            "holdout_partitions": list(self.holdout_partitions),
            "metrics": {name: float(value) for name, value in self.metrics.items()},
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> ModelRecord:
        return cls(
            **{
                **value,
                "trained_partitions": tuple(value["trained_partitions"]),
                "holdout_partitions": tuple(value["holdout_partitions"]),
                "metrics": dict(value.get("metrics", {})),
            }
        )

    @classmethod
    def of(cls, model: Any, asset: str, partition: str) -> ModelRecord:
        """The record of a trained model object (a forecaster or a checkpoint model) made for
        ``partition`` of ``asset``: both carry the same attributes."""
        return cls(
            asset=asset,
            partition=partition,
            family=model.family,
            model_uri=model.model_uri or "",
            run_id=model.mlflow_run_id or "",
            sha256=model.sha256,
            gold_uri=model.gold_uri,
            gold_version=int(model.gold_version if model.gold_version is not None else -1),
            trained_partitions=tuple(model.trained_partitions),
            holdout_partitions=tuple(model.holdout_partitions),
            holdout_start=model.holdout_start.isoformat(),
            metrics=dict(model.metrics),
        )

    @property
    def label(self) -> str:
        return f"{self.asset}@{self.partition}"

    def seen(self, rows: pd.DataFrame, spec: DatasetSpec) -> pd.Series:
        """For each gold row, whether this model was fitted on it."""
        partitions = rows[PARTITION_COLUMN].map(lambda value: value.isoformat())
        before = rows[spec.timestamp_column] < pd.Timestamp(self.holdout_start)
        return partitions.isin(set(self.trained_partitions)) & before


def fitted_digest(*parts: Any) -> str:
    """The sha256 of a fitted model's state, for telling identical models apart from new ones."""
    return sha256_hex(pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL))


def experiment_metadata(
    *,
    params: Mapping[str, Any],
    metrics: Mapping[str, float],
    train_rows: int,
    holdout_rows: int,
    holdout_start: pd.Timestamp,
    window: str,
    inputs: list[dict[str, Any]],
    code_version: str,
    commit: str,
    seed: int,
    model_uri: str,
    run_id: str,
    run_url: str | None,
) -> dict[str, dg.MetadataValue]:
    """Hyper-parameters, hold-out metrics (numeric, so the UI plots them), the input tables
    and their versions, code, seed, and where the model and its MLflow run are."""
    return {
        "params": dg.MetadataValue.json(dict(params)),
        **{name: dg.MetadataValue.float(value) for name, value in metrics.items()},
        "train_rows": dg.MetadataValue.int(train_rows),
        "holdout_rows": dg.MetadataValue.int(holdout_rows),
        "holdout_start": dg.MetadataValue.timestamp(holdout_start.to_pydatetime()),
        "training_window": dg.MetadataValue.text(window),
        "input_tables": dg.MetadataValue.json(inputs),
        "code_version": dg.MetadataValue.text(code_version),
        "git_commit": dg.MetadataValue.text(commit),
        "seed": dg.MetadataValue.int(seed),
        "model_uri": dg.MetadataValue.text(model_uri),
        "mlflow_run_id": dg.MetadataValue.text(run_id),
        **({"mlflow_run": dg.MetadataValue.url(run_url)} if run_url else {}),
    }


def window_input(uri: str, version: int, partitions: Sequence[str], rows: Mapping[str, int]) -> dict[str, Any]:
    """The record of one table read: its URI, the Delta version read, and for each partition of
    the window how many rows it held (0 for a partition with no data yet)."""
    return {
        "uri": uri,
        "version": version,
        "partitions": {partition: int(rows.get(partition, 0)) for partition in partitions},
        "missing": [partition for partition in partitions if not rows.get(partition)],
    }


def lineage_version(**lineage: Any) -> dg.DataVersion:
    """A data version that changes exactly when what the model was made from changes."""
    text = json.dumps(lineage, sort_keys=True, default=str)
    return dg.DataVersion(short_digest(text, 20))
