"""The gold feature recipe: model-ready rows from silver, as the dataset spec declares.

For each entity and reading of a partition: the target some periods before it (lags),
trailing means of the target over the periods just before it (so no feature sees the
value it helps predict), calendar fields and exogenous columns. Lags and windows count
the series' own periods (see :mod:`mlops_assets.datasets.periods`): a missing reading
gives a missing lag rather than a neighbour's value, and a monthly lag of one finds last
month's reading whatever the month's length.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd

from mlops_assets.datasets.periods import Span
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.resources.delta_lake import PARTITION_COLUMN

PERIOD = "_period"
# Trailing means are summed on a dense grid of values by entity and period, this many entities at a time.
ENTITIES_PER_GRID = 256


def lag_column(spec: DatasetSpec, lag: Span) -> str:
    return f"{spec.target_column}_lag_{lag.label}"


def mean_column(spec: DatasetSpec, window: Span) -> str:
    return f"{spec.target_column}_mean_{window.label}"


def naive_column(spec: DatasetSpec) -> str:
    """The lag column that is the seasonal-naive forecast (the target one season earlier)."""
    season = spec.features.season.periods(spec.frequency)
    (lag,) = [lag for lag in spec.features.lags if lag.periods(spec.frequency) == season]
    return lag_column(spec, lag)


def lookback_partitions(spec: DatasetSpec) -> int:
    """How many partitions before its own a partition's features read."""
    spans = spec.features.spans
    return max((spec.grain.reach(span) for span in spans), default=0)


def feature_columns(spec: DatasetSpec) -> list[str]:
    """The model inputs, in a fixed order."""
    recipe = spec.features
    return [
        *(lag_column(spec, lag) for lag in recipe.lags),
        *(mean_column(spec, window) for window in recipe.rolling_means),
        *recipe.calendar,
        *recipe.exogenous,
    ]


def build_features(silver: pd.DataFrame, day: dt.date, spec: DatasetSpec) -> pd.DataFrame:
    """Gold rows of the partition starting on ``day`` from silver rows of it and those before it."""
    return build_features_for_days(silver, [day], spec)


def build_features_for_days(silver: pd.DataFrame, days: Sequence[dt.date], spec: DatasetSpec) -> pd.DataFrame:
    """Gold rows of the partitions ``days`` from silver rows of those partitions and the
    lookback before the first, ordered by partition, entity and timestamp.

    Each partition's features are those :func:`build_features` gives for it alone (a
    reading filed under two partitions counts as the later one's).
    """
    entity, timestamp, target = spec.entity_column, spec.timestamp_column, spec.target_column
    recipe = spec.features
    history = silver[[entity, timestamp, target, *recipe.exogenous, PARTITION_COLUMN]].sort_values(
        [entity, timestamp, PARTITION_COLUMN], kind="stable"
    )
    history = history.assign(**{PERIOD: spec.frequency.ordinals(history[timestamp])})
    gold = (
        history[history[PARTITION_COLUMN].isin(set(days))]
        .sort_values([PARTITION_COLUMN, entity, timestamp], kind="stable")
        .reset_index(drop=True)
    )
    # One value per entity and period, whichever partition it was filed under (the latest
    # partition, and within it the latest reading, if there are several).
    observed = history[[entity, PERIOD, target]].drop_duplicates([entity, PERIOD], keep="last")
    for lag in recipe.lags:
        lagged = observed.assign(**{PERIOD: observed[PERIOD] + lag.periods(spec.frequency)})
        gold = gold.merge(
            lagged.rename(columns={target: lag_column(spec, lag)}),
            on=[entity, PERIOD],
            how="left",
            validate="many_to_one",
        )
    for window in recipe.rolling_means:
        gold[mean_column(spec, window)] = _trailing_means(observed, gold, spec, window.periods(spec.frequency))
    stamps = gold[timestamp].dt
    calendar = {
        "hour": lambda: stamps.hour,
        "dayofweek": lambda: stamps.day_of_week,
        "dayofyear": lambda: stamps.day_of_year,
        "weekofyear": lambda: stamps.isocalendar().week,
        "month": lambda: stamps.month,
        "is_weekend": lambda: stamps.day_of_week >= 5,
    }
    for name in recipe.calendar:
        gold[name] = calendar[name]().astype("int64")
    return gold[[PARTITION_COLUMN, entity, timestamp, target, *feature_columns(spec)]]


def _trailing_means(observed: pd.DataFrame, gold: pd.DataFrame, spec: DatasetSpec, periods: int) -> np.ndarray:
    """For each gold row, the mean of the entity's known values in the ``periods`` periods just
    before the row's own (NaN when none is known).

    Each mean is summed over its own window, in period order, from a dense grid of the
    entity's values: it comes out bit for bit the same whether a partition is built alone
    or inside a long range, which a running sum would not guarantee.
    """
    entity, target = spec.entity_column, spec.target_column
    if gold.empty:
        return np.array([], dtype=float)
    categories = pd.Index(observed[entity].unique())
    base = int(min(observed[PERIOD].min(), gold[PERIOD].min())) - periods
    width = int(max(observed[PERIOD].max(), gold[PERIOD].max())) - base + 1
    result = np.full(len(gold), np.nan)
    row_codes = categories.get_indexer(gold[entity])
    codes = categories.get_indexer(observed[entity])
    for first in range(0, len(categories), ENTITIES_PER_GRID):
        chunk = slice(first, first + ENTITIES_PER_GRID)
        grid = np.full((min(ENTITIES_PER_GRID, len(categories) - first), width), np.nan)
        mine = (codes >= first) & (codes < first + ENTITIES_PER_GRID)
        grid[codes[mine] - first, observed[PERIOD].to_numpy()[mine] - base] = observed[target].to_numpy(dtype=float)[
            mine
        ]
        windows = np.lib.stride_tricks.sliding_window_view(grid, periods, axis=1)
        rows = np.flatnonzero((row_codes >= chunk.start) & (row_codes < chunk.start + grid.shape[0]))
        starts = gold[PERIOD].to_numpy()[rows] - periods - base
        values = windows[row_codes[rows] - first, starts]
        known = ~np.isnan(values)
        counts = known.sum(axis=1)
        sums = np.where(known, values, 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            result[rows] = np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)
    return result
