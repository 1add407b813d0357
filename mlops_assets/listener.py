"""The queue listener: landing events become bronze runs within a second, not at the next tick.

The daemon evaluates a sensor at most once per 5 s loop, so an event that arrives just after
a tick waits for the next one. The listener is a long-lived process beside the daemon
(``mlops listen``, or a thread of ``mlops dev``) that keeps receiving from the landing queue
(a request every 0.2 s while it is empty), takes the events by the queue sensor's rule
(:func:`~mlops_assets.defs.landing.queue.take_events`) and launches each run through the
Dagster webserver's GraphQL API, the way the UI launches one.

Nothing is launched twice and nothing is lost: a run carries the file version's run key (the
``dagster/run_key`` tag, the same key the queue sensor uses), a run is launched only when no
run carries its key yet, and a message is deleted only after its run exists. A listener killed
at any point leaves its messages to come back after their visibility timeout, and the next
listener launches only the runs that are missing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg
import requests
from azure.core.exceptions import AzureError
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from mlops_assets.components import ingest_job_name
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.landing.queue import take_events
from mlops_assets.resources.event_queue import EventQueue
from mlops_assets.resources.landing_zone import LandingZone

LISTENER_TAG = "mlops/listener"
RUN_KEY_TAG = "dagster/run_key"
MESSAGES_PER_BATCH = 32

log = logging.getLogger("mlops.listener")


@dataclass(frozen=True)
class Webserver:
    """Where the Dagster webserver answers GraphQL."""

    host: str = "127.0.0.1"
    port: int = 3000

    def client(self) -> DagsterGraphQLClient:
        return DagsterGraphQLClient(self.host, port_number=self.port, timeout=30)

    def answers(self) -> bool:
        """Whether the webserver is up (its ``/server_info`` page answers)."""
        try:
            return requests.get(f"http://{self.host}:{self.port}/server_info", timeout=5).ok
        except requests.RequestException:
            return False


class QueueListener:
    """Receives landing events and launches one bronze run per new file version."""

    def __init__(
        self,
        specs: Sequence[DatasetSpec],
        landing: LandingZone,
        event_queue: EventQueue,
        instance: dg.DagsterInstance,
        webserver: Webserver,
    ) -> None:
        self.specs = list(specs)
        self.by_name = {spec.name: spec for spec in specs}
        self.landing = landing
        self.event_queue = event_queue
        self.instance = instance
        self.webserver = webserver
        self.graphql = webserver.client()

    def step(self) -> list[str]:
        """Receive one batch (waiting up to the queue's ``listen_seconds`` for it), launch the
        runs it asks for that do not exist yet, and delete its messages; returns the ids of
        the runs launched."""
        messages = self.event_queue.receive(MESSAGES_PER_BATCH)
        if not messages:
            return []
        taken = take_events(messages, self.specs, self.landing, self.event_queue, log)
        launched = [run_id for request in taken.run_requests if (run_id := self._launch(request)) is not None]
        for observation in taken.observations:
            self.instance.report_runless_asset_event(observation)
        self.event_queue.delete(taken.handled)
        if taken.run_requests:
            log.info(
                f"Received {taken.received} message(s): {taken.files} file version(s), {len(launched)} run(s) launched."
            )
        return launched

    def _launch(self, request: dg.RunRequest) -> str | None:
        """Launch ``request``'s run unless a run already carries its key; the run's id, or None."""
        if request.run_key is None or request.partition_key is None:
            raise ValueError(f"a landing run request names its file version and partition: {request}")
        existing = self.instance.get_run_records(dg.RunsFilter(tags={RUN_KEY_TAG: request.run_key}), limit=1)
        if existing:
            return None
        spec = self.by_name[request.tags["mlops/dataset"]]
        return self.graphql.submit_job_execution(
            ingest_job_name(spec),
            asset_selection=list(request.asset_selection or []),
            tags={
                **request.tags,
                RUN_KEY_TAG: request.run_key,
                "dagster/partition": request.partition_key,
                LISTENER_TAG: "queue",
            },
        )

    def serve(self, stop: threading.Event, retry_seconds: float = 2.0) -> None:
        """Listen until ``stop`` is set, once the webserver answers. A failed batch (the
        webserver or the storage account unreachable) is logged and retried; its messages
        come back after their visibility timeout, and runs it launched are not launched again."""
        while not wait_for_webserver(self.webserver, stop):
            if stop.is_set():
                return
            log.warning(f"The Dagster webserver at {self.webserver.host}:{self.webserver.port} does not answer yet.")
        while not stop.is_set():
            try:
                self.step()
            except (AzureError, DagsterGraphQLClientError, OSError) as error:
                log.warning(f"Listening failed, retrying in {retry_seconds} s: {error}")
                stop.wait(retry_seconds)


def wait_for_webserver(webserver: Webserver, stop: threading.Event, timeout: float = 300) -> bool:
    """Wait until the webserver answers; False if ``stop`` was set or time ran out first."""
    deadline = time.monotonic() + timeout
    while not stop.is_set() and time.monotonic() < deadline:
        if webserver.answers():
            return True
        stop.wait(1.0)
    return False
