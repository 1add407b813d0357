"""Releases: the registry's decision, partition by partition, on which model is the champion.

One release asset per candidate asset (the forecaster, the checkpoint model), each with
its own registered model. The decision for partition D judges D's candidate against the
champion for the partition before D (the model that served when D's data arrived):

- it passes the gate (:mod:`mlops_assets.ml.gate`): the champion for D is D's candidate;
- it is refused: the champion for D stays the one before.

Decisions are declared to depend on the decision before them, so they form a chain in
data time, not arrival time: whatever order files arrive in, every partition ends up
judged against the same champion, and the registry ends on the same champion. The
registry's aliases follow the decision for the latest partition only; a decision for an
earlier partition (late data, a backfill) is recorded and moves nothing. Because each
decision waits for the one before it (automation never starts a decision while the one
before is in a run), alias moves follow partition order. At that latest
partition, the candidate is registered (unless the very same model is already, compared
by its fitted digest) and marked ``challenger`` while it is judged; ``champion`` moves to
the decision's champion when it changed. With ``registry.dry_run`` the decision is recorded
and no alias moves.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.digests import short_digest
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml import gate
from mlops_assets.ml.record import ModelRecord
from mlops_assets.ml.registry import CHAMPION, Registry
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.partitions import partition_before, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update, used_version_tag

RELEASE_CODE_VERSION = "release-2"


@dataclass(frozen=True)
class ReleaseDecision:
    """The registry's decision for one partition: its candidate, the champion before it (the
    model that scores the partition), the gate's verdict, the champion for the partition
    (the candidate if it passed, else the champion before), and the registered version of
    that champion when the decision registered it."""

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
    def from_json(cls, value: Mapping[str, Any]) -> "ReleaseDecision":
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


def decision_before(instance: dg.DagsterInstance, release: dg.AssetKey, partition: str) -> "ReleaseDecision | None":
    """The latest decision of ``release`` for a partition before ``partition`` (the one just
    before it, or the latest earlier one when partitions without data lie between)."""
    earlier = [key for key in instance.get_materialized_partitions(release) if key < partition]
    return decision_for(instance, release, max(earlier)) if earlier else None


def decision_for(instance: dg.DagsterInstance, release: dg.AssetKey, partition: str) -> "ReleaseDecision | None":
    """The latest decision of ``release`` for ``partition``, if it has one."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=release, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    return ReleaseDecision.from_json(records[0].asset_materialization.metadata["decision"].value)


def first_champion_partition(instance: dg.DagsterInstance, release: dg.AssetKey) -> str | None:
    """The first partition whose decision has a champion: the partitions after it can be scored."""
    for partition in sorted(instance.get_materialized_partitions(release)):
        decision = decision_for(instance, release, partition)
        if decision is not None and decision.champion is not None:
            return partition
    return None


def registered_name(spec: DatasetSpec, candidate: dg.AssetKey) -> str:
    keys = DatasetKeys(spec)
    return spec.gate.model_name if candidate == keys.forecaster else spec.gate.checkpoint_model_name


def build_release_asset(spec: DatasetSpec, candidate_key: dg.AssetKey) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    release_key = keys.release(candidate_key)
    name = registered_name(spec, candidate_key)
    noun = spec.grain.noun

    @dg.asset(
        key=release_key,
        ins={"candidate": dg.AssetIn(candidate_key)},
        deps=[dg.AssetDep(release_key, partition_mapping=partition_before())],
        partitions_def=partitions_def(spec),
        group_name="registry",
        kinds={"mlflow"},
        code_version=spec.code_version(RELEASE_CODE_VERSION, "registry"),
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
    def release(
        context: dg.AssetExecutionContext, candidate: gate.Candidate, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> dg.MaterializeResult:
        partition = context.partition_key
        record = candidate.record(candidate_key.to_user_string(), partition)
        before = decision_before(context.instance, release_key, partition)
        champion_before = before.champion if before is not None else None
        registry = mlflow_tracking.registry()
        if champion_before is not None and champion_before.sha256 == record.sha256:
            verdict = None
            summary = f"identical to champion {champion_before.label}: nothing to release"
            passed, champion = True, champion_before
        else:
            verdict = gate.judge(
                spec,
                candidate.predict,
                gate.holdout_rows(lake, spec, record),
                champion_before,
                registry.load(champion_before.model_uri).predict if champion_before is not None else None,
            )
            summary = verdict.summary(spec)
            passed, champion = verdict.passed, (record if verdict.passed else champion_before)
        version, moves = _apply(context, spec, registry, name, partition, record, champion_before, champion, summary)
        decision = ReleaseDecision(
            partition=partition,
            candidate=record,
            champion_before=champion_before,
            passed=passed,
            summary=summary,
            champion=champion,
            registered_version=version,
            gate=verdict.to_json() if verdict is not None else {"passed": True, "reasons": [], "rows": 0},
        )
        context.log.info(f"{name} for {partition}: {summary}; {'; '.join(moves) or 'no alias moved'}")
        return dg.MaterializeResult(
            metadata={
                "decision": dg.MetadataValue.json(decision.to_json()),
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
            data_version=dg.DataVersion(decision.data_version),
            tags={
                used_version_tag(candidate_key): record.sha256[:20],
                used_version_tag(release_key): before.data_version if before is not None else "none",
            },
        )

    return release


def build_gate_check(spec: DatasetSpec, candidate_key: dg.AssetKey) -> dg.AssetChecksDefinition:
    """The gate's verdict on each partition's candidate, as an asset check of its release.

    It reports the decision the release recorded (a separate step, so that the release,
    which depends on the partition before it, runs on its own partition only)."""
    release_key = DatasetKeys(spec).release(candidate_key)

    @dg.asset_check(
        asset=release_key,
        name=gate.GATE_CHECK,
        partitions_def=partitions_def(spec),
        description=gate.gate_check_description(spec),
    )
    def beats_champion(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        decision = decision_for(context.instance, release_key, context.partition_key)
        if decision is None:
            raise dg.Failure(f"{release_key.to_user_string()} has no decision for {context.partition_key}")
        return gate.decision_check_result(decision.passed, decision.summary, decision.gate)

    return beats_champion


def _apply(
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
    reason = f"release decision for {partition}: {summary}"
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
    move = registry.release(name, version.version, partition, reason, actor)
    if move is not None:
        replaced = f" (was v{move.replaced.version})" if move.replaced else ""
        moves.append(f"{CHAMPION} -> v{version.version}{replaced}")
    return version.version, moves
