"""Training and scoring of the forecaster, independent of Dagster and MLflow.

The training window is split by time: the latest ``holdout_fraction`` of its periods
is held out, the model is fitted on the periods before, and the metrics describe that
same fitted model on the held-out periods.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor, RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.linear_model import Ridge
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.pipeline import Pipeline, make_pipeline

from mlops_assets.datasets.spec import PARTITION_COLUMN, DatasetSpec
from mlops_assets.defs.lakehouse.features import feature_columns, naive_column
from mlops_assets.defs.models.experiment import fitted_digest


class NotEnoughData(ValueError):
    """The training window has too few rows to fit and evaluate a model."""


def make_estimator(family: str, params: Mapping[str, Any], seed: int) -> Any:
    """A fresh scikit-learn estimator of the spec's model family."""
    if family == "hist_gradient_boosting":
        return HistGradientBoostingRegressor(random_state=seed, **params)
    if family == "random_forest":
        return RandomForestRegressor(random_state=seed, **params)
    if family == "ridge":
        return make_pipeline(SimpleImputer(), Ridge(random_state=seed, **params))
    raise ValueError(f"unknown model family {family!r}")


@dataclass
class Forecaster:
    """A fitted estimator with what it needs to score gold rows, and what it was fitted on."""

    estimator: Any
    features: list[str]
    target: str
    family: str
    params: dict[str, Any]
    seed: int
    window: tuple[dt.date, dt.date]
    holdout_start: pd.Timestamp
    trained_partitions: tuple[str, ...] = ()
    holdout_partitions: tuple[str, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict(rows[self.features])

    @property
    def sha256(self) -> str:
        return fitted_digest(self.family, self.features, self.estimator)

    def serving_pipeline(self, rows: pd.DataFrame) -> Pipeline:
        """The estimator behind a step that picks its features out of gold rows, as served
        from the registry (``rows``: any gold rows, to fit the column selection)."""
        select = ColumnTransformer(
            [("selected", "passthrough", self.features)], remainder="drop", verbose_feature_names_out=False
        )
        select.set_output(transform="pandas")
        select.fit(rows)
        return Pipeline([("features", select), ("model", self.estimator)])


@dataclass
class TrainingOutcome:
    forecaster: Forecaster
    metrics: dict[str, float]
    train_rows: int
    holdout_rows: int
    holdout_start: pd.Timestamp
    train_frame: pd.DataFrame = field(repr=False)


@dataclass(frozen=True)
class HoldoutSplit:
    """Rows with a target split by time: those fitted on, and the latest periods held out."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    holdout_start: pd.Timestamp

    @property
    def trained_partitions(self) -> tuple[str, ...]:
        return _partitions(self.train)

    @property
    def holdout_partitions(self) -> tuple[str, ...]:
        return _partitions(self.holdout)


def _partitions(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted({value.isoformat() for value in rows[PARTITION_COLUMN].unique()}))


def split_holdout(gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date]) -> HoldoutSplit:
    """Rows with a target in a fixed order, split by time: the latest ``holdout_fraction`` of
    the periods in ``gold`` (at least one) are held out, the periods before them trained on.
    """
    timestamp = spec.timestamp_column
    rows = (
        gold.dropna(subset=[spec.target_column])
        .sort_values([timestamp, spec.entity_column, PARTITION_COLUMN], kind="stable")
        .reset_index(drop=True)
    )
    periods = spec.frequency.ordinals(rows[timestamp])
    distinct = np.unique(periods)
    if len(distinct) < 2:
        raise NotEnoughData(
            f"{len(rows)} rows over {len(distinct)} period(s) of {spec.frequency} in {window[0]}..{window[1]}: "
            "need at least two periods to hold one out"
        )
    held_out = max(1, math.ceil(len(distinct) * spec.model.holdout_fraction))
    first_held = distinct[len(distinct) - held_out]
    holdout_start = pd.Timestamp(rows[timestamp][periods >= first_held].min())
    return HoldoutSplit(
        train=rows[periods < first_held].reset_index(drop=True),
        holdout=rows[periods >= first_held].reset_index(drop=True),
        holdout_start=holdout_start,
    )


def train_forecaster(
    gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date], params: Mapping[str, Any] | None = None
) -> TrainingOutcome:
    """Fit the spec's model on ``gold`` (the training window) and evaluate it on its latest periods;
    ``params`` (default: the spec's) are the hyper-parameters."""
    params = dict(spec.model.params if params is None else params)
    target = spec.target_column
    split = split_holdout(gold, spec, window)
    train = split.train
    # A feature with no value in the training rows (a 24h lag on the first day) carries
    # nothing to learn from; it is left out and the model records the features it uses.
    features = [column for column in feature_columns(spec) if train[column].notna().any()]
    if train.empty or not features:
        raise NotEnoughData(f"no training rows with a feature before the hold-out in {window[0]}..{window[1]}")
    estimator = make_estimator(spec.model.family, params, spec.model.seed)
    estimator.fit(train[features], train[target])
    forecaster = Forecaster(
        estimator=estimator,
        features=features,
        target=target,
        family=spec.model.family,
        params=params,
        seed=spec.model.seed,
        window=window,
        holdout_start=split.holdout_start,
        trained_partitions=split.trained_partitions,
        holdout_partitions=split.holdout_partitions,
    )
    forecaster.metrics = forecast_metrics(split.holdout, forecaster.predict(split.holdout), spec)
    return TrainingOutcome(
        forecaster=forecaster,
        metrics=forecaster.metrics,
        train_rows=len(train),
        holdout_rows=len(split.holdout),
        holdout_start=split.holdout_start,
        train_frame=train,
    )


def forecast_metrics(rows: pd.DataFrame, predicted: np.ndarray, spec: DatasetSpec) -> dict[str, float]:
    """Error of ``predicted`` against the target of ``rows``, and against the seasonal-naive forecast.

    ``wape`` is the absolute error as a share of the total; ``skill`` is
    1 - mae / mae of repeating the value one season earlier (positive: better than the
    naive forecast), both over the rows that have a value one season earlier.
    """
    actual = rows[spec.target_column].to_numpy(dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    if len(actual) == 0:
        return {}
    mae = float(mean_absolute_error(actual, predicted))
    metrics = {
        "mae": mae,
        "rmse": float(math.sqrt(mean_squared_error(actual, predicted))),
        "wape": float(np.abs(actual - predicted).sum() / max(np.abs(actual).sum(), 1e-12)),
        "r2": float(r2_score(actual, predicted)) if len(actual) > 1 else float("nan"),
    }
    naive = rows[naive_column(spec)].to_numpy(dtype=float)
    known = ~np.isnan(naive)
    if known.any():
        # Both errors over the same rows: those that have a value one season earlier.
        naive_mae = float(mean_absolute_error(actual[known], naive[known]))
        model_mae = float(mean_absolute_error(actual[known], predicted[known]))
        metrics["mae_seasonal_naive"] = naive_mae
        metrics["skill"] = 1.0 - model_mae / naive_mae if naive_mae > 0 else float("nan")
    return metrics
