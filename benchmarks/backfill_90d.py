"""backfill_90d: a 90-day backfill of bronze, silver and gold as one Dagster run, against the
same layer functions called day by day in a plain Python loop.

Both run in this process on the local profile, each in its own temporary home holding a
copy of the same simulated smart_meter landing files (90 days, 50 meters, a few dirty
records and broken files). The project side is one `dg.materialize` run over the
partition range (the layers' single-run backfill policy), on a test instance: each
layer reads the range once and writes it in one Delta commit. The baseline calls
`ingest_days`, `refine_days` and `featurize_days` for one day at a time, day after day,
with no Dagster around them: what a backfill of one run per day costs without
Dagster's own overhead. Both must build the same gold table. For reference, the same
functions are also called once over the whole range without Dagster (`range_plain_s`),
which separates the range work from Dagster's bookkeeping of 90 partitions.

    python benchmarks/backfill_90d.py [--days 90] [--meters 50] [--repeats 3]

Progress goes to stderr. Prints, as its last line, the result (benchmarks/report.py): min,
median and max of both sides and ratio = project median / baseline median (target <= 1.5).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
from report import machine, report, spread

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.lakehouse.bronze import ingest_days
from mlops_assets.defs.lakehouse.gold import featurize_days
from mlops_assets.defs.lakehouse.silver import refine_days
from mlops_assets.resources.profiles import local_resources
from mlops_dev.simulate import simulate

QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def home_with_files(folder: Path, source: Path) -> dict[str, Any]:
    """A fresh local-profile home whose landing zone is a copy of ``source`` (modification
    times kept, so the files have the same etags in every home)."""
    shutil.copytree(source, folder / "landing", copy_function=shutil.copy2)
    return local_resources(folder)


def project_run(spec: DatasetSpec, resources: dict[str, Any], days: list[dt.date]) -> float:
    """One Dagster run materializing bronze, silver and gold over the whole range."""
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        result = dg.materialize(
            list(defs.assets or []),
            selection=[keys.bronze, keys.silver, keys.gold],
            tags={
                "dagster/asset_partition_range_start": days[0].isoformat(),
                "dagster/asset_partition_range_end": days[-1].isoformat(),
            },
            instance=instance,
            resources=resources,
            run_config=QUIET,
        )
        seconds = time.perf_counter() - started
        if len(instance.get_runs()) != 1:
            raise RuntimeError(f"the backfill took {len(instance.get_runs())} runs, not one")
    if not result.success:
        raise RuntimeError("the project's backfill run failed")
    return seconds


def layer_functions(spec: DatasetSpec, resources: dict[str, Any], days: list[dt.date]) -> None:
    """Bronze, silver and gold of ``days`` through the plain layer functions, no Dagster."""
    lake, landing = resources["lake"], resources["landing"]
    run_id = uuid.uuid4().hex
    commit = {"dagster_run_id": run_id, "dagster_partition_range": f"{days[0]}...{days[-1]}"}
    ingest_days(lake, landing, spec, days, run_id, commit)
    refine_days(lake, spec, days, commit)
    featurize_days(lake, spec, days, commit)


def baseline_loop(spec: DatasetSpec, resources: dict[str, Any], days: list[dt.date]) -> float:
    """The layer functions one day at a time: bronze, silver and gold of a day, then the next."""
    started = time.perf_counter()
    for day in days:
        layer_functions(spec, resources, [day])
    return time.perf_counter() - started


def range_plain(spec: DatasetSpec, resources: dict[str, Any], days: list[dt.date]) -> float:
    """The layer functions once over the whole range: the project's work without Dagster."""
    started = time.perf_counter()
    layer_functions(spec, resources, days)
    return time.perf_counter() - started


def gold_rows(spec: DatasetSpec, resources: dict[str, Any], days: list[dt.date]) -> pd.DataFrame:
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    rows = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days).rows
    return rows.sort_values(["event_date", spec.entity_column, spec.timestamp_column]).reset_index(drop=True)


def commits(spec: DatasetSpec, resources: dict[str, Any]) -> dict[str, int]:
    """Delta commits per layer table (its version + 1)."""
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    versions = {
        key.path[0]: lake.version(lake.table_uri(*keys.table(key))) for key in (keys.bronze, keys.silver, keys.gold)
    }
    return {layer: 0 if version is None else version + 1 for layer, version in versions.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--meters", type=int, default=50)
    parser.add_argument("--meters-per-file", type=int, default=25)
    parser.add_argument("--bad-files", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    before = machine()
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    (spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
    days = [spec.start_date + dt.timedelta(days=offset) for offset in range(args.days)]
    if days[-1] > dt.datetime.now(dt.UTC).date():
        raise SystemExit(f"the range ends on {days[-1]}, after today: those partitions do not exist yet")

    project_seconds: list[float] = []
    baseline_seconds: list[float] = []
    plain_seconds: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        source = local_resources(root / "source")
        started = time.perf_counter()
        simulated = simulate(
            source["landing"],
            spec,
            days[0],
            days=args.days,
            meters=args.meters,
            meters_per_file=args.meters_per_file,
            bad_files=args.bad_files,
        )
        progress(
            f"simulated {len(simulated.files)} files, {simulated.records:,} records over {args.days} days "
            f"in {time.perf_counter() - started:.1f} s"
        )
        checked: dict[str, Any] = {}
        for repeat in range(args.repeats):
            # Alternate which side goes first, so neither always runs on a warmer machine.
            order = ("project", "baseline") if repeat % 2 == 0 else ("baseline", "project")
            for side in order:
                resources = home_with_files(root / f"{side}-{repeat}", root / "source" / "landing")
                if side == "project":
                    seconds = project_run(spec, resources, days)
                    project_seconds.append(seconds)
                else:
                    seconds = baseline_loop(spec, resources, days)
                    baseline_seconds.append(seconds)
                progress(f"repeat {repeat + 1} {side}: {seconds:.2f} s")
                if repeat == 0:
                    checked[side] = {"gold": gold_rows(spec, resources, days), "commits": commits(spec, resources)}
            resources = home_with_files(root / f"plain-{repeat}", root / "source" / "landing")
            plain_seconds.append(range_plain(spec, resources, days))
            progress(f"repeat {repeat + 1} range without Dagster: {plain_seconds[-1]:.2f} s")
        pd.testing.assert_frame_equal(checked["project"]["gold"], checked["baseline"]["gold"])

    project, baseline = spread(project_seconds, 2), spread(baseline_seconds, 2)
    ratio = project["median"] / baseline["median"]
    report(
        "backfill_90d",
        project=project,
        baseline=baseline,
        unit="s",
        ratio=ratio,
        target="project median / baseline median <= 1.5",
        met=ratio <= 1.5,
        machine=before,
        days=args.days,
        meters=args.meters,
        landing_files=len(simulated.files),
        gold_rows=len(checked["project"]["gold"]),
        range_plain=spread(plain_seconds, 2),
        project_commits=checked["project"]["commits"],
        baseline_commits=checked["baseline"]["commits"],
    )


if __name__ == "__main__":
    main()
