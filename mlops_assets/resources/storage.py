"""Where the project keeps files: a folder on this machine, or a container of an Azure Storage
account (or Azurite).

Everything on Azure goes through the Blob API, which ADLS Gen2 accounts also serve and
Azurite emulates. :class:`StorageAccount` holds where the account is and how to
authenticate, and hands each client what it needs: Blob and queue clients, fsspec options
for adlfs, storage options for deltalake. :class:`StorageLocation` is one place on it (or
on this machine) that a resource keeps its files under, with atomic writes and reads.
"""

from __future__ import annotations

import hashlib
import io
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import dagster as dg
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import ContainerClient, ExponentialRetry
from azure.storage.queue import QueueClient
from dagster_azure.blob import AzureBlobStorageResource
from pydantic import Field
from upath import UPath

from mlops_assets.digests import sha256_hex

# Parallel Blob transfers: requests in flight, and the size of each block or range (8 MB moved
# large objects faster on Azurite than the SDK's 4 MB default).
BLOB_CONCURRENCY = 8
BLOB_BLOCK_BYTES = 8 * 1024 * 1024


class _HashingBuffer(io.RawIOBase):
    """A seekable in-memory sink for the SDK's parallel download that hashes the data as soon
    as every range before it has arrived."""

    def __init__(self, size: int) -> None:
        self.data = bytearray(size)
        self._position = 0
        self._hashed = 0
        self._arrived: dict[int, int] = {}
        self._hash = hashlib.sha256()

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._position = offset if whence == io.SEEK_SET else self._position + offset
        return self._position

    def write(self, chunk: Any) -> int:
        start, size = self._position, len(chunk)
        self.data[start : start + size] = chunk
        self._position += size
        self._arrived[start] = size
        while self._hashed in self._arrived:
            end = self._hashed + self._arrived.pop(self._hashed)
            self._hash.update(memoryview(self.data)[self._hashed : end])
            self._hashed = end
        return size

    def sha256(self) -> str:
        if self._hashed != len(self.data):
            raise OSError(f"download ended after {self._hashed} of {len(self.data)} contiguous bytes")
        return self._hash.hexdigest()


class TamperedObjectError(RuntimeError):
    """Stored bytes do not match the sha256 recorded when they were written."""


class StorageAccount(dg.ConfigurableResource):
    """An Azure Storage account reached through its Blob and Queue endpoints."""

    blob: AzureBlobStorageResource = Field(
        description="Blob endpoint and credential (shared key for Azurite, DefaultAzureCredential on Azure)."
    )
    queue_url: str | None = Field(
        default=None, description="Queue endpoint, e.g. https://<account>.queue.core.windows.net; None without queues."
    )

    @property
    def account_name(self) -> str:
        """From ``https://<account>.blob.core.windows.net`` or Azurite's ``http://host:port/<account>``."""
        parsed = urlparse(self.blob.account_url)
        if parsed.hostname and parsed.hostname.endswith(".blob.core.windows.net"):
            return parsed.hostname.split(".", 1)[0]
        return parsed.path.strip("/").split("/", 1)[0]

    @property
    def _is_emulator(self) -> bool:
        return not (urlparse(self.blob.account_url).hostname or "").endswith(".blob.core.windows.net")

    @property
    def _key(self) -> str | None:
        return self.blob.credential.key if self.blob.credential.credential_type == "key" else None

    def _credential(self) -> Any:
        key = self._key
        return {"account_name": self.account_name, "account_key": key} if key is not None else DefaultAzureCredential()

    def fsspec_options(self) -> dict[str, Any]:
        """Options for adlfs (``az://`` and ``abfs://`` paths)."""
        key = self._key
        if key is not None:
            scheme = urlparse(self.blob.account_url).scheme
            connection = (
                f"DefaultEndpointsProtocol={scheme};AccountName={self.account_name};AccountKey={key};"
                f"BlobEndpoint={self.blob.account_url};"
            )
            return {"connection_string": connection}
        return {"account_name": self.account_name, "anon": False}

    def delta_options(self) -> dict[str, str]:
        """Storage options for deltalake (object_store's Azure backend)."""
        options = {"account_name": self.account_name}
        key = self._key
        if key is not None:
            options["account_key"] = key
        if self._is_emulator:
            options["azure_storage_endpoint"] = self.blob.account_url
            options["allow_http"] = "true"
        return options

    @contextmanager
    def container(self, name: str, retries: int | None = 2) -> Iterator[ContainerClient]:
        """A client for one container that gives up after ``retries`` quick retries (None: the
        storage SDK's own retry policy, for transfers that may take their time).

        For sensor ticks: a storage outage should fail the tick within seconds (the next
        tick picks everything up), not retry for minutes past the tick's timeout as the
        storage SDK's default policy (waits of 15 s and more between attempts) would.
        """
        quick = {"retry_policy": ExponentialRetry(initial_backoff=0.5, increment_base=1, retry_total=retries)}
        client = ContainerClient(
            account_url=self.blob.account_url,
            container_name=name,
            credential=self._credential(),
            max_block_size=BLOB_BLOCK_BYTES,
            max_single_put_size=BLOB_BLOCK_BYTES,
            max_single_get_size=BLOB_BLOCK_BYTES,
            max_chunk_get_size=BLOB_BLOCK_BYTES,
            **(quick if retries is not None else {}),
        )
        try:
            yield client
        finally:
            client.close()

    @contextmanager
    def queue(self, name: str) -> Iterator[QueueClient]:
        """A client for one queue of the account."""
        if self.queue_url is None:
            raise ValueError("this storage account has no queue endpoint configured (queue_url)")
        client = QueueClient(account_url=self.queue_url, queue_name=name, credential=self._credential())
        try:
            yield client
        finally:
            client.close()


class StorageLocation(dg.ConfigurableResource):
    """A place the project keeps files under: a local folder, or a container (and a prefix in it)
    of a storage account."""

    uri: str = Field(
        description="A local folder (a path or file:// URI), or az://<container>/<prefix> on the storage account."
    )
    account: StorageAccount | None = Field(
        default=None, description="The storage account of an az:// location; None for a local folder."
    )

    def path(self, *parts: str) -> UPath:
        """The location (or ``parts`` under it) as a path on its filesystem, with the account's credentials."""
        return self.resolve(self.uri).joinpath(*parts)

    def resolve(self, uri: str) -> UPath:
        """Any ``uri`` on this location's filesystem (a path that an earlier listing returned)."""
        return UPath(uri, **(self.account.fsspec_options() if self.account else {}))

    def child_uri(self, *parts: str) -> str:
        """The URI of ``parts`` under the location, for clients that take URIs (deltalake)."""
        return "/".join([self.uri.rstrip("/"), *parts])

    @property
    def delta_options(self) -> dict[str, str]:
        """deltalake storage options for tables under the location."""
        return self.account.delta_options() if self.account else {}

    @staticmethod
    def blob_name(path: UPath) -> tuple[str, str]:
        """The container and blob name of a path on Blob."""
        container, _, blob = path.path.strip("/").partition("/")
        return container, blob

    def write_bytes(self, path: UPath, data: bytes) -> None:
        """Store ``data`` at ``path`` so that no reader ever sees part of it.

        On Blob, the storage SDK uploads large data in parallel blocks and commits them at once.
        In a local folder the data goes to a hidden name first and is renamed into place.
        """
        if self.account is not None:
            container, blob = self.blob_name(path)
            with self.account.container(container, retries=None) as client:
                client.get_blob_client(blob).upload_blob(data, overwrite=True, max_concurrency=BLOB_CONCURRENCY)
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        try:
            staging.write_bytes(data)
            path.fs.mv(staging.path, path.path)
        finally:
            if staging.exists():
                staging.unlink()

    def read_bytes(self, path: UPath) -> bytes:
        """The data at ``path`` (on Blob, downloaded in parallel ranges of one version of the
        blob); raises FileNotFoundError if there is nothing there."""
        return bytes(self.read_hashed(path)[0])

    def read_hashed(self, path: UPath) -> tuple[bytearray, str]:
        """The data at ``path`` and its sha256. On Blob the ranges are hashed in order as they
        arrive, so checking large data costs little beyond the download."""
        if self.account is None:
            data = bytearray(path.read_bytes())
            return data, sha256_hex(data)
        container, blob = self.blob_name(path)
        with self.account.container(container, retries=None) as client:
            try:
                download = client.get_blob_client(blob).download_blob(max_concurrency=BLOB_CONCURRENCY)
            except ResourceNotFoundError as error:
                raise FileNotFoundError(str(path)) from error
            sink = _HashingBuffer(download.size)
            download.readinto(sink)
        return sink.data, sink.sha256()
