"""A code location for test_dead_runs.py: the project's failed-run sensor beside a training that
holds its MLflow run open until it is killed, and a sensor that starts that training once.

The training asset is made for the test (a real forecaster finishes too fast to be killed
while its MLflow run is open); the sensors that fail runs of dead workers and close their
MLflow runs are the project's own.
"""

import os
import time

import dagster as dg

from mlops_assets.defs.runs.failed_runs import build_dead_run_sensor, build_failed_run_sensor
from mlops_assets.resources.mlflow_tracking import MlflowTracking


@dg.asset
def long_training(context: dg.AssetExecutionContext, mlflow_tracking: MlflowTracking) -> None:
    with mlflow_tracking.start_run(context, experiment="killed_training"):
        time.sleep(600)


training_job = dg.define_asset_job("long_training_job", selection=[long_training])


@dg.sensor(job=training_job, default_status=dg.DefaultSensorStatus.RUNNING, minimum_interval_seconds=1)
def start_training_once() -> dg.RunRequest:
    return dg.RunRequest(run_key="once")


defs = dg.Definitions(
    assets=[long_training],
    jobs=[training_job],
    sensors=[start_training_once, build_dead_run_sensor(), build_failed_run_sensor()],
    resources={"mlflow_tracking": MlflowTracking(tracking_uri=os.environ["KILLED_TRAINING_MLFLOW_URI"])},
    # As in the project's definitions: the steps run in the run worker itself.
    executor=dg.in_process_executor,
)
