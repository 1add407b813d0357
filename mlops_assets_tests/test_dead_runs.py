"""A run whose worker is killed with SIGKILL ends FAILED in Dagster and in MLflow: the real
daemon, with this repository's dagster.yaml (its run launcher and run monitoring), launches a
training through a code server; the test kills the code server and the worker together while
the MLflow run is open, as when a machine's `mlops dev` is killed or runs out of memory. (A code
server that outlives its worker reports the worker's death itself; here nothing is left to.)"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
import yaml
from mlflow.tracking import MlflowClient

from mlops_assets.devservices import running_process

LOCATION = Path(__file__).parent / "locations" / "killed_training.py"
REPOSITORY = Path(__file__).parents[1]


def wait_for(condition, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.25)
    raise TimeoutError(f"{what} within {timeout:.0f} s; daemon log:\n{log.read_text()[-4000:]}")


def test_a_killed_run_is_marked_failed_and_its_mlflow_run_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = yaml.safe_load((REPOSITORY / "dagster.yaml").read_text())
    # Poll every second rather than every 15 s, so the test waits less; nothing else changes.
    config["run_monitoring"]["poll_interval_seconds"] = 1
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.chdir(tmp_path)  # the instance's storage paths are relative to the working directory
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    environment = {**os.environ, "DAGSTER_HOME": str(tmp_path), "KILLED_TRAINING_MLFLOW_URI": tracking_uri}
    daemon_command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-f", str(LOCATION)]
    log = tmp_path / "daemon.log"
    mlflow = MlflowClient(tracking_uri=tracking_uri)

    def open_mlflow_run():
        experiment = mlflow.get_experiment_by_name("killed_training")
        if experiment is None:
            return None
        runs = mlflow.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'")
        return runs[0] if runs else None

    with (
        dg.DagsterInstance.from_config(str(tmp_path)) as instance,
        running_process(daemon_command, log, environment, cwd=tmp_path, stop_seconds=30),
    ):
        training = wait_for(open_mlflow_run, 180, "the training did not open its MLflow run", log)
        run_id = training.data.tags["dagster.run_id"]
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED
        # A live worker is left alone through several monitoring polls.
        time.sleep(4)
        assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.STARTED

        start = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START)[-1]
        worker = start.dagster_event.pid
        assert worker not in (None, os.getpid())
        code_server = psutil.Process(worker).parent()
        assert "dagster" in " ".join(code_server.cmdline())
        code_server.send_signal(signal.SIGKILL)
        os.kill(worker, signal.SIGKILL)

        wait_for(
            lambda: instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE,
            60,
            "run monitoring did not mark the killed run failed",
            log,
        )
        failure = instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_FAILURE)[-1]
        assert f"worker process {worker} exited" in failure.message
        ended = wait_for(
            lambda: (run := mlflow.get_run(training.info.run_id)).info.status != "RUNNING" and run,
            # The daemon first restarts the killed code server, which then evaluates the sensor.
            120,
            "the MLflow run of the killed run was not ended",
            log,
        )
    assert ended.info.status == "FAILED"
    assert ended.info.end_time is not None
