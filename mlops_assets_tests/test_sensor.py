"""The polling landing sensor, driven with build_sensor_context and a cursor."""

from __future__ import annotations

import datetime as dt
import os
from collections import Counter
from pathlib import Path

import dagster as dg

from mlops_assets import clock
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.defs.landing import polling
from mlops_assets.defs.landing.cursor import LandingCursor
from mlops_assets_tests.conftest import TODAY, materialize_day
from mlops_dev.simulate import simulate

START = dt.date(2026, 1, 1)


def _tick(defs, resources, instance, cursor: str | None):
    sensor = defs.resolve_sensor_def("smart_meter_landing_sensor")
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context), context


def _drop(resources, spec, day: dt.date, name: str, subfolder: str = "") -> str:
    folder, _, name = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(day, name)}".rpartition("/")
    path = f"{folder}/{subfolder}{name}"
    resources["landing"].write_bytes(path, b"meter_id,timestamp,kwh,temperature\nMTR-1,2026-01-01T00:00:00Z,1,2\n")
    return path


def test_sensor_requests_exactly_the_new_days_and_advances_its_cursor(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    report = simulate(resources["landing"], spec, START, days=3, meters=4, meters_per_file=2, dirty_share=0.0)

    first, _ = _tick(defs, resources, instance, cursor=None)
    assert isinstance(first, dg.SensorResult)
    assert [request.partition_key for request in first.run_requests] == ["2026-01-01", "2026-01-02", "2026-01-03"]
    assert all(request.asset_selection == [keys.bronze] for request in first.run_requests)
    files_per_day = Counter(file.event_date.isoformat() for file in report.files)
    observed = {event.partition: event.metadata["new_files"].value for event in first.asset_events}
    assert observed == dict(files_per_day)
    assert all(event.asset_key == keys.landing for event in first.asset_events)

    quiet, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert quiet.run_requests == [] and quiet.skip_reason

    late = _drop(resources, spec, dt.date(2026, 1, 2), "late.csv")
    fresh = _drop(resources, spec, dt.date(2026, 1, 5), "fresh.csv")
    third, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert [request.partition_key for request in third.run_requests] == ["2026-01-02", "2026-01-05"]
    listed = {event.partition: [file["path"] for file in event.metadata["files"].value] for event in third.asset_events}
    assert listed == {"2026-01-02": [late], "2026-01-05": [fresh]}
    assert third.cursor != first.cursor

    after, _ = _tick(defs, resources, instance, cursor=third.cursor)
    assert after.run_requests == [] and after.skip_reason


def test_run_keys_are_deterministic_for_a_reevaluated_tick(defs, resources, instance, spec) -> None:
    simulate(resources["landing"], spec, START, days=2, meters=2, meters_per_file=2, dirty_share=0.0)
    once, _ = _tick(defs, resources, instance, cursor=None)
    again, _ = _tick(defs, resources, instance, cursor=None)
    assert [request.run_key for request in once.run_requests] == [request.run_key for request in again.run_requests]
    assert len({request.run_key for request in once.run_requests}) == 2


def test_files_outside_the_partitions_are_not_requested(defs, resources, instance, spec) -> None:
    _drop(resources, spec, dt.date(2025, 12, 31), "too-early.csv")
    _drop(resources, spec, START, "ok.csv")
    result, _ = _tick(defs, resources, instance, cursor=None)
    assert [request.partition_key for request in result.run_requests] == [START.isoformat()]


def test_hidden_files_still_being_written_are_not_picked_up(defs, resources, instance, spec) -> None:
    _drop(resources, spec, START, ".readings.csv.3f2a.partial")
    _drop(resources, spec, START, "_SUCCESS")
    result, _ = _tick(defs, resources, instance, cursor=None)
    assert result.run_requests == [] and result.skip_reason


def test_a_file_with_an_old_modification_time_is_still_found(defs, resources, instance, spec) -> None:
    _drop(resources, spec, START, "fast.csv")
    first, _ = _tick(defs, resources, instance, cursor=None)
    slow = _drop(resources, spec, START, "slow.csv")
    landing_root = Path(resources["landing"].location.uri.removeprefix("file://"))
    os.utime(landing_root / slow, (0, 0))

    second, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert [request.partition_key for request in second.run_requests] == [START.isoformat()]
    (event,) = second.asset_events
    assert [file["path"] for file in event.metadata["files"].value] == [slow]


def test_a_file_for_a_day_that_has_not_started_waits_for_it(defs, resources, instance, spec) -> None:
    tomorrow = TODAY + dt.timedelta(days=2)
    _drop(resources, spec, tomorrow, "early-bird.csv")
    result, _ = _tick(defs, resources, instance, cursor=None)
    assert result.run_requests == []
    (waiting,) = resources["landing"].list_dataset(spec)
    assert LandingCursor.parse(result.cursor).new_files([waiting]) == [waiting]


def test_a_file_in_a_subfolder_is_requested_and_quarantined_with_its_reason(defs, resources, instance, spec) -> None:
    """Not silently ignored: the sensor sees it, bronze quarantines it and says why. Files in
    hidden or underscore folders (a writer's `_temporary/`) are still being written: left alone."""
    day = dt.date(2026, 1, 5)
    nested = _drop(resources, spec, day, "readings.csv", subfolder="exports/")
    staging = _drop(resources, spec, day, "part-0.csv", subfolder="_temporary/")
    result, _ = _tick(defs, resources, instance, cursor=None)
    (observation,) = result.asset_events
    assert [file["path"] for file in observation.metadata["files"].value] == [nested]

    assert materialize_day(defs, resources, instance, [DatasetKeys(spec).bronze], day).success
    (entry,) = resources["landing"].quarantined(spec)
    assert entry["path"] == nested and "sub-folder 'exports/'" in entry["reason"] and entry["records"] == 1
    root = Path(resources["landing"].location.uri.removeprefix("file://"))
    assert not (root / nested).exists() and (root / staging).exists()


def test_a_same_size_replacement_that_keeps_its_modification_time_is_found(defs, resources, instance, spec) -> None:
    """`cp -p` or `rsync -t` over a landed file: the same size and modification time."""
    day = dt.date(2026, 1, 5)
    path = _drop(resources, spec, day, "readings.csv")
    landed = Path(resources["landing"].location.uri.removeprefix("file://")) / path
    first, _ = _tick(defs, resources, instance, cursor=None)
    stat = landed.stat()
    replacement = landed.read_bytes().replace(b",1,2\n", b",7,2\n")
    assert len(replacement) == stat.st_size
    landed.write_bytes(replacement)
    os.utime(landed, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    second, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert [request.partition_key for request in second.run_requests] == [day.isoformat()]


def test_idle_partitions_shrink_to_one_digest_and_a_late_file_reopens_one(
    defs, resources, instance, spec, monkeypatch
) -> None:
    """The cursor grows by partition, not by file: once a partition has been idle it keeps one
    digest of its folder, and a file landing there later is still found."""
    simulate(resources["landing"], spec, START, days=20, meters=20, meters_per_file=2, dirty_share=0.0)
    first, _ = _tick(defs, resources, instance, cursor=None)
    assert len(first.run_requests) == 20
    # The sensor's clock moves on past the idle time; the files stay as they are.
    later = clock.utc_now() + dt.timedelta(seconds=polling.IDLE_SECONDS + 1)
    monkeypatch.setattr(clock, "utc_now", lambda: later)
    idle, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert idle.run_requests == []
    files = sum(len(digests) for digests in LandingCursor.parse(first.cursor).seen.values())
    assert files >= 200 and len(idle.cursor) < len(first.cursor) / 5
    assert len(LandingCursor.parse(idle.cursor).sealed) == 20

    late = _drop(resources, spec, dt.date(2026, 1, 7), "late.csv")
    reopened, _ = _tick(defs, resources, instance, cursor=idle.cursor)
    assert [request.partition_key for request in reopened.run_requests] == ["2026-01-07"]
    (observation,) = reopened.asset_events
    assert late in [file["path"] for file in observation.metadata["files"].value]
    quiet, _ = _tick(defs, resources, instance, cursor=reopened.cursor)
    assert quiet.run_requests == []


def test_new_files_of_a_partition_whose_bronze_run_is_still_queued_go_to_that_run(
    defs, resources, instance, spec
) -> None:
    """A queued run lists its partition when it starts, after these files landed: a second
    run would start only to find them ingested."""
    day = dt.date(2026, 1, 5)
    _drop(resources, spec, day, "first.csv")
    first, _ = _tick(defs, resources, instance, cursor=None)
    (request,) = first.run_requests
    queued = {"dagster/sensor_name": "smart_meter_landing_sensor", "dagster/partition": request.partition_key}
    instance.add_run(dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.NOT_STARTED, tags=queued))
    second_file = _drop(resources, spec, day, "second.csv")
    other_day = _drop(resources, spec, dt.date(2026, 1, 6), "other.csv")
    second, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert [request.partition_key for request in second.run_requests] == ["2026-01-06"]
    observed = {
        event.partition: [file["path"] for file in event.metadata["files"].value] for event in second.asset_events
    }
    assert observed == {"2026-01-05": [second_file], "2026-01-06": [other_day]}


def test_new_files_wait_for_a_bronze_run_in_its_step_and_skip_what_it_took(defs, resources, instance, spec) -> None:
    """A started run whose worker is still loading lists its partition after these files
    landed, so it takes them. One in its bronze step may have listed already: new files wait
    until it has finished, and then only those it did not take get a run."""
    keys = DatasetKeys(spec)
    loading, stepping = dt.date(2026, 1, 5), dt.date(2026, 1, 6)
    for day in (loading, stepping):
        _drop(resources, spec, day, "first.csv")
    first, _ = _tick(defs, resources, instance, cursor=None)
    runs = {}
    for request in first.run_requests:
        tags = {"dagster/sensor_name": "smart_meter_landing_sensor", "dagster/partition": request.partition_key}
        runs[request.partition_key] = instance.add_run(
            dg.DagsterRun(job_name="__ASSET_JOB", status=dg.DagsterRunStatus.STARTED, tags=tags)
        )
    instance.report_dagster_event(
        dg.DagsterEvent(event_type_value="STEP_START", job_name="__ASSET_JOB", step_key="bronze"),
        runs[stepping.isoformat()].run_id,
    )
    for day in (loading, stepping):
        _drop(resources, spec, day, "second.csv")
    second, _ = _tick(defs, resources, instance, cursor=first.cursor)
    assert second.run_requests == []
    assert {event.partition for event in second.asset_events} == {loading.isoformat()}

    # The run in its step took second.csv, and ends; a third file lands meanwhile.
    (taken,) = [f for f in resources["landing"].list_partition(spec, stepping) if f.path.endswith("second.csv")]
    instance.report_runless_asset_event(
        dg.AssetMaterialization(
            asset_key=keys.bronze,
            partition=stepping.isoformat(),
            metadata={"ingested": dg.MetadataValue.json([{"path": taken.path, "etag": taken.etag, "rows": 1}])},
        )
    )
    instance.report_run_failed(runs[stepping.isoformat()])
    third = _drop(resources, spec, stepping, "third.csv")
    still, _ = _tick(defs, resources, instance, cursor=second.cursor)
    (request,) = still.run_requests
    assert request.partition_key == stepping.isoformat() and request.tags["mlops/new_files"] == "1"
    observed = {
        event.partition: [file["path"] for file in event.metadata["files"].value] for event in still.asset_events
    }
    assert observed == {stepping.isoformat(): [taken.path, third]}
