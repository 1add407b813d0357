"""The run launcher: Dagster's default, with a health check so run monitoring finds dead runs.

A run worker killed outright (SIGKILL, the out-of-memory killer, a machine reboot) writes no
failure event, so its run stays STARTED for ever: it holds a slot of the run queue, its
partition is never retried, and the MLflow run it opened stays RUNNING. Dagster's run
monitoring daemon fails such runs, but only for launchers that can tell a live worker from a
dead one, which the default launcher cannot. This one can, when the worker runs on this
machine: every event a run writes names the process that wrote it, so the run's worker is the
process that wrote its start event.
"""

from __future__ import annotations

import json
import socket

import dagster as dg
import psutil

# Dagster's launcher health types have no public home; run monitoring reads exactly these.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

# The tag in which the default launcher records the code server that started the run's worker.
GRPC_INFO_TAG = "dagster/grpc_info"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}


class LocalRunLauncher(dg.DefaultRunLauncher):
    """Launches runs on the code server like :class:`dagster.DefaultRunLauncher`, and reports a
    run's worker as failed once the process that started the run has exited.

    A worker on another machine (a code server reached over the network) cannot be checked
    from here and is reported as running; deploy with a launcher that checks its own workers
    there (the Kubernetes launcher does).
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        if not _started_on_this_machine(run):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run's worker is on another machine")
        starts = self._instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
        if not starts or starts[-1].dagster_event is None or starts[-1].dagster_event.pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the run has not recorded its worker yet")
        start = starts[-1]
        pid = start.dagster_event.pid
        if _alive_since(pid, start.timestamp):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {pid} is running")
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"worker process {pid} exited without ending the run (killed or crashed)"
        )


def _started_on_this_machine(run: dg.DagsterRun) -> bool:
    info = run.tags.get(GRPC_INFO_TAG)
    if info is None:
        # Started without a code server (`dagster job execute`, `materialize`): the worker was
        # the launching process, on the machine whose daemon monitors it.
        return True
    origin = json.loads(info)
    return "socket" in origin or origin.get("host") in LOCAL_HOSTS


def _alive_since(pid: int, started: float) -> bool:
    """Whether process ``pid`` is running and is the one that existed at ``started``, not a new
    process that was given the same number later."""
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and process.create_time() <= started + 1
    except psutil.NoSuchProcess:
        return False
