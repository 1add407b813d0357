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

MAGIC = b"MLOPS-OBJECT-1\n"
DIGEST_LENGTH = 64
RECORDED_DIGESTS_CHECKED = 5


class TamperedObjectError(RuntimeError):
    """A stored object's bytes do not match the sha256 recorded when it was written."""


def seal(payload: bytes) -> tuple[bytes, str]:
    """The stored form of ``payload`` and its sha256."""
    digest = hashlib.sha256(payload).hexdigest()
    return MAGIC + digest.encode("ascii") + b"\n" + payload, digest


def unseal(stored: bytes, where: str) -> bytes:
    """The payload of a stored object, after checking its sha256."""
    header_length = len(MAGIC) + DIGEST_LENGTH + 1
    if not stored.startswith(MAGIC) or len(stored) < header_length:
        raise TamperedObjectError(f"{where} is not a sealed object (header missing or cut)")
    recorded = stored[len(MAGIC) : header_length - 1].decode("ascii", errors="replace")
    payload = stored[header_length:]
    actual = hashlib.sha256(payload).hexdigest()
    if actual != recorded:
        raise TamperedObjectError(f"{where} was changed after it was written: sha256 {actual}, recorded {recorded}")
    return payload


class ChecksummedPickleIOManager(dg.UPathIOManager):
    """UPathIOManager that seals each object with its sha256 and commits writes atomically."""

    extension = ".pkl"

    def dump_to_path(self, context: dg.OutputContext, obj: Any, path: UPath) -> None:
        stored, digest = seal(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        staging = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
        committed = False
        try:
            staging.write_bytes(stored)
            path.fs.mv(staging.path, path.path)
            committed = True
        finally:
            if not committed and staging.exists():
                staging.unlink()
        context.add_output_metadata(
            {
                "sha256": dg.MetadataValue.text(digest),
                "object_uri": dg.MetadataValue.path(str(path)),
                "object_bytes": dg.MetadataValue.int(len(stored)),
            }
        )

    def load_from_path(self, context: dg.InputContext, path: UPath) -> Any:
        payload = unseal(path.read_bytes(), str(path))
        recorded = _recorded_digests(context, partition=path.stem if context.has_asset_partitions else None)
        if recorded and hashlib.sha256(payload).hexdigest() not in recorded:
            raise TamperedObjectError(
                f"{path} does not hold what Dagster recorded for it: its sha256 is none of {sorted(recorded)}"
            )
        return pickle.loads(payload)


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
    storage_options: dict[str, Any] = Field(
        default_factory=dict, description="fsspec storage options (account name, connection string, credential)."
    )

    def create_io_manager(self, context: dg.InitResourceContext) -> ChecksummedPickleIOManager:
        return ChecksummedPickleIOManager(base_path=UPath(self.root, **self.storage_options))
