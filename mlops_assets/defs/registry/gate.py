"""The quality gate: may a partition's candidate model become the champion?

A candidate is judged on its own held-out rows, less any row the champion it would
replace was fitted on (judged by the rows each model was trained on, not by a time
cutoff, so late and backfilled partitions are judged as fairly as new ones). It passes
when, on those rows:

- it beats the seasonal-naive forecast (skill above ``registry.min_skill``, 0 by
  default): a model worse than repeating the value one season earlier never serves;
- it meets the spec's absolute ``registry.thresholds``;
- it is not worse than the champion by more than ``registry.margin`` on
  ``registry.metric``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import HIGHER_IS_BETTER, DatasetSpec
from mlops_assets.defs.models.training import forecast_metrics
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.records import ModelRecord

GATE_CHECK = "beats_champion"

Predict = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class GateDecision:
    """The gate's verdict on one candidate, and the figures behind it."""

    passed: bool
    reasons: list[str]
    candidate_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None = None
    champion: ModelRecord | None = None
    rows: int = 0

    def summary(self, spec: DatasetSpec) -> str:
        metric = spec.gate.metric
        mine = self.candidate_metrics
        parts = [f"{metric} {mine.get(metric, math.nan):.4f}"]
        if self.champion_metrics is not None and self.champion is not None:
            parts.append(f"champion {self.champion.label} {self.champion_metrics.get(metric, math.nan):.4f}")
        parts.append(f"skill {mine.get('skill', math.nan):.3f} vs seasonal naive")
        verdict = "passed" if self.passed else "refused: " + "; ".join(self.reasons)
        return f"{verdict} ({', '.join(parts)}, {self.rows} hold-out rows)"

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "candidate_metrics": _finite(self.candidate_metrics),
            "champion": self.champion.label if self.champion is not None else None,
            "champion_metrics": _finite(self.champion_metrics) if self.champion_metrics is not None else None,
            "rows": self.rows,
        }


def decision_check_result(passed: bool, summary: str, verdict: Mapping[str, Any]) -> dg.AssetCheckResult:
    """The asset check result of a recorded gate verdict: the decision and both models' metrics."""
    metadata: dict[str, dg.MetadataValue] = {
        "decision": dg.MetadataValue.text(summary),
        "holdout_rows": dg.MetadataValue.int(int(verdict.get("rows", 0))),
    }
    for side in ("candidate", "champion"):
        for name, value in (verdict.get(f"{side}_metrics") or {}).items():
            metadata[f"{side}_{name}"] = dg.MetadataValue.float(math.nan if value is None else float(value))
    if verdict.get("champion"):
        metadata["champion"] = dg.MetadataValue.text(verdict["champion"])
    return dg.AssetCheckResult(passed=passed, severity=dg.AssetCheckSeverity.WARN, metadata=metadata)


def _finite(metrics: dict[str, float]) -> dict[str, float | None]:
    return {name: None if math.isnan(value) else value for name, value in metrics.items()}


def gate_check_description(spec: DatasetSpec) -> str:
    gate = spec.gate
    bounds = ", ".join(
        f"{name} {'>=' if bound == 'min' else '<='} {value:g}"
        for name, limits in gate.thresholds.items()
        for bound, value in limits.items()
    )
    return (
        f"The partition's candidate beat the seasonal-naive forecast (skill above {gate.min_skill:g}) and is "
        f"at most {gate.margin:.0%} worse in {gate.metric} than the champion it would replace, on hold-out "
        "rows neither was fitted on" + (f"; it meets {bounds}" if bounds else "") + ". Refused candidates "
        "never take the champion alias; the champion before them stays."
    )


def holdout_rows(lake: DeltaLake, spec: DatasetSpec, record: ModelRecord) -> pd.DataFrame:
    """A model's held-out gold rows, read at the gold version it was trained on."""
    keys = DatasetKeys(spec)
    days = [pd.Timestamp(partition).date() for partition in record.holdout_partitions]
    rows = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days, version=record.gold_version).rows
    rows = rows.dropna(subset=[spec.target_column])
    rows = rows[rows[spec.timestamp_column] >= pd.Timestamp(record.holdout_start)]
    return rows.sort_values([spec.timestamp_column, spec.entity_column], kind="stable").reset_index(drop=True)


def judge(
    spec: DatasetSpec,
    candidate: Predict,
    holdout: pd.DataFrame,
    champion: ModelRecord | None,
    champion_predict: Predict | None,
) -> GateDecision:
    """The gate's decision on a candidate with ``holdout`` rows, against ``champion`` if there is one."""
    gate = spec.gate
    common = holdout if champion is None else holdout[~champion.seen(holdout, spec)].reset_index(drop=True)
    if common.empty:
        return GateDecision(
            passed=False,
            reasons=[f"no hold-out row that champion {champion.label} was not fitted on"],
            candidate_metrics={},
            champion=champion,
        )
    mine = forecast_metrics(common, np.asarray(candidate(common), dtype=float), spec)
    reasons: list[str] = []
    skill = mine.get("skill", math.nan)
    if math.isnan(skill):
        reasons.append(
            f"no seasonal-naive forecast to beat on the hold-out (it needs {spec.features.season} of history "
            "before each held-out row)"
        )
    elif not skill > gate.min_skill:
        reasons.append(f"skill {skill:.3f} does not beat the seasonal-naive forecast (needs above {gate.min_skill:g})")
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
                f"{gate.metric} {ours:.4f} is worse than champion {champion.label}'s {best:.4f} "
                f"by more than {gate.margin:.0%}"
            )
    return GateDecision(
        passed=not reasons,
        reasons=reasons,
        candidate_metrics=mine,
        champion_metrics=theirs,
        champion=champion,
        rows=len(common),
    )
