"""How assets are kept up to date and how they react to transient failures."""

from __future__ import annotations

import dagster as dg

# Delta commit conflicts between concurrent runs and storage hiccups heal on their own.
TRANSIENT_FAILURES = dg.RetryPolicy(max_retries=3, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def on_upstream_update() -> dg.AutomationCondition:
    """Materialize a day when an upstream asset updated that day, once nothing it reads is
    still on its way and upstream blocking checks cannot let bad data through.

    This is ``AutomationCondition.eager()`` with three changes:

    - every day, not only the latest: files for past days land late, and their days
      must flow to gold and the model too;
    - an upstream day that is missing only blocks while it is still coming (its own
      inputs exist); a day on which no data ever landed is a gap, not a reason to wait
      forever (gold reads the day before for its lags, which may never have existed);
    - when an upstream asset is requested in the same tick, the chain goes into one run
      whose blocking checks stop the steps after them; otherwise the upstream blocking
      checks must have passed.
    """
    still_coming = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.missing()
        & ~dg.AutomationCondition.will_be_requested()
        & ~dg.AutomationCondition.any_deps_missing()
    ).with_label("upstream day still coming")
    upstream_in_same_run = dg.AutomationCondition.any_deps_match(dg.AutomationCondition.will_be_requested())
    return (
        dg.AutomationCondition.eager()
        .without(dg.AutomationCondition.in_latest_time_window())
        .replace("any_deps_missing", still_coming)
        & (upstream_in_same_run | dg.AutomationCondition.all_deps_blocking_checks_passed())
    ).with_label("upstream day updated")
