"""Loading a dataset's history: years of landing files in a few runs, not one run per partition.

The data layers run once over the whole range: bronze, silver and gold each process
every partition of the range in one step (their single-run backfill policy), so a
history of thousands of partitions costs one read and one Delta commit per layer. The
models then run partition by partition, oldest first, because each partition's
registry decision and predictions build on the partition before it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from mlops_assets.components import ingest_job_name, lifecycle_job_name
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.landing_zone import LandingZone

QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@dataclass
class HistoryLoad:
    """What a history load did: the range, the data run, and the partitions whose model runs failed."""

    first: dt.date
    last: dt.date
    partitions: int
    data_run_id: str = ""
    model_partitions: int = 0
    failed: list[str] = field(default_factory=list)


def landed_range(landing: LandingZone, spec: DatasetSpec) -> tuple[dt.date, dt.date] | None:
    """The first and last partition that landing files exist for, or None when there are none."""
    partitions = {file.partition for file in landing.list_dataset(spec)}
    return (min(partitions), max(partitions)) if partitions else None


def load_history(
    spec: DatasetSpec,
    resources: Mapping[str, Any],
    instance: dg.DagsterInstance,
    first: dt.date,
    last: dt.date,
    models: bool = True,
    progress: Callable[[str], None] = print,
) -> HistoryLoad:
    """Ingest and refine the partitions ``first``..``last`` in one run, then (with ``models``) train,
    decide, score and monitor each partition in order."""
    keys = DatasetKeys(spec)
    first, last = spec.grain.floor(first), spec.grain.floor(last)
    partitions = spec.grain.between(first, last)
    defs = build_definitions([spec], resources)
    load = HistoryLoad(first=first, last=last, partitions=len(partitions))
    progress(f"history: {len(partitions)} {spec.grain.noun}(s) {first}..{last}: bronze, silver and gold in one run")
    data = defs.resolve_job_def(ingest_job_name(spec)).execute_in_process(
        instance=instance,
        tags={RANGE_START: first.isoformat(), RANGE_END: last.isoformat(), "mlops/history": spec.name},
        run_config=QUIET_RUN_CONFIG,
        raise_on_error=False,
    )
    load.data_run_id = data.run_id
    if not data.success:
        load.failed.append(f"{first}..{last} (data layers, run {data.run_id})")
        progress(f"history: the data run {data.run_id} failed; see it in the Dagster UI")
        return load
    built = sorted(instance.get_materialized_partitions(keys.gold) & {key.isoformat() for key in partitions})
    progress(f"history: gold holds {len(built)} {spec.grain.noun}(s) with data")
    if not models:
        return load
    job = defs.resolve_job_def(lifecycle_job_name(spec))
    for index, partition in enumerate(built, start=1):
        run = job.execute_in_process(
            partition_key=partition,
            instance=instance,
            tags={"mlops/history": spec.name},
            run_config=QUIET_RUN_CONFIG,
            raise_on_error=False,
        )
        load.model_partitions += 1
        if not run.success:
            load.failed.append(partition)
        if not run.success or index == len(built) or index % max(1, len(built) // 20) == 0:
            state = "ok" if run.success else f"FAILED (run {run.run_id})"
            progress(f"history: models [{index}/{len(built)}] {partition} {state}")
    return load
