"""How assets are kept up to date and how they react to transient failures."""

from __future__ import annotations

import dagster as dg

# Delta commit conflicts between concurrent runs and storage hiccups heal on their own.
TRANSIENT_FAILURES = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def on_upstream_update() -> dg.AutomationCondition:
    """Materialize a day when an upstream asset updated that day, once nothing upstream is
    missing or running and upstream blocking checks cannot let bad data through.

    This is ``AutomationCondition.eager()`` for every partition, not only the latest:
    files for past days land late, and their days must flow to gold and the model too.
    When an upstream asset is requested in the same tick, the whole chain goes into one
    run and its blocking checks stop the steps after them inside that run; otherwise
    the upstream blocking checks must have passed.
    """
    upstream_in_same_run = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
    return (
        dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
        & (upstream_in_same_run | dg.AutomationCondition.all_deps_blocking_checks_passed())
    ).with_label("upstream day updated")
