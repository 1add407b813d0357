"""Data-quality rules of a dataset spec, evaluated on silver rows and reported as asset checks.

``warn`` keeps failing rows, ``drop`` removes them, ``fail`` keeps them but makes a
blocking check fail, so nothing downstream of the day is built from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from mlops_assets.datasets.spec import DatasetSpec, QualityRule
from mlops_assets.partitions import partitions_def

SAMPLE_SIZE = 5


@dataclass(frozen=True)
class RuleOutcome:
    """How many of the rows a rule saw failed it, with a few of them as examples."""

    rule: QualityRule
    rows_checked: int
    rows_failed: int
    sample: list[dict[str, str]]

    @property
    def passed(self) -> bool:
        return self.rows_failed == 0


def apply_rules(rows: pd.DataFrame, rules: Sequence[QualityRule]) -> tuple[pd.DataFrame, list[RuleOutcome]]:
    """Evaluate every rule on ``rows``; return the rows kept and each rule's outcome."""
    keep = pd.Series(True, index=rows.index)
    outcomes = []
    for rule in rules:
        good = rows.eval(rule.expr, engine="python") if len(rows) else pd.Series(dtype=bool)
        if not isinstance(good, pd.Series):
            raise ValueError(f"quality rule {rule.name!r} ({rule.expr}) must give one value per row")
        good = good.astype("boolean").fillna(False).astype(bool)
        failing = rows[~good]
        sample = failing.head(SAMPLE_SIZE).astype(str).to_dict("records")
        outcomes.append(RuleOutcome(rule=rule, rows_checked=len(rows), rows_failed=len(failing), sample=sample))
        if rule.action == "drop":
            keep &= good
    return rows[keep].reset_index(drop=True), outcomes


def rule_check_specs(spec: DatasetSpec, asset_key: dg.AssetKey) -> list[dg.AssetCheckSpec]:
    """One asset check per rule, evaluated per day; rules whose action is ``fail`` block
    downstream assets of that day."""
    return [
        dg.AssetCheckSpec(
            name=rule.name,
            asset=asset_key,
            description=f"[{rule.action}] {rule.expr}",
            blocking=rule.action == "fail",
            partitions_def=partitions_def(spec),
        )
        for rule in spec.quality
    ]


def rule_check_results(outcomes: Sequence[RuleOutcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(
            check_name=outcome.rule.name,
            passed=outcome.passed,
            severity=dg.AssetCheckSeverity.ERROR if outcome.rule.action == "fail" else dg.AssetCheckSeverity.WARN,
            metadata={
                "action": dg.MetadataValue.text(outcome.rule.action),
                "expression": dg.MetadataValue.text(outcome.rule.expr),
                "rows_checked": dg.MetadataValue.int(outcome.rows_checked),
                "rows_failed": dg.MetadataValue.int(outcome.rows_failed),
                "failed_share": dg.MetadataValue.float(
                    outcome.rows_failed / outcome.rows_checked if outcome.rows_checked else 0.0
                ),
                "failed_examples": dg.MetadataValue.json(outcome.sample),
            },
        )
        for outcome in outcomes
    ]
