"""arrival_latency: seconds from a blob upload to the run requested for it, for the queue
(Event Grid) sensor and the polling sensor, measured in the same run of the real daemon.

One Azurite, one MLflow-free azurite profile and one `dagster-daemon` run both sensors
(benchmarks/arrival_latency_defs.py). The run coordinator launches nothing
(max_concurrent_runs 0), so what is timed is the arrival path alone: upload, event on
the queue (written as Event Grid writes it; Azurite has no Event Grid), sensor tick,
run created. Uploads are spaced further apart than the polling interval, so each run
answers exactly one upload; once an upload's runs are timed they are marked canceled, as
the polling sensor would otherwise hand the next file of the day to the run still waiting
to start instead of requesting one. The daemon evaluates each sensor at most once per 5 s
loop: that floor is part of the figures.

    python benchmarks/arrival_latency.py [--uploads 60] [--spacing 15]

Prints, as its last line, a JSON object with p50/p95 per sensor and
ratio = queue p95 / polling p95 (target: queue p95 <= 5 s).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient

from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME
from mlops_dev.services import AZURITE_ACCOUNT, run_azurite

HERE = Path(__file__).resolve().parent
POLL_SENSOR = "smart_meter_landing_sensor"
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


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def summary(side: str, values: list[float]) -> dict[str, float]:
    return {
        f"{side}_min_s": round(min(values), 2),
        f"{side}_p50_s": round(statistics.median(values), 2),
        f"{side}_max_s": round(max(values), 2),
    }


def take_run_after(instance: dg.DagsterInstance, sensor: str, after: float) -> float | None:
    """When ``sensor``'s first run created since ``after`` was created; its waiting runs are
    then canceled so that the next upload gets a run of its own."""
    records = instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor}, statuses=[dg.DagsterRunStatus.QUEUED])
    )
    created = sorted(record.create_timestamp.timestamp() for record in records)
    for record in records:
        instance.report_run_canceled(record.dagster_run, message="timed by the arrival_latency benchmark")
    return next((stamp for stamp in created if stamp >= after), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--uploads", type=int, default=60)
    parser.add_argument("--spacing", type=float, default=15.0, help="seconds between uploads (> polling interval)")
    args = parser.parse_args()
    today = dt.datetime.now(dt.UTC).date()
    load_before = round(os.getloadavg()[0], 2)
    with tempfile.TemporaryDirectory() as folder, run_azurite(Path(folder) / "azurite") as azurite:
        home = Path(folder) / "dagster"
        home.mkdir()
        (home / "dagster.yaml").write_text(INSTANCE_YAML)
        environment = {
            **os.environ,
            **azurite.environment(),
            "DAGSTER_HOME": str(home),
            "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow-unused.db",
        }
        log = (home / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-f", str(HERE / "arrival_latency_defs.py")],
            env=environment,
            cwd=home,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
                "landing"
            )
            queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
            time.sleep(args.spacing)  # the daemon starts its sensors
            os.environ["DAGSTER_HOME"] = str(home)
            latencies: dict[str, list[float]] = {EVENT_SENSOR_NAME: [], POLL_SENSOR: []}
            with dg.DagsterInstance.get() as instance:
                for index in range(args.uploads):
                    name = f"smart_meter/{today:%Y/%m/%d}/arrival-{index:03d}.csv"
                    blob = container.upload_blob(name, b"meter_id,timestamp,kwh,temperature\n", overwrite=True)
                    etag = blob.get_blob_properties().etag.strip('"')
                    queue.send_message(blob_created_event(AZURITE_ACCOUNT, "landing", name, etag, 36))
                    uploaded = time.time()
                    time.sleep(args.spacing + random.uniform(-2, 2))
                    for sensor, values in latencies.items():
                        created = take_run_after(instance, sensor, uploaded)
                        if created is None:
                            raise RuntimeError(f"{sensor} requested no run for upload {index + 1}; see {log.name}")
                        values.append(created - uploaded)
                    print(
                        f"upload {index + 1}/{args.uploads}: queue {latencies[EVENT_SENSOR_NAME][-1]:.2f} s, "
                        f"polling {latencies[POLL_SENSOR][-1]:.2f} s",
                        flush=True,
                    )
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            log.close()
    queue_p95, poll_p95 = percentile(latencies[EVENT_SENSOR_NAME], 0.95), percentile(latencies[POLL_SENSOR], 0.95)
    print(
        json.dumps(
            {
                "benchmark": "arrival_latency",
                "uploads": args.uploads,
                "load_before": load_before,
                **summary("queue", latencies[EVENT_SENSOR_NAME]),
                "queue_p95_s": round(queue_p95, 2),
                **summary("poll", latencies[POLL_SENSOR]),
                "poll_p95_s": round(poll_p95, 2),
                "ratio": round(queue_p95 / poll_p95, 3),
                "target": "queue p95 <= 5 s",
            }
        )
    )


if __name__ == "__main__":
    main()
