"""Training states: a model saved part-way through a partition's training, to resume from.

A training is identified by a fingerprint of everything that determines its result
(parent model, training rows, hyper-parameters, seed, number of steps), so a retry
resumes only from states of the very same training. A state is stored under a name that
carries its step and the sha256 of its bytes (``step-00000010.<sha256>.state``), written
atomically; a state whose bytes do not match its name is skipped for the next older one.
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
from mlops_assets.resources.storage import StorageLocation

STATE_FILE = re.compile(r"^step-(\d{8})\.([0-9a-f]{64})\.state$")


@dataclass(frozen=True)
class SavedState:
    """A stored training state: the object, the step it was saved after, its sha256 and path."""

    state: Any
    step: int
    sha256: str
    path: str


class TrainingStates:
    """The saved states of one training (one asset partition and fingerprint).

    A state is pickled and hashed when it is saved, and written by one background thread
    while training goes on, in the order saved. A process killed during a write leaves no
    state for that step (writes are atomic), only the older ones. A failed write fails the
    next save or :meth:`flush`.
    """

    def __init__(self, location: StorageLocation, folder: UPath) -> None:
        self.location = location
        self.folder = folder
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-state-writer")
        self._pending: list[Future[None]] = []

    def save(self, step: int, state: Any) -> str:
        """Store ``state`` as the state after ``step``; returns its sha256."""
        self._raise_failed_writes()
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        digest = sha256_hex(payload)
        path = self.folder / f"step-{step:08d}.{digest}.state"
        self._pending.append(self._writer.submit(self.location.write_bytes, path, payload))
        return digest

    def flush(self) -> None:
        """Wait until every saved state is written; raise the first write error."""
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

    def saved(self) -> list[tuple[int, str, UPath]]:
        """(step, sha256, path) of every saved state, newest first."""
        if not self.folder.exists():
            return []
        found = ((STATE_FILE.match(entry.name), entry) for entry in self.folder.iterdir())
        states = [(int(match.group(1)), match.group(2), entry) for match, entry in found if match]
        return sorted(states, key=lambda state: state[0], reverse=True)

    def newest_intact(self, skipped: list[str] | None = None) -> SavedState | None:
        """The newest state whose bytes match the sha256 in its name; ``skipped`` collects why
        newer ones were not used."""
        for step, recorded, path in self.saved():
            try:
                payload, actual = self.location.read_hashed(path)
            except FileNotFoundError as error:
                if skipped is not None:
                    skipped.append(f"{path} is gone: {error}")
                continue
            if actual != recorded:
                if skipped is not None:
                    skipped.append(f"{path} was changed after it was written: sha256 {actual}")
                continue
            return SavedState(state=pickle.loads(payload), step=step, sha256=actual, path=str(path))
        return None

    def discard(self) -> None:
        """Delete the states once the finished model is stored."""
        self.flush()
        if self.folder.exists():
            self.folder.fs.rm(self.folder.path, recursive=True)


class TrainingStateStore(dg.ConfigurableResource):
    """Where long trainings keep the states they can resume from."""

    location: StorageLocation = Field(description="The folder or Blob container training states are kept under.")

    @contextmanager
    def training(self, asset_key: dg.AssetKey, partition: str, fingerprint: str) -> Iterator[TrainingStates]:
        """The saved states of one training of ``asset_key``'s ``partition``."""
        states = TrainingStates(self.location, self.location.path(*asset_key.path, partition, fingerprint))
        try:
            yield states
        finally:
            states.close()
