"""The Dagster definitions: every bundled dataset's assets, checks, sensor and job, with
the resources of the active profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, load_bundled_specs
from mlops_assets.lakehouse.bronze import build_bronze_asset
from mlops_assets.lakehouse.gold import build_gold_asset
from mlops_assets.lakehouse.silver import build_silver_asset
from mlops_assets.landing.assets import build_landing_asset
from mlops_assets.landing.queue_sensor import build_event_sensor
from mlops_assets.landing.sensors import build_landing_sensor
from mlops_assets.ml.forecaster import build_forecaster_asset
from mlops_assets.profiles import Arrivals, build_profile
from mlops_assets.serving.predictions import build_predictions_asset


def lifecycle_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_lifecycle"


def rebuild_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_rebuild"


def dataset_definitions(spec: DatasetSpec, arrivals: Arrivals = "poll") -> dg.Definitions:
    """Everything one dataset spec declares, from landing files to predictions."""
    keys = DatasetKeys(spec)
    lifecycle = dg.define_asset_job(
        lifecycle_job_name(spec),
        selection=dg.AssetSelection.assets(keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.predictions),
        description=f"One day of {spec.name}, end to end: bronze, silver with its checks, gold, model, predictions.",
    )
    rebuild = dg.define_asset_job(
        rebuild_job_name(spec),
        selection=dg.AssetSelection.assets(keys.silver, keys.gold, keys.forecaster, keys.predictions),
        description=(
            f"Rebuild days of {spec.name} from bronze onwards, after a change of rules, features or "
            "model; launch it as a backfill over the days to rebuild."
        ),
    )
    return dg.Definitions(
        assets=[
            build_landing_asset(spec),
            build_bronze_asset(spec),
            build_silver_asset(spec),
            build_gold_asset(spec),
            build_forecaster_asset(spec),
            build_predictions_asset(spec),
        ],
        jobs=[lifecycle, rebuild],
        sensors=[build_landing_sensor(spec)] if arrivals == "poll" else [],
    )


def build_definitions(
    specs: Sequence[DatasetSpec] | None = None,
    resources: Mapping[str, Any] | None = None,
    arrivals: Arrivals | None = None,
) -> dg.Definitions:
    """The definitions of ``specs`` (default: the bundled ones) on ``resources`` (default: the
    active profile's), with polling sensors per dataset or one queue sensor for all."""
    if resources is None:
        profile = build_profile()
        resources, arrivals = profile.resources, arrivals or profile.arrivals
    arrivals = arrivals or "poll"
    specs = list(specs or load_bundled_specs())
    automation = dg.AutomationConditionSensorDefinition(
        "lakehouse_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=15,
        # One run per day holding silver through predictions, rather than a backfill that
        # launches each layer only after the one before it finished.
        emit_backfills=False,
        description="Pushes each updated bronze day through silver, gold, the model and predictions.",
    )
    sensors = [automation, *([build_event_sensor(specs)] if arrivals == "queue" else [])]
    return dg.Definitions.merge(
        *(dataset_definitions(spec, arrivals) for spec in specs),
        dg.Definitions(sensors=sensors, resources=dict(resources)),
    )


defs = build_definitions()
