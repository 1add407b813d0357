"""The polling arrival sensor: new landing files become bronze runs for the days they touch."""

import datetime as dt
import hashlib
import time
from collections import defaultdict

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.landing.cursor import LandingCursor, version_digest
from mlops_assets.partitions import partitions_def
from mlops_assets.storage.landing_zone import LandingFile, LandingZone

IDLE_SECONDS = 3600


def run_key(spec: DatasetSpec, day: dt.date, files: list[LandingFile]) -> str:
    """The same new files for the same day always give the same key, so a re-evaluated
    tick never launches a second run for them."""
    versions = "\n".join(sorted(f"{file.path}@{file.etag}" for file in files))
    return f"{spec.name}:{day.isoformat()}:{hashlib.sha256(versions.encode()).hexdigest()[:16]}"


def file_run_key(spec: DatasetSpec, file: LandingFile) -> str:
    """The run key of one file version: the same version always gives the same key."""
    return f"{spec.name}:{file.partition.isoformat()}:{version_digest(file)}"


def landing_observation(spec: DatasetSpec, day: dt.date, files: list[LandingFile]) -> dg.AssetObservation:
    """What an arrival sensor records on the landing asset for the new files of one day."""
    return dg.AssetObservation(
        asset_key=DatasetKeys(spec).landing,
        partition=day.isoformat(),
        metadata={
            "new_files": dg.MetadataValue.int(len(files)),
            "new_bytes": dg.MetadataValue.int(sum(file.size for file in files)),
            "files": dg.MetadataValue.json(
                [{"path": file.path, "etag": file.etag, "size": file.size} for file in files]
            ),
        },
    )


def _waiting_partitions(instance: dg.DagsterInstance, sensor_name: str) -> set[str]:
    """The partitions of this sensor's runs that have not begun their bronze step: queued,
    starting, or started with the worker still loading. Each lists its partition's landing
    files when its step begins, so it takes files that land before then."""
    records = instance.get_run_records(
        dg.RunsFilter(
            statuses=[
                dg.DagsterRunStatus.QUEUED,
                dg.DagsterRunStatus.NOT_STARTED,
                dg.DagsterRunStatus.STARTING,
                dg.DagsterRunStatus.STARTED,
            ],
            tags={"dagster/sensor_name": sensor_name},
        )
    )
    return {
        record.dagster_run.tags.get("dagster/partition", "")
        for record in records
        if record.dagster_run.status != dg.DagsterRunStatus.STARTED
        or not instance.all_logs(record.dagster_run.run_id, of_type=dg.DagsterEventType.STEP_START)
    }


def _sealed(cursor: LandingCursor, candidates: list[dt.date] | None, listed: list[LandingFile]) -> LandingCursor:
    """When the sensor lists every partition (``candidates`` is None), the cursor with the
    partitions that had no new file for ``IDLE_SECONDS`` sealed into a digest each."""
    if candidates is not None:
        return cursor
    return cursor.seal_idle(time.time() - IDLE_SECONDS, listed)


def build_landing_sensor(spec: DatasetSpec) -> dg.SensorDefinition:
    keys = DatasetKeys(spec)
    partitions = partitions_def(spec)

    sensor_name = f"{spec.name}_landing_sensor"

    @dg.sensor(
        name=sensor_name,
        target=dg.AssetSelection.assets(keys.bronze),
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=f"Polls the {spec.name} landing prefix and requests a bronze run for every day with new files.",
    )
    def landing_sensor(context: dg.SensorEvaluationContext, landing: LandingZone) -> dg.SensorResult | dg.SkipReason:
        cursor = LandingCursor.parse(context.cursor)
        today = dt.datetime.now(dt.UTC).date()
        listed = landing.list_recent(spec, today)
        new_files = cursor.new_files(listed)
        candidates = landing.candidate_partitions(spec, today)
        # Partitions that left the polling window are never listed again: forget them. When
        # every partition is listed, the older ones are sealed into one digest each.
        cursor = cursor.keep_only(candidates)
        if not new_files:
            return dg.SensorResult(
                skip_reason=f"No new files under {spec.landing.prefix}/.",
                cursor=_sealed(cursor, candidates, listed).serialize(),
            )
        by_day: dict[dt.date, list[LandingFile]] = defaultdict(list)
        too_early: list[LandingFile] = []
        for file in new_files:
            if partitions.has_partition_key(file.partition.isoformat()):
                by_day[file.partition].append(file)
            elif file.partition < spec.start_date:
                too_early.append(file)
                context.log.warning(f"{file.path}: event day {file.event_date} is before {spec.start_date}; ignored.")
            else:
                # A partition that has not started yet in UTC: left unseen, requested once it starts.
                context.log.info(f"{file.path}: event day {file.event_date} has not started yet; waiting.")
        cursor = cursor.advance([*too_early, *(file for files in by_day.values() for file in files)], time.time())
        # A bronze run of this sensor that has not begun its step lists its partition after these
        # files landed: it takes them, and a second run would find nothing. Asked after listing,
        # so a step that begins in between lists after the files landed too.
        waiting = _waiting_partitions(context.instance, sensor_name)
        for day in sorted(day for day in by_day if day.isoformat() in waiting):
            context.log.info(f"{len(by_day[day])} new file(s) of {day} go to the bronze run waiting to start for it.")
        cursor = _sealed(cursor, candidates, listed)
        if not by_day:
            return dg.SensorResult(
                skip_reason=f"No new files for open days under {spec.landing.prefix}/.", cursor=cursor.serialize()
            )
        run_requests = [
            dg.RunRequest(
                run_key=run_key(spec, day, files),
                partition_key=day.isoformat(),
                asset_selection=[keys.bronze],
                tags={"mlops/dataset": spec.name, "mlops/new_files": str(len(files))},
            )
            for day, files in sorted(by_day.items())
            if day.isoformat() not in waiting
        ]
        observations = [landing_observation(spec, day, files) for day, files in sorted(by_day.items())]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=cursor.serialize(),
            asset_events=observations,
            skip_reason=None if run_requests else "New files go to the bronze runs waiting to start for them.",
        )

    return landing_sensor
