"""arrival_latency: seconds from a blob upload to the run requested for it, for the queue
listener, the queue (Event Grid) sensor and the polling sensor, measured on the same uploads.

One Azurite, one MLflow-free azurite profile and one `dagster-daemon` run both sensors
(benchmarks/arrival_latency_defs.py); a `dagster-webserver` for the same code location takes
the runs the queue listener (a thread of this process) launches. Each upload's event goes to
two queues, as two Event Grid subscriptions would deliver it: one the queue sensor drains,
one the listener. The run coordinator launches nothing
(max_concurrent_runs 0), so what is timed is the arrival path alone: upload, event on
the queue (written as Event Grid writes it; Azurite has no Event Grid), sensor tick,
run created. Uploads are spaced further apart than the polling interval, so each run
answers exactly one upload; once an upload's runs are timed they are marked canceled, as
the polling sensor would otherwise hand the next file of the day to the run still waiting
to start instead of requesting one. The daemon evaluates each sensor at most once per 5 s
loop: that floor is part of the figures.

    python benchmarks/arrival_latency.py [--uploads 60] [--spacing 15]

Prints, as its last line, the result (benchmarks/report.py): min, median, p95 and max of the
listener, the queue sensor and the polling sensor, and ratio = listener p95 / queue sensor
p95 (target: listener p95 <= 1.5 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import dagster as dg
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient, QueueServiceClient
from report import machine, report, spread

from mlops_assets.datasets.spec import load_bundled_specs
from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME
from mlops_assets.listener import LISTENER_TAG, QueueListener, Webserver, wait_for_webserver
from mlops_assets.resources.event_queue import EventQueue
from mlops_assets.resources.profiles import build_profile
from mlops_dev.services import AZURITE_ACCOUNT, free_port, run_azurite

HERE = Path(__file__).resolve().parent
POLL_SENSOR = "smart_meter_landing_sensor"
LISTENER_QUEUE = "listener-events"
INSTANCE_YAML = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    max_concurrent_runs: 0
sensors:
  use_threads: true
  num_workers: 4
telemetry:
  enabled: false
"""


def take_run_after(instance: dg.DagsterInstance, tags: dict[str, str], after: float) -> float | None:
    """When the first run with ``tags`` created since ``after`` was created; the waiting runs
    with those tags are then canceled so that the next upload gets a run of its own."""
    records = instance.get_run_records(filters=dg.RunsFilter(tags=tags, statuses=[dg.DagsterRunStatus.QUEUED]))
    created = sorted(record.create_timestamp.timestamp() for record in records)
    for record in records:
        instance.report_run_canceled(record.dagster_run, message="timed by the arrival_latency benchmark")
    return next((stamp for stamp in created if stamp >= after), None)


@contextmanager
def process(command: list[str], environment: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as output:
        child = subprocess.Popen(command, env=environment, cwd=log.parent, stdout=output, stderr=subprocess.STDOUT)
    try:
        yield child
    finally:
        child.terminate()
        child.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=60)
    parser.add_argument("--spacing", type=float, default=15.0, help="seconds between uploads (> polling interval)")
    args = parser.parse_args()
    today = dt.datetime.now(dt.UTC).date()
    before = machine()
    sides = {
        "listener": {LISTENER_TAG: "queue"},
        "queue_sensor": {"dagster/sensor_name": EVENT_SENSOR_NAME},
        "polling_sensor": {"dagster/sensor_name": POLL_SENSOR},
    }
    latencies: dict[str, list[float]] = {side: [] for side in sides}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        azurite = stack.enter_context(run_azurite(folder / "azurite"))
        home = folder / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
        environment = {
            **os.environ,
            **azurite.environment(),
            "DAGSTER_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow-unused.db",
        }
        os.environ.update(environment)
        defs_file = str(HERE / "arrival_latency_defs.py")
        bin_folder = Path(sys.executable).parent
        stack.enter_context(
            process([str(bin_folder / "dagster-daemon"), "run", "-f", defs_file], environment, home / "daemon.log")
        )
        port = free_port()
        webserver_command = [str(bin_folder / "dagster-webserver"), "-f", defs_file, "-h", "127.0.0.1", "-p", str(port)]
        stack.enter_context(process(webserver_command, environment, home / "webserver.log"))

        QueueServiceClient.from_connection_string(azurite.connection_string).create_queue(LISTENER_QUEUE)
        queues = [
            QueueClient.from_connection_string(azurite.connection_string, name)
            for name in ("landing-events", LISTENER_QUEUE)
        ]
        profile = build_profile("azurite").resources
        listener_queue = EventQueue(
            account=profile["event_queue"].account, queue=LISTENER_QUEUE, poison_queue="landing-events-poison"
        )
        ready = stack.enter_context(dg.build_resources({"landing": profile["landing"], "event_queue": listener_queue}))
        instance = stack.enter_context(dg.DagsterInstance.get())
        listener = QueueListener(load_bundled_specs(), ready.landing, ready.event_queue, instance, Webserver(port=port))
        stop = threading.Event()
        thread = threading.Thread(target=listener.serve, args=(stop,), daemon=True)
        thread.start()
        stack.callback(thread.join, 30)
        stack.callback(stop.set)
        if not wait_for_webserver(listener.webserver, stop, timeout=120):
            raise RuntimeError(f"the webserver did not answer; see {home / 'webserver.log'}")
        time.sleep(args.spacing)  # the daemon starts its sensors

        container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")
        for index in range(args.uploads):
            name = f"smart_meter/{today:%Y/%m/%d}/arrival-{index:03d}.csv"
            blob = container.upload_blob(name, b"meter_id,timestamp,kwh,temperature\n", overwrite=True)
            event = blob_created_event(AZURITE_ACCOUNT, "landing", name, blob.get_blob_properties().etag.strip('"'), 36)
            uploaded = time.time()
            for queue in queues:
                queue.send_message(event)
            time.sleep(args.spacing + random.uniform(-2, 2))
            for side, tags in sides.items():
                created = take_run_after(instance, tags, uploaded)
                if created is None:
                    raise RuntimeError(f"the {side} requested no run for upload {index + 1}; see the logs in {home}")
                latencies[side].append(created - uploaded)
            figures = ", ".join(f"{side} {values[-1]:.2f} s" for side, values in latencies.items())
            print(f"upload {index + 1}/{args.uploads}: {figures}", flush=True)
    figures = {side: spread(values, 2, p95=True) for side, values in latencies.items()}
    report(
        "arrival_latency",
        project=figures["listener"],
        baseline=figures["queue_sensor"],
        unit="s",
        ratio=figures["listener"]["p95"] / figures["queue_sensor"]["p95"],
        target="listener p95 <= 1.5 s",
        met=figures["listener"]["p95"] <= 1.5,
        machine=before,
        uploads=args.uploads,
        polling_sensor=figures["polling_sensor"],
    )


if __name__ == "__main__":
    main()
