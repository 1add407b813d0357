"""Replaying landing files through the real Dagster daemon, to see what arrival order does.

A replay drops batches of landing files into a fresh local-profile home, one batch every
``interval`` seconds, while a real ``dagster-daemon`` (the landing sensor, declarative
automation, the run queue) turns them into runs, exactly as ``make dev`` does. It ends
once nothing has run for a while after the last file landed. Its result is what a user
compares between two orders of the same files: the rows of silver, gold and the
predictions, each partition's model (its fitted digest and hold-out metrics), each
partition's registry decision, the champion, and how long it all took.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.registry.decisions import decision_for, registered_name
from mlops_assets.digests import short_digest
from mlops_assets.resources.profiles import local_resources
from mlops_assets.run_queue import PRIORITY_TAG
from mlops_dev.services import running_process

INSTANCE_YAML = """
run_coordinator:
  module: mlops_assets.run_queue
  class: PartitionOrderRunCoordinator
  config:
    max_concurrent_runs: 2
run_monitoring:
  enabled: true
  poll_interval_seconds: 15
  max_resume_run_attempts: 0
concurrency:
  pools:
    default_limit: 1
sensors:
  use_threads: true
  num_workers: 4
telemetry:
  enabled: false
"""
IN_FLIGHT = [
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
]
# Columns that name the run or file version that wrote a row, which differ from one replay
# to the next by construction; everything else must be equal.
RUN_SPECIFIC = ("model_uri", "mlflow_run_id", "model_version")


@dataclass(frozen=True)
class Arrival:
    """Files that land together: one partition's, or one partition's sent again."""

    label: str
    files: tuple[tuple[str, bytes], ...]


def arrivals_by_partition(spec: DatasetSpec, files: Sequence[tuple[str, bytes]]) -> list[Arrival]:
    """The landing files grouped by the partition they belong to, oldest first."""
    by_partition: dict[str, list[tuple[str, bytes]]] = {}
    for path, data in files:
        matched = spec.landing.path_pattern.match(path[len(spec.landing.prefix) + 1 :])
        if matched is None:
            raise ValueError(f"{path} is not a landing path of {spec.name}")
        by_partition.setdefault(spec.grain.floor(matched.event_date).isoformat(), []).append((path, data))
    return [Arrival(label=partition, files=tuple(found)) for partition, found in sorted(by_partition.items())]


def late_and_twice(arrivals: Sequence[Arrival], late: dict[int, int], twice: Sequence[int]) -> list[Arrival]:
    """The same arrivals out of order: the arrival at each ``late`` index is held back until that
    many later arrivals have landed, and those at the ``twice`` indexes land again, unchanged,
    at the end."""
    sent: list[Arrival] = []
    held: list[list] = []
    for index, arrival in enumerate(arrivals):
        if index in late:
            held.append([late[index], arrival])
            continue
        sent.append(arrival)
        for entry in held:
            entry[0] -= 1
        sent.extend(entry[1] for entry in held if entry[0] == 0)
        held = [entry for entry in held if entry[0] > 0]
    sent.extend(entry[1] for entry in held)
    return sent + [Arrival(label=f"{arrivals[index].label} again", files=arrivals[index].files) for index in twice]


@dataclass(frozen=True)
class FinalState:
    """What a replay leaves behind, in terms that do not depend on run ids or arrival times."""

    tables: dict[str, str]
    models: dict[str, dict]
    decisions: dict[str, dict]
    champion: str | None

    def differences(self, other: FinalState) -> list[str]:
        """Where ``other`` differs from this state, one line each (empty when equal)."""
        found = [f"table {name} differs" for name in self.tables if self.tables[name] != other.tables.get(name)]
        for kind, mine, theirs in (("model", self.models, other.models), ("decision", self.decisions, other.decisions)):
            for partition in sorted(set(mine) | set(theirs)):
                if mine.get(partition) != theirs.get(partition):
                    found.append(f"{kind} {partition}: {mine.get(partition)} != {theirs.get(partition)}")
        if self.champion != other.champion:
            found.append(f"champion: {self.champion} != {other.champion}")
        return found


@dataclass
class ReplayResult:
    """One replay: seconds from the first file to the end of the last run, the runs it took."""

    seconds: float
    runs: int
    failed_runs: list[str]
    empty_runs: list[str]
    priorities: list[tuple[str, int]]
    state: FinalState
    log: Path
    run_seconds: list[float] = field(default_factory=list)


@contextmanager
def running_daemon(environment: dict[str, str], folder: Path) -> Iterator[subprocess.Popen]:
    """A ``dagster-daemon`` serving the package's definitions, for as long as the context lasts."""
    command = [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-m", "mlops_assets.definitions"]
    with running_process(command, folder / "daemon.log", environment, cwd=folder, stop_seconds=60) as daemon:
        yield daemon


def replay(
    spec: DatasetSpec,
    spec_path: Path,
    arrivals: Sequence[Arrival],
    folder: Path,
    interval: float,
    quiet: float = 25.0,
    timeout: float = 1200.0,
    progress=print,
) -> ReplayResult:
    """Drop ``arrivals`` one every ``interval`` seconds into a fresh home under ``folder`` while the
    daemon runs, wait until nothing has run for ``quiet`` seconds, and collect what was built."""
    if folder.exists():
        shutil.rmtree(folder)
    home, dagster_home = folder / "mlops", folder / "dagster"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(INSTANCE_YAML)
    environment = {
        **os.environ,
        "MLOPS_PROFILE": "local",
        "MLOPS_HOME": str(home),
        "MLOPS_SPECS": str(spec_path),
        "DAGSTER_HOME": str(dagster_home),
        # Only arrivals start runs: no nightly job may fire in the middle of a replay.
        "MLOPS_NIGHTLY": "off",
    }
    resources = local_resources(home)
    landing = resources["landing"]
    with replay_instance(dagster_home) as instance, running_daemon(environment, dagster_home):
        wait_for_first_tick(instance, f"{spec.name}_landing_sensor", timeout=180)
        started = time.time()
        for index, arrival in enumerate(arrivals, start=1):
            for path, data in arrival.files:
                landing.write_bytes(path, data)
            progress(f"[{index}/{len(arrivals)}] landed {arrival.label}")
            if index < len(arrivals):
                time.sleep(interval)
        finished = _wait_until_settled(instance, started, quiet, timeout)
        records = instance.get_run_records(dg.RunsFilter(created_after=_utc(started)))
        state = final_state(spec, resources, instance)
        failed = [
            record.dagster_run.run_id for record in records if record.dagster_run.status == dg.DagsterRunStatus.FAILURE
        ]
        empty = [
            record.dagster_run.run_id
            for record in records
            if record.dagster_run.status == dg.DagsterRunStatus.SUCCESS
            and not _materialized_anything(instance, record.dagster_run.run_id)
        ]
        priorities = [
            (record.dagster_run.tags.get("dagster/partition", ""), int(record.dagster_run.tags.get(PRIORITY_TAG, "0")))
            for record in records
        ]
        run_seconds = [
            record.end_time - record.start_time for record in records if record.end_time and record.start_time
        ]
    return ReplayResult(
        seconds=finished - started,
        runs=len(records),
        failed_runs=failed,
        empty_runs=empty,
        priorities=priorities,
        state=state,
        log=dagster_home / "daemon.log",
        run_seconds=run_seconds,
    )


@contextmanager
def replay_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """The replay's instance, its SQLite storages created before the daemon and its code server
    start: three processes creating a fresh store at once break its schema migrations."""
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_run_records(limit=1)
        instance.all_instigator_state()
        instance.fetch_materializations(dg.AssetKey("none"), limit=1)
        yield instance


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


def wait_for_first_tick(instance: dg.DagsterInstance, sensor: str, timeout: float) -> None:
    """Wait until the daemon has evaluated ``sensor`` once: the code location is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [state for state in instance.all_instigator_state() if state.name == sensor]
        if states and instance.get_ticks(states[0].instigator_origin_id, states[0].selector_id, limit=1):
            return
        time.sleep(1)
    raise TimeoutError(f"the daemon did not tick {sensor} within {timeout:.0f} s")


def _wait_until_settled(instance: dg.DagsterInstance, started: float, quiet: float, timeout: float) -> float:
    """Wait until no run has been in flight for ``quiet`` seconds; returns when the last run ended."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        records = instance.get_run_records(dg.RunsFilter(created_after=_utc(started)))
        if not any(record.dagster_run.status in IN_FLIGHT for record in records):
            ended = max((record.end_time or started for record in records), default=started)
            if time.time() - max(ended, started) >= quiet:
                return ended
        time.sleep(2)
    raise TimeoutError(f"runs were still in flight {timeout:.0f} s after the first file landed")


def _materialized_anything(instance: dg.DagsterInstance, run_id: str) -> bool:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    return bool(events)


def final_state(spec: DatasetSpec, resources: dict, instance: dg.DagsterInstance) -> FinalState:
    """The replay's outcome, comparable across replays of the same files in another order."""
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    tables = {}
    for key in (keys.silver, keys.gold, keys.predictions):
        uri = lake.table_uri(*keys.table(key))
        rows = lake.read_days(uri, lake.days(uri)).rows
        rows = rows.drop(
            columns=[column for column in rows.columns if column in RUN_SPECIFIC or column.startswith("_")]
        )
        ordered = rows.sort_values(list(rows.columns), kind="stable").reset_index(drop=True)
        tables[key.to_user_string()] = short_digest(
            pd.util.hash_pandas_object(ordered, index=False).to_numpy().tobytes()
            + json.dumps(sorted(map(str, ordered.columns))).encode()
        )
    models, decisions = {}, {}
    decision_key = keys.decision(keys.forecaster)
    for partition in sorted(instance.get_materialized_partitions(keys.forecaster)):
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=keys.forecaster, asset_partitions=[partition]), limit=1
        ).records
        metadata = record.asset_materialization.metadata
        models[partition] = {
            "sha256": metadata["model_sha256"].value,
            **{metric: round(metadata[metric].value, 9) for metric in ("mae", "rmse", "wape") if metric in metadata},
        }
        decision = decision_for(instance, decision_key, partition)
        if decision is not None:
            decisions[partition] = {
                "passed": decision.passed,
                "champion": f"{decision.champion.label} {decision.champion.sha256[:12]}" if decision.champion else None,
            }
    registry = resources["mlflow_tracking"].registry()
    champion = registry.champion(registered_name(spec, keys.forecaster))
    label = (
        f"{champion.tag('asset_key')}@{champion.tag('partition')} {champion.tag('sha256')[:12]}" if champion else None
    )
    return FinalState(tables=tables, models=models, decisions=decisions, champion=label)
