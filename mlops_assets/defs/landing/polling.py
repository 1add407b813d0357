"""The polling arrival sensor: new landing files become bronze runs for the days they touch."""

import datetime as dt
from collections import defaultdict

import dagster as dg

from mlops_assets import clock
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.landing.cursor import LandingCursor, version_digest
from mlops_assets.digests import short_digest
from mlops_assets.partitions import partitions_def
from mlops_assets.resources.landing_zone import LandingFile, LandingZone

IDLE_SECONDS = 3600
# How many of a partition's latest bronze materializations are asked which files they took.
TAKEN_LOOKBACK = 5


def run_key(spec: DatasetSpec, day: dt.date, files: list[LandingFile]) -> str:
    """The same new files for the same day always give the same key, so a re-evaluated
    tick never launches a second run for them."""
    versions = "\n".join(sorted(f"{file.path}@{file.etag}" for file in files))
    return f"{spec.name}:{day.isoformat()}:{short_digest(versions)}"


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


def _runs_in_flight(instance: dg.DagsterInstance, sensor_name: str) -> tuple[set[str], set[str]]:
    """The partitions of this sensor's unfinished runs: those whose bronze step has not begun
    (queued, starting, or started with the worker still loading), and those in their step."""
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
    waiting, stepping = set(), set()
    for record in records:
        run = record.dagster_run
        began = run.status == dg.DagsterRunStatus.STARTED and instance.all_logs(
            run.run_id, of_type=dg.DagsterEventType.STEP_START
        )
        (stepping if began else waiting).add(run.tags.get("dagster/partition", ""))
    return waiting, stepping


def _taken(instance: dg.DagsterInstance, bronze: dg.AssetKey, day: dt.date) -> set[tuple[str, str]]:
    """The file versions (path, etag) that the partition's latest bronze runs ingested or
    quarantined, as their materializations record them."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=bronze, asset_partitions=[day.isoformat()]), limit=TAKEN_LOOKBACK
    ).records
    taken = set()
    for record in records:
        metadata = record.asset_materialization.metadata
        for name in ("ingested", "quarantined"):
            entries = metadata[name].value if name in metadata else []
            taken.update((entry["path"], entry["etag"]) for entry in entries)
    return taken


def _sealed(
    cursor: LandingCursor, candidates: list[dt.date] | None, listed: list[LandingFile], now: float
) -> LandingCursor:
    """When the sensor lists every partition (``candidates`` is None), the cursor with the
    partitions that had no new file for ``IDLE_SECONDS`` before ``now`` sealed into a digest each."""
    if candidates is not None:
        return cursor
    return cursor.seal_idle(now - IDLE_SECONDS, listed)


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
        now = clock.utc_now()
        today = now.date()
        listed = landing.list_recent(spec, today)
        new_files = cursor.new_files(listed)
        candidates = landing.candidate_partitions(spec, today)
        # Partitions that left the polling window are never listed again: forget them. When
        # every partition is listed, the older ones are sealed into one digest each.
        cursor = cursor.keep_only(candidates)
        if not new_files:
            return dg.SensorResult(
                skip_reason=f"No new files under {spec.landing.prefix}/.",
                cursor=_sealed(cursor, candidates, listed, now.timestamp()).serialize(),
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
        # Where this sensor has a bronze run that has not finished, a second run could find
        # nothing to do. One that has not begun its step lists its partition after these files
        # landed (asked after listing, so a step that begins in between does too): it takes
        # them. One in its step may have listed before or after they landed: they wait, unseen,
        # until it has finished and recorded what it took.
        waiting, stepping = _runs_in_flight(context.instance, sensor_name)
        held = {day: by_day.pop(day) for day in sorted(by_day) if day.isoformat() in stepping}
        for day, files in held.items():
            context.log.info(f"{len(files)} new file(s) of {day} wait for its bronze run in progress to finish.")
        for day in sorted(day for day in by_day if day.isoformat() in waiting):
            context.log.info(f"{len(by_day[day])} new file(s) of {day} go to the bronze run waiting to start for it.")
        to_request: dict[dt.date, list[LandingFile]] = {}
        for day, files in sorted(by_day.items()):
            if day.isoformat() in waiting:
                continue
            taken = _taken(context.instance, keys.bronze, day)
            if untaken := [file for file in files if (file.path, file.etag) not in taken]:
                to_request[day] = untaken
            else:
                context.log.info(f"{len(files)} new file(s) of {day} were taken by its last bronze run.")
        cursor = cursor.advance([*too_early, *(file for files in by_day.values() for file in files)], now.timestamp())
        held_files = {(file.path, file.etag) for files in held.values() for file in files}
        settled = [file for file in listed if (file.path, file.etag) not in held_files]
        cursor = _sealed(cursor, candidates, settled, now.timestamp())
        if not by_day:
            reason = "bronze runs in progress" if held else "open days"
            return dg.SensorResult(
                skip_reason=f"No new files for {reason} under {spec.landing.prefix}/.", cursor=cursor.serialize()
            )
        run_requests = [
            dg.RunRequest(
                run_key=run_key(spec, day, files),
                partition_key=day.isoformat(),
                asset_selection=[keys.bronze],
                tags={"mlops/dataset": spec.name, "mlops/new_files": str(len(files))},
            )
            for day, files in to_request.items()
        ]
        observations = [landing_observation(spec, day, files) for day, files in sorted(by_day.items())]
        return dg.SensorResult(
            run_requests=run_requests,
            cursor=cursor.serialize(),
            asset_events=observations,
            skip_reason=None if run_requests else "New files go to bronze runs waiting to start or were taken already.",
        )

    return landing_sensor
