"""The object IO manager: pickled Python objects (models, checkpoints) on any fsspec storage.

Objects live at ``<root>/<asset key>/<partition>.pkl``. A stored object is a small
header (a magic line and the sha256 of the payload) followed by the pickle payload.
Writes go to a temporary name and are committed by a rename, so a reader sees the
old object or the new one, never half of one; loads recompute the sha256 and refuse
an object whose bytes changed after it was written, checking them against the sha256
in its own header and against the one Dagster recorded in the materialization.
"""

from __future__ import annotations

import hashlib
import pickle
import uuid
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from mlops_assets.storage.account import StorageAccount

MAGIC = b"MLOPS-OBJECT-1\n"
DIGEST_LENGTH = 64
RECORDED_DIGESTS_CHECKED = 5
BLOB_CONCURRENCY = 8


class TamperedObjectError(RuntimeError):
    """A stored object's bytes do not match the sha256 recorded when it was written."""


def seal(payload: bytes) -> tuple[bytes, str]:
    """The stored form of ``payload`` and its sha256."""
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + digest.encode("ascii") + b"\n" + payload, digest


def unseal(stored: bytes, where: str) -> memoryview:
    """The payload of a stored object (a view, not a copy), after checking its sha256."""
    header_length = len(MAGIC) + DIGEST_LENGTH + 1
    if not stored.startswith(MAGIC) or len(stored) < header_length:
        raise TamperedObjectError(f"{where} is not a sealed object (header missing or cut)")
    recorded = stored[len(MAGIC) : header_length - 1].decode("ascii", errors="replace")
    payload = memoryview(stored)[header_length:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != recorded:
        raise TamperedObjectError(f"{where} was changed after it was written: sha256 {actual}, recorded {recorded}")
    return payload


class ChecksummedPickleIOManager(dg.UPathIOManager):
    """UPathIOManager that seals each object with its sha256 and commits writes atomically.

    On a local filesystem an object is written under a hidden name and renamed. On Azure
    Blob a single upload is already atomic (a blob's blocks become visible together when
    its block list commits), so objects are uploaded in place with the Blob client and
    parallel block transfers, which move large models at the raw client's speed.
    """

    extension = ".pkl"

    def __init__(self, base_path: UPath, account: StorageAccount | None = None) -> None:
        super().__init__(base_path=base_path)
        self._account = account

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        stored, digest = seal(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        self.write_object(path, stored)
        context.add_output_metadata(
            {
                "sha256": dg.MetadataValue.text(digest),
                "object_uri": dg.MetadataValue.path(str(path)),
                "object_bytes": dg.MetadataValue.int(len(stored)),
            }
        )

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        stored = self.read_object(path)
        payload = unseal(stored, str(path))
        recorded = _recorded_digests(context, partition=path.stem if context.has_asset_partitions else None)
        if recorded and _header_digest(stored) not in recorded:
            raise TamperedObjectError(
                f"{path} does not hold what Dagster recorded for it: its sha256 is none of {sorted(recorded)}"
            )
        return pickle.loads(payload)

    def write_object(self, path: UPath, stored: bytes) -> None:
        if self._account is not None:
            container, blob = _container_and_blob(path)
            with self._account.blob.get_client() as client:
                client.get_blob_client(container, blob).upload_blob(
                    stored, overwrite=True, max_concurrency=BLOB_CONCURRENCY
                )
            return
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        committed = False
        try:
            staging.write_bytes(stored)
            path.fs.mv(staging.path, path.path)
            committed = True
        finally:
            if not committed and staging.exists():
                staging.unlink()

    def read_object(self, path: UPath) -> bytes:
        if self._account is not None:
            container, blob = _container_and_blob(path)
            with self._account.blob.get_client() as client:
                return client.get_blob_client(container, blob).download_blob(max_concurrency=BLOB_CONCURRENCY).readall()
        return path.read_bytes()


def _header_digest(stored: bytes) -> str:
    """The sha256 in a sealed object's header (checked against the payload by ``unseal``)."""
    return stored[len(MAGIC) : len(MAGIC) + DIGEST_LENGTH].decode("ascii")


def _container_and_blob(path: UPath) -> tuple[str, str]:
    container, _, blob = path.path.strip("/").partition("/")
    return container, blob


def _recorded_digests(context: dg.InputContext, partition: str | None) -> set[str]:
    """The sha256 values the latest materializations of the object recorded (a few, so that
    two runs writing the same partition at once do not make each other's object suspect)."""
    if not context.has_asset_key:
        return set()
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=context.asset_key, asset_partitions=[partition] if partition else None),
        limit=RECORDED_DIGESTS_CHECKED,
    ).records
    values = (record.asset_materialization.metadata.get("sha256") for record in records)
    return {value.value for value in values if isinstance(value, dg.TextMetadataValue)}


class ObjectStore(dg.ConfigurableIOManagerFactory):
    """Where models and other Python objects produced by assets are kept."""

    root: str = Field(description="URI of the object store root, e.g. file:///srv/.mlops/objects or abfs://models.")
    account: StorageAccount | None = Field(
        default=None, description="The storage account of an az:// root; None for a local folder."
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> ChecksummedPickleIOManager:
        options = self.account.fsspec_options() if self.account else {}
        return ChecksummedPickleIOManager(base_path=UPath(self.root, **options), account=self.account)
