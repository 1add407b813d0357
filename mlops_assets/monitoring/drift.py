"""Drift: how far a partition's features, predictions and errors moved from what the model
that scored it was measured on.

The reference is that model's own hold-out: the latest rows of its training window,
read at the gold version it was trained on, which it was not fitted on. They are the
most recent data before the scored partition and about as long as it, so a normal day
looks like its reference and the comparison does not flag the season's own movement.
Per monitored feature and for the predictions: the population stability index over the
reference's deciles (extended to catch values outside them) and the two-sample
Kolmogorov-Smirnov statistic. Calendar features are left out: one day holds a single
weekday by construction. Once actuals are there, the partition's error is compared with
the model's error on its hold-out.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

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
    """Features whose distribution should stay put from one partition to the next (all but calendar ones)."""
    return [column for column in feature_columns(spec) if column not in spec.features.calendar]


@dataclass(frozen=True)
class DriftReport:
    """PSI and KS per monitored column and for the predictions, the error ratio, and the verdict.

    ``judged`` is False when the partition has too few rows to tell drift from noise.
    """

    day: dt.date
    psi: dict[str, float]
    ks: dict[str, float]
    drifted_columns: list[str]
    reference_rows: int
    current_rows: int
    judged: bool
    error_ratio: float = math.nan
    reasons: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        return self.judged and bool(self.reasons)

    @property
    def max_psi(self) -> float:
        values = [value for value in self.psi.values() if not math.isnan(value)]
        return max(values) if values else math.nan

    def reason(self) -> str:
        """Why the partition counts as drifted, in one line."""
        return f"drift on {self.day}: {'; '.join(self.reasons)}"


def drift_report(
    spec: DatasetSpec,
    day: dt.date,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_predictions: np.ndarray,
    current_predictions: np.ndarray,
) -> DriftReport:
    """Drift of ``current`` (the partition's gold rows and predictions) from ``reference`` (the
    scoring model's hold-out rows and its predictions for them).

    A column drifted when its PSI passes the spec's threshold and its KS statistic does
    too: PSI alone flags small samples whose deciles wobble. The partition drifted when
    ``drifted_share`` of the monitored features drifted, when the predictions drifted, or
    when its error is ``error_ratio`` times the model's hold-out error.
    """
    settings = spec.monitoring
    columns = monitored_columns(spec)
    pairs = {column: (reference[column].to_numpy(), current[column].to_numpy()) for column in columns}
    pairs[PREDICTION] = (np.asarray(reference_predictions), np.asarray(current_predictions))
    psis = {column: psi(before, after, settings.bins) for column, (before, after) in pairs.items()}
    kss = {column: ks(before, after) for column, (before, after) in pairs.items()}
    drifted = [
        column for column in pairs if psis[column] > settings.psi_threshold and kss[column] > settings.ks_threshold
    ]
    reasons = []
    features = [column for column in drifted if column != PREDICTION]
    if columns and len(features) >= settings.drifted_share * len(columns):
        worst = sorted(features, key=lambda column: -psis[column])
        reasons.append(
            f"{len(features)} of {len(columns)} features moved ("
            + ", ".join(f"{column} psi {psis[column]:.2f} ks {kss[column]:.2f}" for column in worst)
            + ")"
        )
    if PREDICTION in drifted:
        reasons.append(f"predictions moved (psi {psis[PREDICTION]:.2f} ks {kss[PREDICTION]:.2f})")
    ratio = _error_ratio(spec, reference, current, reference_predictions, current_predictions)
    if ratio >= settings.error_ratio:
        reasons.append(f"the error is {ratio:.1f} times the model's hold-out error")
    return DriftReport(
        day=day,
        psi=psis,
        ks=kss,
        drifted_columns=drifted,
        reference_rows=len(reference),
        current_rows=len(current),
        judged=len(current) >= settings.min_rows and len(reference) >= settings.min_rows,
        error_ratio=ratio,
        reasons=reasons,
    )


def _error_ratio(
    spec: DatasetSpec,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    reference_predictions: np.ndarray,
    current_predictions: np.ndarray,
) -> float:
    """The partition's mean absolute error over the model's on its hold-out (NaN without actuals)."""
    target = spec.target_column
    before = np.abs(reference[target].to_numpy(dtype=float) - np.asarray(reference_predictions, dtype=float))
    after = np.abs(current[target].to_numpy(dtype=float) - np.asarray(current_predictions, dtype=float))
    before, after = _finite(before), _finite(after)
    if not len(before) or not len(after) or before.mean() == 0:
        return math.nan
    return float(after.mean() / before.mean())
