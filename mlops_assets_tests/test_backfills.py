"""The scheduled backfill heals the whole history: every partition with data whose layers are
missing or failed, however old, goes into one backfill, once per cron tick; the nightly
retraining picks the latest partition with data."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from mlops_assets.backfills import BACKFILL_TAG, find_gaps
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.landing.simulate import simulate
from mlops_assets.ml.release import first_champion_partition
from mlops_assets.ml.retraining import REASON_TAG, retrain_job_name
from mlops_assets.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day

# Months before today: the old nightly backfill looked at the last week only and never saw them.
START = dt.date(2026, 2, 1)
DAYS = [START + dt.timedelta(days=offset) for offset in range(5)]


def test_scheduled_backfill_heals_missing_and_failed_partitions_of_the_whole_history(
    tmp_path, spec, instance, mlflow_tracking
) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=len(DAYS), meters=16, meters_per_file=8)
    everything = [keys.bronze, keys.silver, keys.gold, keys.forecaster, keys.release(keys.forecaster)]
    complete, failed, partial = DAYS[:3], DAYS[3], DAYS[4]
    for day in complete:
        materialize_day(defs, resources, instance, everything, day)
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)
    assert first_champion_partition(instance, keys.release(keys.forecaster)) < failed.isoformat()
    # Bronze only, then a forecaster that fails: its lake is unreachable.
    materialize_day(defs, resources, instance, [keys.bronze], failed)
    unreachable = {**resources, "lake": DeltaLake(root=str(tmp_path / "unmounted"))}
    broken = materialize_day(defs, unreachable, instance, [keys.forecaster], failed, raise_on_error=False)
    assert not broken.success
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], partial)

    lake = resources["lake"]
    landed = lake.days(lake.table_uri(*keys.table(keys.bronze)))
    assert landed == DAYS
    gaps = find_gaps(instance, spec, landed)
    both = [failed.isoformat(), partial.isoformat()]
    assert gaps == {
        keys.silver: [failed.isoformat()],
        keys.gold: [failed.isoformat()],
        keys.forecaster: both,
        keys.release(keys.forecaster): both,
        keys.predictions: both,
        keys.drift: both,
    }
    status = instance.get_status_by_partition(
        keys.forecaster, [failed.isoformat()], defs.resolve_assets_def(keys.forecaster).partitions_def
    )
    assert status[failed.isoformat()] == dg.AssetPartitionStatus.FAILED

    sensor = defs.resolve_sensor_def(f"{spec.name}_gap_backfill")
    with dg.build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources=resources
    ) as context:
        result = sensor(context)
    (request,) = result.run_requests
    subset = request.asset_graph_subset
    assert subset is not None
    requested = {key: sorted(subset.get_partitions_subset(key).get_partition_keys()) for key in subset.asset_keys}
    assert requested == gaps
    assert "scheduled backfill" in request.tags[BACKFILL_TAG]

    with dg.build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), cursor=result.cursor, resources=resources
    ) as context:
        again = sensor(context)
    assert not again.run_requests, "one backfill per cron tick"

    # The backfill heals: running what it requested, in partition order, leaves no gap.
    for day in (failed, partial):
        materialize_day(defs, resources, instance, [keys.silver, keys.gold, *everything[3:]], day)
        materialize_day(defs, resources, instance, [keys.predictions, keys.drift], day)
    assert find_gaps(instance, spec, landed) == {}


def test_nightly_retraining_picks_the_latest_partition_with_data(tmp_path, spec, instance, mlflow_tracking) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    schedule = defs.resolve_schedule_def(f"{spec.name}_nightly_retrain")
    assert schedule.execution_timezone == spec.schedules.timezone
    assert schedule.job_name == retrain_job_name(spec)
    tick = dt.datetime(2026, 12, 2, 2, 0, tzinfo=dt.UTC)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        nothing = schedule.evaluate_tick(context)
    assert not nothing.run_requests and "has no partition yet" in nothing.skip_message

    simulate(resources["landing"], spec, START, days=2, meters=2, meters_per_file=2)
    for day in DAYS[:2]:
        materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], day)
    with dg.build_schedule_context(
        instance=instance, scheduled_execution_time=tick, repository_def=defs.get_repository_def()
    ) as context:
        (request,) = schedule.evaluate_tick(context).run_requests
    # A history that ended long ago is still retrained: the latest day with data, not yesterday.
    assert request.partition_key == DAYS[1].isoformat()
    assert "nightly" in request.tags[REASON_TAG]
