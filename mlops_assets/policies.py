"""How assets are kept up to date and how they react to transient failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

# Delta commit conflicts between concurrent runs, storage hiccups and a tracking store being
# created by another process heal on their own.
TRANSIENT_FAILURES = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


class OwnPartitionReady(dg.AutomationCondition):
    """True for the partitions whose own partition of their primary upstream asset (the one
    that holds the partition's data: bronze for silver, gold for the forecaster) is
    materialized or requested in this tick.

    A partition also reads neighbouring partitions (lags, training windows, the champion
    of the partition before), but it has something to build only when its own data is
    there: a neighbour's update must not launch a run that builds nothing.
    """

    def __init__(self, primary_upstream: Mapping[dg.AssetKey, dg.AssetKey]) -> None:
        self._pairs = tuple(sorted(primary_upstream.items(), key=lambda pair: pair[0].to_user_string()))

    @property
    def name(self) -> str:
        return "own_partition_ready"

    @property
    def description(self) -> str:
        return "The same partition of the asset's primary upstream asset exists or is requested this tick"

    async def evaluate(self, context: dg.AutomationContext) -> dg.AutomationResult:
        upstream = dict(self._pairs).get(context.key)
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


def on_upstream_update(
    primary_upstream: Mapping[dg.AssetKey, dg.AssetKey], versioned: Sequence[dg.AssetKey] = ()
) -> dg.AutomationCondition:
    """Materialize a partition when something it reads changed, once its own data is there,
    nothing it reads is still on its way, and upstream blocking checks cannot let bad data
    through.

    This is ``AutomationCondition.eager()`` with these changes:

    - every partition, not only the latest: files for past days land late, and their
      partitions must flow to gold and the models too;
    - a partition runs only when its own data is there (:class:`OwnPartitionReady`); a
      neighbour's update (a lag, a training window) rebuilds it only then;
    - an upstream partition that is missing only blocks while it is still coming (its own
      data exists); a partition where no data ever landed is a gap, not a reason to wait;
    - upstream assets in ``versioned`` (models, registry decisions) count as changed only
      when their data version changed: retraining an identical model changes nothing
      downstream;
    - when an upstream asset is requested in the same tick, the chain goes into one run
      whose blocking checks stop the steps after them; otherwise the upstream blocking
      checks must have passed.
    """
    ready = OwnPartitionReady(primary_upstream)
    still_coming = (dg.AutomationCondition.missing() & ~dg.AutomationCondition.will_be_requested() & ready).with_label(
        "upstream partition still coming"
    )
    requested = dg.AutomationCondition.will_be_requested()
    updated = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.newly_updated() | requested)
    if versioned:
        selection = dg.AssetSelection.assets(*versioned)
        updated = updated.ignore(selection) | dg.AutomationCondition.any_deps_match(
            dg.AutomationCondition.data_version_changed() | requested
        ).allow(selection)
    upstream_in_same_run = dg.AutomationCondition.any_deps_match(requested)
    return (
        updated.with_label("upstream changed").since_last_handled()
        & ready
        & ~dg.AutomationCondition.any_deps_match(still_coming)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
        & (upstream_in_same_run | dg.AutomationCondition.all_deps_blocking_checks_passed())
    ).with_label("upstream partition updated")
