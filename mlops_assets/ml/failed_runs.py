"""What a failed Dagster run leaves open in MLflow is closed.

A run that fails by raising ends its MLflow run itself. A run whose worker was killed cannot:
Dagster's run monitoring marks it failed (mlops_assets/run_launcher.py), and this sensor then
ends the MLflow runs it left RUNNING, so the tracking server shows the same outcome as Dagster.
"""

from __future__ import annotations

import dagster as dg

from mlops_assets.ml.tracking import MlflowTracking


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
