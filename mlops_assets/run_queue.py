"""The run queue: earlier partitions start first.

Files arrive late and out of order; the runs they cause wait in Dagster's queue. A
partition's results feed the partitions after it (lags, training windows, the champion
that scores the next partition), so a run for an earlier partition should not wait
behind one for a later partition that will have to be redone once it is through.
"""

from __future__ import annotations

import datetime as dt

import dagster as dg

PRIORITY_TAG = "dagster/priority"
PARTITION_TAGS = ("dagster/partition", "dagster/asset_partition_range_start")
EPOCH = dt.date(1970, 1, 1)


def partition_priority(partition: str) -> int | None:
    """Dagster's run priority (higher starts first) for a run of ``partition``: the earlier
    the partition, the higher; None when the key is not a date."""
    try:
        day = dt.date.fromisoformat(partition[:10])
    except ValueError:
        return None
    return -(day - EPOCH).days


class PartitionOrderRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's queued run coordinator, with each run of a dated partition given a priority
    from its partition, so the queue hands out the earliest partitions first. A run that
    carries its own priority tag keeps it; runs without a partition (a tuning run started by
    hand) keep the default priority, 0, which is above every partition's."""

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        partition = next((run.tags[tag] for tag in PARTITION_TAGS if tag in run.tags), None)
        if partition is not None and PRIORITY_TAG not in run.tags:
            priority = partition_priority(partition)
            if priority is not None:
                self._instance.add_run_tags(run.run_id, {PRIORITY_TAG: str(priority)})
        return super().submit_run(context)
