"""Training and scoring of the forecaster, independent of Dagster and MLflow.

The training window is split by time: the latest ``holdout_fraction`` of its hours
is held out, the model is fitted on the hours before, and the metrics describe that
same fitted model on the held-out hours.
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

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.features import feature_columns


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
    """A fitted estimator with what it needs to score gold rows."""

    estimator: Any
    features: list[str]
    target: str
    family: str
    params: dict[str, Any]
    seed: int
    window: tuple[dt.date, dt.date]
    holdout_start: pd.Timestamp
    gold_version: int | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.estimator.predict(rows[self.features])

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


def split_holdout(
    gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date]
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """Rows with a target, split by time: (training rows, held-out rows, first held-out hour).

    The latest ``holdout_fraction`` of the window's hours (at least one) are held out.
    """
    timestamp = spec.timestamp_column
    rows = gold.dropna(subset=[spec.target_column]).sort_values(timestamp, kind="stable")
    stamps = np.sort(rows[timestamp].unique())
    if len(stamps) < 2:
        raise NotEnoughData(f"{len(rows)} rows over {len(stamps)} timestamps in {window}: need at least two timestamps")
    held_out = max(1, math.ceil(len(stamps) * spec.model.holdout_fraction))
    holdout_start = pd.Timestamp(stamps[len(stamps) - held_out])
    return rows[rows[timestamp] < holdout_start], rows[rows[timestamp] >= holdout_start], holdout_start


def train_forecaster(
    gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date], params: Mapping[str, Any] | None = None
) -> TrainingOutcome:
    """Fit the spec's model on ``gold`` (the training window) and evaluate it on its latest hours;
    ``params`` (default: the spec's) are the hyper-parameters."""
    params = dict(spec.model.params if params is None else params)
    target = spec.target_column
    features = feature_columns(spec)
    train, holdout, holdout_start = split_holdout(gold, spec, window)
    # A feature with no value in the training hours (a 24h lag on the first day) carries
    # nothing to learn from; it is left out and the model records the features it uses.
    features = [column for column in features if train[column].notna().any()]
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
        holdout_start=holdout_start,
    )
    return TrainingOutcome(
        forecaster=forecaster,
        metrics=forecast_metrics(holdout, forecaster.predict(holdout), spec),
        train_rows=len(train),
        holdout_rows=len(holdout),
        holdout_start=holdout_start,
        train_frame=train,
    )


def forecast_metrics(rows: pd.DataFrame, predicted: np.ndarray, spec: DatasetSpec) -> dict[str, float]:
    """Error of ``predicted`` against the target of ``rows``, and against a seasonal-naive forecast.

    ``wape`` is the absolute error as a share of total load; ``skill`` is
    1 - mae / mae of repeating the value one longest lag earlier (positive is better).
    """
    actual = rows[spec.target_column].to_numpy(dtype=float)
    mae = float(mean_absolute_error(actual, predicted))
    metrics = {
        "mae": mae,
        "rmse": float(math.sqrt(mean_squared_error(actual, predicted))),
        "wape": float(np.abs(actual - predicted).sum() / max(np.abs(actual).sum(), 1e-12)),
        "r2": float(r2_score(actual, predicted)) if len(actual) > 1 else float("nan"),
    }
    if spec.features.lags:
        naive_column = feature_columns(spec)[spec.features.lags.index(max(spec.features.lags))]
        naive = rows[naive_column].to_numpy(dtype=float)
        known = ~np.isnan(naive)
        if known.any():
            # Both errors over the same rows: those that have a value one longest lag earlier.
            naive_mae = float(mean_absolute_error(actual[known], naive[known]))
            model_mae = float(mean_absolute_error(actual[known], np.asarray(predicted)[known]))
            metrics["mae_seasonal_naive"] = naive_mae
            metrics["skill"] = 1.0 - model_mae / naive_mae if naive_mae > 0 else float("nan")
    return metrics
