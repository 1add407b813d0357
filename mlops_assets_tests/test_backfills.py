"""Failed partitions heal at the backfill cron: automation asks again, after each tick of the
spec's backfill cron, for every partition of the whole history whose latest run failed, with
what it feeds; missing partitions with data need no tick. The nightly retraining picks the
latest partition with data."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.retraining import REASON_TAG, retrain_job_name
from mlops_assets.defs.registry.decisions import first_champion_partition
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.profiles import local_resources
from mlops_assets.resources.storage import StorageLocation
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.simulate import simulate

# Months before today: the old nightly backfill looked at the last week only and never saw them.
START = dt.date(2026, 2, 1)
DAYS = [START + dt.timedelta(days=offset) for offset in range(5)]


def requested(result: dg.EvaluateAutomationConditionsResult, key: dg.AssetKey) -> list[str]:
    """The partitions of ``key`` that an automation evaluation asked for."""
    return sorted(result.get_requested_partitions(key))


def test_failed_partitions_of_the_whole_history_are_retried_once_per_backfill_tick(
    tmp_path, spec, instance, mlflow_tracking
) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=len(DAYS), meters=16, meters_per_file=8)
    data = [keys.bronze, keys.silver, keys.gold]
    models = [keys.forecaster, keys.decision(keys.forecaster)]
    scoring = [keys.predictions, keys.drift]
    complete, failed = DAYS[:4], DAYS[4]
    for day in complete:
        materialize_day(defs, resources, instance, [*data, *models], day)
        materialize_day(defs, resources, instance, scoring, day)
    assert first_champion_partition(instance, keys.decision(keys.forecaster)) < failed.isoformat()
    # The last day's data lands, then its forecaster fails: its lake is unreachable.
    materialize_day(defs, resources, instance, data, failed)
    unreachable = {**resources, "lake": DeltaLake(location=StorageLocation(uri=str(tmp_path / "unmounted")))}
    broken = materialize_day(defs, unreachable, instance, [keys.forecaster], failed, raise_on_error=False)
    assert not broken.success
    status = instance.get_status_by_partition(
        keys.forecaster, [failed.isoformat()], defs.resolve_assets_def(keys.forecaster).partitions_def
    )
    assert status[failed.isoformat()] == dg.AssetPartitionStatus.FAILED

    zone = ZoneInfo(spec.schedules.timezone)
    assert spec.schedules.backfill_cron == "30 3 * * *"
    before_tick = dt.datetime(2027, 1, 5, 3, 0, tzinfo=zone)
    first = dg.evaluate_automation_conditions(defs=defs, instance=instance, evaluation_time=before_tick)
    # A failure is an attempt: nothing it read has changed, so nothing asks for it before the
    # tick. The day's scoring never ran and needs no tick: the champion for the day before scores it.
    for key in models:
        assert requested(first, key) == [], key
    for key in scoring:
        assert requested(first, key) == [failed.isoformat()], key
    materialize_day(defs, resources, instance, scoring, failed)
    quiet = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=before_tick + dt.timedelta(minutes=10), cursor=first.cursor
    )
    assert quiet.total_requested == 0

    after_tick = dt.datetime(2027, 1, 5, 3, 31, tzinfo=zone)
    healed = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=after_tick, cursor=quiet.cursor
    )
    # The failed forecaster, with what it feeds on that day in the same run: the registry's
    # decision. The day's scoring reads the decision before it, which did not change: it is not
    # asked for again.
    for key in models:
        assert requested(healed, key) == [failed.isoformat()], key
    for key in [*data, *scoring]:
        assert requested(healed, key) == [], key

    later = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=after_tick + dt.timedelta(minutes=10), cursor=healed.cursor
    )
    assert later.total_requested == 0, "asked for once per cron tick"

    # Running what it asked for heals: the next tick finds nothing to retry.
    materialize_day(defs, resources, instance, models, failed)
    next_tick = dt.datetime(2027, 1, 6, 3, 31, tzinfo=zone)
    settled = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=next_tick, cursor=later.cursor
    )
    assert settled.total_requested == 0


def test_a_failed_ingestion_is_retried_after_the_backfill_tick(tmp_path, spec, instance, mlflow_tracking) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=1, meters=4, meters_per_file=4)
    unreachable = {**resources, "lake": DeltaLake(location=StorageLocation(uri=str(tmp_path / "unmounted")))}
    (tmp_path / "unmounted").write_text("a file where the lake's folder should be")
    assert not materialize_day(defs, unreachable, instance, [keys.bronze], START, raise_on_error=False).success

    zone = ZoneInfo(spec.schedules.timezone)
    first = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=dt.datetime(2027, 1, 5, 3, 0, tzinfo=zone)
    )
    assert requested(first, keys.bronze) == []
    healed = dg.evaluate_automation_conditions(
        defs=defs, instance=instance, evaluation_time=dt.datetime(2027, 1, 5, 3, 31, tzinfo=zone), cursor=first.cursor
    )
    assert requested(healed, keys.bronze) == [START.isoformat()]


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
