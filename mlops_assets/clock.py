"""The time the sensors go by, in one place, so that a test can set it."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """The current time, in UTC."""
    return dt.datetime.now(dt.UTC)
