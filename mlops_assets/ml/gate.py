"""The quality gate: may a candidate model replace the registry's champion?

Candidate and champion are scored on the same hold-out: the candidate's own held-out
hours, less any hour the champion was fitted on (so neither model is scored on its
training data). The candidate is refused when it misses an absolute bound of the
spec, when it is worse than the champion by more than the spec's margin on the gate
metric, or when there is no hour to compare them on.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import HIGHER_IS_BETTER, DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.registry import RegisteredModel, Registry
from mlops_assets.ml.trainer import forecast_metrics
from mlops_assets.partitions import daily_partitions, days_between

GATE_CHECK = "beats_champion"


@runtime_checkable
class Candidate(Protocol):
    """A trained model competing for the champion alias: where it was logged in MLflow, the
    gold days and version it was trained on, and its first held-out hour."""

    family: str
    window: tuple[dt.date, dt.date]
    holdout_start: pd.Timestamp
    gold_version: int | None
    mlflow_run_id: str | None
    model_uri: str | None

    def predict(self, rows: pd.DataFrame) -> np.ndarray: ...


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one candidate, and the figures behind it."""

    passed: bool
    reasons: list[str]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion_version: str | None = None
    holdout_rows: int = 0
    holdout_from: pd.Timestamp | None = None

    def summary(self, spec: DatasetSpec) -> str:
        metric = spec.gate.metric
        mine = self.candidate_metrics.get(metric, math.nan)
        text = f"{metric} {mine:.4f} over {self.holdout_rows} hold-out rows"
        if self.champion_metrics is not None:
            text += f" vs champion v{self.champion_version} {self.champion_metrics.get(metric, math.nan):.4f}"
        verdict = "passed" if self.passed else "refused: " + "; ".join(self.reasons)
        return f"{verdict} ({text})"

    def check_result(self, spec: DatasetSpec) -> dg.AssetCheckResult:
        metadata: dict[str, dg.MetadataValue] = {
            "decision": dg.MetadataValue.text(self.summary(spec)),
            "holdout_rows": dg.MetadataValue.int(self.holdout_rows),
            **{f"candidate_{name}": dg.MetadataValue.float(value) for name, value in self.candidate_metrics.items()},
        }
        if self.champion_metrics is not None:
            metadata["champion_version"] = dg.MetadataValue.text(self.champion_version or "")
            metadata.update(
                {f"champion_{name}": dg.MetadataValue.float(value) for name, value in self.champion_metrics.items()}
            )
        return dg.AssetCheckResult(
            check_name=GATE_CHECK, passed=self.passed, severity=dg.AssetCheckSeverity.ERROR, metadata=metadata
        )


def gate_check_spec(spec: DatasetSpec, candidate: dg.AssetKey) -> dg.AssetCheckSpec:
    gate = spec.gate
    bounds = ", ".join(
        f"{name} {'>=' if bound == 'min' else '<='} {value:g}"
        for name, limits in gate.thresholds.items()
        for bound, value in limits.items()
    )
    return dg.AssetCheckSpec(
        GATE_CHECK,
        asset=candidate,
        blocking=True,
        partitions_def=daily_partitions(spec),
        description=(
            f"The model may replace the champion of {gate.model_name}: its {gate.metric} on the common "
            f"hold-out is at most {gate.margin:.0%} worse than the champion's"
            + (f", and it meets {bounds}" if bounds else "")
            + ". A failure keeps it out of the registry."
        ),
    )


def holdout_rows(lake: DeltaLake, spec: DatasetSpec, candidate: Candidate) -> pd.DataFrame:
    """The candidate's held-out gold rows, read at the gold version it was trained on."""
    keys = DatasetKeys(spec)
    days = days_between(candidate.holdout_start.date(), candidate.window[1])
    rows = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days, version=candidate.gold_version).rows
    rows = rows.dropna(subset=[spec.target_column])
    return rows[rows[spec.timestamp_column] >= candidate.holdout_start].reset_index(drop=True)


def judge(
    spec: DatasetSpec,
    candidate: Candidate,
    holdout: pd.DataFrame,
    champion: RegisteredModel | None,
    champion_predict: Callable[[pd.DataFrame], np.ndarray] | None,
) -> GateDecision:
    """The gate's decision on ``candidate``, against ``champion`` when there is one."""
    gate, timestamp = spec.gate, spec.timestamp_column
    reasons: list[str] = []
    start = candidate.holdout_start
    if champion is not None and champion.trained_until is not None:
        start = max(start, champion.trained_until)
    common = holdout[holdout[timestamp] >= start]
    if common.empty:
        return GateDecision(
            passed=False,
            reasons=[
                "no hold-out hour that neither model was fitted on"
                + (f" (champion v{champion.version} was fitted up to {start})" if champion else "")
            ],
            candidate_metrics={},
            champion_version=champion.version if champion else None,
            holdout_from=start,
        )
    mine = forecast_metrics(common, np.asarray(candidate.predict(common), dtype=float), spec)
    for name, limits in gate.thresholds.items():
        value = mine.get(name, math.nan)
        if "min" in limits and not value >= limits["min"]:
            reasons.append(f"{name} {value:.4f} is below the spec's minimum {limits['min']:g}")
        if "max" in limits and not value <= limits["max"]:
            reasons.append(f"{name} {value:.4f} is above the spec's maximum {limits['max']:g}")
    theirs = None
    if champion is not None and champion_predict is not None:
        theirs = forecast_metrics(common, np.asarray(champion_predict(common), dtype=float), spec)
        ours, best = mine.get(gate.metric, math.nan), theirs.get(gate.metric, math.nan)
        if gate.metric in HIGHER_IS_BETTER:
            worse = not ours >= best - gate.margin * abs(best)
        else:
            worse = not ours <= best * (1 + gate.margin)
        if worse:
            reasons.append(
                f"{gate.metric} {ours:.4f} is worse than champion v{champion.version}'s {best:.4f} "
                f"by more than {gate.margin:.0%}"
            )
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        candidate_metrics=mine,
        champion_metrics=theirs,
        champion_version=champion.version if champion else None,
        holdout_rows=len(common),
        holdout_from=start,
    )


def evaluate(spec: DatasetSpec, lake: DeltaLake, registry: Registry, candidate: Candidate) -> GateDecision:
    """The gate's decision on ``candidate`` against the registry's current champion."""
    champion = registry.champion(spec.gate.model_name)
    served = registry.load(champion) if champion is not None else None
    return judge(
        spec,
        candidate,
        holdout_rows(lake, spec, candidate),
        champion,
        served.predict if served is not None else None,
    )
