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


def _sealed(cursor: LandingCursor, candidates: list[dt.date] | None, listed: list[LandingFile]) -> LandingCursor:
    """When the sensor lists every partition (``candidates`` is None), the cursor with the
    partitions that had no new file for ``IDLE_SECONDS`` sealed into a digest each."""
    if candidates is not None:
        return cursor
    return cursor.seal_idle(time.time() - IDLE_SECONDS, listed)


def build_landing_sensor(spec: DatasetSpec) -> dg.SensorDefinition:
    keys = DatasetKeys(spec)
    partitions = partitions_def(spec)

    @dg.sensor(
        name=f"{spec.name}_landing_sensor",
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
        ]
        observations = [landing_observation(spec, day, files) for day, files in sorted(by_day.items())]
        return dg.SensorResult(run_requests=run_requests, cursor=cursor.serialize(), asset_events=observations)

    return landing_sensor
