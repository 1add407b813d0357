"""arrival_to_champion: seconds from a day's files landing to that day's model judged by the
registry (and released as champion when it wins) and the day scored, with the real daemon and
automation on the local profile; where the time goes; and the same work run in one process.

A fresh local-profile home and a real `dagster-daemon` (landing sensor, declarative automation,
the partition-ordered run queue) as `make dev` runs them. The simulated smart-meter days land
one at a time: two days first to warm up (the first day has no champion before it, so it
cannot be scored), then each measured day once the day before has settled. A day is done when
its forecaster's registry decision and its predictions are both materialized. The run records
and step events split each day's time into: sensor wait (landing to bronze run created),
bronze run start, bronze run, automation wait (bronze run end to lifecycle run created),
lifecycle run start, and each lifecycle step.

The baseline is the same days' work without the daemon: the landing sensor evaluated once and
the ingest, lifecycle and checkpoint jobs executed in this process (as `mlops demo` does), in a
home of its own, after each measured day.

    python benchmarks/arrival_to_champion.py [--days 10] [--meters 50]

Prints, as its last line, the result (benchmarks/report.py): min, median and max of both
sides (and the p95 with the daemon), the median of each part, and ratio = p95 with the
daemon / median in one process (target: p95 <= 30 s).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
from report import machine, report, spread

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.profiles import local_resources
from mlops_dev.demo import run_partition
from mlops_dev.replay import INSTANCE_YAML, arrivals_by_partition, replay_instance, running_daemon, wait_for_first_tick
from mlops_dev.simulate import simulate

WARM_UP_DAYS = 2
DAY_TIMEOUT_SECONDS = 300


def simulated_files(folder: Path, spec: DatasetSpec, days: int, meters: int) -> list[tuple[str, bytes]]:
    staging = local_resources(folder)["landing"]
    report = simulate(staging, spec, spec.start_date, days=days, meters=meters, meters_per_file=25)
    root = Path(staging.location.uri.removeprefix("file://"))
    return [(file.path, (root / file.path).read_bytes()) for file in report.files]


def day_done(instance: dg.DagsterInstance, keys: DatasetKeys, day: str) -> float | None:
    """When the day's decision and predictions were both materialized; None until they are."""
    stamps = []
    for key in (keys.decision(keys.forecaster), keys.predictions):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day]), limit=1
        ).records
        if not records:
            return None
        stamps.append(records[0].timestamp)
    return max(stamps)


def wait_until(instance: dg.DagsterInstance, keys: DatasetKeys, day: str, log: Path) -> float:
    deadline = time.monotonic() + DAY_TIMEOUT_SECONDS
    while (done := day_done(instance, keys, day)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{day} was not judged and scored within {DAY_TIMEOUT_SECONDS} s; see {log}")
        time.sleep(0.2)
    return done


def breakdown(
    instance: dg.DagsterInstance, keys: DatasetKeys, day: str, landed: float, done: float
) -> dict[str, float]:
    """Where a day's time went, from its runs' records and step events."""
    records = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": day}))
    runs = [record for record in records if record.create_timestamp.timestamp() >= landed - 1]

    def holding(key: dg.AssetKey) -> dg.RunRecord:
        found = [record for record in runs if key in (record.dagster_run.asset_selection or set())]
        return min(found, key=lambda record: record.create_timestamp)

    bronze, lifecycle = holding(keys.bronze), holding(keys.forecaster)
    parts = {
        "sensor_wait": bronze.create_timestamp.timestamp() - landed,
        "bronze_run_start": bronze.start_time - bronze.create_timestamp.timestamp(),
        "bronze_run": bronze.end_time - bronze.start_time,
        "automation_wait": lifecycle.create_timestamp.timestamp() - bronze.end_time,
        "lifecycle_run_start": lifecycle.start_time - lifecycle.create_timestamp.timestamp(),
    }
    started: dict[str, float] = {}
    for entry in instance.all_logs(
        lifecycle.dagster_run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}
    ):
        step = entry.step_key or ""
        if entry.dagster_event_type == dg.DagsterEventType.STEP_START:
            started[step] = entry.timestamp
        elif step in started:
            parts[f"step {step}"] = entry.timestamp - started[step]
    parts["until_done"] = done - landed
    return {name: round(seconds, 2) for name, seconds in parts.items()}


def in_one_process(home: Path, spec: DatasetSpec, day: str, files: list[tuple[str, bytes]]) -> float:
    """Seconds to land ``files`` and run ``day``'s whole chain in this process."""
    resources = local_resources(home)
    defs = build_definitions([spec], resources)
    with dg.DagsterInstance.from_config(str(home.parent / "dagster")) as instance:
        started = time.perf_counter()
        for path, data in files:
            resources["landing"].write_bytes(path, data)
        succeeded, outcome = run_partition(defs, spec, day, instance)
        if not succeeded:
            raise RuntimeError(f"the in-process chain failed for {day}: {outcome}")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=10, help="measured days (after two warm-up days)")
    parser.add_argument("--meters", type=int, default=50)
    args = parser.parse_args()
    before = machine()
    (spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
    keys = DatasetKeys(spec)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        files = simulated_files(root / "staging", spec, WARM_UP_DAYS + args.days, args.meters)
        arrivals = arrivals_by_partition(spec, files)
        home, dagster_home, baseline = root / "mlops", root / "dagster", root / "baseline"
        for instance_home in (dagster_home, baseline / "dagster"):
            instance_home.mkdir(parents=True)
            (instance_home / "dagster.yaml").write_text(INSTANCE_YAML)
        environment = {
            **os.environ,
            "MLOPS_PROFILE": "local",
            "MLOPS_HOME": str(home),
            "DAGSTER_HOME": str(dagster_home),
            "MLOPS_NIGHTLY": "off",
        }
        landing = local_resources(home)["landing"]
        log = dagster_home / "daemon.log"
        totals, baseline_seconds, parts = [], [], []
        with replay_instance(dagster_home) as instance, running_daemon(environment, dagster_home):
            wait_for_first_tick(instance, f"{spec.name}_landing_sensor", timeout=180)
            for index, arrival in enumerate(arrivals):
                for path, data in arrival.files:
                    landing.write_bytes(path, data)
                landed = time.time()
                done = wait_until(instance, keys, arrival.label, log)
                seconds = in_one_process(baseline / "mlops", spec, arrival.label, list(arrival.files))
                if index < WARM_UP_DAYS:
                    print(f"warm-up {arrival.label}: {done - landed:.1f} s; in one process {seconds:.1f} s", flush=True)
                    continue
                day_parts = breakdown(instance, keys, arrival.label, landed, done)
                totals.append(done - landed)
                baseline_seconds.append(seconds)
                parts.append(day_parts)
                print(
                    f"{arrival.label}: {done - landed:.1f} s; in one process {seconds:.1f} s; "
                    + ", ".join(f"{name} {value:.1f}" for name, value in day_parts.items() if name != "until_done"),
                    flush=True,
                )
    names = list(dict.fromkeys(name for day in parts for name in day))
    daemon, alone = spread(totals, 2, p95=True), spread(baseline_seconds, 2)
    report(
        "arrival_to_champion",
        project=daemon,
        baseline=alone,
        unit="s",
        ratio=daemon["p95"] / alone["median"],
        target="p95 with the daemon <= 30 s",
        met=daemon["p95"] <= 30,
        machine=before,
        days=args.days,
        meters=args.meters,
        median_parts_s={name: round(statistics.median(day[name] for day in parts if name in day), 2) for name in names},
    )


if __name__ == "__main__":
    main()
