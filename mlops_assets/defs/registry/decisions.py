"""The registry's decisions, partition by partition, on which model is the champion.

One decision asset per candidate asset (the forecaster, the checkpoint model), each with
its own registered model. The decision for partition D judges D's candidate against the
champion for the partition before D (the model that served when D's data arrived):

- it passes the gate (:mod:`mlops_assets.defs.registry.gate`): the champion for D is D's candidate;
- it is refused: the champion for D stays the one before.

The candidate and the earlier decisions are inputs of the decision, so the decisions form a
chain in data time, not arrival time: whatever order files arrive in, every partition ends
up judged against the same champion, and the registry ends on the same champion. The gate
runs once per candidate, in the decision's own step; the decision's asset check reports
its verdict. The registry's aliases follow the decision for the latest partition only; a
decision for an earlier partition (late data, a backfill) is recorded and moves nothing.
Decisions move aliases one at a time (the ``mlflow_registry`` concurrency pool), and a
decision made again moves nothing that is already where it says. At the latest partition,
the candidate is registered (unless the very same model is already, compared by its
fitted digest) and marked ``challenger`` while it is judged; ``champion`` moves to the
decision's champion when it changed. With ``registry.dry_run`` the decision is recorded and
no alias moves.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update, used_version_tag
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.registry import gate
from mlops_assets.digests import short_digest
from mlops_assets.partitions import partitions_def
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.model_registry import CHAMPION, Registry
from mlops_assets.resources.records import MANY_PARTITIONS, ModelRecord, latest_record

DECISION_CODE_VERSION = "decision-3"
# Alias moves of every registered model go one at a time: at most one decision step runs at once.
REGISTRY_POOL = "mlflow_registry"


@dataclass(frozen=True)
class Decision:
    """The registry's decision for one partition: its candidate, the champion before it (the
    model that scores the partition), the gate's verdict, the champion for the partition (the
    candidate if it passed, else the champion before), and the registered version of that
    champion when the decision registered it."""

    partition: str
    candidate: ModelRecord
    champion_before: ModelRecord | None
    passed: bool
    summary: str
    champion: ModelRecord | None
    registered_version: str | None
    gate: Mapping[str, Any]

    @property
    def data_version(self) -> str:
        """Changes exactly when the champion before or the champion for the partition does."""
        text = f"{_sha(self.champion_before)}|{_sha(self.champion)}"
        return short_digest(text, 20)

    def to_json(self) -> dict[str, Any]:
        return {
            "partition": self.partition,
            "candidate": self.candidate.to_json(),
            "champion_before": self.champion_before.to_json() if self.champion_before else None,
            "passed": self.passed,
            "summary": self.summary,
            "champion": self.champion.to_json() if self.champion else None,
            "registered_version": self.registered_version,
            "gate": dict(self.gate),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "Decision":
        return cls(
            partition=value["partition"],
            candidate=ModelRecord.from_json(value["candidate"]),
            champion_before=ModelRecord.from_json(value["champion_before"]) if value.get("champion_before") else None,
            passed=bool(value["passed"]),
            summary=value["summary"],
            champion=ModelRecord.from_json(value["champion"]) if value.get("champion") else None,
            registered_version=value.get("registered_version"),
            gate=dict(value.get("gate", {})),
        )


def _sha(record: ModelRecord | None) -> str:
    return record.sha256 if record is not None else "none"


def decision_for(instance: dg.DagsterInstance, key: dg.AssetKey, partition: str) -> Decision | None:
    """The latest decision of the decision asset ``key`` for ``partition``, if it has one."""
    return latest_record(instance, key, partition)


def first_champion_partition(instance: dg.DagsterInstance, key: dg.AssetKey) -> str | None:
    """The first partition whose decision has a champion: the partitions after it can be scored."""
    for partition in sorted(instance.get_materialized_partitions(key)):
        decision = decision_for(instance, key, partition)
        if decision is not None and decision.champion is not None:
            return partition
    return None


def registered_name(spec: DatasetSpec, candidate: dg.AssetKey) -> str:
    keys = DatasetKeys(spec)
    return spec.gate.model_name if candidate == keys.forecaster else spec.gate.checkpoint_model_name


def build_decision_asset(spec: DatasetSpec, candidate_key: dg.AssetKey) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    decision_key = keys.decision(candidate_key)
    name = registered_name(spec, candidate_key)
    noun = spec.grain.noun
    window = spec.model.window_partitions

    @dg.asset(
        key=decision_key,
        ins={
            "candidate": dg.AssetIn(candidate_key),
            # The decisions of the window's partitions before this one: the latest of them chose
            # the champion this partition's candidate is judged against.
            "earlier": dg.AssetIn(
                decision_key,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-window, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
                metadata={MANY_PARTITIONS: True},
            ),
        },
        partitions_def=partitions_def(spec),
        group_name="registry",
        kinds={"mlflow"},
        code_version=spec.code_version(DECISION_CODE_VERSION, "registry"),
        io_manager_key="records",
        pool=REGISTRY_POOL,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"The registry's decision for the {noun}: the {candidate_key.to_user_string()} model of the {noun} "
            f"judged against the champion for the {noun} before it. The champion for the {noun} is the "
            "candidate when it passed the gate, else the one before. The MLflow model "
            f"{name} follows the decision for the latest {noun}: `challenger` marks the candidate under "
            "review, `champion` the decision's champion, `previous` the champion it replaced."
        ),
    )
    def decision(
        context: dg.AssetExecutionContext,
        candidate: ModelRecord,
        earlier: Mapping[str, Decision],
        lake: DeltaLake,
        mlflow_tracking: MlflowTracking,
    ) -> dg.Output[Decision]:
        partition = context.partition_key
        before = earlier[max(earlier)] if earlier else None
        champion_before = before.champion if before is not None else None
        registry = mlflow_tracking.registry()
        if champion_before is not None and champion_before.sha256 == candidate.sha256:
            verdict = None
            summary = f"identical to champion {champion_before.label}: nothing to promote"
            passed, champion = True, champion_before
        else:
            verdict = gate.judge(
                spec,
                mlflow_tracking.load_model(candidate).predict,
                gate.holdout_rows(lake, spec, candidate),
                champion_before,
                mlflow_tracking.load_model(champion_before).predict if champion_before is not None else None,
            )
            summary = verdict.summary(spec)
            passed, champion = verdict.passed, (candidate if verdict.passed else champion_before)
        version, moves = _move_aliases(
            context, spec, registry, name, partition, candidate, champion_before, champion, summary
        )
        verdict_json = verdict.to_json() if verdict is not None else {"passed": True, "reasons": [], "rows": 0}
        made = Decision(
            partition=partition,
            candidate=candidate,
            champion_before=champion_before,
            passed=passed,
            summary=summary,
            champion=champion,
            registered_version=version,
            gate=verdict_json,
        )
        context.log.info(f"{name} for {partition}: {summary}; {'; '.join(moves) or 'no alias moved'}")
        return dg.Output(
            made,
            metadata={
                "passed": dg.MetadataValue.bool(passed),
                "summary": dg.MetadataValue.text(summary),
                "champion": dg.MetadataValue.text(champion.label if champion else ""),
                "registered_model": dg.MetadataValue.text(name),
                "version": dg.MetadataValue.text(version or ""),
                "champion_before": dg.MetadataValue.text(champion_before.label if champion_before else ""),
                "alias_moves": dg.MetadataValue.json(moves),
            },
            # What automation compares: this decision changed only if one of its champions did,
            # and it was made from this candidate and this decision before it.
            data_version=dg.DataVersion(made.data_version),
            tags={
                used_version_tag(candidate_key): candidate.sha256[:20],
                used_version_tag(decision_key): before.data_version if before is not None else "none",
            },
        )

    return decision


def build_gate_check(spec: DatasetSpec, candidate_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The gate's verdict on each partition's candidate, as an asset check of its decision.

    It reports the verdict the decision recorded; the gate itself runs once, in the decision's
    step. A check of its own (not one the decision's step yields) keeps automation from
    requesting the partitions a decision reads along with the one it decides: Dagster requests
    an asset's checks with it, and maps an asset that reads itself onto those partitions too.
    """
    decision_key = DatasetKeys(spec).decision(candidate_key)

    @dg.asset_check(
        asset=decision_key,
        name=gate.GATE_CHECK,
        partitions_def=partitions_def(spec),
        description=gate.gate_check_description(spec),
    )
    def beats_champion(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        decision = decision_for(context.instance, decision_key, context.partition_key)
        if decision is None:
            raise dg.Failure(f"{decision_key.to_user_string()} has no decision for {context.partition_key}")
        return gate.decision_check_result(decision.passed, decision.summary, decision.gate)

    return beats_champion


def _move_aliases(
    context: dg.AssetExecutionContext,
    spec: DatasetSpec,
    registry: Registry,
    name: str,
    partition: str,
    candidate: ModelRecord,
    champion_before: ModelRecord | None,
    champion: ModelRecord | None,
    summary: str,
) -> tuple[str | None, list[str]]:
    """Move the registry's aliases as the decision for ``partition`` says, if it is the latest
    partition's decision; returns the champion's registered version (None when it was not
    registered by this decision) and the moves made."""
    actor = f"dagster run {context.run.run_id}"
    reason = f"decision for {partition}: {summary}"
    if spec.gate.dry_run:
        registry.record_decision(name, None, f"dry run: {reason}", actor)
        return None, ["dry run: no alias moved"]
    decided_for = registry.champion_for(name)
    if decided_for is not None and decided_for > partition:
        return None, [f"none: the champion was chosen for a later {spec.grain.noun} ({decided_for})"]
    tags = {"dagster_run_id": context.run.run_id, "decided_for": partition}
    moves = []
    serving = registry.champion(name)
    known = {record.sha256 for record in (champion_before,) if record is not None}
    if serving is not None:
        known.add(serving.tag("sha256") or "")
    if candidate.sha256 not in known:
        under_review, _ = registry.register(name, candidate, tags)
        if registry.set_challenger(name, under_review.version, reason, actor) is not None:
            moves.append(f"challenger -> v{under_review.version}")
    if champion is None:
        return None, moves
    version, _ = registry.register(name, champion, tags)
    move = registry.set_champion(name, version.version, partition, reason, actor)
    if move is not None:
        replaced = f" (was v{move.replaced.version})" if move.replaced else ""
        moves.append(f"{CHAMPION} -> v{version.version}{replaced}")
    return version.version, moves
