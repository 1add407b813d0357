"""Build, once, the large Azurite Blob container used by the sensor_tick_scale benchmark.

The sensor_tick_scale benchmark measures the tick time of the polling landing sensor
with 100,000 existing blobs and 10 new ones, against a naive full listing. This module
gives it that corpus: container ``landing`` of Azurite's ``devstoreaccount1`` holding
200 tiny CSV blobs per day, ``smart_meter/{yyyy}/{mm}/{dd}/readings-{i:03d}.csv``, for
the 500 days ending the day before the build's UTC date.

Azurite keeps the container on disk under ``benchmarks/.data/sensor-corpus-100k/``
(git-ignored). The build is slow (Azurite slows as the container grows, about an hour
in all) and resumable: its plan is saved first, a rerun lists the blobs already
there and uploads only the missing ones, and ``corpus.json`` is written last.

    python benchmarks/sensor_corpus.py                      # full build, or no-op
    python benchmarks/sensor_corpus.py --data-dir /tmp/c --days 3 --per-day 20

From a benchmark::

    meta = ensure_corpus()
    with azurite(DEFAULT_DIR) as endpoint:
        service = BlobServiceClient(endpoint, credential=CREDENTIAL)
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient, ContainerClient, ContentSettings

from mlops_dev.services import AZURITE_ACCOUNT, AZURITE_KEY, run_azurite

DEFAULT_DIR = Path(__file__).resolve().parent / ".data" / "sensor-corpus-100k"

CREDENTIAL = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
CONTAINER = "landing"
PREFIX = "smart_meter/"

DAYS = 500
PER_DAY = 200
THREADS = 32
PROGRESS_EVERY = 5_000
DAYS_PER_CHUNK = 10

MARKER = "corpus.json"
PLAN = "build-plan.json"


@contextmanager
def azurite(data_dir: Path) -> Iterator[str]:
    """Run Azurite persisting to ``data_dir``; yield its blob endpoint URL."""
    with run_azurite(data_dir) as endpoints:
        yield endpoints.blob_url


def blob_name(day: date, index: int) -> str:
    return f"{PREFIX}{day:%Y/%m/%d}/readings-{index:03d}.csv"


def blob_content(day: date) -> bytes:
    return f"meter_id,timestamp,kwh,temperature\nMTR-00000,{day}T00:00:00Z,0.5,3.0\n".encode()


def make_plan(days: int, per_day: int) -> dict[str, Any]:
    """The corpus to build: ``days`` days ending the day before today (UTC)."""
    today = datetime.now(UTC).date()
    return {
        "container": CONTAINER,
        "days": days,
        "per_day": per_day,
        "first_day": str(today - timedelta(days=days)),
        "last_day": str(today - timedelta(days=1)),
        "build_date": str(today),
    }


def load_or_save_plan(data_dir: Path, days: int, per_day: int) -> dict[str, Any]:
    """Reuse the plan of an interrupted build, so a resumed build keeps its dates."""
    path = data_dir / PLAN
    data_dir.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_json(path, make_plan(days, per_day))
    plan: dict[str, Any] = json.loads(path.read_text())
    if (plan["days"], plan["per_day"]) != (days, per_day):
        raise ValueError(
            f"{path} plans {plan['days']} days x {plan['per_day']} blobs, not "
            f"{days} x {per_day}: delete {data_dir} to start over"
        )
    return plan


def write_json(path: Path, content: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(content, indent=2) + "\n")
    tmp.replace(path)


def plan_days(plan: dict[str, Any]) -> list[date]:
    first = date.fromisoformat(plan["first_day"])
    return [first + timedelta(days=offset) for offset in range(plan["days"])]


def open_container(endpoint: str) -> ContainerClient:
    """The ``landing`` container, created if missing."""
    container = BlobServiceClient(endpoint, credential=CREDENTIAL).get_container_client(CONTAINER)
    try:
        container.create_container()
    except ResourceExistsError:
        pass
    return container


def existing_names(container: ContainerClient) -> set[str]:
    return set(container.list_blob_names(name_starts_with=PREFIX))


class Uploader:
    """Uploads blobs from a thread pool, one client (and HTTP pool) per thread."""

    def __init__(self, endpoint: str) -> None:
        self._endpoint = endpoint
        self._local = threading.local()
        self._settings = ContentSettings(content_type="text/csv")

    def _container(self) -> ContainerClient:
        client: ContainerClient | None = getattr(self._local, "container", None)
        if client is None:
            client = ContainerClient(self._endpoint, CONTAINER, credential=CREDENTIAL)
            self._local.container = client
        return client

    def upload(self, item: tuple[str, bytes]) -> None:
        name, data = item
        self._container().upload_blob(name, data, overwrite=True, content_settings=self._settings)


class Progress:
    """Prints count, elapsed time and rate every ``every`` uploads."""

    def __init__(self, total: int, every: int = PROGRESS_EVERY) -> None:
        self.total = total
        self.every = every
        self.count = 0
        self.started = time.monotonic()

    def step(self) -> None:
        self.count += 1
        if self.count % self.every == 0 or self.count == self.total:
            elapsed = time.monotonic() - self.started
            rate = self.count / elapsed if elapsed else 0.0
            print(
                f"uploaded {self.count:>7,}/{self.total:,}  elapsed {elapsed:7.0f}s  rate {rate:6.1f} blobs/s",
                flush=True,
            )


def upload_missing(endpoint: str, plan: dict[str, Any], existing: set[str]) -> None:
    """Upload every planned blob not in ``existing``, a few days at a time."""
    pending = [
        (day, [name for i in range(plan["per_day"]) if (name := blob_name(day, i)) not in existing])
        for day in plan_days(plan)
    ]
    todo = [(day, names) for day, names in pending if names]
    progress = Progress(sum(len(names) for _, names in todo))
    print(f"{len(existing):,} blobs already there, {progress.total:,} to upload", flush=True)
    uploader = Uploader(endpoint)
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        for start in range(0, len(todo), DAYS_PER_CHUNK):
            items = [(name, blob_content(day)) for day, names in todo[start : start + DAYS_PER_CHUNK] for name in names]
            for _ in pool.map(uploader.upload, items):
                progress.step()


def build(data_dir: Path, days: int, per_day: int) -> dict[str, Any]:
    """Build (or finish building) the corpus and write its marker."""
    plan = load_or_save_plan(data_dir, days, per_day)
    print(f"building {days} x {per_day} blobs, {plan['first_day']}..{plan['last_day']}, in {data_dir}", flush=True)
    with azurite(data_dir) as endpoint:
        container = open_container(endpoint)
        upload_missing(endpoint, plan, existing_names(container))
        count = len(existing_names(container))
    expected = days * per_day
    if count != expected:
        raise RuntimeError(f"container holds {count} blobs under {PREFIX}, expected {expected}")
    marker = {**plan, "blob_count": count, "prefix": PREFIX}
    write_json(data_dir / MARKER, marker)
    print(f"corpus ready: {json.dumps(marker)}", flush=True)
    return marker


def ensure_corpus(data_dir: Path = DEFAULT_DIR, *, days: int = DAYS, per_day: int = PER_DAY) -> dict[str, Any]:
    """Return the corpus marker, building the corpus first if the marker is missing."""
    marker = data_dir / MARKER
    if marker.exists():
        content: dict[str, Any] = json.loads(marker.read_text())
        return content
    return build(data_dir, days, per_day)


def exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into SystemExit, so Azurite is stopped and saves what it holds."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, exit_on_sigterm)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DIR)
    parser.add_argument("--days", type=int, default=DAYS)
    parser.add_argument("--per-day", type=int, default=PER_DAY)
    args = parser.parse_args()
    print(json.dumps(ensure_corpus(args.data_dir, days=args.days, per_day=args.per_day)))


if __name__ == "__main__":
    main()
