"""Partitions: every data asset is partitioned by the event day (or month) its rows belong to.

The spec's grain decides: daily partitions by default, monthly ones for series with a
reading a week or a month, where most days would hold nothing. A partition is named by
the date it starts on, which is also the value of the ``event_date`` column in Delta.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

from mlops_assets.datasets.spec import DatasetSpec


def partitions_def(spec: DatasetSpec) -> dg.TimeWindowPartitionsDefinition:
    """The spec's partitions from its start date up to and including the current one (UTC).

    ``end_offset=1`` makes the current day's (or month's) partition exist as soon as it
    starts, so a file that lands today is ingested today rather than after midnight.
    """
    if spec.grain.name == "monthly":
        return dg.MonthlyPartitionsDefinition(start_date=spec.start_date.isoformat(), end_offset=1)
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat(), end_offset=1)


def partitions_back(partitions: int) -> dg.TimeWindowPartitionMapping:
    """A partition depends on itself and the ``partitions`` before it (those before the first
    partition do not exist and are left out)."""
    return dg.TimeWindowPartitionMapping(start_offset=-partitions, allow_nonexistent_upstream_partitions=True)


def partition_start(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    """The first day of the partition being materialized."""
    return dt.date.fromisoformat(context.partition_key)


def partition_starts(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The partitions a run materializes: one, or every partition of a backfill's range when
    the asset runs a range in a single run."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]
