"""Releases: a candidate model that passed the quality gate, registered and made champion.

One release asset per candidate asset (the forecaster, the checkpoint model). A day's
release runs only when the candidate's blocking gate check passed. Before moving the
alias it judges the candidate again against the champion of that moment: another
candidate may have been promoted since the check ran, and a candidate that does not
beat it is recorded as not released instead of replacing a better model.
"""

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml import gate
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.partitions import daily_partitions
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

RELEASE_CODE_VERSION = "release-1"


def build_release_asset(spec: DatasetSpec, candidate_key: dg.AssetKey) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    name = spec.gate.model_name

    @dg.asset(
        key=keys.release(candidate_key),
        ins={"candidate": dg.AssetIn(candidate_key)},
        partitions_def=daily_partitions(spec),
        group_name="registry",
        kinds={"mlflow"},
        code_version=RELEASE_CODE_VERSION,
        automation_condition=on_upstream_update(),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"The {candidate_key.to_user_string()} model of the day, registered as a version of "
            f"{name} and given the alias `champion` (the champion it replaces keeps `previous`) "
            "once it passed the quality gate."
        ),
    )
    def release(
        context: dg.AssetExecutionContext, candidate: gate.Candidate, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> dg.MaterializeResult:
        registry = mlflow_tracking.registry()
        decision = gate.evaluate(spec, lake, registry, candidate)
        if not decision.passed:
            context.log.warning(f"Not released: {decision.summary(spec)}")
            return dg.MaterializeResult(
                metadata={
                    "released": dg.MetadataValue.bool(False),
                    "decision": dg.MetadataValue.text(decision.summary(spec)),
                }
            )
        window_start, window_end = candidate.window
        version = registry.register(
            name,
            model_uri=candidate.model_uri,
            run_id=candidate.mlflow_run_id,
            tags={
                "asset_key": candidate_key.to_user_string(),
                "partition": context.partition_key,
                "dagster_run_id": context.run.run_id,
                "family": candidate.family,
                "holdout_start": candidate.holdout_start.isoformat(),
                "window_start": window_start.isoformat(),
                "window_end": window_end.isoformat(),
                "gold_uri": lake.table_uri(*keys.table(keys.gold)),
                "gold_version": candidate.gold_version,
                **{f"gate_{metric}": value for metric, value in decision.candidate_metrics.items()},
            },
        )
        move = registry.promote(
            name,
            version.version,
            reason=f"gate on {candidate_key.to_user_string()}@{context.partition_key} {decision.summary(spec)}",
            actor=f"dagster run {context.run.run_id}",
        )
        context.log.info(f"{name} version {version.version} is champion: {decision.summary(spec)}")
        return dg.MaterializeResult(
            metadata={
                "released": dg.MetadataValue.bool(True),
                "registered_model": dg.MetadataValue.text(name),
                "version": dg.MetadataValue.text(version.version),
                "previous_champion": dg.MetadataValue.text(move.replaced.version if move.replaced else ""),
                "decision": dg.MetadataValue.text(decision.summary(spec)),
                **{
                    f"gate_{metric}": dg.MetadataValue.float(value)
                    for metric, value in decision.candidate_metrics.items()
                },
            }
        )

    return release
