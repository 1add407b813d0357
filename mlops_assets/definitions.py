"""The Dagster definitions: every bundled dataset's assets, checks, sensor and job, with
the resources of the active profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, load_specs
from mlops_assets.lakehouse.bronze import build_bronze_asset
from mlops_assets.lakehouse.gold import build_gold_asset
from mlops_assets.lakehouse.silver import build_silver_asset
from mlops_assets.landing.assets import build_landing_asset
from mlops_assets.landing.queue_sensor import build_event_sensor
from mlops_assets.landing.sensors import build_landing_sensor
from mlops_assets.ml.checkpoint import build_checkpoint_asset
from mlops_assets.ml.failed_runs import build_dead_run_sensor, build_failed_run_sensor
from mlops_assets.ml.forecaster import build_forecaster_asset
from mlops_assets.ml.release import build_gate_check, build_release_asset
from mlops_assets.ml.retraining import (
    build_drift_sensor,
    build_nightly_retrain_schedule,
    build_retrain_job,
)
from mlops_assets.ml.tuning import build_tuning_asset
from mlops_assets.monitoring.assets import build_drift_asset
from mlops_assets.profiles import Arrivals, build_profile, extra_spec_locations, nightly_jobs_running
from mlops_assets.serving.predictions import build_predictions_asset


def lifecycle_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_lifecycle"


def rebuild_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_rebuild"


def dataset_definitions(spec: DatasetSpec, arrivals: Arrivals = "poll", nightly: bool = True) -> dg.Definitions:
    """Everything one dataset spec declares, from landing files to drift monitoring; ``nightly``
    says whether the nightly retraining starts running."""
    keys = DatasetKeys(spec)
    lifecycle = dg.define_asset_job(
        lifecycle_job_name(spec),
        selection=dg.AssetSelection.assets(
            keys.bronze,
            keys.silver,
            keys.gold,
            keys.forecaster,
            keys.release(keys.forecaster),
            keys.predictions,
            keys.drift,
        ),
        description=(
            f"One {spec.grain.noun} of {spec.name}, end to end: bronze, silver with its checks, gold, the "
            "forecaster and the registry's decision on it, predictions and drift. The checkpoint model, "
            f"which continues from the {spec.grain.noun} before, runs in {spec.name}_retrain."
        ),
    )
    rebuild = dg.define_asset_job(
        rebuild_job_name(spec),
        selection=dg.AssetSelection.assets(
            keys.silver, keys.gold, keys.forecaster, keys.release(keys.forecaster), keys.predictions, keys.drift
        ),
        description=(
            f"Rebuild partitions of {spec.name} from bronze onwards, after a change of rules, features or "
            "model; launch it as a backfill over the partitions to rebuild."
        ),
    )
    assets = [
        build_landing_asset(spec),
        build_bronze_asset(spec),
        build_silver_asset(spec),
        build_gold_asset(spec),
        build_forecaster_asset(spec),
        build_checkpoint_asset(spec),
        *(build_release_asset(spec, candidate) for candidate in keys.candidates),
        build_predictions_asset(spec),
        build_drift_asset(spec),
        *([build_tuning_asset(spec)] if spec.tuning is not None else []),
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[build_gate_check(spec, candidate) for candidate in keys.candidates],
        jobs=[lifecycle, rebuild, build_retrain_job(spec)],
        schedules=[build_nightly_retrain_schedule(spec, running=nightly)],
        sensors=[
            *([build_landing_sensor(spec)] if arrivals == "poll" else []),
            build_drift_sensor(spec),
        ],
    )


def build_definitions(
    specs: Sequence[DatasetSpec] | None = None,
    resources: Mapping[str, Any] | None = None,
    arrivals: Arrivals | None = None,
) -> dg.Definitions:
    """The definitions of ``specs`` (default: the bundled ones and those ``MLOPS_SPECS`` names) on
    ``resources`` (default: the active profile's), with polling sensors per dataset or one queue
    sensor for all."""
    nightly = nightly_jobs_running()
    if resources is None:
        profile = build_profile()
        resources, arrivals = profile.resources, arrivals or profile.arrivals
    arrivals = arrivals or "poll"
    specs = list(specs or load_specs(extra_spec_locations()))
    automation = dg.AutomationConditionSensorDefinition(
        "lakehouse_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        # The daemon's own loop (5 s) is the floor: a chain of partitions advances a tick at a time.
        minimum_interval_seconds=5,
        # One run per partition holding silver through predictions, rather than a backfill that
        # launches each layer only after the one before it finished.
        emit_backfills=False,
        # The conditions know which partition holds a partition's own data
        # (policies.OwnPartitionReady), which only user code can evaluate.
        use_user_code_server=True,
        description=(
            "Pushes each updated bronze partition through silver, gold, the models, the registry's decisions, "
            "predictions and drift."
        ),
    )
    sensors = [
        automation,
        build_dead_run_sensor(),
        build_failed_run_sensor(),
        *([build_event_sensor(specs)] if arrivals == "queue" else []),
    ]
    return dg.Definitions.merge(
        *(dataset_definitions(spec, arrivals, nightly) for spec in specs),
        # A partition's steps depend on each other and each is CPU-bound: in one process they
        # run as fast as in one process each, without paying a Python start-up per step.
        dg.Definitions(sensors=sensors, resources=dict(resources), executor=dg.in_process_executor),
    )


defs = build_definitions()
