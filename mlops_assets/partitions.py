"""Partitions: every data asset is partitioned by the event day its rows belong to."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from mlops_assets.datasets.spec import DatasetSpec


def daily_partitions(spec: DatasetSpec) -> dg.DailyPartitionsDefinition:
    """Event days from the spec's start date up to and including today (UTC).

    ``end_offset=1`` makes today's partition exist as soon as the day starts, so a
    file that lands today is ingested today rather than after midnight.
    """
    return dg.DailyPartitionsDefinition(start_date=spec.start_date.isoformat(), end_offset=1)


def partition_day(context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext) -> dt.date:
    """The event day of the partition being materialized."""
    return dt.date.fromisoformat(context.partition_key)


def partition_days(context: dg.AssetExecutionContext) -> list[dt.date]:
    """The event days a run materializes: one day, or every day of a backfill's range when
    the asset runs a range in a single run."""
    return [dt.date.fromisoformat(key) for key in context.partition_keys]


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included (empty when ``last`` is before ``first``)."""
    return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]
