"""The scheduled backfill: days of the last week with data whose layers are missing or failed
go into one backfill, once per cron tick; the nightly retraining picks yesterday in the
dataset's time zone."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from mlops_assets.backfills import BACKFILL_TAG, find_gaps
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.landing.simulate import simulate
from mlops_assets.ml.retraining import REASON_TAG, retrain_job_name
from mlops_assets.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day


def test_scheduled_backfill_launches_one_backfill_of_missing_and_failed_days(
    tmp_path, spec, instance, mlflow_tracking
) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    today = dt.datetime.now(ZoneInfo(spec.schedules.timezone)).date()
    complete, failed, partial = (today - dt.timedelta(days=back) for back in (4, 3, 2))
    simulate(resources["landing"], spec, complete, days=3, meters=6, meters_per_file=3)
    everything = [keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.release(keys.forecaster)]

    materialize_day(defs, resources, instance, everything, complete)
    materialize_day(defs, resources, instance, [keys.predictions, keys.drift], complete)
    # Bronze only, then a forecaster that fails: its lake is unreachable.
    materialize_day(defs, resources, instance, [keys.bronze], failed)
    unreachable = {**resources, "lake": DeltaLake(root=str(tmp_path / "unmounted"))}
    broken = materialize_day(defs, unreachable, instance, [keys.forecaster], failed, raise_on_error=False)
    assert not broken.success
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], partial)

    days = [today - dt.timedelta(days=back) for back in range(spec.schedules.backfill_days, 0, -1)]
    gaps = find_gaps(instance, spec, days)
    assert gaps == {
        keys.silver: [failed.isoformat()],
        keys.gold: [failed.isoformat()],
        keys.forecaster: [failed.isoformat(), partial.isoformat()],
        keys.predictions: [failed.isoformat(), partial.isoformat()],
        keys.drift: [failed.isoformat(), partial.isoformat()],
    }
    status = instance.get_status_by_partition(
        keys.forecaster, [failed.isoformat()], defs.resolve_assets_def(keys.forecaster).partitions_def
    )
    assert status[failed.isoformat()] == dg.AssetPartitionStatus.FAILED

    sensor = defs.resolve_sensor_def(f"{spec.name}_gap_backfill")
    with dg.build_sensor_context(instance=instance, repository_def=defs.get_repository_def()) as context:
        result = sensor(context)
    (request,) = result.run_requests
    subset = request.asset_graph_subset
    assert subset is not None
    requested = {key: sorted(subset.get_partitions_subset(key).get_partition_keys()) for key in subset.asset_keys}
    assert requested == gaps
    assert "scheduled backfill" in request.tags[BACKFILL_TAG]

    with dg.build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), cursor=result.cursor
    ) as context:
        again = sensor(context)
    assert not again.run_requests, "one backfill per cron tick"

    # The backfill heals: running what it requested leaves no gap.
    for day in (failed, partial):
        materialize_day(defs, resources, instance, [keys.silver, keys.gold, keys.forecaster], day)
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)
    assert find_gaps(instance, spec, days) == {}


def test_nightly_retraining_picks_yesterday_in_the_dataset_time_zone(tmp_path, spec) -> None:
    defs = build_definitions([spec], local_resources(tmp_path))
    schedule = defs.resolve_schedule_def(f"{spec.name}_nightly_retrain")
    assert schedule.execution_timezone == spec.schedules.timezone
    assert schedule.job_name == retrain_job_name(spec)
    zone = ZoneInfo(spec.schedules.timezone)
    # 00:30 local on 2 March is still 1 March in UTC: yesterday is 1 March locally, 28 Feb in UTC.
    tick = dt.datetime(2026, 3, 2, 0, 30, tzinfo=zone)
    assert tick.astimezone(dt.UTC).date() == dt.date(2026, 3, 1)
    with dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def()) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-01"
    assert "nightly" in request.tags[REASON_TAG]
