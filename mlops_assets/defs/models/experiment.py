"""The experiment record: what a training materialization says about the model it made."""

from __future__ import annotations

import pickle
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg
import pandas as pd

from mlops_assets.digests import sha256_hex
from mlops_assets.resources.records import ModelRecord


def fitted_digest(*parts: Any) -> str:
    """The sha256 of a fitted model's state, for telling identical models apart from new ones."""
    return sha256_hex(pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL))


def experiment_metadata(
    *,
    record: ModelRecord,
    params: Mapping[str, Any],
    train_rows: int,
    holdout_rows: int,
    window: str,
    inputs: list[dict[str, Any]],
    code_version: str,
    commit: str,
    seed: int,
    run_url: str | None,
) -> dict[str, dg.MetadataValue]:
    """Hyper-parameters, hold-out metrics (numeric, so the UI plots them), the input tables
    and their versions, code, seed, and where the model and its MLflow run are."""
    return {
        "params": dg.MetadataValue.json(dict(params)),
        **{name: dg.MetadataValue.float(value) for name, value in record.metrics.items()},
        "train_rows": dg.MetadataValue.int(train_rows),
        "holdout_rows": dg.MetadataValue.int(holdout_rows),
        "holdout_start": dg.MetadataValue.timestamp(pd.Timestamp(record.holdout_start).to_pydatetime()),
        "training_window": dg.MetadataValue.text(window),
        "input_tables": dg.MetadataValue.json(inputs),
        "gold_version": dg.MetadataValue.int(record.gold_version),
        "code_version": dg.MetadataValue.text(code_version),
        "git_commit": dg.MetadataValue.text(commit),
        "seed": dg.MetadataValue.int(seed),
        "model_uri": dg.MetadataValue.text(record.model_uri),
        "model_sha256": dg.MetadataValue.text(record.sha256),
        "artifact_sha256": dg.MetadataValue.text(record.artifact_sha256),
        "mlflow_run_id": dg.MetadataValue.text(record.run_id),
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
