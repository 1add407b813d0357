"""queue_storm: how fast the queue sensor drains a storm of Event Grid messages on Azurite,
with its per-message requests (deletes, blob lookups) made concurrently or one at a time.

The storm is the one of ``mlops_assets_tests/test_storm.py`` at a chosen size: 5 % garbage,
30 % duplicates, the rest first deliveries over a week of day folders (1 % of them for a
version already overwritten), shuffled. Each drain starts a fresh Azurite, uploads the blobs,
publishes the messages, then evaluates ``landing_event_sensor`` tick after tick with its
cursor until the queue is empty. Runs alternate between ``EventQueue.concurrency`` = 1
(the sensor before concurrent requests) and the project's default.

    python benchmarks/queue_storm.py [--events 1000] [--repeats 3]

Azurite scans every message of a queue on each delete and receive (its Loki store clears
expired messages first, with no usable index), so its per-message cost grows with the
queue's length: at 10,000 messages a delete takes about 100 ms, at 1,000 about 10 ms. The
larger the storm, the more of the drain is Azurite's own scanning, which no client can
hide.

Prints, as its last line, the result (benchmarks/report.py): min, median and max of the
events drained a second on both sides and ratio = concurrent median / sequential median.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from azure.storage.queue import QueueClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from report import machine, report, spread  # noqa: E402

from mlops_assets.datasets.spec import load_bundled_specs  # noqa: E402
from mlops_assets.definitions import build_definitions  # noqa: E402
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME, QueueCursor  # noqa: E402
from mlops_assets.resources.event_queue import EventQueue  # noqa: E402
from mlops_assets.resources.profiles import blob_resources  # noqa: E402
from mlops_assets_tests.test_azurite import account_for  # noqa: E402
from mlops_assets_tests.test_storm import event, garbage, landing_paths, publish_all, upload  # noqa: E402
from mlops_dev.services import run_azurite  # noqa: E402


def drain(events: int, concurrency: int, seed: int) -> dict[str, float]:
    """One storm of ``events`` messages on a fresh Azurite, drained; its figures."""
    (spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
    rng = random.Random(seed)
    today = dt.datetime.now(dt.UTC).date()
    duplicates, refused = int(events * 0.30), int(events * 0.05)
    first_deliveries = events - duplicates - refused
    overwritten_count = first_deliveries // 65
    with (
        tempfile.TemporaryDirectory() as folder,
        run_azurite(Path(folder) / "azurite") as azurite,
        dg.instance_for_test() as instance,
    ):
        paths = landing_paths(today, first_deliveries - overwritten_count)
        overwritten = rng.sample(paths, overwritten_count)
        first, replaced = upload(azurite, paths, 1), upload(azurite, overwritten, 2)
        deliveries = [event(path, *first[path]) for path in paths] + [event(p, *replaced[p]) for p in overwritten]
        deliveries += rng.choices(deliveries, k=duplicates)
        messages = deliveries + [message.content for message in garbage(refused, today)]
        rng.shuffle(messages)
        publish_all(azurite, messages)

        account = account_for(azurite)
        resources = {
            **blob_resources(account, f"sqlite:///{folder}/mlflow.db", poll_days=2),
            "event_queue": EventQueue(account=account, concurrency=concurrency),
        }
        sensor = build_definitions([spec], resources, arrivals="queue").resolve_sensor_def(EVENT_SENSOR_NAME)
        queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
        run_keys: set[str] = set()
        ticks: list[float] = []
        cursor = None
        started = time.monotonic()
        while True:
            begun = time.monotonic()
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
                result = sensor(context)
            ticks.append(time.monotonic() - begun)
            cursor = result.cursor
            run_keys |= {request.run_key for request in result.run_requests}
            if not QueueCursor.parse(cursor).to_delete and queue.get_queue_properties().approximate_message_count == 0:
                break
        seconds = time.monotonic() - started
    assert len(run_keys) == len(paths), (len(run_keys), len(paths))
    return {
        "drain_s": round(seconds, 2),
        "events_per_s": round(events / seconds, 1),
        "ticks": len(ticks),
        "slowest_tick_s": round(max(ticks), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=EventQueue.model_fields["concurrency"].default)
    args = parser.parse_args()
    before = machine()
    runs: dict[int, list[dict[str, float]]] = {1: [], args.concurrency: []}
    for repeat in range(args.repeats):
        for concurrency in runs:
            figures = drain(args.events, concurrency, seed=repeat)
            runs[concurrency].append(figures)
            print(f"concurrency {concurrency}: {json.dumps(figures)}", flush=True)
    concurrent = spread([run["events_per_s"] for run in runs[args.concurrency]], 1)
    sequential = spread([run["events_per_s"] for run in runs[1]], 1)
    ratio = concurrent["median"] / sequential["median"]
    report(
        "queue_storm",
        project=concurrent,
        baseline=sequential,
        unit="events/s",
        ratio=ratio,
        target="concurrent median / sequential median >= 1",
        met=ratio >= 1,
        machine=before,
        events=args.events,
        concurrency=args.concurrency,
        slowest_tick_s={
            str(concurrency): max(run["slowest_tick_s"] for run in figures) for concurrency, figures in runs.items()
        },
    )


if __name__ == "__main__":
    main()
