"""Intermediate training checkpoints: the state of a model part-way through a day's training.

A training is identified by a fingerprint of everything that determines its result
(parent model, input table version, hyper-parameters, seed, number of steps), so a
retry resumes only from checkpoints of the very same training. Checkpoints are sealed
with their sha256 like every stored object; a torn or tampered one is skipped and the
next older one used.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
from pydantic import Field
from upath import UPath

from mlops_assets.digests import sha256_hex
from mlops_assets.storage.account import StorageAccount, storage_path
from mlops_assets.storage.object_store import TamperedObjectError, read_sealed, write_sealed

STEP_FILE = re.compile(r"^step-(\d{8})\.ckpt$")


@dataclass(frozen=True)
class Checkpoint:
    """A stored intermediate state: the object, the step it was saved after, its sha256 and path."""

    state: Any
    step: int
    sha256: str
    path: str


class TrainingCheckpoints:
    """The intermediate checkpoints of one training (one asset partition and fingerprint).

    A checkpoint is pickled and hashed when it is saved, and written by one background
    thread while training goes on, in the order saved. A process killed during a write
    leaves no checkpoint for that step (writes are atomic), only the older ones. A failed
    write fails the next save or :meth:`flush`.
    """

    def __init__(self, folder: UPath, account: StorageAccount | None) -> None:
        self.folder = folder
        self.account = account
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint-writer")
        self._pending: list[Future[str]] = []

    def save(self, step: int, state: Any) -> str:
        """Store ``state`` as the checkpoint after ``step``; returns its sha256."""
        self._raise_failed_writes()
        if self.account is None and not self._pending:
            # Blob names need no folders; a local filesystem does.
            self.folder.mkdir(parents=True, exist_ok=True)
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        path = self.folder / f"step-{step:08d}.ckpt"
        self._pending.append(self._writer.submit(write_sealed, path, payload, self.account))
        return sha256_hex(payload)

    def flush(self) -> None:
        """Wait until every saved checkpoint is written; raise the first write error."""
        pending, self._pending = self._pending, []
        for write in pending:
            write.result()

    def close(self) -> None:
        self.flush()
        self._writer.shutdown()

    def _raise_failed_writes(self) -> None:
        for write in [write for write in self._pending if write.done()]:
            write.result()
            self._pending.remove(write)

    def steps(self) -> list[int]:
        """Steps that have a checkpoint, newest first."""
        if not self.folder.exists():
            return []
        found = (STEP_FILE.match(entry.name) for entry in self.folder.iterdir())
        return sorted((int(match.group(1)) for match in found if match), reverse=True)

    def newest_intact(self, skipped: list[str] | None = None) -> Checkpoint | None:
        """The newest checkpoint whose bytes match its seal; ``skipped`` collects why newer ones were not used."""
        for step in self.steps():
            path = self.folder / f"step-{step:08d}.ckpt"
            try:
                payload, digest = read_sealed(path, self.account)
            except (TamperedObjectError, FileNotFoundError) as error:
                if skipped is not None:
                    skipped.append(str(error))
                continue
            return Checkpoint(state=pickle.loads(payload), step=step, sha256=digest, path=str(path))
        return None

    def discard(self) -> None:
        """Delete the checkpoints once the finished model is stored."""
        self.flush()
        if self.folder.exists():
            self.folder.fs.rm(self.folder.path, recursive=True)


class CheckpointStore(dg.ConfigurableResource):
    """Where long trainings keep their intermediate checkpoints."""

    root: str = Field(
        description="URI of the checkpoint root, e.g. file:///srv/.mlops/checkpoints or az://models/checkpoints."
    )
    account: StorageAccount | None = Field(
        default=None, description="The storage account of an az:// root; None for a local folder."
    )

    @contextmanager
    def training(self, asset_key: dg.AssetKey, partition: str, fingerprint: str) -> Iterator[TrainingCheckpoints]:
        """The checkpoints of one training of ``asset_key``'s ``partition``."""
        folder = storage_path(self.root, self.account).joinpath(*asset_key.path, partition, fingerprint)
        checkpoints = TrainingCheckpoints(folder=folder, account=self.account)
        try:
            yield checkpoints
        finally:
            checkpoints.close()
