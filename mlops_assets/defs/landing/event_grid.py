"""Azure Event Grid ``Microsoft.Storage.BlobCreated`` events, in the Event Grid schema.

Azure delivers each event to a Storage Queue as one message: the event's JSON, Base64
encoded. Azurite has no Event Grid, so :func:`blob_created_event` writes the same
message the way Azure would, for the simulator, the tests and the benchmarks.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlparse

BLOB_CREATED = "Microsoft.Storage.BlobCreated"


class NotABlobCreatedEvent(ValueError):
    """A queue message that is not an Event Grid BlobCreated event; the message is the reason."""


@dataclass(frozen=True)
class BlobCreated:
    """A blob that was created or replaced: its container, name and version."""

    event_id: str
    container: str
    blob: str
    etag: str
    size: int
    event_time: dt.datetime


def blob_created_event(
    account: str, container: str, blob: str, etag: str, size: int, blob_url_base: str | None = None
) -> str:
    """The queue message Azure Event Grid writes when ``blob`` is created in ``container``."""
    base = blob_url_base or f"https://{account}.blob.core.windows.net"
    event = {
        "topic": f"/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/mlops/providers/"
        f"Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": BLOB_CREATED,
        "id": str(uuid.uuid4()),
        "eventTime": dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z"),
        "data": {
            "api": "PutBlob",
            "requestId": str(uuid.uuid4()),
            "eTag": etag,
            "contentType": "application/octet-stream",
            "contentLength": size,
            "blobType": "BlockBlob",
            # A URL carries the name percent-encoded, as Azure writes it: "#", "?" and "%" stay in the name.
            "url": f"{base}/{container}/{quote(blob)}",
            "sequencer": f"{uuid.uuid4().int:032x}",
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }
    return base64.b64encode(json.dumps(event).encode()).decode()


def parse_blob_created(content: str) -> BlobCreated:
    """The blob a queue message announces; raise :class:`NotABlobCreatedEvent` otherwise.

    Accepts the Base64 form Azure writes and plain JSON.
    """
    try:
        event = _decode(content)
    except RecursionError as error:
        raise NotABlobCreatedEvent("JSON nested too deeply to be an event") from error
    if not isinstance(event, dict):
        raise NotABlobCreatedEvent(f"an event is a JSON object, not {type(event).__name__}")
    if event.get("eventType") != BLOB_CREATED:
        raise NotABlobCreatedEvent(f"event type {_short(event.get('eventType'))} is not {BLOB_CREATED}")
    subject = event.get("subject")
    data = event.get("data")
    if not isinstance(subject, str) or not isinstance(data, dict):
        raise NotABlobCreatedEvent("an Event Grid event needs a 'subject' string and a 'data' object")
    prefix = "/blobServices/default/containers/"
    container, marker, blob = subject.removeprefix(prefix).partition("/blobs/")
    if not subject.startswith(prefix) or not marker or not container or not blob:
        raise NotABlobCreatedEvent(f"subject {_short(subject)} does not name a blob")
    if data.get("url") and not _url_path(data["url"]).endswith(f"/{container}/{blob}"):
        raise NotABlobCreatedEvent(f"data.url {_short(data['url'])} does not match subject {_short(subject)}")
    event_time_text, size, etag = event.get("eventTime"), data.get("contentLength", 0), data.get("eTag", "")
    if not isinstance(event_time_text, str):
        raise NotABlobCreatedEvent(f"eventTime is {type(event_time_text).__name__}, not a string")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise NotABlobCreatedEvent(f"data.contentLength {_short(size)} is not a byte count")
    if not isinstance(etag, str):
        raise NotABlobCreatedEvent(f"data.eTag is {type(etag).__name__}, not a string")
    try:
        event_time = dt.datetime.fromisoformat(event_time_text.replace("Z", "+00:00"))
    except ValueError as error:
        raise NotABlobCreatedEvent(f"bad eventTime: {str(error)[:120]}") from error
    return BlobCreated(
        event_id=str(event.get("id", ""))[:200],
        container=container,
        blob=blob,
        etag=etag.strip('"'),
        size=size,
        event_time=event_time,
    )


def _short(value: Any, limit: int = 120) -> str:
    """A value for a reason: its repr, cut to ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _url_path(url: Any) -> str:
    try:
        return unquote(urlparse(str(url)).path)
    except ValueError:
        return ""


def _decode(content: str) -> Any:
    # ValueError covers JSONDecodeError, binascii.Error and UnicodeDecodeError, and also what these
    # raise on text that is not ASCII (Base64) or on an integer of more than 4,300 digits (JSON).
    try:
        return json.loads(content)
    except ValueError:
        pass
    try:
        return json.loads(base64.b64decode(content, validate=True))
    except ValueError as error:
        raise NotABlobCreatedEvent(f"neither JSON nor Base64-encoded JSON: {str(error)[:120]}") from error
