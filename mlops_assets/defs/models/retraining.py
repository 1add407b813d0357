"""Retraining: the job that trains a partition's candidates and decides on them, and what launches it.

- the nightly schedule retrains the latest partition with data every night;
- the drift sensor retrains the latest drifted partition when the spec's share of recent
  partitions drifted, with the reason in the run's tags, one retraining at a time.
The forecaster also retrains on its own whenever its window of gold changes (declarative
automation); the checkpoint model, which continues from the partition before it, trains
through this job, backfills, and by hand.
"""

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec

REASON_TAG = "mlops/retrain_reason"
TRIGGER_TAG = "mlops/retrain_trigger"
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]


def retrain_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_retrain"


def build_retrain_job(spec: DatasetSpec) -> dg.JobDefinition:
    keys = DatasetKeys(spec)
    candidates = dg.AssetSelection.assets(*keys.candidates)
    decisions = dg.AssetSelection.assets(*(keys.decision(candidate) for candidate in keys.candidates))
    return dg.define_asset_job(
        retrain_job_name(spec),
        selection=candidates | decisions,
        description=(
            f"Train the {spec.name} candidates of a {spec.grain.noun} (forecaster and checkpoint model) and "
            "record the registry's decision on each."
        ),
    )


def build_nightly_retrain_schedule(spec: DatasetSpec, running: bool = True) -> dg.ScheduleDefinition:
    schedules = spec.schedules
    keys = DatasetKeys(spec)

    @dg.schedule(
        name=f"{spec.name}_nightly_retrain",
        cron_schedule=schedules.retrain_cron,
        execution_timezone=schedules.timezone,
        job_name=retrain_job_name(spec),
        default_status=dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED,
        description=(
            f"Retrain the {spec.name} candidates of the latest {spec.grain.noun} with gold data at "
            f"'{schedules.retrain_cron}' {schedules.timezone} time."
        ),
    )
    def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        built = context.instance.get_materialized_partitions(keys.gold)
        if not built:
            return dg.SkipReason(f"{keys.gold.to_user_string()} has no partition yet")
        latest = max(built)
        return dg.RunRequest(
            run_key=f"nightly-{latest}-{context.scheduled_execution_time.isoformat()}",
            partition_key=latest,
            tags={
                REASON_TAG: f"nightly retraining of {latest}, the latest {spec.grain.noun} with data",
                TRIGGER_TAG: "schedule",
            },
        )

    return nightly_retrain


def build_drift_sensor(spec: DatasetSpec) -> dg.SensorDefinition:
    keys = DatasetKeys(spec)
    settings = spec.monitoring
    job_name = retrain_job_name(spec)

    @dg.sensor(
        name=f"{spec.name}_drift_sensor",
        job_name=job_name,
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            f"Requests retraining of the latest drifted {spec.grain.noun} of {spec.name} when "
            f"{settings.retrain_after_drifted} of the last {settings.retrain_window} judged {spec.grain.noun}s "
            "drifted, with at most one retraining in flight."
        ),
    )
    def drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        new = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=keys.drift, after_storage_id=after), limit=1, ascending=False
        ).records
        if not new:
            return dg.SensorResult(skip_reason="no new drift result", cursor=context.cursor)
        cursor = str(new[0].storage_id)
        recent = latest_judgements(context.instance, keys.drift, settings.retrain_window)
        drifted = [(partition, reason) for partition, reason in recent if reason]
        if len(drifted) < settings.retrain_after_drifted:
            return dg.SensorResult(
                skip_reason=f"{len(drifted)} of the last {len(recent)} judged {spec.grain.noun}s drifted "
                f"(retraining from {settings.retrain_after_drifted})",
                cursor=cursor,
            )
        in_flight = context.instance.get_runs(filters=dg.RunsFilter(job_name=job_name, statuses=IN_FLIGHT), limit=1)
        if in_flight:
            return dg.SensorResult(
                skip_reason=f"retraining run {in_flight[0].run_id} is still in flight", cursor=context.cursor
            )
        partition, reason = max(drifted)
        summary = f"{len(drifted)} of the last {len(recent)} judged {spec.grain.noun}s drifted; latest: {reason}"
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"drift-{partition}-{cursor}",
                    partition_key=partition,
                    tags={REASON_TAG: summary[:1000], TRIGGER_TAG: "drift"},
                )
            ],
            cursor=cursor,
        )

    return drift_sensor


def latest_judgements(instance: dg.DagsterInstance, drift: dg.AssetKey, window: int) -> list[tuple[str, str]]:
    """The latest ``window`` partitions whose drift was judged, as (partition, reason) with an
    empty reason for a partition that did not drift, oldest first."""
    judged: list[tuple[str, str]] = []
    for partition in sorted(instance.get_materialized_partitions(drift), reverse=True):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=drift, asset_partitions=[partition]), limit=1
        ).records
        metadata = records[0].asset_materialization.metadata
        if not metadata["judged"].value:
            continue
        judged.append((partition, str(metadata["reason"].value) if metadata["drifted"].value else ""))
        if len(judged) == window:
            break
    return sorted(judged)
