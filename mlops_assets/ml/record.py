"""The experiment record: what a training materialization says about the model it made."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import dagster as dg
import pandas as pd


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


def lineage_version(**lineage: Any) -> dg.DataVersion:
    """A data version that changes exactly when what the model was made from changes."""
    text = json.dumps(lineage, sort_keys=True, default=str)
    return dg.DataVersion(hashlib.sha256(text.encode()).hexdigest()[:20])
