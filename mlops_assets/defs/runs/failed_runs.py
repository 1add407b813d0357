"""Runs whose worker died are failed, and what they left open in MLflow is closed.

A run worker killed outright (SIGKILL, the out-of-memory killer, a machine reboot) writes no
failure event, so its run stays STARTED for ever: it holds a slot of the run queue, its
partition is never retried, and the MLflow run it opened stays RUNNING. On Kubernetes,
Dagster's run monitoring asks the K8sRunLauncher about each run's pod and fails dead ones. The
default launcher, which starts run workers as processes of the code server, cannot answer, so
here a sensor in the code server looks at those processes itself: every event a run writes
names the process that wrote it, so the run's worker is the process that wrote its start event.
A second sensor then ends the MLflow runs of every failed run, however it failed.
"""

from __future__ import annotations

import json
import socket

import dagster as dg
import psutil

from mlops_assets.resources.mlflow_tracking import MlflowTracking

# The tag in which the default launcher records the code server that started the run's worker.
GRPC_INFO_TAG = ".dagster/grpc_info"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", socket.gethostname()}


def dead_worker(instance: dg.DagsterInstance, run: dg.DagsterRun) -> str | None:
    """Why ``run``'s worker is dead, or None while it runs (or cannot be checked from here: a
    run whose worker was not started by a code server on this machine)."""
    if not _started_by_a_code_server_here(run):
        return None
    starts = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_START)
    if not starts or starts[-1].dagster_event is None or starts[-1].dagster_event.pid is None:
        return None
    start = starts[-1]
    pid = start.dagster_event.pid
    if _alive_since(pid, start.timestamp):
        return None
    return f"worker process {pid} exited without ending the run (killed or crashed)"


def _started_by_a_code_server_here(run: dg.DagsterRun) -> bool:
    info = run.tags.get(GRPC_INFO_TAG)
    if info is None:
        return False
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


def build_dead_run_sensor() -> dg.SensorDefinition:
    """Marks FAILED the started runs whose worker process on this machine has exited."""

    @dg.sensor(
        name="fail_runs_of_dead_workers",
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Marks FAILED the runs whose worker process, started by this machine's code server, exited "
            "without ending them (killed with SIGKILL, by the out-of-memory killer or a reboot)."
        ),
    )
    def fail_runs_of_dead_workers(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        started = context.instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.STARTED]))
        failed = []
        for run in started:
            reason = dead_worker(context.instance, run)
            if reason is not None:
                context.instance.report_run_failed(run, message=reason)
                failed.append(run.run_id)
        if failed:
            context.log.info(f"marked {len(failed)} run(s) of dead workers failed: {', '.join(failed)}")
        return dg.SkipReason(f"{len(started)} started run(s) checked, {len(failed)} with a dead worker failed")

    return fail_runs_of_dead_workers


def build_failed_run_sensor() -> dg.RunFailureSensorDefinition:
    """Ends, as FAILED, the MLflow runs a failed Dagster run of this code location left running."""

    @dg.run_failure_sensor(
        name="end_mlflow_runs_of_failed_runs",
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Ends as FAILED the MLflow runs that a failed (for example killed) Dagster run left RUNNING.",
    )
    def end_mlflow_runs_of_failed_runs(context: dg.RunFailureSensorContext, mlflow_tracking: MlflowTracking) -> None:
        run_id = context.dagster_run.run_id
        ended = mlflow_tracking.end_runs_of(run_id)
        if ended:
            context.log.info(f"run {run_id} failed with MLflow runs still open; ended as FAILED: {', '.join(ended)}")

    return end_mlflow_runs_of_failed_runs
