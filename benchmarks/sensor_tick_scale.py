"""sensor_tick_scale: one polling-sensor tick over a landing container of 100,000 blobs
with 10 new ones, against a naive tick that lists the whole container.

Both run in this process against the same Azurite (the corpus of sensor_corpus.py,
built once and reused). The project's tick is the real `smart_meter_landing_sensor`
on the azurite profile's resources: it lists only the candidate day prefixes (today and
yesterday) and keeps the versions it has seen in its cursor. The naive tick lists every
blob under the dataset prefix and diffs the names against the set it saw last time.

    python benchmarks/sensor_tick_scale.py [--repeats 3]
    python benchmarks/sensor_tick_scale.py --data-dir /tmp/c20k --days 100 --per-day 200  # a smaller corpus

Prints, as its last line, the result (benchmarks/report.py): min, median and max of both
sides and ratio = project median / naive median (target <= 0.05).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
import uuid
from pathlib import Path

import dagster as dg
from azure.storage.blob import ContainerClient
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import machine, report, spread  # noqa: E402
from sensor_corpus import CONTAINER, CREDENTIAL, DAYS, DEFAULT_DIR, PER_DAY, PREFIX, azurite, ensure_corpus  # noqa: E402

from mlops_assets.datasets.spec import load_bundled_specs  # noqa: E402
from mlops_assets.definitions import build_definitions  # noqa: E402
from mlops_assets.resources.profiles import blob_resources  # noqa: E402
from mlops_assets.resources.storage import StorageAccount  # noqa: E402
from mlops_dev.services import AZURITE_KEY  # noqa: E402

NEW_BLOBS = 10


def naive_tick(container: ContainerClient, seen: set[str]) -> set[str]:
    """List the whole dataset prefix and return the names not seen before."""
    return set(container.list_blob_names(name_starts_with=PREFIX)) - seen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR, help="the corpus's Azurite data folder")
    parser.add_argument("--days", type=int, default=DAYS, help="days of blobs in the corpus")
    parser.add_argument("--per-day", type=int, default=PER_DAY, help="blobs a day in the corpus")
    args = parser.parse_args()
    before = machine()
    corpus = ensure_corpus(args.data_dir, days=args.days, per_day=args.per_day)
    (spec,) = load_bundled_specs()
    today = dt.datetime.now(dt.UTC).date()
    project_seconds, naive_seconds = [], []
    with azurite(args.data_dir) as endpoint:
        account = StorageAccount(
            blob=AzureBlobStorageResource(
                account_url=endpoint, credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY)
            )
        )
        resources = blob_resources(account, "sqlite:///unused-by-this-benchmark.db", poll_days=2)
        sensor = build_definitions([spec], resources, arrivals="poll").resolve_sensor_def("smart_meter_landing_sensor")
        container = ContainerClient(endpoint, CONTAINER, credential=CREDENTIAL)
        with dg.instance_for_test() as instance:
            with dg.build_sensor_context(instance=instance, resources=resources) as context:
                cursor = sensor(context).cursor
            seen = set(container.list_blob_names(name_starts_with=PREFIX))
            for repeat in range(args.repeats):
                names = [
                    f"{PREFIX}{today:%Y/%m/%d}/bench-{uuid.uuid4().hex[:8]}-{index}.csv" for index in range(NEW_BLOBS)
                ]
                for name in names:
                    container.upload_blob(name, b"meter_id,timestamp,kwh,temperature\n", overwrite=True)
                try:
                    started = time.perf_counter()
                    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                        result = sensor(context)
                    project_seconds.append(time.perf_counter() - started)
                    new_in_tick = sum(event.metadata["new_files"].value for event in result.asset_events)
                    if new_in_tick != NEW_BLOBS:
                        raise RuntimeError(f"the project's tick found {new_in_tick} new files, not {NEW_BLOBS}")

                    started = time.perf_counter()
                    found = naive_tick(container, seen)
                    naive_seconds.append(time.perf_counter() - started)
                    if found != set(names):
                        raise RuntimeError(f"the naive tick found {len(found)} new files, not {NEW_BLOBS}")
                    print(
                        f"repeat {repeat + 1}: project {project_seconds[-1]:.3f} s, naive {naive_seconds[-1]:.3f} s",
                        flush=True,
                    )
                finally:
                    for name in names:
                        container.delete_blob(name)
    project, naive = spread(project_seconds), spread(naive_seconds)
    ratio = project["median"] / naive["median"]
    report(
        "sensor_tick_scale",
        project=project,
        baseline=naive,
        unit="s",
        ratio=ratio,
        target="project median / naive median <= 0.05 (at 100,000 blobs)",
        met=ratio <= 0.05,
        machine=before,
        existing_blobs=corpus["blob_count"],
        new_blobs=NEW_BLOBS,
    )


if __name__ == "__main__":
    main()
