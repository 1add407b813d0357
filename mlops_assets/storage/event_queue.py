"""The Storage Queue that Event Grid fills with landing-zone events, and its poison queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.queue import QueueClient
from pydantic import Field

from mlops_assets.storage.account import StorageAccount


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
    visibility_timeout: int = Field(
        default=300,
        description="Seconds a received message stays hidden; it must outlast the time to the next sensor tick, "
        "when the message is deleted.",
    )

    @contextmanager
    def _client(self, name: str) -> Iterator[QueueClient]:
        with self.account.queue(name) as client:
            yield client

    def receive(self, limit: int) -> list[ReceivedMessage]:
        """Up to ``limit`` messages, in pages of 32 (the service's maximum)."""
        messages: list[ReceivedMessage] = []
        with self._client(self.queue) as client:
            while len(messages) < limit:
                page = list(
                    client.receive_messages(
                        messages_per_page=min(32, limit - len(messages)),
                        max_messages=min(32, limit - len(messages)),
                        visibility_timeout=self.visibility_timeout,
                    )
                )
                if not page:
                    break
                messages.extend(
                    ReceivedMessage(
                        id=message.id,
                        pop_receipt=message.pop_receipt,
                        content=message.content,
                        dequeue_count=message.dequeue_count,
                    )
                    for message in page
                )
        return messages

    def delete(self, receipts: list[tuple[str, str]]) -> int:
        """Delete messages by (id, pop receipt); returns how many were still there to delete.

        A message whose receipt is stale (its visibility timeout ended and it was received
        again) is not found; it will be seen again, which the sensor tolerates.
        """
        deleted = 0
        with self._client(self.queue) as client:
            for message_id, pop_receipt in receipts:
                try:
                    client.delete_message(message_id, pop_receipt)
                    deleted += 1
                except ResourceNotFoundError:
                    continue
        return deleted

    def poison(self, message: ReceivedMessage, reason: str) -> None:
        """Move a message to the poison queue with the reason, then delete it."""
        with self._client(self.poison_queue) as poison:
            poison.send_message(json.dumps({"reason": reason, "message_id": message.id, "content": message.content}))
        self.delete([(message.id, message.pop_receipt)])

    def publish(self, content: str) -> None:
        """Put a message on the queue, as Event Grid does."""
        with self._client(self.queue) as client:
            client.send_message(content)
