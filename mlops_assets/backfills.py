"""The scheduled backfill: every night, heal the days of the last week that are missing or failed.

A day needs healing in an asset when bronze holds data for it but the asset's latest
attempt failed or it was never built. All such days of all layers go into one Dagster
backfill, which runs each single-run range of the data layers as one run and the
model days after them.

Dagster schedules launch runs, not backfills, so this is a sensor that acts once per
tick of the spec's backfill cron (in the dataset's time zone) and keeps the tick it
handled last in its cursor.
"""

import datetime as dt
from collections.abc import Mapping, Sequence
from zoneinfo import ZoneInfo

import dagster as dg
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.events import AssetKeyPartitionKey
from dagster._utils.schedules import reverse_cron_string_iterator

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.partitions import daily_partitions, days_between

BACKFILL_TAG = "mlops/backfill_reason"


def healed_assets(spec: DatasetSpec) -> list[dg.AssetKey]:
    """The daily assets the backfill keeps complete, upstream first."""
    keys = DatasetKeys(spec)
    return [keys.silver, keys.gold, keys.forecaster, keys.predictions, keys.drift]


def find_gaps(instance: dg.DagsterInstance, spec: DatasetSpec, days: Sequence[dt.date]) -> dict[dg.AssetKey, list[str]]:
    """Per asset, the ``days`` (partition keys) with bronze data whose latest attempt failed or
    that were never built; bronze days whose ingestion failed are included too."""
    keys = DatasetKeys(spec)
    partitions = daily_partitions(spec)
    wanted = [day.isoformat() for day in days]
    bronze = instance.get_status_by_partition(keys.bronze, wanted, partitions) or {}
    landed = [day for day in wanted if bronze.get(day) == dg.AssetPartitionStatus.MATERIALIZED]
    gaps: dict[dg.AssetKey, list[str]] = {}
    failed_bronze = [day for day in wanted if bronze.get(day) == dg.AssetPartitionStatus.FAILED]
    if failed_bronze:
        gaps[keys.bronze] = failed_bronze
    for key in healed_assets(spec):
        status = instance.get_status_by_partition(key, landed, partitions) or {}
        missing = [
            day
            for day in landed
            if status.get(day) not in (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)
        ]
        if missing:
            gaps[key] = missing
    return gaps


def backfill_request(
    gaps: Mapping[dg.AssetKey, Sequence[str]], asset_graph: BaseAssetGraph, reason: str
) -> dg.RunRequest:
    """One backfill over every gap."""
    targets = {AssetKeyPartitionKey(key, day) for key, days in gaps.items() for day in days}
    subset = AssetGraphSubset.from_asset_partition_set(targets, asset_graph)
    return dg.RunRequest.for_asset_graph_subset(subset, tags={BACKFILL_TAG: reason})


def due_tick(cron: str, timezone: str, now: dt.datetime) -> dt.datetime:
    """The latest tick of ``cron`` in ``timezone`` at or before ``now``."""
    return next(reverse_cron_string_iterator(now.timestamp(), cron, timezone))


def build_gap_backfill_sensor(spec: DatasetSpec) -> dg.SensorDefinition:
    schedules = spec.schedules

    @dg.sensor(
        name=f"{spec.name}_gap_backfill",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"At '{schedules.backfill_cron}' {schedules.timezone} time, launches one backfill of the "
            f"{spec.name} days of the last {schedules.backfill_days} that are missing or failed."
        ),
    )
    def gap_backfill(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = dt.datetime.now(ZoneInfo(schedules.timezone))
        tick = due_tick(schedules.backfill_cron, schedules.timezone, now)
        if context.cursor and tick.timestamp() <= float(context.cursor):
            return dg.SensorResult(skip_reason=f"tick {tick.isoformat()} already handled")
        today = tick.astimezone(ZoneInfo(schedules.timezone)).date()
        first = max(spec.start_date, today - dt.timedelta(days=schedules.backfill_days))
        days = days_between(first, today - dt.timedelta(days=1))
        gaps = find_gaps(context.instance, spec, days)
        cursor = str(tick.timestamp())
        if not gaps:
            return dg.SensorResult(skip_reason=f"no gap in {first}..{today - dt.timedelta(days=1)}", cursor=cursor)
        summary = ", ".join(f"{key.to_user_string()}: {len(found)}" for key, found in gaps.items())
        context.log.info(f"Backfilling {summary}")
        reason = f"scheduled backfill of {first}..{today - dt.timedelta(days=1)} at {tick.isoformat()}: {summary}"
        return dg.SensorResult(
            run_requests=[backfill_request(gaps, context.repository_def.asset_graph, reason)], cursor=cursor
        )

    return gap_backfill
