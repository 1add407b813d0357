"""Drift: how far a day's features and predictions moved from what the serving model learned on.

The reference is the training window of the registered version that scored the day
(its gold days, read at the table version it was trained on, before its hold-out),
and the same version's predictions on those rows. Per feature and for the
predictions: the population stability index over the reference's deciles (extended
to catch values outside them) and the two-sample Kolmogorov-Smirnov statistic.
Calendar features are left out: one day holds a single weekday by construction.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.features import feature_columns

PREDICTION = "prediction"
# Share given to an empty bin, so a bin that one side never visits has a finite PSI term.
EMPTY_BIN_SHARE = 1e-4


def psi(reference: np.ndarray, current: np.ndarray, bins: int) -> float:
    """Population stability index of ``current`` against ``reference``; NaN values are ignored."""
    reference, current = _finite(reference), _finite(current)
    if not len(reference) or not len(current):
        return math.nan
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1))[1:-1])
    expected = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=len(edges) + 1)
    actual = np.bincount(np.searchsorted(edges, current, side="right"), minlength=len(edges) + 1)
    p = np.clip(expected / len(reference), EMPTY_BIN_SHARE, None)
    q = np.clip(actual / len(current), EMPTY_BIN_SHARE, None)
    return float(np.sum((q - p) * np.log(q / p)))


def ks(reference: np.ndarray, current: np.ndarray) -> float:
    """The Kolmogorov-Smirnov statistic: the largest gap between the two empirical distributions."""
    reference, current = _finite(reference), _finite(current)
    if not len(reference) or not len(current):
        return math.nan
    return float(ks_2samp(reference, current).statistic)


def _finite(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    return values[np.isfinite(values)]


def monitored_columns(spec: DatasetSpec) -> list[str]:
    """Features whose distribution should stay put from day to day (all but calendar ones)."""
    return [column for column in feature_columns(spec) if column not in spec.features.calendar]


@dataclass(frozen=True)
class DriftReport:
    """PSI and KS per monitored column and for the predictions, and the verdict."""

    day: dt.date
    psi: dict[str, float]
    ks: dict[str, float]
    drifted: list[str]
    reference_rows: int
    current_rows: int

    @property
    def max_psi(self) -> float:
        values = [value for value in self.psi.values() if not math.isnan(value)]
        return max(values) if values else math.nan

    def reason(self, spec: DatasetSpec) -> str:
        """Why the day counts as drifted, in one line."""
        worst = sorted(self.drifted, key=lambda column: -self.psi.get(column, 0.0))
        parts = [f"{column} psi {self.psi[column]:.3f} ks {self.ks[column]:.3f}" for column in worst]
        return (
            f"drift on {self.day}: {', '.join(parts)} "
            f"(thresholds psi {spec.monitoring.psi_threshold:g}, ks {spec.monitoring.ks_threshold:g})"
        )


def drift_report(
    spec: DatasetSpec,
    day: dt.date,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_predictions: np.ndarray,
    current_predictions: np.ndarray,
) -> DriftReport:
    """Drift of ``current`` (the day's gold rows and predictions) from ``reference``.

    A column drifted when its PSI passes the spec's threshold and its KS statistic does
    too: PSI alone flags small samples whose deciles wobble.
    """
    settings = spec.monitoring
    pairs = {column: (reference[column].to_numpy(), current[column].to_numpy()) for column in monitored_columns(spec)}
    pairs[PREDICTION] = (np.asarray(reference_predictions), np.asarray(current_predictions))
    psis = {column: psi(before, after, settings.bins) for column, (before, after) in pairs.items()}
    kss = {column: ks(before, after) for column, (before, after) in pairs.items()}
    drifted = [
        column for column in pairs if psis[column] > settings.psi_threshold and kss[column] > settings.ks_threshold
    ]
    return DriftReport(
        day=day, psi=psis, ks=kss, drifted=drifted, reference_rows=len(reference), current_rows=len(current)
    )
