"""How assets are kept up to date and how they react to transient failures."""

from __future__ import annotations

import dagster as dg

# Delta commit conflicts between concurrent runs and storage hiccups heal on their own.
TRANSIENT_FAILURES = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def on_upstream_update() -> dg.AutomationCondition:
    """Materialize a day when an upstream asset updated that day, once nothing upstream is
    missing or running and every blocking check upstream passed.

    This is ``AutomationCondition.eager()`` for every partition, not only the latest:
    files for past days land late, and their days must flow to gold and the model too.
    """
    return (
        dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
        & dg.AutomationCondition.all_deps_blocking_checks_passed()
    ).with_label("upstream day updated")
