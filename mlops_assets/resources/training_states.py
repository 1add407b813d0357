"""Training states: a model saved part-way through a partition's training, to resume from.

A training is identified by a fingerprint of everything that determines its result
(parent model, training rows, hyper-parameters, seed, number of steps), so a retry
resumes only from states of the very same training. A state is stored under a name that
carries its step (``step-00000010.state``), written atomically with the sha256 of its bytes
recorded beside it (Blob metadata, or a ``.sha256`` file in a local folder); a state whose
bytes do not match that record is skipped for the next older one.
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

from mlops_assets.resources.storage import StorageLocation, TamperedObjectError

STATE_FILE = re.compile(r"^step-(\d{8})\.state$")


@dataclass(frozen=True)
class SavedState:
    """A stored training state: the object, the step it was saved after, its sha256 and path."""

    state: Any
    step: int
    sha256: str
    path: str


class TrainingStates:
    """The saved states of one training (one asset partition and fingerprint).

    A state is pickled when it is saved, and hashed and written by one background thread
    while training goes on, in the order saved. A process killed during a write leaves no
    state for that step (writes are atomic), only the older ones. A failed write fails the
    next save or :meth:`flush`.
    """

    def __init__(self, location: StorageLocation, folder: UPath) -> None:
        self.location = location
        self.folder = folder
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="training-state-writer")
        self._pending: list[Future[str]] = []

    def save(self, step: int, state: Any) -> Future[str]:
        """Store ``state`` as the state after ``step``; the future gives its sha256 once written."""
        self._raise_failed_writes()
        payload = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
        write = self._writer.submit(self.location.write_recorded, self.folder / f"step-{step:08d}.state", payload)
        self._pending.append(write)
        return write

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

    def saved(self) -> list[tuple[int, UPath]]:
        """(step, path) of every saved state, newest first."""
        if not self.folder.exists():
            return []
        found = ((STATE_FILE.match(entry.name), entry) for entry in self.folder.iterdir())
        return sorted(((int(match.group(1)), entry) for match, entry in found if match), reverse=True)

    def newest_intact(self, skipped: list[str] | None = None) -> SavedState | None:
        """The newest state whose bytes match the sha256 recorded when it was written;
        ``skipped`` collects why newer ones were not used."""
        for step, path in self.saved():
            try:
                payload, digest = self.location.read_verified(path)
            except FileNotFoundError as error:
                if skipped is not None:
                    skipped.append(f"{path} is gone: {error}")
                continue
            except TamperedObjectError as error:
                if skipped is not None:
                    skipped.append(str(error))
                continue
            return SavedState(state=pickle.loads(payload), step=step, sha256=digest, path=str(path))
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
