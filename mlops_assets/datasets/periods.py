"""Periods: how often a series is measured, and how much time one partition covers.

A spec writes lengths of time as a count and a unit: ``15min``, ``1h``, ``24h``, ``1d``,
``1w``, ``1mo``, ``12mo``, ``1y``. A series' frequency is one such length; its lags,
trailing windows and season are whole multiples of it, and features are named with the
length the spec wrote (``kwh_lag_24h``, ``temp_max_lag_1d``, ``units_lag_12mo``).

Readings are placed on the series' own grid by their period number (the number of
whole periods since 1970-01-01, or of months since year 0 for monthly and yearly
series), so a lag of one period finds the previous reading whether it was taken at
midnight, on a Saturday or on the first of a month.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

FIXED_UNITS = {
    "min": pd.Timedelta(minutes=1),
    "h": pd.Timedelta(hours=1),
    "d": pd.Timedelta(days=1),
    "w": pd.Timedelta(weeks=1),
}
MONTH_UNITS = {"mo": 1, "y": 12}
UNITS = (*FIXED_UNITS, *MONTH_UNITS)
_SPAN = re.compile(r"^\s*(\d+)\s*([a-z]+)\s*$")
# The shortest month: a fixed span of d days reaches back at most ceil(d / 28) months.
SHORTEST_MONTH_DAYS = 28

GrainName = Literal["daily", "monthly"]
GRAINS: tuple[GrainName, ...] = ("daily", "monthly")


@dataclass(frozen=True)
class Span:
    """A length of time as a spec writes it: a whole count of one unit."""

    count: int
    unit: str

    @classmethod
    def parse(cls, text: object) -> Span:
        """``"24h"`` -> Span(24, "h"); raise ValueError naming the accepted units otherwise."""
        found = _SPAN.match(str(text))
        if found is None or found.group(2) not in UNITS:
            raise ValueError(f"{text!r} is not a length such as 15min, 1h, 1d, 1w, 1mo or 1y")
        count = int(found.group(1))
        if count < 1:
            raise ValueError(f"{text!r} must be at least one unit long")
        return cls(count=count, unit=found.group(2))

    @property
    def label(self) -> str:
        return f"{self.count}{self.unit}"

    def __str__(self) -> str:
        return self.label

    @property
    def fixed(self) -> pd.Timedelta | None:
        """The span as a duration, None for months and years (their length varies)."""
        return FIXED_UNITS[self.unit] * self.count if self.unit in FIXED_UNITS else None

    @property
    def months(self) -> int | None:
        """The span in calendar months, None for fixed units."""
        return MONTH_UNITS[self.unit] * self.count if self.unit in MONTH_UNITS else None

    def periods(self, frequency: Span) -> int:
        """How many periods of ``frequency`` this span holds; ValueError unless a whole number."""
        if self.fixed is not None and frequency.fixed is not None:
            ratio = self.fixed / frequency.fixed
        elif self.months is not None and frequency.months is not None:
            ratio = self.months / frequency.months
        else:
            raise ValueError(
                f"{self.label} cannot be counted in {frequency.label} periods "
                "(fixed lengths and calendar months do not mix)"
            )
        if ratio < 1 or ratio != int(ratio):
            raise ValueError(f"{self.label} is not a whole number of {frequency.label} periods")
        return int(ratio)

    def ordinals(self, timestamps: pd.Series) -> np.ndarray:
        """The period number of each timestamp, taking this span as the frequency."""
        stamps = pd.to_datetime(timestamps, utc=True)
        if self.fixed is not None:
            nanos = stamps.astype("datetime64[ns, UTC]").astype("int64").to_numpy()
            return np.floor_divide(nanos, self.fixed.value)
        months = stamps.dt.year.to_numpy(dtype="int64") * 12 + stamps.dt.month.to_numpy(dtype="int64") - 1
        return np.floor_divide(months, self.months)


def default_season(frequency: Span) -> Span:
    """The season of a series measured every ``frequency``: a day for sub-daily series, a week
    for daily ones, 52 weeks for weekly ones, a year for monthly and quarterly ones; for
    any other frequency one period (the plain naive forecast)."""
    if frequency.fixed is not None:
        for season in (Span(1, "d"), Span(7, "d"), Span(52, "w")):
            if season.fixed > frequency.fixed and (season.fixed / frequency.fixed).is_integer():
                return season
        return frequency
    if frequency.months < 12 and 12 % frequency.months == 0:
        return Span(12, "mo")
    return frequency


@dataclass(frozen=True)
class Grain:
    """How much time one partition (and one Delta ``event_date`` value) covers: a day or a
    calendar month. A partition is named by the date it starts on."""

    name: GrainName

    @property
    def noun(self) -> str:
        return "day" if self.name == "daily" else "month"

    def floor(self, day: dt.date) -> dt.date:
        """The start of the partition holding ``day``."""
        return day if self.name == "daily" else day.replace(day=1)

    def shift(self, start: dt.date, partitions: int) -> dt.date:
        """The partition ``partitions`` after (or, negative, before) the one starting on ``start``."""
        if self.name == "daily":
            return start + dt.timedelta(days=partitions)
        months = start.year * 12 + start.month - 1 + partitions
        return dt.date(months // 12, months % 12 + 1, 1)

    def between(self, first: dt.date, last: dt.date) -> list[dt.date]:
        """Every partition start from ``first``'s partition to ``last``'s, both included."""
        starts, current, end = [], self.floor(first), self.floor(last)
        while current <= end:
            starts.append(current)
            current = self.shift(current, 1)
        return starts

    def end(self, start: dt.date) -> dt.date:
        """The day after the partition that starts on ``start``."""
        return self.shift(start, 1)

    def reach(self, span: Span) -> int:
        """How many partitions before its own a partition's first reading can reach back by ``span``."""
        if self.name == "monthly":
            if span.months is not None:
                return span.months
            return math.ceil(span.fixed / pd.Timedelta(days=SHORTEST_MONTH_DAYS))
        if span.months is not None:
            return math.ceil(span.months * 31)
        return math.ceil(span.fixed / pd.Timedelta(days=1))

    def count(self, span: Span) -> int:
        """How many whole partitions ``span`` is; ValueError unless a whole number."""
        if self.name == "daily" and span.fixed is not None and (span.fixed / pd.Timedelta(days=1)).is_integer():
            return int(span.fixed / pd.Timedelta(days=1))
        if self.name == "monthly" and span.months is not None:
            return span.months
        unit = "days (d, w)" if self.name == "daily" else "months (mo, y)"
        raise ValueError(f"{span.label} is not a whole number of {self.noun}s: give it in {unit}")
