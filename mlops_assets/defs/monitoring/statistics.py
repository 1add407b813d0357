"""Drift: how far a partition's features, predictions and errors moved from what is normal.

The reference must be comparable with the scored partition: the same partition a year
before (the same length and season: a July against last July, not against the spring
before it), or, until there is a year of data, the scoring model's own hold-out (the
latest rows before the partition, about as long as it). Per monitored feature and for
the predictions: the population stability index over the reference's deciles (extended
to catch values outside them) and the two-sample Kolmogorov-Smirnov statistic. Calendar
features are left out: one day holds a single weekday by construction.

Inputs move for harmless reasons (a warm month, a series at a new high); what matters is
whether the model still forecasts as well as it did. So once actuals are there the
verdict is the error: the partition's against the one the model showed on its hold-out
when it was trained. Before actuals arrive, the inputs and predictions decide.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.stats import ks_2samp

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.lakehouse.features import feature_columns

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
    expected_mae: float = math.nan,
) -> DriftReport:
    """Drift of ``current`` (the partition's gold rows and predictions) from ``reference`` (rows
    of a comparable partition and the same model's predictions for them); ``expected_mae`` is
    the model's hold-out error (default: its error on ``reference``).

    A column drifted when its PSI passes the spec's threshold and its KS statistic does
    too: PSI alone flags small samples whose deciles wobble. Once actuals are known, the
    partition drifted when its error is ``error_ratio`` times the model's hold-out error;
    before, when ``drifted_share`` of the monitored features drifted or the predictions did.
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
    ratio = _error_ratio(spec, reference, current, reference_predictions, current_predictions, expected_mae)
    if not math.isnan(ratio):
        # With actuals, the error says whether the model still works: inputs that moved (a warm
        # month, a new year's levels) while the error stayed normal are no reason to retrain.
        if ratio >= settings.error_ratio:
            reasons.append(f"the error is {ratio:.1f} times the model's hold-out error")
    else:
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
    expected_mae: float,
) -> float:
    """The partition's mean absolute error over the error expected of the model (NaN without actuals)."""
    target = spec.target_column
    after = _finite(np.abs(current[target].to_numpy(dtype=float) - np.asarray(current_predictions, dtype=float)))
    if math.isnan(expected_mae):
        before = np.abs(reference[target].to_numpy(dtype=float) - np.asarray(reference_predictions, dtype=float))
        before = _finite(before)
        expected_mae = float(before.mean()) if len(before) else math.nan
    if not len(after) or math.isnan(expected_mae) or expected_mae == 0:
        return math.nan
    return float(after.mean() / expected_mae)
