"""How assets are kept up to date and how they react to transient failures.

Automation is level-triggered: a partition is requested because what it read has changed
since its latest attempt, not because an update event was seen on some tick. Events can
be lost: a partition whose run finishes in the same tick as an upstream update sees both
"updated" and "handled" at once and forgets the update. A status computed from the event
log each tick cannot be lost, so whatever order files arrive in, every partition ends up
built from the final state of what it reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass

import dagster as dg

from mlops_assets.datasets.spec import ScheduleSpec
from mlops_assets.digests import short_digest

# Delta commit conflicts between concurrent runs, storage hiccups and a tracking store being
# created by another process heal on their own.
TRANSIENT_FAILURES = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)

# Materialization tags in which an asset records the data version of each versioned input
# it read (a model's digest, a registry decision), so automation can tell a real change
# from the same value written again.
DATA_VERSION_TAG = "dagster/data_version"
# Dagster tag keys: one namespace, sections of at most 63 letters, digits, "_", "-" or ".".
TAG_SECTION = 63


def used_version_tag(key: dg.AssetKey) -> str:
    """``mlops/used.<asset>``: the tag holding the data version of ``key`` that a partition read."""
    name = f"used.{key.to_python_identifier()}"
    if len(name) > TAG_SECTION:
        digest = short_digest(key.to_user_string(), 8)
        name = f"{name[: TAG_SECTION - 9]}_{digest}"
    return f"mlops/{name}"


@dataclass(frozen=True)
class Reads:
    """What an automated asset reads.

    ``own`` is the primary upstream asset whose partition holds the partition's own data
    (bronze for silver, gold for the forecaster). ``versioned`` inputs count as changed
    only when their data version differs from the one the partition recorded using. A
    versioned input that is the asset itself, or one of ``earlier``, is read at its latest
    partition before the reader's (the registry decision before), not at a fixed offset.
    """

    own: dg.AssetKey
    versioned: tuple[dg.AssetKey, ...] = ()
    earlier: tuple[dg.AssetKey, ...] = ()


class OwnPartitionReady(dg.AutomationCondition):
    """True for the partitions whose own partition of their primary upstream asset is
    materialized or requested in this tick.

    A partition also reads neighbouring partitions (lags, training windows, the decision
    before), but it has something to build only when its own data is there: a
    neighbour's update must not launch a run that builds nothing.
    """

    def __init__(self, reads: Mapping[dg.AssetKey, Reads]) -> None:
        self._own = {key: value.own for key, value in reads.items()}

    @property
    def name(self) -> str:
        return "own_partition_ready"

    @property
    def description(self) -> str:
        return "The same partition of the asset's primary upstream asset exists or is requested this tick"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        upstream = self._own.get(context.key)
        if upstream is None or context.candidate_subset.is_empty:
            return dg.AutomationResult(context, context.get_empty_subset())
        view = context.asset_graph_view
        materialized = await view.compute_materialized_asset_subset(upstream)
        ready = set(materialized.expensively_compute_partition_keys())
        requested = context.request_subsets_by_key.get(upstream)
        if requested is not None:
            ready |= set(requested.expensively_compute_partition_keys())
        same = view.get_subset_from_partition_keys(context.key, context.partitions_def, ready)
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection(same))


class Outdated(dg.AutomationCondition):
    """True for the partitions whose inputs changed after their latest attempt (the latest run
    planned for them), and for those never attempted whose own data exists.

    Inputs are the upstream partitions the asset's partition mappings name (a day and the
    days its lags reach, a training window); for a versioned input, a change counts only
    when the data version now differs from the one the partition recorded using. A
    partition that was attempted and built nothing (too little history) is not asked for
    again until an input changes.
    """

    def __init__(self, reads: Mapping[dg.AssetKey, Reads]) -> None:
        self._reads = dict(reads)

    @property
    def name(self) -> str:
        return "outdated"

    @property
    def description(self) -> str:
        return "An input changed after the partition's latest attempt, or it was never attempted"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        reads = self._reads.get(context.key)
        if reads is None or context.candidate_subset.is_empty:
            return dg.AutomationResult(context, context.get_empty_subset())
        instance = context.asset_graph_view.instance
        definition = context.partitions_def
        keys = list(definition.get_partition_keys())
        position = {key: index for index, key in enumerate(keys)}
        attempts = dict(
            instance.get_latest_storage_id_by_partition(context.key, dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)
        )
        for partition, storage_id in instance.get_latest_storage_id_by_partition(
            context.key, dg.DagsterEventType.ASSET_MATERIALIZATION
        ).items():
            attempts[partition] = max(attempts.get(partition, 0), storage_id)
        # Never attempted, with its own data there.
        own = instance.get_latest_storage_id_by_partition(reads.own, dg.DagsterEventType.ASSET_MATERIALIZATION)
        outdated = {partition for partition in own if partition not in attempts}
        # Partition -> the input partitions that changed after its latest attempt.
        changed: dict[str, set[tuple[dg.AssetKey, str]]] = {}
        for dep in context.asset_graph.get(context.key).parent_keys:
            if context.asset_graph.get(dep).partitions_def is None:
                continue
            latest = instance.get_latest_storage_id_by_partition(dep, dg.DagsterEventType.ASSET_MATERIALIZATION)
            if dep in reads.versioned:
                before = dep == context.key or dep in reads.earlier
                found = _versions_changed(instance, context.key, dep, latest, attempts, before)
                for partition, source in found.items():
                    changed.setdefault(partition, set()).add((dep, source))
                continue
            first, last = _offsets(context.asset_graph.get_partition_mapping(context.key, dep))
            for partition, storage_id in latest.items():
                if partition not in position:
                    continue
                index = position[partition]
                for reader in keys[max(0, index - last) : index - first + 1]:
                    if reader in attempts and storage_id > attempts[reader]:
                        changed.setdefault(reader, set()).add((dep, partition))
        outdated |= {
            partition
            for partition, sources in changed.items()
            if not _seen_in_latest_attempt(instance, context.key, partition, sources)
        }
        subset = context.asset_graph_view.get_subset_from_partition_keys(
            context.key, definition, outdated & set(position)
        )
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection(subset))


def _offsets(mapping: dg.PartitionMapping) -> tuple[int, int]:
    """(first, last) partition offsets an input mapping reads, relative to the reader's own."""
    if isinstance(mapping, dg.TimeWindowPartitionMapping):
        return mapping.start_offset, mapping.end_offset
    return 0, 0


def _seen_in_latest_attempt(
    instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str, sources: set[tuple[dg.AssetKey, str]]
) -> bool:
    """Whether every changed input was written by the run of the partition's latest attempt, before
    the partition's step ran (a run that built nothing, with no materialization to compare)."""
    planned = instance.get_latest_planned_materialization_info(asset, partition)
    if planned is None:
        return False
    for dep, source in sources:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dep, asset_partitions=[source]), limit=1
        ).records
        if not records or records[0].run_id != planned.run_id:
            return False
    return True


def _versions_changed(
    instance: dg.DagsterInstance,
    asset: dg.AssetKey,
    dep: dg.AssetKey,
    latest: Mapping[str, int],
    attempts: Mapping[str, int],
    earlier: bool,
) -> dict[str, str]:
    """The attempted partitions of ``asset`` whose versioned input ``dep`` was written again since
    their latest attempt with a data version other than the one they used, each with the input
    partition: the same partition, or with ``earlier`` the latest partition before it."""
    versions = instance.event_log_storage.get_latest_tags_by_partition(
        dep, dg.DagsterEventType.ASSET_MATERIALIZATION, tag_keys=[DATA_VERSION_TAG]
    )
    tag, built = used_version_tag(dep), sorted(latest)
    changed = {}
    for partition, attempt in attempts.items():
        if earlier:
            before = bisect.bisect_left(built, partition)
            source = built[before - 1] if before else None
        else:
            source = partition if partition in latest else None
        if source is None or latest[source] <= attempt:
            continue
        if versions.get(source, {}).get(DATA_VERSION_TAG) != _used_version(instance, asset, partition, tag):
            changed[partition] = source
    return changed


def _used_version(instance: dg.DagsterInstance, asset: dg.AssetKey, partition: str, tag: str) -> str | None:
    """The input version the latest materialization of ``asset``'s ``partition`` recorded."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset, asset_partitions=[partition]), limit=1
    ).records
    return records[0].asset_materialization.tags.get(tag) if records else None


class OtherPartitionsBusy(dg.AutomationCondition):
    """True for the partitions that read another partition (a lag's day, a training window, the
    decision before) which is about to change: requested in this tick, in a run, or with its
    own data requested or in a run.

    Another partition goes in another run. Started side by side, the reader would read the
    old value and have to run again; it waits a tick instead.
    """

    def __init__(self, reads: Mapping[dg.AssetKey, Reads]) -> None:
        self._own = {key: value.own for key, value in reads.items()}

    @property
    def name(self) -> str:
        return "other_partitions_busy"

    @property
    def description(self) -> str:
        return "Another partition this one reads is requested this tick or in a run"

    async def _busy(self, context: dg.AutomationContext, key: dg.AssetKey) -> set[str]:
        view = context.asset_graph_view
        busy: set[str] = set()
        requested = context.request_subsets_by_key.get(key)
        if requested is not None:
            busy |= set(requested.expensively_compute_partition_keys())
        running = await view.compute_run_in_progress_subset(key=key, from_subset=view.get_full_subset(key=key))
        return busy | set(running.expensively_compute_partition_keys())

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        if context.candidate_subset.is_empty:
            return dg.AutomationResult(context, context.get_empty_subset())
        view = context.asset_graph_view
        blocked: set[str] = set()
        for dep in context.asset_graph.get(context.key).parent_keys:
            definition = context.asset_graph.get(dep).partitions_def
            if definition is None:
                continue
            busy = await self._busy(context, dep)
            if dep in self._own:
                busy |= await self._busy(context, self._own[dep])
            for partition in busy & set(definition.get_partition_keys()):
                single = view.get_subset_from_partition_keys(dep, definition, {partition})
                readers = view.compute_mapped_subset(context.key, single, direction="down")
                blocked |= set(readers.expensively_compute_partition_keys()) - {partition}
                if dep == context.key:
                    # A decision reads the latest earlier one, however far back: every later
                    # partition waits for an earlier one being decided.
                    blocked |= {key for key in definition.get_partition_keys() if key > partition}
        subset = view.get_subset_from_partition_keys(context.key, context.partitions_def, blocked)
        return dg.AutomationResult(context, context.candidate_subset.compute_intersection(subset))


def retried_at_backfill_tick(schedules: ScheduleSpec) -> dg.AutomationCondition:
    """The partitions whose latest run failed, requested once after each tick of the spec's
    backfill cron (in its time zone).

    A failure is an attempt, so :class:`Outdated` asks for the partition again only once an
    input changes; a failure that healed on its own (storage back, a fixed bug deployed) is
    retried here, over the whole history, whatever the age of the partition.
    """
    tick = dg.AutomationCondition.cron_tick_passed(schedules.backfill_cron, schedules.timezone)
    return (dg.AutomationCondition.execution_failed() & tick.since_last_handled()).with_label(
        f"failed, retried after '{schedules.backfill_cron}' {schedules.timezone}"
    )


def on_upstream_update(reads: Mapping[dg.AssetKey, Reads], schedules: ScheduleSpec) -> dg.AutomationCondition:
    """Materialize a partition when what it reads changed since its latest attempt, once its own
    data is there, nothing it reads is still on its way or about to change, and upstream
    blocking checks cannot let bad data through.

    - every partition, not only the latest: files for past days land late, and their
      partitions must flow to gold and the models too;
    - outdated, a status (:class:`Outdated`), or an upstream partition of its own
      requested in this tick (then the chain goes into one run);
    - a partition runs only when its own data is there (:class:`OwnPartitionReady`): a
      neighbour's update never launches a run that builds nothing;
    - an upstream partition that is missing only blocks while it is still coming (its own
      data exists); a partition where no data ever landed is a gap, not a reason to wait;
    - another partition it reads that is about to change (:class:`OtherPartitionsBusy`)
      holds it back a tick, so it never reads what is being rebuilt;
    - upstream blocking checks must have passed, unless the upstream partition runs in
      the same run, whose blocking checks stop the steps after them;
    - a partition whose latest run failed is asked for again after each tick of the spec's
      backfill cron (:func:`retried_at_backfill_tick`), with everything it feeds.
    """
    ready = OwnPartitionReady(reads)
    requested = dg.AutomationCondition.will_be_requested()
    still_coming = (dg.AutomationCondition.missing() & ~requested & ready).with_label("upstream partition still coming")
    upstream_in_same_run = dg.AutomationCondition.any_deps_match(requested).with_label("upstream in this run")
    return (
        (Outdated(reads) | upstream_in_same_run | retried_at_backfill_tick(schedules))
        & ready
        & ~dg.AutomationCondition.any_deps_match(still_coming)
        & ~OtherPartitionsBusy(reads)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & ~dg.AutomationCondition.newly_requested()
        & (upstream_in_same_run | dg.AutomationCondition.all_deps_blocking_checks_passed())
    ).with_label("inputs changed")
