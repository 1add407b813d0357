"""The scheduled backfill: every night, heal every partition of the whole history that is
missing or failed.

What needs healing is found from what the tables hold, not from a window of recent
days: every partition that bronze holds data for (or whose ingestion failed), and in
each later layer every partition whose own upstream partition exists but which is
missing or whose latest attempt failed, with everything downstream of it. All of them
go into one Dagster backfill, which runs each single-run range of the data layers as
one run and the model partitions after them.

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
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.release import first_champion_partition
from mlops_assets.partitions import partitions_def

BACKFILL_TAG = "mlops/backfill_reason"
HEALTHY = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.IN_PROGRESS)


def healed_assets(spec: DatasetSpec) -> list[dg.AssetKey]:
    """The partitioned assets the backfill keeps complete, upstream first."""
    keys = DatasetKeys(spec)
    return [keys.silver, keys.gold, keys.forecaster, keys.release(keys.forecaster), keys.predictions, keys.drift]


def find_gaps(
    instance: dg.DagsterInstance, spec: DatasetSpec, landed: Sequence[dt.date]
) -> dict[dg.AssetKey, list[str]]:
    """Per asset, the partitions to rebuild: of the ``landed`` partitions (those bronze holds
    data for), every one missing or failed in a layer whose own upstream partition exists,
    and the same partition of every layer after it. Bronze partitions whose latest ingestion
    failed come first. The first partitions, before any forecaster partition exists, have
    no champion to score them and are not predictions gaps."""
    keys = DatasetKeys(spec)
    definition = partitions_def(spec)
    wanted = sorted({day.isoformat() for day in landed})
    bronze = instance.get_status_by_partition(keys.bronze, wanted, definition) or {}
    gaps: dict[dg.AssetKey, list[str]] = {}
    failed_bronze = [key for key in wanted if bronze.get(key) == dg.AssetPartitionStatus.FAILED]
    if failed_bronze:
        gaps[keys.bronze] = failed_bronze
    present = {keys.bronze: {key for key in wanted if bronze.get(key) == dg.AssetPartitionStatus.MATERIALIZED}}
    rebuilt: set[str] = set(failed_bronze)
    first_champion = first_champion_partition(instance, keys.release(keys.forecaster))
    for key in healed_assets(spec):
        status = instance.get_status_by_partition(key, wanted, definition) or {}
        upstream = keys.primary_upstream[key]
        ready = present.get(upstream, set()) | rebuilt
        if key == keys.predictions:
            ready = {partition for partition in ready if first_champion is not None and partition > first_champion}
        missing = {partition for partition in ready if status.get(partition) not in HEALTHY}
        rebuilt = (rebuilt & ready) | missing
        present[key] = {
            partition for partition in wanted if status.get(partition) == dg.AssetPartitionStatus.MATERIALIZED
        }
        if rebuilt:
            gaps[key] = sorted(rebuilt)
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


def build_gap_backfill_sensor(spec: DatasetSpec, running: bool = True) -> dg.SensorDefinition:
    schedules = spec.schedules
    keys = DatasetKeys(spec)

    @dg.sensor(
        name=f"{spec.name}_gap_backfill",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING if running else dg.DefaultSensorStatus.STOPPED,
        description=(
            f"At '{schedules.backfill_cron}' {schedules.timezone} time, launches one backfill of every "
            f"{spec.name} partition of the whole history that is missing or failed, found from what the "
            "tables hold."
        ),
    )
    def gap_backfill(context: dg.SensorEvaluationContext, lake: DeltaLake) -> dg.SensorResult:
        now = dt.datetime.now(ZoneInfo(schedules.timezone))
        tick = due_tick(schedules.backfill_cron, schedules.timezone, now)
        if context.cursor and tick.timestamp() <= float(context.cursor):
            return dg.SensorResult(skip_reason=f"tick {tick.isoformat()} already handled")
        landed = lake.days(lake.table_uri(*keys.table(keys.bronze)))
        gaps = find_gaps(context.instance, spec, landed)
        cursor = str(tick.timestamp())
        span = f"{landed[0]}..{landed[-1]}" if landed else "no data yet"
        if not gaps:
            return dg.SensorResult(
                skip_reason=f"no gap in {len(landed)} partition(s) with data ({span})", cursor=cursor
            )
        summary = ", ".join(f"{key.to_user_string()}: {len(found)}" for key, found in gaps.items())
        context.log.info(f"Backfilling {summary}")
        reason = f"scheduled backfill of {span} at {tick.isoformat()}: {summary}"
        return dg.SensorResult(
            run_requests=[backfill_request(gaps, context.repository_def.asset_graph, reason)], cursor=cursor
        )

    return gap_backfill
