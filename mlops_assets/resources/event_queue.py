"""The Storage Queue that Event Grid fills with landing-zone events, and its poison queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import dagster as dg
from azure.core.exceptions import HttpResponseError
from azure.storage.queue import QueueClient
from pydantic import Field

from mlops_assets.resources.storage import StorageAccount

LISTEN_PAUSE_SECONDS = 0.2
# Deleting a message that is gone, or that another reader received again since.
STALE_RECEIPT_CODES = ("MessageNotFound", "PopReceiptMismatch")
MAX_HIDDEN_SECONDS = 7 * 24 * 3600
MAX_POISONED_CHARS = 8_000  # even JSON-escaped (up to 6 characters each), within a message's 64 KiB

T = TypeVar("T")
R = TypeVar("R")


def map_concurrently(work: Callable[[T], R], items: Iterable[T], concurrency: int) -> list[R]:
    """``work`` over ``items``, up to ``concurrency`` calls at once, results in order. Each call is
    one request (the Queue API deletes one message a request), so the calls wait on the network
    together instead of one after the other. The first error is raised once the calls under way end."""
    items = list(items)
    if concurrency == 1 or len(items) < 2:
        return [work(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(concurrency, len(items))) as pool:
        return list(pool.map(work, items))


@dataclass(frozen=True)
class ReceivedMessage:
    """A message taken from the queue: hidden from other readers until its visibility
    timeout ends, and deletable with its pop receipt until then."""

    id: str
    pop_receipt: str
    content: str
    dequeue_count: int


class EventQueue(dg.ConfigurableResource):
    """A Storage Queue of Event Grid events, read in batches, with a poison queue beside it."""

    account: StorageAccount = Field(description="The storage account that holds both queues.")
    queue: str = Field(default="landing-events", description="Queue the Event Grid subscription delivers to.")
    poison_queue: str = Field(
        default="landing-events-poison", description="Where messages that are not usable events go, with the reason."
    )
    listen_seconds: float = Field(
        default=3.0,
        description="How long a sensor tick keeps asking an empty queue for a first message. The daemon "
        "starts a tick at most every 5 s; listening through most of that gap lets an event be seen "
        "within a fraction of a second instead of at the next tick.",
    )
    max_deliveries: int = Field(
        default=5,
        description="A message received this many times without being handled (each time a tick failed "
        "on it or ended before deleting it) goes to the poison queue instead of stopping the sensor again.",
    )
    visibility_timeout: int = Field(
        default=300,
        description="Seconds a received message stays hidden; it must outlast the time to the next sensor tick, "
        "when the message is deleted.",
    )
    concurrency: int = Field(
        default=8,
        ge=1,
        description="How many requests a sensor tick keeps in flight at once for per-message work: the Queue "
        "API deletes one message a request, and each event's blob is looked up on its own. One makes them "
        "one after the other.",
    )

    @contextmanager
    def _client(self, name: str) -> Iterator[QueueClient]:
        with self.account.queue(name) as client:
            yield client

    def receive(self, limit: int) -> list[ReceivedMessage]:
        """Up to ``limit`` messages, waiting up to ``listen_seconds`` for the first one."""
        deadline = time.monotonic() + self.listen_seconds
        with self._client(self.queue) as client:
            page = self._page(client, limit)
            while not page and time.monotonic() < deadline:
                time.sleep(LISTEN_PAUSE_SECONDS)
                page = self._page(client, limit)
            messages = list(page)
            while page and len(messages) < limit:
                page = self._page(client, limit - len(messages))
                messages.extend(page)
        return messages

    def _page(self, client: QueueClient, limit: int) -> list[ReceivedMessage]:
        """One request: up to 32 messages (the service's maximum)."""
        count = min(32, limit)
        return [
            ReceivedMessage(
                id=message.id,
                pop_receipt=message.pop_receipt,
                content=message.content,
                dequeue_count=message.dequeue_count,
            )
            for message in client.receive_messages(
                messages_per_page=count, max_messages=count, visibility_timeout=self.visibility_timeout
            )
        ]

    def delete(self, receipts: list[tuple[str, str]]) -> int:
        """Delete messages by (id, pop receipt); returns how many were still there to delete.

        A message that is gone, or whose receipt is stale (its visibility timeout ended and it
        was received again), is skipped: it will be seen again, which the sensor tolerates.
        """
        if not receipts:
            return 0
        with self._client(self.queue) as client:

            def delete_one(receipt: tuple[str, str]) -> bool:
                try:
                    client.delete_message(*receipt)
                except HttpResponseError as error:
                    if error.error_code not in STALE_RECEIPT_CODES:
                        raise
                    return False
                return True

            return sum(map_concurrently(delete_one, receipts, self.concurrency))

    def poison(self, message: ReceivedMessage, reason: str) -> None:
        """Move a message to the poison queue with the reason, then delete it. A message may
        be up to 64 KiB, as may the poison message: contents and reasons are cut to fit."""
        content = message.content
        kept = content if len(content) <= MAX_POISONED_CHARS else content[:MAX_POISONED_CHARS]
        record = {"reason": reason[:1000], "message_id": message.id, "content": kept, "content_chars": len(content)}
        with self._client(self.poison_queue) as poison:
            poison.send_message(json.dumps(record))
        self.delete([(message.id, message.pop_receipt)])

    def postpone(self, message: ReceivedMessage, seconds: int) -> None:
        """Put a message back as a fresh one, hidden for ``seconds`` (at most the service's
        seven days), then delete it: its delivery count starts again."""
        with self._client(self.queue) as client:
            client.send_message(message.content, visibility_timeout=max(1, min(seconds, MAX_HIDDEN_SECONDS)))
        self.delete([(message.id, message.pop_receipt)])

    def publish(self, content: str) -> None:
        """Put a message on the queue, as Event Grid does."""
        with self._client(self.queue) as client:
            client.send_message(content)
