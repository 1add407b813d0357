"""The MLflow tracking store on a fresh machine: runs that start together create it once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

# One run's first touch of the store: prepare it, then create an experiment and log a run.
FIRST_RUN = """
import sys, mlflow
from mlops_assets.resources.mlflow_tracking import MlflowTracking
tracking = MlflowTracking(tracking_uri=sys.argv[1])
tracking.prepare()
mlflow.set_tracking_uri(tracking.tracking_uri)
with mlflow.start_run(experiment_id=tracking._experiment_id("race")):
    mlflow.log_metric("mae", 0.1)
"""


def test_runs_starting_together_on_a_fresh_store_all_succeed(tmp_path: Path) -> None:
    """Without the lock, most of four processes creating a fresh SQLite store at once fail in
    MLflow's schema migration (seen here: 10 of 12 processes over three rounds)."""
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlflow.db'}"
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", FIRST_RUN, uri], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=180)[0] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], "\n".join(outputs)
    client = mlflow.MlflowClient(tracking_uri=uri)
    assert len(client.search_runs([client.get_experiment_by_name("race").experiment_id])) == 4


def test_a_model_is_logged_with_only_the_types_it_may_hold_trusted(tmp_path: Path) -> None:
    """A model of scikit-learn parts is logged and loads back; one holding a function of another
    module (code skops would run on load) is refused."""
    import os

    import numpy as np
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    from mlops_assets.resources.mlflow_tracking import log_sklearn_model

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        rows, target = np.arange(20.0).reshape(10, 2), np.arange(10.0)
        plain = make_pipeline(StandardScaler(), Ridge()).fit(rows, target)
        foreign = make_pipeline(FunctionTransformer(os.path.abspath), Ridge())
        experiment = mlflow.create_experiment("trusted-types", artifact_location=(tmp_path / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_sklearn_model(plain)
            with pytest.raises(ValueError, match=r"outside sklearn\., numpy\., scipy\., mlops_assets\.: \['posixpath"):
                log_sklearn_model(foreign)
        loaded = mlflow.sklearn.load_model(info.uri)
        assert np.allclose(loaded.predict(rows), plain.predict(rows))
    finally:
        mlflow.set_tracking_uri(None)
