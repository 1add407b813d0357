"""The gold feature recipe: model-ready rows from silver, as the dataset spec declares.

For each entity and timestamp of a day: the target at fixed lags before it, trailing
means of the target over windows that end just before it (so no feature sees the
value it helps predict), calendar fields and exogenous columns. Lags are looked up
by time, not by row position, so a missing hour gives a missing feature rather than
a wrong one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import pandas as pd

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN


def duration_label(duration: pd.Timedelta) -> str:
    hours, remainder = divmod(int(duration.total_seconds()), 3600)
    return f"{hours}h" if remainder == 0 else f"{int(duration.total_seconds() // 60)}min"


def lookback_days(spec: DatasetSpec) -> int:
    """Whole days of silver before a day that its features can reach."""
    return int(-(-spec.features.lookback // pd.Timedelta(days=1)))


def feature_columns(spec: DatasetSpec) -> list[str]:
    """The model inputs, in a fixed order."""
    target = spec.target_column
    recipe = spec.features
    return [
        *(f"{target}_lag_{duration_label(lag)}" for lag in recipe.lags),
        *(f"{target}_mean_{duration_label(window)}" for window in recipe.rolling_means),
        *recipe.calendar,
        *recipe.exogenous,
    ]


def build_features(silver: pd.DataFrame, day: dt.date, spec: DatasetSpec) -> pd.DataFrame:
    """Gold rows of ``day`` from silver rows of ``day`` and the days before it."""
    return build_features_for_days(silver, [day], spec)


def build_features_for_days(silver: pd.DataFrame, days: Sequence[dt.date], spec: DatasetSpec) -> pd.DataFrame:
    """Gold rows of ``days`` from silver rows of those days and the days before the first,
    ordered by day, entity and timestamp.

    Lags and windows are looked up by time and reach back at most the spec's lookback,
    so each day's features are those :func:`build_features` gives for that day alone (a
    reading filed under two days counts as the later day's, which a day alone may not see).
    """
    entity, timestamp, target = spec.entity_column, spec.timestamp_column, spec.target_column
    recipe = spec.features
    history = silver[[entity, timestamp, target, *recipe.exogenous, PARTITION_COLUMN]].sort_values(
        [entity, timestamp, PARTITION_COLUMN]
    )
    gold = (
        history[history[PARTITION_COLUMN].isin(set(days))]
        .sort_values([PARTITION_COLUMN, entity, timestamp])
        .reset_index(drop=True)
    )
    # One value per entity and hour, whichever day it was filed under (the latest day, if
    # it was filed under several).
    observed = history[[entity, timestamp, target]].drop_duplicates([entity, timestamp], keep="last")
    for lag in recipe.lags:
        lagged = observed.assign(**{timestamp: observed[timestamp] + lag})
        gold = gold.merge(
            lagged.rename(columns={target: f"{target}_lag_{duration_label(lag)}"}),
            on=[entity, timestamp],
            how="left",
            validate="many_to_one",
        )
    by_time = observed.set_index(timestamp).groupby(entity, sort=False)[target]
    for window in recipe.rolling_means:
        trailing = by_time.rolling(window, closed="left").mean().rename(f"{target}_mean_{duration_label(window)}")
        gold = gold.merge(trailing.reset_index(), on=[entity, timestamp], how="left", validate="many_to_one")
    stamps = gold[timestamp].dt
    calendar = {
        "hour": stamps.hour,
        "dayofweek": stamps.day_of_week,
        "dayofyear": stamps.day_of_year,
        "month": stamps.month,
        "is_weekend": (stamps.day_of_week >= 5).astype("int64"),
    }
    for name in recipe.calendar:
        gold[name] = calendar[name].astype("int64")
    return gold[[PARTITION_COLUMN, entity, timestamp, target, *feature_columns(spec)]]
