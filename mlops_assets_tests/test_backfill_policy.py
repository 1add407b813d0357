"""Backfills of the data layers: bronze, silver and gold run a range of days as one run, and
that run builds the same tables as running the days one by one."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from dagster._core.definitions.selector import PartitionRangeSelector, PartitionsByAssetSelector, PartitionsSelector
from dagster._core.execution.backfill import PartitionBackfill
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import InProcessTestWorkspaceLoadTarget, create_test_daemon_workspace_context
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._daemon.backfill import execute_backfill_iteration

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.landing.simulate import simulate
from mlops_assets.profiles import local_resources
from mlops_assets_tests.conftest import QUIET, materialize_day

# A day built before the range, whose rows the range's first features look back on, then
# six days of which the third has no files at all, so gold has a gap to step over.
PRIOR = dt.date(2026, 1, 1)
RANGE = [PRIOR + dt.timedelta(days=offset) for offset in range(1, 7)]
GAP = RANGE[2]


def _land(resources: dict[str, Any], spec: DatasetSpec) -> None:
    """The same files in every home: dirty records, a broken file before and in the range,
    and a day without data."""
    landing = resources["landing"]
    simulate(landing, spec, PRIOR, days=3, meters=4, meters_per_file=2, dirty_share=0.05, bad_files=2)
    simulate(landing, spec, GAP + dt.timedelta(days=1), days=3, meters=4, meters_per_file=2, dirty_share=0.05, seed=11)


def _build_prior(
    defs: dg.Definitions, resources: dict[str, Any], instance: dg.DagsterInstance, spec: DatasetSpec
) -> None:
    """Build the day before the range on its own, as earlier runs did."""
    materialize_day(defs, resources, instance, _layers(spec), PRIOR)


def _layers(spec: DatasetSpec) -> list[dg.AssetKey]:
    keys = DatasetKeys(spec)
    return [keys.bronze, keys.silver, keys.gold]


def _materialize_range(
    defs: dg.Definitions,
    resources: dict[str, Any],
    instance: dg.DagsterInstance,
    keys: list[dg.AssetKey],
    first: dt.date,
    last: dt.date,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize ``keys`` for every day from ``first`` to ``last`` in one run, as a
    single-run backfill launches it."""
    return dg.materialize(
        list(defs.assets or []),
        selection=keys,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        instance=instance,
        resources=resources,
        run_config=QUIET,
        raise_on_error=raise_on_error,
    )


def _table(resources: dict[str, Any], key: dg.AssetKey, sort: list[str]) -> pd.DataFrame:
    lake = resources["lake"]
    layer, table = key.path
    rows = lake.read_days(lake.table_uri(layer, table), [PRIOR, *RANGE]).rows
    return rows.sort_values(sort).reset_index(drop=True)


@pytest.fixture
def day_by_day(tmp_path: Path, mlflow_tracking, spec: DatasetSpec) -> Iterator[dict[str, Any]]:
    """A second home holding the same files, built one day and one layer group at a time."""
    resources = {**local_resources(tmp_path / "day-by-day"), "mlflow_tracking": mlflow_tracking}
    _land(resources, spec)
    defs = build_definitions([spec], resources)
    with dg.instance_for_test() as instance:
        _build_prior(defs, resources, instance, spec)
        results = [materialize_day(defs, resources, instance, _layers(spec), day) for day in RANGE]
        yield {"resources": resources, "results": results}


def test_the_data_layers_backfill_a_range_in_one_run(defs, spec) -> None:
    graph = defs.resolve_asset_graph()
    for key in _layers(spec):
        assert defs.resolve_assets_def(key).backfill_policy == dg.BackfillPolicy.single_run()
        assert graph.get(key).backfill_policy == dg.BackfillPolicy.single_run()


def test_one_run_over_a_range_builds_what_day_by_day_runs_build(defs, resources, instance, spec, day_by_day) -> None:
    keys = DatasetKeys(spec)
    _land(resources, spec)
    _build_prior(defs, resources, instance, spec)
    result = _materialize_range(defs, resources, instance, _layers(spec), RANGE[0], RANGE[-1])

    assert result.success
    assert [run.tags.get("dagster/asset_partition_range_start") for run in instance.get_runs()] == [
        RANGE[0].isoformat(),
        None,
    ]
    sort = ["event_date", spec.entity_column, spec.timestamp_column]
    gold = _table(resources, keys.gold, sort)
    expected = _table(day_by_day["resources"], keys.gold, sort)
    assert len(gold) > 0
    pd.testing.assert_frame_equal(gold, expected)
    assert sorted(set(gold["event_date"])) == [day for day in [PRIOR, *RANGE] if day != GAP]
    assert gold.loc[gold["event_date"] == RANGE[0], "kwh_lag_24h"].notna().any()
    assert gold.loc[gold["event_date"] == GAP + dt.timedelta(days=1), "kwh_lag_24h"].isna().all()

    ingest_columns = ["_source_etag", "_ingested_at"]
    silver = _table(resources, keys.silver, sort).drop(columns=ingest_columns, errors="ignore")
    daily_silver = _table(day_by_day["resources"], keys.silver, sort).drop(columns=ingest_columns, errors="ignore")
    pd.testing.assert_frame_equal(silver, daily_silver)
    assert len(_table(resources, keys.bronze, sort)) == len(_table(day_by_day["resources"], keys.bronze, sort))
    assert len(resources["landing"].quarantined(spec)) == len(day_by_day["resources"]["landing"].quarantined(spec))
    for key in _layers(spec):
        assert instance.get_materialized_partitions(key) == {day.isoformat() for day in [PRIOR, *RANGE]}


def test_quality_checks_report_once_for_the_range(defs, resources, instance, spec, day_by_day) -> None:
    _land(resources, spec)
    _build_prior(defs, resources, instance, spec)
    result = _materialize_range(defs, resources, instance, _layers(spec), RANGE[0], RANGE[-1])

    evaluations = result.get_asset_check_evaluations()
    assert sorted(evaluation.check_name for evaluation in evaluations) == sorted(rule.name for rule in spec.quality)
    daily = [evaluation for run in day_by_day["results"] for evaluation in run.get_asset_check_evaluations()]
    for evaluation in evaluations:
        # The day without files builds no silver day by day, so it has no evaluation there.
        same_rule = [other for other in daily if other.check_name == evaluation.check_name]
        assert len(same_rule) == len(RANGE) - 1
        for field in ("rows_checked", "rows_failed"):
            assert evaluation.metadata[field].value == sum(other.metadata[field].value for other in same_rule)
        assert evaluation.passed == all(other.passed for other in same_rule)
    assert any(not evaluation.passed for evaluation in evaluations)


def test_a_failing_fail_rule_on_one_day_blocks_gold_for_the_range(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    _land(resources, spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(RANGE[3], 'no-meter.csv')}"
    rows = "".join(f",{RANGE[3].isoformat()}T{hour:02d}:00:00Z,1.0,2.0\n" for hour in range(24))
    resources["landing"].write_bytes(path, ("meter_id,timestamp,kwh,temperature\n" + rows).encode())

    result = _materialize_range(defs, resources, instance, _layers(spec), RANGE[0], RANGE[-1], raise_on_error=False)
    assert not result.success
    (failed,) = [check for check in result.get_asset_check_evaluations() if check.check_name == "meter_id_present"]
    assert failed.passed is False and failed.metadata["rows_failed"].value == 24
    assert {event.asset_key for event in result.get_asset_materialization_events()} == {keys.bronze, keys.silver}
    assert instance.get_materialized_partitions(keys.gold) == set()
    lake = resources["lake"]
    assert lake.version(lake.table_uri(*keys.table(keys.gold))) is None


def test_a_range_is_written_in_one_commit_per_layer(defs, resources, instance, spec) -> None:
    _land(resources, spec)
    result = _materialize_range(defs, resources, instance, _layers(spec), RANGE[0], RANGE[-1])
    lake = resources["lake"]
    for key in _layers(spec):
        events = [event for event in result.get_asset_materialization_events() if event.asset_key == key]
        assert sorted(event.partition for event in events) == [day.isoformat() for day in RANGE]
        metadata = events[0].materialization.metadata
        layer, table = key.path
        uri = lake.table_uri(layer, table)
        assert lake.version(uri) == metadata["delta_version"].value == 0
        by_day = metadata["rows_by_day"].value
        assert sorted(by_day) == [day.isoformat() for day in RANGE]
        assert by_day[GAP.isoformat()] == 0
        assert sum(by_day.values()) == metadata["dagster/row_count"].value == lake.count_rows(uri)


def test_running_a_range_again_ingests_nothing_twice(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    _land(resources, spec)
    _materialize_range(defs, resources, instance, [keys.bronze], RANGE[0], RANGE[-1])
    lake = resources["lake"]
    uri = lake.table_uri(*keys.table(keys.bronze))
    rows, version = lake.count_rows(uri), lake.version(uri)

    again = _materialize_range(defs, resources, instance, [keys.bronze], RANGE[0], RANGE[-1])
    assert again.success
    assert again.get_asset_materialization_events() == []
    assert (lake.count_rows(uri), lake.version(uri)) == (rows, version)

    # Only a broken file is new: nothing to materialize, each day records what it quarantined.
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(RANGE[2], 'broken.csv')}"
    resources["landing"].write_bytes(path, b"not,the,columns\n1,2,3\n")
    broken = _materialize_range(defs, resources, instance, [keys.bronze], RANGE[0], RANGE[-1])
    assert broken.get_asset_materialization_events() == []
    assert (lake.count_rows(uri), lake.version(uri)) == (rows, version)
    observed = {
        event.partition: event.asset_observation_data.asset_observation
        for event in broken.get_asset_observation_events()
    }
    assert sorted(observed) == [day.isoformat() for day in RANGE]
    quarantined = {day: observation.metadata["files_quarantined"].value for day, observation in observed.items()}
    assert quarantined == {day.isoformat(): int(day == RANGE[2]) for day in RANGE}


def test_gold_over_a_range_without_silver_rows_builds_nothing(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    _land(resources, spec)
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver], RANGE[0])
    later = [day + dt.timedelta(days=len(RANGE) + 1) for day in RANGE[:3]]
    result = _materialize_range(defs, resources, instance, [keys.gold], later[0], later[-1])
    assert result.success
    assert result.get_asset_materialization_events() == []
    lake = resources["lake"]
    assert lake.version(lake.table_uri(*keys.table(keys.gold))) is None


@pytest.fixture
def queued_instance() -> Iterator[dg.DagsterInstance]:
    """An instance whose runs wait in the queue, so a backfill's runs can be counted unrun."""
    overrides = {"run_coordinator": {"module": "dagster._core.run_coordinator", "class": "QueuedRunCoordinator"}}
    with dg.instance_for_test(overrides=overrides) as test_instance:
        yield test_instance


@pytest.fixture
def workspace(queued_instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    """The project's code location, loaded in process, as the backfill daemon sees it."""
    origin = InProcessCodeLocationOrigin(LoadableTargetOrigin(module_name="mlops_assets.definitions", attribute="defs"))
    with create_test_daemon_workspace_context(InProcessTestWorkspaceLoadTarget(origin), queued_instance) as context:
        yield context


def _launch(workspace: WorkspaceProcessContext, backfill: PartitionBackfill) -> list[dg.DagsterRun]:
    """Add ``backfill`` and let the backfill daemon take one step; the runs it requested."""
    instance = workspace.instance
    instance.add_backfill(backfill)
    list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
    return list(instance.get_runs(filters=dg.RunsFilter.for_backfill(backfill.backfill_id)))


def test_a_backfill_of_the_three_layers_over_a_range_is_one_run(workspace, queued_instance, spec) -> None:
    first, last = RANGE[0].isoformat(), RANGE[-1].isoformat()
    days = PartitionsSelector(ranges=[PartitionRangeSelector(start=first, end=last)])
    backfill = PartitionBackfill.from_partitions_by_assets(
        backfill_id=uuid.uuid4().hex[:8],
        asset_graph=workspace.create_request_context().asset_graph,
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=queued_instance,
        partitions_by_assets=[PartitionsByAssetSelector(asset_key=key, partitions=days) for key in _layers(spec)],
        title=None,
        description=None,
        run_config=None,
    )
    (run,) = _launch(workspace, backfill)
    assert run.asset_selection == set(_layers(spec))
    assert run.tags["dagster/asset_partition_range_start"] == first
    assert run.tags["dagster/asset_partition_range_end"] == last
    assert {check.name for check in run.asset_check_selection or []} == {rule.name for rule in spec.quality}


def test_a_backfill_of_the_same_days_for_the_selection_starts_with_one_run(workspace, queued_instance, spec) -> None:
    """A backfill naming one set of days for the whole selection also takes gold's next day
    (whose lags read the range's last day), so gold waits for a run of its own; bronze and
    silver still go in one run for the whole range."""
    keys = DatasetKeys(spec)
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=uuid.uuid4().hex[:8],
        asset_graph=workspace.create_request_context().asset_graph,
        partition_names=[day.isoformat() for day in RANGE],
        asset_selection=_layers(spec),
        backfill_timestamp=time.time(),
        tags={},
        dynamic_partitions_store=queued_instance,
        all_partitions=False,
        title=None,
        description=None,
        run_config=None,
    )
    (run,) = _launch(workspace, backfill)
    assert {keys.bronze, keys.silver} <= run.asset_selection
    assert run.tags["dagster/asset_partition_range_start"] == RANGE[0].isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == RANGE[-1].isoformat()
