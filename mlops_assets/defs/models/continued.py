"""Continued training: a network trained in steps (epochs), partition after partition, that can
stop after any step and go on from a saved state.

Every step is a pure function of the model before it, the day's rows, the seed and
the step's number: each epoch visits the rows in an order drawn from
``(seed, day, epoch)``, and the network's own shuffling is off. So training that
stops after step ``s`` and resumes from a copy saved after step ``s`` ends with the
same model as training that never stopped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.neural_network import MLPRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


class ScaledTarget(RegressorMixin, BaseEstimator):
    """A network trained on the standardised target that predicts in the target's own unit.

    The target's mean and scale are fixed when the model starts (from its first training
    rows), so a network learns on values near zero whatever the unit of the data (kWh,
    degrees, thousands of jobs), and keeps its meaning from one partition to the next.
    """

    def __init__(self, network: MLPRegressor, mean: float = 0.0, scale: float = 1.0) -> None:
        self.network = network
        self.mean = mean
        self.scale = scale

    def fit(self, inputs: np.ndarray, target: np.ndarray) -> ScaledTarget:
        """Fit from scratch: the target's mean and scale from ``target``, then the network."""
        values = np.asarray(target, dtype=float)
        self.mean = float(values.mean())
        self.scale = float(values.std()) if len(values) > 1 and values.std() > 0 else 1.0
        self.network.fit(inputs, (values - self.mean) / self.scale)
        return self

    def partial_fit(self, inputs: np.ndarray, target: np.ndarray) -> ScaledTarget:
        self.network.partial_fit(inputs, (np.asarray(target, dtype=float) - self.mean) / self.scale)
        return self

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self.network, "coefs_")

    def predict(self, inputs: np.ndarray) -> np.ndarray:
        return self.network.predict(inputs) * self.scale + self.mean


@dataclass
class MlpTrainer:
    """A scikit-learn multi-layer perceptron trained epoch by epoch with ``partial_fit``.

    The model is a pipeline that selects the feature columns, standardises them
    (statistics updated with each new partition), fills a missing feature with its mean
    (0 after scaling) and feeds the network, which learns a standardised target
    (:class:`ScaledTarget`); the same pipeline is what the registry serves.
    """

    target: str
    params: Mapping[str, Any]
    seed: int

    def fresh(self, features: list[str], rows: pd.DataFrame) -> Pipeline:
        network = MLPRegressor(random_state=self.seed, shuffle=False, **_network_params(self.params))
        values = rows[self.target].to_numpy(dtype=float)
        scale = float(values.std()) if len(values) > 1 and values.std() > 0 else 1.0
        pipeline = Pipeline(
            [
                ("features", ColumnTransformer([("selected", "passthrough", features)], remainder="drop")),
                ("scale", StandardScaler()),
                ("fill", SimpleImputer(strategy="constant", fill_value=0.0, keep_empty_features=True)),
                ("network", ScaledTarget(network, mean=float(values.mean()), scale=scale)),
            ]
        )
        selected = pipeline.named_steps["features"].fit_transform(rows)
        pipeline.named_steps["fill"].fit(selected)
        return pipeline

    def begin_day(self, model: Pipeline, rows: pd.DataFrame) -> None:
        model.named_steps["scale"].partial_fit(model.named_steps["features"].transform(rows))

    def step(self, model: Pipeline, rows: pd.DataFrame, day: dt.date, step: int) -> None:
        order = np.random.default_rng([self.seed, day.toordinal(), step]).permutation(len(rows))
        inputs = model[:-1].transform(rows.iloc[order])
        model.named_steps["network"].partial_fit(inputs, rows[self.target].to_numpy(dtype=float)[order])


def _network_params(params: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(params)
    if "hidden_layer_sizes" in values:
        values["hidden_layer_sizes"] = tuple(values["hidden_layer_sizes"])
    return values


@dataclass
class TrainingState:
    """A model part-way through a day's training: ``step`` epochs of the day are done."""

    model: Any
    step: int


@dataclass
class DayTraining:
    """What a day of continued training did."""

    model: Any
    resumed_from_step: int
    steps_run: int
    states_saved: list[int] = field(default_factory=list)


def train_day(
    trainer: MlpTrainer,
    start: TrainingState,
    rows: pd.DataFrame,
    day: dt.date,
    steps: int,
    checkpoint_every: int,
    save: Callable[[TrainingState], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> DayTraining:
    """Train from ``start`` until ``steps`` epochs of ``day`` are done.

    ``start`` is either the day's beginning (step 0: the previous day's model, not yet
    adapted to this day) or a saved state. After every
    ``checkpoint_every`` steps, and never after the last one (the finished model is
    stored by the asset), ``save`` gets the state.
    """
    model = start.model
    if start.step == 0:
        trainer.begin_day(model, rows)
    written = []
    for step in range(start.step, steps):
        trainer.step(model, rows, day, step)
        done = step + 1
        if progress is not None:
            progress(done, steps)
        if save is not None and done % checkpoint_every == 0 and done < steps:
            save(TrainingState(model=model, step=done))
            written.append(done)
    return DayTraining(model=model, resumed_from_step=start.step, steps_run=steps - start.step, states_saved=written)
