"""The landing sensor's cursor: which file versions it has already turned into runs."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlops_assets.storage.landing_zone import LandingFile


def version_digest(file: LandingFile) -> str:
    """A short, stable name for one version (path and etag) of one file."""
    return hashlib.sha256(f"{file.path}@{file.etag}".encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LandingCursor:
    """The file versions already requested, by partition.

    Keeping versions rather than a newest-modification-time mark means a file is new
    until it has been requested, whatever its timestamp says: a slow upload that
    commits after a faster one, or a copy that keeps an old modification time, is
    still found. A day's entry grows by 16 characters a file.
    """

    seen: dict[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        return cls(seen={day: frozenset(digests) for day, digests in json.loads(raw)["seen"].items()})

    def serialize(self) -> str:
        return json.dumps({"seen": {day: sorted(digests) for day, digests in sorted(self.seen.items())}})

    def is_new(self, file: LandingFile) -> bool:
        return version_digest(file) not in self.seen.get(file.partition.isoformat(), frozenset())

    def keep_only(self, days: Iterable[dt.date] | None) -> LandingCursor:
        """The cursor without the days outside ``days`` (None keeps every day)."""
        if days is None:
            return self
        wanted = {day.isoformat() for day in days}
        return LandingCursor(seen={day: digests for day, digests in self.seen.items() if day in wanted})

    def advance(self, files: Iterable[LandingFile]) -> LandingCursor:
        seen = dict(self.seen)
        for file in files:
            day = file.partition.isoformat()
            seen[day] = seen.get(day, frozenset()) | {version_digest(file)}
        return LandingCursor(seen=seen)
