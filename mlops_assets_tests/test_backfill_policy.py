"""Backfills of the data layers: bronze, silver and gold run a range of days as one run, and
that run builds the same tables as running the days one by one."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.profiles import local_resources
from mlops_assets_tests.conftest import QUIET, materialize_day
from mlops_dev.services import free_port, running_process
from mlops_dev.simulate import simulate

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


REPOSITORY = Path(__file__).resolve().parents[1]
BACKFILL_TAG = "dagster/backfill"
STARTUP_SECONDS = 180
# The daemon looks at backfills every 30 seconds, once it has loaded the code location.
BACKFILL_SECONDS = 180

# Runs wait in the queue and never start, so a backfill's runs can be counted unrun.
INSTANCE_YAML = """\
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 0
telemetry:
  enabled: false
"""
WORKSPACE_YAML = f"""\
load_from:
  - python_module:
      module_name: mlops_assets.definitions
      attribute: defs
      location_name: mlops_assets
      working_directory: {REPOSITORY}
"""

LOCATIONS = """
query Locations {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries { name loadStatus locationOrLoadError { __typename ... on PythonError { message } } }
    }
    ... on Error { message }
  }
}
"""
LAUNCH_BACKFILL = """
mutation LaunchBackfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on Error { message }
  }
}
"""
BACKFILL_STATUS = """
query BackfillStatus($backfillId: String!) {
  partitionBackfillOrError(backfillId: $backfillId) {
    __typename
    ... on PartitionBackfill {
      assetBackfillData {
        assetBackfillStatuses { ... on AssetPartitionsStatusCounts { numPartitionsInProgress } }
      }
    }
    ... on Error { message }
  }
}
"""

T = TypeVar("T")


@dataclass
class RunningDagster:
    """A ``dagster-webserver`` and a ``dagster-daemon`` serving the project's code location on
    one instance, whose runs stay queued."""

    url: str
    instance: dg.DagsterInstance
    processes: dict[str, tuple[subprocess.Popen, Path]]

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of ``query`` posted to the webserver's GraphQL endpoint."""
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read()
        except urllib.error.HTTPError as error:
            # A resolver's error comes back as a 500 whose body still holds the typed result.
            text = error.read()
            if not text.lstrip().startswith(b"{"):
                raise AssertionError(f"POST /graphql answered {error.code}: {text[:2000]!r}") from error
        payload = json.loads(text)
        assert not payload.get("errors"), payload["errors"]
        return payload["data"]

    def wait_for(self, condition: Callable[[], T | None], seconds: float, what: str) -> T:
        """Poll ``condition`` until it returns something, failing early if a process exits."""
        deadline = time.monotonic() + seconds
        while True:
            for name, (process, log) in self.processes.items():
                if process.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {process.returncode}:\n{_tail(log)}")
            found = condition()
            if found:
                return found
            if time.monotonic() > deadline:
                logs = "\n".join(f"--- {name}\n{_tail(log)}" for name, (_, log) in self.processes.items())
                raise TimeoutError(f"{what} within {seconds:.0f} s\n{logs}")
            time.sleep(0.5)


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="module")
def dagster_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDagster]:
    """The webserver and the daemon, started once for the tests that launch backfills: each takes
    tens of seconds to load the code location."""
    folder = tmp_path_factory.mktemp("dagster-services")
    dagster_home = folder / "dagster"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    workspace = folder / "workspace.yaml"
    workspace.write_text(WORKSPACE_YAML)
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(dagster_home),
        "MLOPS_PROFILE": "local",
        "MLOPS_HOME": str(folder / "mlops"),
        "MLOPS_NIGHTLY": "off",
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DAGSTER_HOME", str(dagster_home))
        # Creates the instance's SQLite storages now: the webserver, the daemon and their code
        # servers would otherwise all create them at once, which breaks their schema migrations.
        instance = dg.DagsterInstance.get()
    bin_dir = Path(sys.executable).parent
    port = free_port()
    commands = {
        "dagster-webserver": [
            str(bin_dir / "dagster-webserver"),
            *("--workspace", str(workspace), "--host", "127.0.0.1", "--port", str(port)),
        ],
        "dagster-daemon": [str(bin_dir / "dagster-daemon"), "run", "--workspace", str(workspace)],
    }
    with instance, ExitStack() as stack:
        processes = {}
        for name, command in commands.items():
            log = folder / f"{name}.log"
            processes[name] = (stack.enter_context(running_process(command, log, environment, cwd=folder)), log)
        services = RunningDagster(url=f"http://127.0.0.1:{port}", instance=instance, processes=processes)
        services.wait_for(lambda: _location_loaded(services), STARTUP_SECONDS, "the webserver loaded no code location")
        yield services


def _location_loaded(services: RunningDagster) -> bool:
    """Whether the webserver answers with the code location loaded; fails if it did not load."""
    try:
        workspace = services.graphql(LOCATIONS)["workspaceOrError"]
    except (urllib.error.URLError, ConnectionError):
        return False
    assert workspace["__typename"] == "Workspace", workspace
    (entry,) = workspace["locationEntries"]
    if entry["loadStatus"] != "LOADED":
        return False
    location = entry["locationOrLoadError"]
    assert location["__typename"] == "RepositoryLocation", location.get("message", location)
    return True


def _asset_key(key: dg.AssetKey) -> dict[str, list[str]]:
    return {"path": list(key.path)}


def _launch(services: RunningDagster, params: dict[str, Any]) -> list[dg.DagsterRun]:
    """Launch a backfill of ``params`` (GraphQL ``LaunchBackfillParams``) as the UI does; the
    runs the daemon requested for it in its first pass."""
    launched = services.graphql(LAUNCH_BACKFILL, {"params": params})["launchPartitionBackfill"]
    if launched["__typename"] != "LaunchBackfillSuccess":
        pytest.fail(f"launchPartitionBackfill: {launched['__typename']}: {launched.get('message')}")
    backfill_id = launched["backfillId"]

    def requested() -> list[dg.DagsterRun] | None:
        # The daemon creates a pass's runs one by one, then counts their partitions in progress:
        # once it counts some, every run of the pass exists, so the runs are read after that.
        if not _partitions_in_progress(services, backfill_id):
            return None
        records = services.instance.get_run_records(filters=dg.RunsFilter(tags={BACKFILL_TAG: backfill_id}))
        return [record.dagster_run for record in records]

    return services.wait_for(requested, BACKFILL_SECONDS, f"the daemon requested no run for backfill {backfill_id}")


def _partitions_in_progress(services: RunningDagster, backfill_id: str) -> int:
    backfill = services.graphql(BACKFILL_STATUS, {"backfillId": backfill_id})["partitionBackfillOrError"]
    assert backfill["__typename"] == "PartitionBackfill", backfill
    statuses = backfill["assetBackfillData"]["assetBackfillStatuses"]
    return sum(status.get("numPartitionsInProgress", 0) for status in statuses)


def test_a_backfill_of_the_three_layers_over_a_range_is_one_run(dagster_services, spec) -> None:
    """A backfill of bronze, silver and gold over a range of days, launched through the
    webserver, is one run of the three layers for the whole range, with silver's checks."""
    first, last = RANGE[0].isoformat(), RANGE[-1].isoformat()
    days = {"ranges": [{"start": first, "end": last}]}
    params = {"partitionsByAssets": [{"assetKey": _asset_key(key), "partitions": days} for key in _layers(spec)]}
    (run,) = _launch(dagster_services, params)
    assert run.asset_selection == set(_layers(spec))
    assert run.tags["dagster/asset_partition_range_start"] == first
    assert run.tags["dagster/asset_partition_range_end"] == last
    assert {check.name for check in run.asset_check_selection or []} == {rule.name for rule in spec.quality}


def test_a_backfill_of_the_same_days_for_the_selection_starts_with_one_run(dagster_services, spec) -> None:
    """A backfill naming one set of days for the whole selection also takes gold's next day
    (whose lags read the range's last day), so gold waits for a run of its own; bronze and
    silver still go in one run for the whole range."""
    keys = DatasetKeys(spec)
    params = {
        "assetSelection": [_asset_key(key) for key in _layers(spec)],
        "partitionNames": [day.isoformat() for day in RANGE],
    }
    (run,) = _launch(dagster_services, params)
    assert {keys.bronze, keys.silver} <= run.asset_selection
    assert run.tags["dagster/asset_partition_range_start"] == RANGE[0].isoformat()
    assert run.tags["dagster/asset_partition_range_end"] == RANGE[-1].isoformat()
