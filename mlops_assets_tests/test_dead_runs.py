"""A run whose worker is killed with SIGKILL ends FAILED in Dagster and in MLflow: the real
daemon, with this repository's dagster.yaml and the project's dead-run sensors, launches a
training through a code server; the test kills the code server and the worker together while
the MLflow run is open, as when a machine's `mlops dev` is killed or runs out of memory. (A code
server that outlives its worker reports the worker's death itself; here nothing is left to.)"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from mlflow.tracking import MlflowClient

from mlops_assets.defs.runs.failed_runs import GRPC_INFO_TAG, _started_by_a_code_server_here
from mlops_dev.services import running_process

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


def live_worker_ticks(instance: dg.DagsterInstance) -> list:
    """The dead-run sensor's ticks that checked one started run and failed none."""
    states = [state for state in instance.all_instigator_state() if state.name == "fail_runs_of_dead_workers"]
    ticks = [tick for state in states for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id)]
    return [tick for tick in ticks if tick.skip_reason and "1 started run(s) checked, 0 " in tick.skip_reason]


def test_a_killed_run_is_marked_failed_and_its_mlflow_run_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dagster.yaml").write_text((REPOSITORY / "dagster.yaml").read_text())
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
        # A live worker is left alone through two ticks of the sensor that checks workers.
        wait_for(lambda: len(live_worker_ticks(instance)) >= 2, 60, "the dead-run sensor did not tick twice", log)
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
            "the dead-run sensor did not mark the killed run failed",
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


@pytest.mark.parametrize(
    ("info", "judged"),
    [
        ({"host": "localhost", "port": 4000}, True),
        ({"host": "127.0.0.1", "socket": "/tmp/dagster.sock"}, True),
        ({"host": "10.20.30.40", "port": 4000}, False),
        (None, False),
    ],
)
def test_only_workers_started_by_a_code_server_here_are_judged(info: dict | None, judged: bool) -> None:
    """A pod on Kubernetes, or a worker of a code server on another host, cannot be looked up
    in this machine's process table: its run is left to that launcher's own monitoring."""
    tags = {} if info is None else {GRPC_INFO_TAG: json.dumps(info)}
    run = dg.DagsterRun(job_name="training", run_id="a-run", tags=tags)
    assert _started_by_a_code_server_here(run) is judged
