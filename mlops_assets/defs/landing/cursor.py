"""The landing sensor's cursor: which file versions it has already turned into runs."""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

from mlops_assets.digests import short_digest
from mlops_assets.resources.landing_zone import LandingFile


def version_digest(file: LandingFile) -> str:
    """A short, stable name for one version (path and etag) of one file."""
    return short_digest(f"{file.path}@{file.etag}")


def listing_digest(files: Iterable[LandingFile]) -> str:
    """A short, stable name for the set of file versions a partition's folder holds."""
    versions = "\n".join(sorted(version_digest(file) for file in files))
    return short_digest(versions)


def by_partition(files: Iterable[LandingFile]) -> dict[str, list[LandingFile]]:
    grouped: dict[str, list[LandingFile]] = defaultdict(list)
    for file in files:
        grouped[file.partition.isoformat()].append(file)
    return dict(grouped)


@dataclass(frozen=True)
class LandingCursor:
    """The file versions already requested, by partition.

    Keeping versions rather than a newest-modification-time mark means a file is new
    until it has been requested, whatever its timestamp says: a slow upload that
    commits after a faster one, or a copy that keeps an old modification time, is
    still found. An open partition's entry grows by 16 characters a file; a partition
    sealed by :meth:`seal_idle` keeps one digest of what its folder held, so the cursor
    grows by partition, not by file.
    """

    seen: dict[str, frozenset[str]] = field(default_factory=dict)
    active: dict[str, int] = field(default_factory=dict)
    sealed: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: str | None) -> LandingCursor:
        if not raw:
            return cls()
        state = json.loads(raw)
        return cls(
            seen={day: frozenset(digests) for day, digests in state["seen"].items()},
            active=dict(state.get("active", {})),
            sealed=dict(state.get("sealed", {})),
        )

    def serialize(self) -> str:
        return json.dumps(
            {
                "seen": {day: sorted(digests) for day, digests in sorted(self.seen.items())},
                "active": dict(sorted(self.active.items())),
                "sealed": dict(sorted(self.sealed.items())),
            }
        )

    def new_files(self, files: Iterable[LandingFile]) -> list[LandingFile]:
        """The files not requested yet. In a sealed partition whose folder changed, which
        versions are new is not known: every file of it is, and bronze skips those it holds."""
        new: list[LandingFile] = []
        for day, listed in by_partition(files).items():
            if day in self.sealed:
                if listing_digest(listed) != self.sealed[day]:
                    new.extend(listed)
            else:
                new.extend(file for file in listed if version_digest(file) not in self.seen.get(day, frozenset()))
        return sorted(new, key=lambda file: file.path)

    def keep_only(self, days: Iterable[dt.date] | None) -> LandingCursor:
        """The cursor without the days outside ``days`` (None keeps every day)."""
        if days is None:
            return self
        wanted = {day.isoformat() for day in days}
        return LandingCursor(
            seen={day: digests for day, digests in self.seen.items() if day in wanted},
            active={day: stamp for day, stamp in self.active.items() if day in wanted},
            sealed={day: digest for day, digest in self.sealed.items() if day in wanted},
        )

    def advance(self, files: Iterable[LandingFile], now: float) -> LandingCursor:
        seen, active, sealed = dict(self.seen), dict(self.active), dict(self.sealed)
        for day, requested in by_partition(files).items():
            sealed.pop(day, None)
            seen[day] = seen.get(day, frozenset()) | {version_digest(file) for file in requested}
            active[day] = int(now)
        return LandingCursor(seen=seen, active=active, sealed=sealed)

    def seal_idle(self, idle_since: float, listed: Iterable[LandingFile]) -> LandingCursor:
        """Partitions with no new file since ``idle_since`` kept as one digest of what their
        folders hold now (``listed``: every landing file); those that hold nothing are
        forgotten. A file landing in a sealed partition later opens it again."""
        folders = by_partition(listed)
        seen, active, sealed = {}, {}, dict(self.sealed)
        for day, digests in self.seen.items():
            if self.active.get(day, 0) >= idle_since:
                seen[day], active[day] = digests, self.active[day]
            elif day in folders:
                sealed[day] = listing_digest(folders[day])
        sealed = {day: digest for day, digest in sealed.items() if day in folders}
        return LandingCursor(seen=seen, active=active, sealed=sealed)
