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
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, cast
from urllib.parse import urlparse

import dagster as dg
from azure.core.exceptions import ResourceNotFoundError
from azure.identity import DefaultAzureCredential
from azure.storage.blob import BlobBlock, BlobClient, ContainerClient, ExponentialRetry
from azure.storage.queue import QueueClient
from dagster_azure.blob import AzureBlobStorageResource
from pydantic import Field
from upath import UPath

from mlops_assets.digests import sha256_hex

# Parallel Blob transfers: requests in flight, and the size of each block or range (8 MB moved
# large objects faster on Azurite than the SDK's 4 MB default).
BLOB_CONCURRENCY = 8
BLOB_BLOCK_BYTES = 8 * 1024 * 1024
# The blob metadata that holds the sha256 of what write_recorded stored.
SHA256_METADATA = "sha256"


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

        On Blob, large data is staged as blocks in parallel and committed in one request. In
        a local folder the data goes to a hidden name first and is renamed into place.
        """
        self._write(path, data, record=False)

    def write_recorded(self, path: UPath, data: bytes) -> str:
        """Store ``data`` at ``path`` as :meth:`write_bytes` does, with its sha256 recorded
        beside it for :meth:`read_verified`; returns the sha256.

        On Blob the sha256 is the blob's ``sha256`` metadata, committed in the same request as
        the data and computed while the blocks upload. In a local folder it is the file
        ``<name>.sha256``, written before the data is renamed into place.
        """
        return cast(str, self._write(path, data, record=True))

    def read_verified(self, path: UPath) -> tuple[bytearray, str]:
        """The data at ``path`` and its sha256, checked against the sha256 recorded when it was
        written. Raises FileNotFoundError if there is nothing there, and TamperedObjectError if
        no sha256 was recorded or the data no longer matches it.

        On Blob the data comes in parallel ranges of one version of the blob, hashed in order
        as they arrive, so the check costs little beyond the download.
        """
        if self.account is None:
            data = bytearray(path.read_bytes())
            actual = sha256_hex(data)
            sidecar = _sidecar(path)
            recorded = sidecar.read_text().strip() if sidecar.exists() else None
        else:
            container, blob = self.blob_name(path)
            with self.account.container(container, retries=None) as client:
                try:
                    download = client.get_blob_client(blob).download_blob(max_concurrency=BLOB_CONCURRENCY)
                except ResourceNotFoundError as error:
                    raise FileNotFoundError(str(path)) from error
                sink = _HashingBuffer(download.size)
                download.readinto(sink)
            data, actual = sink.data, sink.sha256()
            recorded = (download.properties.metadata or {}).get(SHA256_METADATA)
        if recorded is None:
            raise TamperedObjectError(f"{path} has no recorded sha256: it was not written by write_recorded")
        if actual != recorded:
            raise TamperedObjectError(f"{path} was changed after it was written: sha256 {actual}, recorded {recorded}")
        return data, actual

    def _write(self, path: UPath, data: bytes, record: bool) -> str | None:
        if self.account is not None:
            container, blob = self.blob_name(path)
            with self.account.container(container, retries=None) as client:
                return _upload(client.get_blob_client(blob), data, record)
        path.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_hex(data) if record else None
        if digest is not None:
            _atomic_local_write(_sidecar(path), digest.encode())
        _atomic_local_write(path, data)
        return digest


def _sidecar(path: UPath) -> UPath:
    return path.with_name(f"{path.name}.sha256")


def _atomic_local_write(path: UPath, data: bytes) -> None:
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        staging.write_bytes(data)
        path.fs.mv(staging.path, path.path)
    finally:
        if staging.exists():
            staging.unlink()


def _upload(blob: BlobClient, data: bytes, record: bool) -> str | None:
    """Upload ``data`` as one blob, with its sha256 as metadata when ``record``; returns it.

    Data over one block is staged as blocks on a thread pool while this thread hashes it, and
    the block list and metadata are committed together, so the blob never exists without its
    sha256 and the hash costs no time beyond the upload.
    """

    def stage(index: int, block_id: str) -> None:
        blob.stage_block(block_id, data[index * BLOB_BLOCK_BYTES : (index + 1) * BLOB_BLOCK_BYTES])

    ids = [f"{index:08d}" for index in range(-(-len(data) // BLOB_BLOCK_BYTES))]
    if len(ids) <= 1:
        digest = sha256_hex(data) if record else None
        blob.upload_blob(data, overwrite=True, metadata={SHA256_METADATA: digest} if digest else None)
        return digest
    with ThreadPoolExecutor(max_workers=BLOB_CONCURRENCY, thread_name_prefix="blob-block") as pool:
        staged = [pool.submit(stage, index, block_id) for index, block_id in enumerate(ids)]
        digest = sha256_hex(data) if record else None
        for block in staged:
            block.result()
    blob.commit_block_list(
        [BlobBlock(block_id) for block_id in ids], metadata={SHA256_METADATA: digest} if digest else None
    )
    return digest
