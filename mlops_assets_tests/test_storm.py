"""A storm of Event Grid messages drained by the queue sensor on real Azurite.

Ten thousand messages land on the queue at once: 5 % garbage of every kind the sensor
must refuse, 30 % duplicates (Event Grid delivers at least once), and first deliveries
for a week of day folders, some of which announce a version the blob no longer has (the
event of an overwritten upload delivered after the event of the upload that replaced it).
All of it is shuffled. The sensor is then evaluated tick after tick with its cursor, as
the daemon would, until the queue is empty; the test prints the drain rate.

Azurite scans the whole queue on every delete and receive (it clears expired messages
first, without a usable index), so a message costs it about 10 ms at 1,000 queued and
100 ms at 10,000: most of this test's minutes are Azurite's, and the drain rate here is
the emulator's, not Azure's. The daemon's floor of one tick per 5 s is not in it either.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import dagster as dg
import pytest
from azure.storage.blob import ContainerClient
from azure.storage.queue import QueueClient

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.defs.landing.polling import file_run_key
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME, MAX_MESSAGES_PER_TICK, QueueCursor
from mlops_assets.resources.event_queue import MAX_POISONED_CHARS
from mlops_assets.resources.profiles import blob_resources
from mlops_assets_tests.conftest import TODAY
from mlops_assets_tests.test_azurite import account_for, tick
from mlops_dev.services import AZURITE_ACCOUNT, AzuriteEndpoints, run_azurite

EVENTS = 10_000
DUPLICATES = 3_000  # 30 %: deliveries of an event already on the queue
GARBAGE = 500  # 5 %: messages that are not usable events
OVERWRITTEN = 100  # paths uploaded twice, both uploads announced
DAYS = 7  # today and the six days before: partitions that have started
THREADS = 16
SEED = 20261201
TICK_TIMEOUT_SECONDS = 60  # the daemon gives up on a sensor evaluation after this
MAX_REASON_CHARS = 400

T = TypeVar("T")


@dataclass(frozen=True)
class Garbage:
    """A message the sensor must poison, and a phrase its reason must hold."""

    content: str
    reason: str


def in_parallel(work: Callable[[T], Any], items: Iterable[T]) -> list[Any]:
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        return list(pool.map(work, items))


def landing_paths(today: dt.date, count: int) -> list[str]:
    days = [today - dt.timedelta(days=back) for back in range(DAYS)]
    return [f"smart_meter/{days[index % DAYS]:%Y/%m/%d}/meter-{index:05d}.csv" for index in range(count)]


def upload(azurite: AzuriteEndpoints, paths: list[str], generation: int) -> dict[str, tuple[str, int]]:
    """Upload one tiny CSV per path from a thread pool, one client per thread, as many
    source systems would; returns each path's (etag, size)."""
    local = threading.local()

    def put(path: str) -> tuple[str, tuple[str, int]]:
        if not hasattr(local, "container"):
            local.container = ContainerClient.from_connection_string(azurite.connection_string, "landing")
        data = f"meter_id,timestamp,kwh,temperature\n{path[-9:-4]},2026-01-01T00:00:00Z,{generation}.5,3.0\n"
        written = local.container.get_blob_client(path).upload_blob(data.encode(), overwrite=True)
        return path, (written["etag"].strip('"'), len(data))

    return dict(in_parallel(put, paths))


def event(path: str, etag: str, size: int, container: str = "landing") -> str:
    return blob_created_event(AZURITE_ACCOUNT, container, path, etag, size)


def garbage(count: int, today: dt.date) -> list[Garbage]:
    """``count`` distinct unusable messages, every kind in turn."""

    def broken(index: int, change: Callable[[dict[str, Any]], object]) -> str:
        fields = json.loads(base64.b64decode(event(f"smart_meter/{today:%Y/%m/%d}/g-{index}.csv", "0x1", 10)))
        change(fields)
        return json.dumps(fields)

    kinds: list[Callable[[int], Garbage]] = [
        lambda i: Garbage(f"storm garbage {i}", "neither JSON nor Base64"),
        lambda i: Garbage(broken(i, lambda e: e.update(eventType="Microsoft.Storage.BlobDeleted")), "BlobDeleted"),
        lambda i: Garbage(event(f"elsewhere/{i}.csv", "0x1", 10), "not a landing file of any dataset"),
        lambda i: Garbage(event(f"smart_meter/{today:%Y/%m/%d}/{i}.csv", "0x1", 10, "raw"), "not a landing file"),
        lambda i: Garbage(
            event(f"smart_meter/{today:%Y/%m/%d}/_temporary/{i}.csv", "0x1", 10), "not a landing file of any dataset"
        ),
        lambda i: Garbage(broken(i, lambda e: e["data"].update(contentLength=None)), "contentLength"),
        lambda i: Garbage(broken(i, lambda e: e["data"].update(contentLength=-i)), "contentLength"),
        lambda i: Garbage(broken(i, lambda e: e["data"].update(eTag=[i])), "eTag"),
        lambda i: Garbage(broken(i, lambda e: e.update(eventTime=f"day {i}")), "eventTime"),
        lambda i: Garbage(broken(i, lambda e: e.update(subject=f"/blobServices/default/x{i}")), "does not name a blob"),
        lambda i: Garbage(broken(i, lambda e: e["data"].update(url=f"http://a/{i}")), "does not match subject"),
        lambda i: Garbage(f"[{i}," + "[" * 20_000 + "]" * 20_001, "nested too deeply"),
    ]
    return [kinds[index % len(kinds)](index) for index in range(count)]


def publish_all(azurite: AzuriteEndpoints, messages: list[str]) -> None:
    local = threading.local()

    def send(message: str) -> None:
        if not hasattr(local, "queue"):
            local.queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
        local.queue.send_message(message)

    in_parallel(send, messages)


def read_poison_queue(azurite: AzuriteEndpoints) -> list[dict[str, Any]]:
    """Every poison record, each received once (hidden for the rest of the test)."""
    poison = QueueClient.from_connection_string(azurite.connection_string, "landing-events-poison")
    records: list[dict[str, Any]] = []
    while page := list(poison.receive_messages(messages_per_page=32, max_messages=32, visibility_timeout=3600)):
        records.extend(json.loads(message.content) for message in page)
    return records


@pytest.fixture
def storm_azurite(tmp_path: Path) -> Iterator[AzuriteEndpoints]:
    """Azurite without the request log the other Azurite tests keep: tens of thousands of requests here."""
    with run_azurite(tmp_path / "azurite") as endpoints:
        yield endpoints


@pytest.mark.slow
def test_a_storm_of_events_requests_every_file_version_once_and_poisons_the_garbage(
    storm_azurite, mlflow_tracking, instance, spec
) -> None:
    azurite = storm_azurite
    rng = random.Random(SEED)
    today = TODAY
    first_deliveries = EVENTS - DUPLICATES - GARBAGE
    paths = landing_paths(today, first_deliveries - OVERWRITTEN)
    overwritten = rng.sample(paths, OVERWRITTEN)

    started = time.monotonic()
    first = upload(azurite, paths, generation=1)
    replaced = upload(azurite, overwritten, generation=2)
    upload_seconds = time.monotonic() - started
    current = {**first, **replaced}
    announced = [(path, *first[path]) for path in paths] + [(path, *replaced[path]) for path in overwritten]
    assert len(announced) == first_deliveries
    deliveries = [event(path, etag, size) for path, etag, size in announced]
    deliveries += rng.choices(deliveries, k=DUPLICATES)
    refused = garbage(GARBAGE, today)
    messages = deliveries + [message.content for message in refused]
    rng.shuffle(messages)
    assert len(messages) == EVENTS

    started = time.monotonic()
    publish_all(azurite, messages)
    publish_seconds = time.monotonic() - started

    resources = blob_resources(account_for(azurite), mlflow_tracking.tracking_uri, poll_days=2)
    defs = build_definitions([spec], resources, arrivals="queue")
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    launched: dict[str, dg.RunRequest] = {}  # what the daemon launches: a sensor's run key once
    skipped_again = 0
    observed: set[tuple[str, str]] = set()
    tick_seconds: list[float] = []
    cursor = None
    started = time.monotonic()
    while True:
        assert len(tick_seconds) < 4 * EVENTS // MAX_MESSAGES_PER_TICK, "the queue does not drain"
        begun = time.monotonic()
        result = tick(defs, EVENT_SENSOR_NAME, instance, resources, cursor=cursor)
        tick_seconds.append(time.monotonic() - begun)
        cursor = result.cursor
        keys = [request.run_key for request in result.run_requests]
        assert len(keys) == len(set(keys)), "a tick requested one file version twice"
        for request in result.run_requests:
            if request.run_key in launched:
                skipped_again += 1
            else:
                launched[request.run_key] = request
        observed |= {
            (file["path"], file["etag"])
            for observation in result.asset_events
            for file in observation.metadata["files"].value
        }
        if not QueueCursor.parse(cursor).to_delete and queue.get_queue_properties().approximate_message_count == 0:
            break
    drain_seconds = time.monotonic() - started

    # One run per current file version: the overwritten paths' first versions were replaced
    # before any tick, so their late events lead to the version that is there now.
    landing = resources["landing"]
    days = sorted({today - dt.timedelta(days=back) for back in range(DAYS)})
    files = [file for day in days for file in landing.list_partition(spec, day)]
    assert {file.path: file.etag for file in files} == {path: etag for path, (etag, _) in current.items()}
    expected = {file_run_key(spec, file): file for file in files}
    assert set(launched) == set(expected)
    for key, request in launched.items():
        assert request.partition_key == expected[key].partition.isoformat()
        assert request.asset_selection == [DatasetKeys(spec).bronze]
    assert observed == {(file.path, file.etag) for file in files}

    poisoned = read_poison_queue(azurite)
    by_content = Counter(record["content"] for record in poisoned)
    assert len(poisoned) == GARBAGE and all(count == 1 for count in by_content.values())
    reasons = {record["content"]: record["reason"] for record in poisoned}
    for message in refused:
        reason = reasons[message.content[:MAX_POISONED_CHARS]]
        assert message.reason in reason and 0 < len(reason) <= MAX_REASON_CHARS
    assert queue.get_queue_properties().approximate_message_count == 0

    figures = {
        "events": EVENTS,
        "duplicates": DUPLICATES,
        "garbage": GARBAGE,
        "announced_versions": first_deliveries,
        "distinct_file_versions": len(files),
        "runs_requested": len(launched),
        "requests_repeated_in_later_ticks": skipped_again,
        "poisoned": len(poisoned),
        "ticks": len(tick_seconds),
        "slowest_tick_s": round(max(tick_seconds), 2),
        "drain_s": round(drain_seconds, 1),
        "events_per_s": round(EVENTS / drain_seconds, 1),
        "upload_s": round(upload_seconds, 1),
        "publish_s": round(publish_seconds, 1),
    }
    print(f"\nstorm: {json.dumps(figures)}")
    assert max(tick_seconds) < TICK_TIMEOUT_SECONDS
