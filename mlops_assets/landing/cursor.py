"""The landing sensor's cursor: how far it has read the landing zone."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from mlops_assets.storage.landing_zone import LandingFile


@dataclass(frozen=True)
class LandingCursor:
    """How far the sensor has read: the newest modification time it has seen, and the
    paths modified at exactly that time (so a file sharing that instant is not missed)."""

    modified: dt.datetime | None = None
    paths_at_mark: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        state = json.loads(raw)
        return cls(modified=dt.datetime.fromisoformat(state["modified"]), paths_at_mark=frozenset(state["paths"]))

    def serialize(self) -> str:
        return json.dumps(
            {"modified": self.modified.isoformat() if self.modified else None, "paths": sorted(self.paths_at_mark)}
        )

    def is_new(self, file: LandingFile) -> bool:
        if self.modified is None or file.modified > self.modified:
            return True
        return file.modified == self.modified and file.path not in self.paths_at_mark

    def advance(self, files: list[LandingFile]) -> LandingCursor:
        if not files:
            return self
        newest = max(file.modified for file in files)
        at_mark = {file.path for file in files if file.modified == newest}
        if newest == self.modified:
            at_mark |= self.paths_at_mark
        return LandingCursor(modified=newest, paths_at_mark=frozenset(at_mark))
