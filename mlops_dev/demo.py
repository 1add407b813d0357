"""The end-to-end demo: simulated arrivals pushed through the whole graph, then a summary."""

from __future__ import annotations

import math
import shutil
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets.components import ingest_job_name, lifecycle_job_name
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.retraining import retrain_job_name
from mlops_assets.defs.registry.decisions import decision_for, registered_name
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.landing_zone import LandingZone
from mlops_assets.resources.model_registry import CHALLENGER, CHAMPION, PREVIOUS

# Failures are summarised per day below (and kept whole in the run history), so the
# console shows no step logs.
QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class Stopwatch:
    """Wall-clock seconds spent in each phase of the demo, summed over its days."""

    seconds: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - began

    def render(self) -> str:
        phases = ", ".join(f"{name} {seconds:.1f} s" for name, seconds in self.seconds.items())
        return f"Time: {phases}; total {time.perf_counter() - self.started:.1f} s"


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
    registry: list[str] = field(default_factory=list)

    def render(self) -> str:
        lines = [f"Dataset {self.dataset}", "", f"{'asset':38} {'partitions':>10} {'rows':>10}"]
        for layer in self.layers:
            rows = "" if layer.rows is None else f"{layer.rows:,}"
            lines.append(f"{layer.asset:38} {layer.partitions:>10} {rows:>10}")
        lines += ["", f"Quarantined files: {len(self.quarantined)}"]
        lines += [f"  {entry['path']}: {entry['reason']} ({entry['records']} records)" for entry in self.quarantined]
        lines += [
            "",
            f"Forecasters: {len(self.models)} (hold-out error; skill = 1 - mae / mae of the seasonal-naive forecast)",
            f"  {'partition':10} {'mae':>8} {'naive':>8} {'wape':>7} {'skill':>7}  gate",
        ]
        for model in self.models:
            lines.append(
                f"  {model['day']:10} {model['mae']:8.4f} {model.get('mae_seasonal_naive', math.nan):8.4f} "
                f"{model['wape']:7.3f} {model.get('skill', math.nan):7.3f}  {model.get('gate', '')}"
            )
        if self.models:
            skills = [m["skill"] for m in self.models if not math.isnan(m.get("skill", math.nan))]
            passed = sum(1 for m in self.models if m.get("gate", "").startswith("passed"))
            lines.append(
                f"  mean hold-out MAE {statistics.fmean(m['mae'] for m in self.models):.4f}, "
                f"mean skill vs seasonal naive {statistics.fmean(skills) if skills else math.nan:.3f}; "
                f"{passed} of {len(self.models)} passed the gate"
            )
        lines += ["", "Registry:", *(f"  {line}" for line in self.registry)]
        return "\n".join(lines)


def reset_state(home: Path, instance: dg.DagsterInstance) -> None:
    """Delete the local profile's data, the instance's runs and its assets' history.

    Runs and asset records go one by one through the instance's public API; wiping the whole
    instance would also drop the slots of its concurrency pools (on SQLite), and every step in
    a pool would then wait for ever.
    """
    if home.exists():
        shutil.rmtree(home)
    for record in instance.get_run_records():
        instance.delete_run(record.dagster_run.run_id)
    instance.wipe_assets(list(instance.get_asset_keys()))


def run_arrivals(
    spec: DatasetSpec,
    resources: Mapping[str, Any],
    instance: dg.DagsterInstance,
    progress: Callable[[str], None] = print,
    stopwatch: Stopwatch | None = None,
) -> list[str]:
    """Evaluate the landing sensor once, as the daemon would, and run the lifecycle job for
    every partition it requests, oldest first (a partition's features and the champion that
    scores it come from the partitions before it). ``stopwatch`` sums the time of each phase
    (sensor, ingest, lifecycle, checkpoint) over the partitions."""
    stopwatch = stopwatch or Stopwatch()
    defs = build_definitions([spec], resources)
    sensor = defs.resolve_sensor_def(f"{spec.name}_landing_sensor")
    with stopwatch.phase("sensor"), dg.build_sensor_context(instance=instance, resources=dict(resources)) as context:
        result = sensor(context)
    if isinstance(result, dg.SkipReason):
        progress(f"landing sensor: {result.skip_message}")
        return []
    requests = sorted(result.run_requests, key=lambda request: request.partition_key)
    progress(f"landing sensor: {len(requests)} {spec.grain.noun}(s) with new files")
    failed = []
    for index, request in enumerate(requests, start=1):
        tags = {**request.tags, "dagster/sensor_name": sensor.name}
        succeeded, outcome = run_partition(defs, spec, request.partition_key, instance, tags, stopwatch)
        if not succeeded:
            failed.append(request.partition_key)
        progress(f"[{index}/{len(requests)}] {request.partition_key}: {outcome}")
    return failed


def run_partition(
    defs: dg.Definitions,
    spec: DatasetSpec,
    partition: str,
    instance: dg.DagsterInstance,
    tags: Mapping[str, str] | None = None,
    stopwatch: Stopwatch | None = None,
) -> tuple[bool, str]:
    """Run one partition's whole chain in this process: the ingest job, the lifecycle job, then
    the checkpoint model and its decision. Returns whether it all succeeded and what the
    registry decided (or why it failed)."""
    stopwatch = stopwatch or Stopwatch()
    keys = DatasetKeys(spec)
    with stopwatch.phase("ingest"):
        data = defs.resolve_job_def(ingest_job_name(spec)).execute_in_process(
            partition_key=partition,
            instance=instance,
            tags=dict(tags or {}),
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
    if not data.success:
        return False, _failure(data)
    with stopwatch.phase("lifecycle"):
        lifecycle = defs.resolve_job_def(lifecycle_job_name(spec)).execute_in_process(
            partition_key=partition, instance=instance, run_config=QUIET_RUN_CONFIG, raise_on_error=False
        )
    # The checkpoint model continues from the partition before, so its partitions run in order.
    with stopwatch.phase("checkpoint"):
        checkpoint = defs.resolve_job_def(retrain_job_name(spec)).execute_in_process(
            partition_key=partition,
            instance=instance,
            asset_selection=[keys.checkpoint, keys.decision(keys.checkpoint)],
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
    statuses = [_status(lifecycle, keys.decision(keys.forecaster)), _status(checkpoint, keys.decision(keys.checkpoint))]
    succeeded = not any(status.startswith("FAILED") for status in statuses)
    return succeeded, f"forecaster {statuses[0]}; checkpoint {statuses[1]}"


def _status(run: dg.ExecuteInProcessResult, decision_key: dg.AssetKey) -> str:
    """The registry's decision on the run's candidate, or why the run failed."""
    if not run.success:
        return _failure(run)
    decisions = [
        event.materialization.metadata["summary"].value
        for event in run.get_asset_materialization_events()
        if event.asset_key == decision_key
    ]
    return decisions[0] if decisions else "no decision"


def _failure(run: dg.ExecuteInProcessResult) -> str:
    """FAILED, with the run's first failing step and its error."""
    failures = [
        (event.step_key, event.step_failure_data.error)
        for event in run.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    if not failures:
        return f"FAILED (run {run.run_id[:8]})"
    step, error = failures[0]
    return f"FAILED in {step}: {error.message.strip().splitlines()[0]}"


def summarize(spec: DatasetSpec, resources: Mapping[str, Any], instance: dg.DagsterInstance) -> DemoSummary:
    keys = DatasetKeys(spec)
    lake: DeltaLake = resources["lake"]
    landing: LandingZone = resources["landing"]
    summary = DemoSummary(dataset=spec.name)
    landing_partitions = {file.partition for file in landing.list_dataset(spec)}
    summary.layers.append(LayerSummary(keys.landing.to_user_string(), len(landing_partitions), None))
    tables = (keys.bronze, keys.silver, keys.gold, keys.predictions)
    layers = (*tables[:3], keys.forecaster, keys.checkpoint, *(keys.decision(key) for key in keys.candidates))
    for key in (*layers, keys.predictions, keys.drift):
        materialized = instance.get_materialized_partitions(key)
        rows = lake.count_rows(lake.table_uri(*keys.table(key))) if key in tables else None
        summary.layers.append(LayerSummary(key.to_user_string(), len(materialized), rows))
    summary.quarantined = landing.quarantined(spec)
    decision_key = keys.decision(keys.forecaster)
    for partition in sorted(instance.get_materialized_partitions(keys.forecaster)):
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=keys.forecaster, asset_partitions=[partition]), limit=1
        ).records
        values = {name: value.value for name, value in record.asset_materialization.metadata.items()}
        decision = decision_for(instance, decision_key, partition)
        summary.models.append({"day": partition, **values, "gate": decision.summary if decision else ""})
    registry = resources["mlflow_tracking"].registry()
    for candidate in keys.candidates:
        name = registered_name(spec, candidate)
        versions = registry.versions(name)
        summary.registry.append(f"{name}: {len(versions)} version(s) registered")
        for alias in (CHAMPION, PREVIOUS, CHALLENGER):
            holder = registry.alias(name, alias)
            if holder is not None:
                summary.registry.append(
                    f"  @{alias}: v{holder.version} from {holder.tag('asset_key')}@{holder.tag('partition')}"
                )
    return summary
