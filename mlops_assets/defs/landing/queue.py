"""The push arrival sensor: Event Grid BlobCreated events on a Storage Queue become bronze runs.

A tick first deletes the messages of the previous tick, whose run requests Dagster has
recorded by then (a tick's cursor is only stored with its run requests), then drains
up to ``MAX_MESSAGES_PER_TICK`` new messages. Deletes and blob lookups take one request
a message or a path; ``EventQueue.concurrency`` of them are under way at once. Event Grid
delivers at least once and in no particular order, so every event is checked against the
blob as it is now, and duplicates collapse onto one file version: each file version is
requested in a run of its own whose run key names it, so Dagster starts it once whatever
tick the duplicates arrive in, and bronze ingests a file version once whatever the number
of runs. A message that is not a usable event goes to the poison queue with its reason,
and so does one received ``EventQueue.max_deliveries`` times without being handled, so no
message stops the sensor for good.
"""

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

from mlops_assets import clock
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.landing.event_grid import BlobCreated, NotABlobCreatedEvent, parse_blob_created
from mlops_assets.defs.landing.polling import file_run_key, landing_observation
from mlops_assets.partitions import partitions_def
from mlops_assets.resources.event_queue import EventQueue, ReceivedMessage, map_concurrently
from mlops_assets.resources.landing_zone import LandingFile, LandingZone

MAX_MESSAGES_PER_TICK = 256
EVENT_SENSOR_NAME = "landing_event_sensor"


@dataclass(frozen=True)
class QueueCursor:
    """Messages whose run requests are recorded with this cursor, to delete on the next tick."""

    to_delete: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, raw: str | None) -> "QueueCursor":
        if not raw:
            return cls()
        return cls(to_delete=tuple((entry[0], entry[1]) for entry in json.loads(raw)["to_delete"]))

    def serialize(self) -> str:
        return json.dumps({"to_delete": [list(entry) for entry in self.to_delete]})


@dataclass(frozen=True)
class TakenEvents:
    """What a batch of queue messages asks for: one bronze run request per file version, the
    landing observations of their days, and the messages to delete once the runs are recorded."""

    run_requests: list[dg.RunRequest]
    observations: list[dg.AssetObservation]
    handled: list[tuple[str, str]]
    received: int

    @property
    def files(self) -> int:
        return len(self.run_requests)


def take_events(
    messages: list[ReceivedMessage],
    specs: Sequence[DatasetSpec],
    landing: LandingZone,
    event_queue: EventQueue,
    log: logging.Logger | dg.DagsterLogManager,
) -> TakenEvents:
    """Turn received messages into bronze run requests, the queue sensor's and the queue
    listener's shared rule.

    What is not a usable event of a dataset goes to the poison queue with its reason; an event
    for a blob that is gone, or dated before the dataset starts, is acknowledged (deleted); one
    for a partition that has not started yet comes back when it starts. Every other event
    names a file version as the blob is now, and duplicates collapse onto it.
    """
    by_name = {spec.name: spec for spec in specs}
    partitions = {spec.name: partitions_def(spec) for spec in specs}
    found: dict[tuple[str, dt.date], dict[str, LandingFile]] = defaultdict(dict)
    handled: list[tuple[str, str]] = []
    acknowledged: list[tuple[str, str]] = []

    def poison(message: ReceivedMessage, reason: str) -> None:
        log.warning(f"Message {message.id} moved to {event_queue.poison_queue}: {reason}")
        event_queue.poison(message, reason)

    # Refuse first what is not a usable event of a dataset, then look up each blob the rest name.
    routed: list[tuple[ReceivedMessage, BlobCreated, DatasetSpec, str]] = []
    for message in messages:
        if message.dequeue_count > event_queue.max_deliveries:
            poison(message, f"received {message.dequeue_count} times without being handled")
            continue
        try:
            event = parse_blob_created(message.content)
        except NotABlobCreatedEvent as reason:
            poison(message, str(reason))
            continue
        located = [(spec, landing.locate(spec, event.container, event.blob)) for spec in specs]
        matches = [(spec, path) for spec, path in located if path is not None]
        if not matches:
            poison(message, f"{event.container}/{event.blob} is not a landing file of any dataset")
            continue
        spec, path = matches[0]
        routed.append((message, event, spec, path))

    # The blob as it is now, once a path however many events name it; the lookups wait together.
    targets = sorted({(spec.name, path) for _, _, spec, path in routed})
    versions = map_concurrently(
        lambda target: landing.stat(by_name[target[0]], target[1]), targets, event_queue.concurrency
    )
    current = dict(zip(targets, versions, strict=True))
    for message, event, spec, path in routed:
        file = current[(spec.name, path)]
        if file is None:
            log.warning(f"{path}: announced by event {event.event_id} but gone; acknowledged.")
            acknowledged.append((message.id, message.pop_receipt))
            continue
        if not partitions[spec.name].has_partition_key(file.partition.isoformat()):
            if file.partition < spec.start_date:
                log.warning(f"{path}: event day before {spec.start_date}; acknowledged.")
                acknowledged.append((message.id, message.pop_receipt))
            else:
                # A partition that has not started yet in UTC: the event comes back when it starts.
                starts = dt.datetime.combine(file.partition, dt.time(), dt.UTC)
                wait = int((starts - clock.utc_now()).total_seconds()) + 1
                log.info(f"{path}: partition {file.partition} has not started; postponed {wait} s.")
                event_queue.postpone(message, wait)
            continue
        found[(spec.name, file.partition)][file.path] = file
        handled.append((message.id, message.pop_receipt))
    event_queue.delete(acknowledged)

    # One run per file version, keyed by it, so an event delivered again starts nothing.
    run_requests = [
        dg.RunRequest(
            run_key=file_run_key(by_name[name], file),
            partition_key=day.isoformat(),
            asset_selection=[DatasetKeys(by_name[name]).bronze],
            tags={"mlops/dataset": name, "mlops/new_files": "1"},
        )
        for (name, day), files in sorted(found.items())
        for file in sorted(files.values(), key=lambda file: file.path)
    ]
    observations = [
        landing_observation(by_name[name], day, list(files.values())) for (name, day), files in sorted(found.items())
    ]
    return TakenEvents(run_requests, observations, handled, received=len(messages))


def build_event_sensor(specs: Sequence[DatasetSpec]) -> dg.SensorDefinition:
    """One sensor for the queue, routing each event to the dataset whose landing prefix holds it."""
    bronze_keys = [DatasetKeys(spec).bronze for spec in specs]

    @dg.sensor(
        name=EVENT_SENSOR_NAME,
        target=dg.AssetSelection.assets(*bronze_keys),
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Drains Event Grid BlobCreated events from the landing queue and requests bronze runs.",
    )
    def landing_event_sensor(
        context: dg.SensorEvaluationContext, landing: LandingZone, event_queue: EventQueue
    ) -> dg.SensorResult:
        deleted = event_queue.delete(list(QueueCursor.parse(context.cursor).to_delete))
        taken = take_events(event_queue.receive(MAX_MESSAGES_PER_TICK), specs, landing, event_queue, context.log)
        # Dagster launches a run key once per sensor, so an event delivered again in any later
        # tick starts nothing; the messages are deleted on the next tick, once the runs are recorded.
        context.log.info(
            f"Deleted {deleted} handled message(s); received {taken.received}, "
            f"{len(taken.handled)} announce {taken.files} file version(s)."
        )
        return dg.SensorResult(
            run_requests=taken.run_requests,
            cursor=QueueCursor(to_delete=tuple(taken.handled)).serialize(),
            asset_events=taken.observations,
            skip_reason=None if taken.run_requests else "No new landing events.",
        )

    return landing_event_sensor
