"""The Azure Storage account (or Azurite) behind the landing zone, the lake and the models.

Everything goes through the Blob API, which ADLS Gen2 accounts also serve and Azurite
emulates. One resource holds where the account is and how to authenticate, and hands
each client what it needs: a Blob client (dagster-azure's ``AzureBlobStorageResource``),
fsspec options for adlfs, storage options for deltalake, and queue clients.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlparse

import dagster as dg
from azure.identity import DefaultAzureCredential
from azure.storage.blob import ContainerClient, ExponentialRetry
from azure.storage.queue import QueueClient
from dagster_azure.blob import AzureBlobStorageResource
from pydantic import Field
from upath import UPath


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
    def container(self, name: str, retries: int = 2) -> Iterator[ContainerClient]:
        """A client for one container that gives up after ``retries`` quick retries.

        For sensor ticks: a storage outage should fail the tick within seconds (the next
        tick picks everything up), not retry for minutes past the tick's timeout as the
        storage SDK's default policy (waits of 15 s and more between attempts) would.
        """
        client = ContainerClient(
            account_url=self.blob.account_url,
            container_name=name,
            credential=self._credential(),
            retry_policy=ExponentialRetry(initial_backoff=0.5, increment_base=1, retry_total=retries),
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


def storage_path(uri: str, account: StorageAccount | None) -> UPath:
    """``uri`` as a path on its filesystem: a local folder, or a container of ``account``
    (``az://`` and ``abfs://`` URIs), with the account's credentials."""
    return UPath(uri, **(account.fsspec_options() if account else {}))
