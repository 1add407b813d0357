"""The object IO manager: pickled Python objects (models, checkpoints) on any fsspec storage.

Objects live at ``<root>/<asset key>/<partition>.pkl``. A stored object is a small
header (a magic line and the sha256 of the payload) followed by the pickle payload.
Writes go to a temporary name and are committed by a rename, so a reader sees the
old object or the new one, never half of one; loads recompute the sha256 and refuse
an object whose bytes changed after it was written, checking them against the sha256
in its own header and against the one Dagster recorded in the materialization.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import dagster as dg
from azure.core import MatchConditions
from azure.core.exceptions import ResourceNotFoundError
from azure.storage.blob import BlobBlock, BlobClient
from pydantic import Field
from upath import UPath

from mlops_assets.digests import sha256_hex
from mlops_assets.storage.account import StorageAccount, storage_path

MAGIC = b"MLOPS-OBJECT-1\n"
DIGEST_LENGTH = 64
HEADER_LENGTH = len(MAGIC) + DIGEST_LENGTH + 1
RECORDED_DIGESTS_CHECKED = 5
BLOB_CONCURRENCY = 8
BLOB_BLOCK_BYTES = 8 * 1024 * 1024


class TamperedObjectError(RuntimeError):
    """A stored object's bytes do not match the sha256 recorded when it was written."""


def seal(payload: bytes) -> tuple[bytes, str]:
    """The stored form of ``payload`` and its sha256."""
    digest = sha256_hex(payload)
    return MAGIC + digest.encode("ascii") + b"\n" + payload, digest


def unseal(stored: bytes, where: str, actual: str | None = None) -> memoryview:
    """The payload of a stored object (a view, not a copy), after checking its sha256;
    ``actual`` is the payload's sha256 when the caller computed it already."""
    if not stored.startswith(MAGIC) or len(stored) < HEADER_LENGTH:
        raise TamperedObjectError(f"{where} is not a sealed object (header missing or cut)")
    recorded = stored[len(MAGIC) : HEADER_LENGTH - 1].decode("ascii", errors="replace")
    payload = memoryview(stored)[HEADER_LENGTH:]
    actual = actual or sha256_hex(payload)
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
        payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        digest = self.write_sealed(path, payload)
        context.add_output_metadata(
            {
                "sha256": dg.MetadataValue.text(digest),
                "object_uri": dg.MetadataValue.path(str(path)),
                "object_bytes": dg.MetadataValue.int(len(payload) + HEADER_LENGTH),
            }
        )

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        payload, actual = read_sealed(path, self._account)
        recorded = _recorded_digests(context, partition=path.stem if context.has_asset_partitions else None)
        if recorded and actual not in recorded:
            raise TamperedObjectError(
                f"{path} does not hold what Dagster recorded for it: its sha256 is none of {sorted(recorded)}"
            )
        return pickle.loads(payload)

    def write_sealed(self, path: UPath, payload: bytes) -> str:
        """Store ``payload`` sealed with its sha256 at ``path``; returns the sha256."""
        return write_sealed(path, payload, self._account)

    def load_partition(self, instance: dg.DagsterInstance, asset_key: dg.AssetKey, partition: str) -> Any:
        """The object stored for one partition of ``asset_key``, checked as an input is: for an
        asset that reads a partition it cannot declare (the latest earlier one that exists)."""
        path = self._with_extension(self._base_path.joinpath(*asset_key.path, partition))
        payload, actual = read_sealed(path, self._account)
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=RECORDED_DIGESTS_CHECKED
        ).records
        recorded = {
            value.value
            for value in (record.asset_materialization.metadata.get("sha256") for record in records)
            if isinstance(value, dg.TextMetadataValue)
        }
        if recorded and actual not in recorded:
            raise TamperedObjectError(
                f"{path} does not hold what Dagster recorded for it: its sha256 is none of {sorted(recorded)}"
            )
        return pickle.loads(payload)


def write_sealed(path: UPath, payload: bytes, account: StorageAccount | None = None) -> str:
    """Store ``payload`` sealed with its sha256 at ``path``, atomically; returns the sha256.

    ``account`` is the storage account of a Blob path (uploaded with the Blob client in
    parallel blocks); None writes through the path's own filesystem.
    """
    if account is not None:
        container, blob = _container_and_blob(path)
        with account.blob.get_client() as client:
            return _upload_sealed(client.get_blob_client(container, blob), payload)
    stored, digest = seal(payload)
    staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    committed = False
    try:
        staging.write_bytes(stored)
        path.fs.mv(staging.path, path.path)
        committed = True
    finally:
        if not committed and staging.exists():
            staging.unlink()
    return digest


def read_sealed(path: UPath, account: StorageAccount | None = None) -> tuple[memoryview, str]:
    """The payload stored at ``path`` and its sha256, after checking it against the seal;
    raises :class:`TamperedObjectError` for changed or cut bytes, FileNotFoundError if absent."""
    if account is not None:
        container, blob = _container_and_blob(path)
        with account.blob.get_client() as client:
            try:
                stored, actual = _download_hashing(client.get_blob_client(container, blob))
            except ResourceNotFoundError as error:
                raise FileNotFoundError(str(path)) from error
    else:
        stored = path.read_bytes()
        actual = sha256_hex(memoryview(stored)[HEADER_LENGTH:])
    return unseal(stored, str(path), actual), actual


def _upload_sealed(blob: BlobClient, payload: bytes) -> str:
    """Upload header and payload as one blob; returns the payload's sha256.

    The payload's blocks are staged in parallel while the sha256 is computed (hashing
    releases the GIL), the header block once the digest is known; committing the block
    list makes the whole blob visible at once, so no reader sees half an object. An object
    of one block or less goes up in a single Put Blob request, which is atomic too.
    """
    if len(payload) <= BLOB_BLOCK_BYTES:
        stored, digest = seal(payload)
        blob.upload_blob(stored, overwrite=True)
        return digest
    view = memoryview(payload)
    chunks = [view[start : start + BLOB_BLOCK_BYTES] for start in range(0, len(view), BLOB_BLOCK_BYTES)]
    # Uncommitted blocks belong to the blob, not to the writer: ids unique to this upload keep
    # two writers of the same object from committing each other's blocks.
    upload = uuid.uuid4().hex
    block_ids = [base64.b64encode(f"{upload}-{index:010d}".encode()).decode() for index in range(len(chunks) + 1)]
    with ThreadPoolExecutor(max_workers=BLOB_CONCURRENCY) as pool:
        staged = [
            pool.submit(blob.stage_block, block_id, chunk.tobytes())
            for block_id, chunk in zip(block_ids[1:], chunks, strict=True)
        ]
        digest = sha256_hex(view)
        staged.append(pool.submit(blob.stage_block, block_ids[0], MAGIC + digest.encode("ascii") + b"\n"))
        for future in staged:
            future.result()
    blob.commit_block_list([BlobBlock(block_id=block_id) for block_id in block_ids])
    return digest


def _download_hashing(blob: BlobClient) -> tuple[bytearray, str]:
    """The stored object and the sha256 of its payload, hashed while later ranges download."""
    properties = blob.get_blob_properties()
    size = properties.size
    stored = bytearray(size)
    # Every range from the same version: an overwrite during the download fails it instead
    # of mixing two versions.
    version = {"etag": properties.etag, "match_condition": MatchConditions.IfNotModified}
    hasher = hashlib.sha256()
    with ThreadPoolExecutor(max_workers=BLOB_CONCURRENCY) as pool:
        ranges = [(start, min(BLOB_BLOCK_BYTES, size - start)) for start in range(0, size, BLOB_BLOCK_BYTES)]
        downloads = [
            pool.submit(
                lambda offset, length: blob.download_blob(offset=offset, length=length, **version).readall(), *span
            )
            for span in ranges
        ]
        for (start, length), download in zip(ranges, downloads, strict=True):
            stored[start : start + length] = download.result()
            hasher.update(memoryview(stored)[max(start, HEADER_LENGTH) : start + length])
    return stored, hasher.hexdigest()


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
        return ChecksummedPickleIOManager(base_path=storage_path(self.root, self.account), account=self.account)
