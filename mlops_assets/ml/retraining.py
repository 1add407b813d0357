"""Retraining: the job that trains and releases a day's candidates, and what launches it.

- the nightly schedule retrains yesterday (in the dataset's time zone) every night;
- the drift sensor retrains a day whose drift passed the spec's thresholds, with the
  reason in the run's tags.
The forecaster also retrains on its own whenever gold changes (declarative automation);
the checkpoint model, whose days must train in order, trains only through this job,
backfills, and by hand.
"""

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec

REASON_TAG = "mlops/retrain_reason"
TRIGGER_TAG = "mlops/retrain_trigger"
# Drift materializations read per tick: a tick stays short however far behind the sensor is.
DRIFT_RECORDS_PER_TICK = 200


def retrain_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_retrain"


def build_retrain_job(spec: DatasetSpec) -> dg.JobDefinition:
    keys = DatasetKeys(spec)
    candidates = dg.AssetSelection.assets(*keys.candidates)
    releases = dg.AssetSelection.assets(*(keys.release(candidate) for candidate in keys.candidates))
    return dg.define_asset_job(
        retrain_job_name(spec),
        selection=candidates | releases,
        description=(
            f"Train the {spec.name} candidates of a day (forecaster and checkpoint model), gate them "
            "against the champion and release those that pass."
        ),
    )


def build_nightly_retrain_schedule(spec: DatasetSpec) -> dg.ScheduleDefinition:
    schedules = spec.schedules

    @dg.schedule(
        name=f"{spec.name}_nightly_retrain",
        cron_schedule=schedules.retrain_cron,
        execution_timezone=schedules.timezone,
        job_name=retrain_job_name(spec),
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=(
            f"Retrain yesterday's {spec.name} candidates at '{schedules.retrain_cron}' {schedules.timezone} time."
        ),
    )
    def nightly_retrain(context: dg.ScheduleEvaluationContext) -> dg.RunRequest | dg.SkipReason:
        local = context.scheduled_execution_time.astimezone(ZoneInfo(schedules.timezone))
        day = local.date() - dt.timedelta(days=1)
        if day < spec.start_date:
            return dg.SkipReason(f"{day} is before the first day of {spec.name} ({spec.start_date})")
        return dg.RunRequest(
            partition_key=day.isoformat(),
            tags={REASON_TAG: f"nightly retraining of {day}", TRIGGER_TAG: "schedule"},
        )

    return nightly_retrain


def build_drift_sensor(spec: DatasetSpec) -> dg.SensorDefinition:
    keys = DatasetKeys(spec)

    @dg.sensor(
        name=f"{spec.name}_drift_sensor",
        job_name=retrain_job_name(spec),
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Requests retraining of a {spec.name} day whose drift asset found drift.",
    )
    def drift_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        after = int(context.cursor) if context.cursor else None
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=keys.drift, after_storage_id=after),
            limit=DRIFT_RECORDS_PER_TICK,
            ascending=True,
        ).records
        requests = []
        for record in records:
            materialization = record.asset_materialization
            drifted = materialization.metadata.get("drifted")
            if not (isinstance(drifted, dg.BoolMetadataValue) and drifted.value):
                continue
            reason = materialization.metadata["reason"]
            requests.append(
                dg.RunRequest(
                    run_key=f"drift-{materialization.partition}-{record.storage_id}",
                    partition_key=materialization.partition,
                    tags={REASON_TAG: str(reason.value), TRIGGER_TAG: "drift"},
                )
            )
        cursor = str(records[-1].storage_id) if records else context.cursor
        if not requests:
            return dg.SensorResult(skip_reason=f"no drifted day in {len(records)} new drift result(s)", cursor=cursor)
        return dg.SensorResult(run_requests=requests, cursor=cursor)

    return drift_sensor
