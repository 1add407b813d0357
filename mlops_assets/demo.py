"""The end-to-end demo: simulated arrivals pushed through the whole graph, then a summary."""

from __future__ import annotations

import math
import shutil
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions, lifecycle_job_name
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.storage.landing_zone import LandingZone

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass
class LayerSummary:
    asset: str
    partitions: int
    rows: int | None


@dataclass
class DemoSummary:
    """What the demo built, layer by layer."""

    dataset: str
    layers: list[LayerSummary] = field(default_factory=list)
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    models: list[dict[str, Any]] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"Dataset {self.dataset}", "", f"{'asset':38} {'partitions':>10} {'rows':>10}"]
        for layer in self.layers:
            rows = "" if layer.rows is None else f"{layer.rows:,}"
            lines.append(f"{layer.asset:38} {layer.partitions:>10} {rows:>10}")
        lines += ["", f"Quarantined files: {len(self.quarantined)}"]
        lines += [f"  {entry['path']}: {entry['reason']} ({entry['records']} records)" for entry in self.quarantined]
        lines += [
            "",
            f"Models: {len(self.models)}",
            f"  {'day':10} {'mae':>8} {'rmse':>8} {'wape':>7} {'skill':>7}  mlflow run",
        ]
        for model in self.models:
            lines.append(
                f"  {model['day']:10} {model['mae']:8.4f} {model['rmse']:8.4f} {model['wape']:7.3f} "
                f"{model.get('skill', float('nan')):7.3f}  {model['mlflow_run_id']}"
            )
        if self.models:
            skills = [m["skill"] for m in self.models if not math.isnan(m.get("skill", math.nan))]
            lines.append(
                f"  mean hold-out MAE {statistics.fmean(m['mae'] for m in self.models):.4f}, "
                f"mean skill vs seasonal naive {statistics.fmean(skills) if skills else math.nan:.3f}"
            )
        return "\n".join(lines)


def reset_state(home: Path, instance: dg.DagsterInstance) -> None:
    """Delete the local profile's data and the instance's run history."""
    if home.exists():
        shutil.rmtree(home)
    instance.wipe()


def run_arrivals(
    spec: DatasetSpec,
    resources: Mapping[str, Any],
    instance: dg.DagsterInstance,
    progress: Callable[[str], None] = print,
) -> list[str]:
    """Evaluate the landing sensor once, as the daemon would, and run the lifecycle job for
    every day it requests, oldest first (a day's features reach into the day before)."""
    defs = build_definitions([spec], resources)
    sensor = defs.resolve_sensor_def(f"{spec.name}_landing_sensor")
    with dg.build_sensor_context(instance=instance, resources=dict(resources)) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        progress(f"landing sensor: {result.skip_message}")
        return []
    requests = sorted(result.run_requests, key=lambda request: request.partition_key)
    progress(f"landing sensor: {len(requests)} day(s) with new files")
    job = defs.resolve_job_def(lifecycle_job_name(spec))
    failed = []
    for index, request in enumerate(requests, start=1):
        run = job.execute_in_process(
            partition_key=request.partition_key,
            instance=instance,
            tags={**request.tags, "dagster/sensor_name": sensor.name},
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        status = "ok" if run.success else "FAILED"
        if not run.success:
            failed.append(request.partition_key)
        progress(f"[{index}/{len(requests)}] {request.partition_key}: run {run.run_id[:8]} {status}")
    return failed


def summarize(spec: DatasetSpec, resources: Mapping[str, Any], instance: dg.DagsterInstance) -> DemoSummary:
    keys = DatasetKeys(spec)
    lake: DeltaLake = resources["lake"]
    landing: LandingZone = resources["landing"]
    summary = DemoSummary(dataset=spec.name)
    landing_days = {file.event_date for file in landing.list_dataset(spec)}
    summary.layers.append(LayerSummary(keys.landing.to_user_string(), len(landing_days), None))
    for key in (keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.predictions):
        materialized = instance.get_materialized_partitions(key)
        rows = lake.count_rows(lake.table_uri(*keys.table(key))) if key != keys.forecaster else None
        summary.layers.append(LayerSummary(key.to_user_string(), len(materialized), rows))
    summary.quarantined = landing.quarantined(spec)
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=keys.forecaster), limit=10_000).records
    latest: dict[str, dict[str, Any]] = {}
    for record in sorted(records, key=lambda record: record.storage_id):
        materialization = record.asset_materialization
        values = {name: value.value for name, value in materialization.metadata.items()}
        latest[materialization.partition] = {"day": materialization.partition, **values}
    summary.models = [latest[day] for day in sorted(latest)]
    return summary
