"""Landing path patterns: where a file's event day is written in its path.

A pattern such as ``{yyyy}/{mm}/{dd}/{name}`` is relative to the dataset's landing
prefix. ``{yyyy}``, ``{mm}`` and ``{dd}`` appear exactly once each and spell the event
day; ``{name}`` is the last segment, the file name with its extension.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DATE_TOKENS = {"yyyy": r"(?P<yyyy>\d{4})", "mm": r"(?P<mm>\d{2})", "dd": r"(?P<dd>\d{2})"}
NAME_TOKEN = "name"
_TOKEN = re.compile(r"\{([^{}]*)\}")


class PathPatternError(ValueError):
    """The path pattern of a dataset spec cannot be used."""


@dataclass(frozen=True)
class LandingPath:
    """A landing file path that matched the pattern."""

    event_date: dt.date
    name: str


@dataclass(frozen=True)
class PathPattern:
    """A validated landing path pattern, compiled for matching and prefix listing."""

    pattern: str

    def __post_init__(self) -> None:
        _validate(self.pattern)

    @property
    def _regex(self) -> re.Pattern[str]:
        parts: list[str] = []
        position = 0
        for token in _TOKEN.finditer(self.pattern):
            parts.append(re.escape(self.pattern[position : token.start()]))
            key = token.group(1)
            parts.append(DATE_TOKENS[key] if key in DATE_TOKENS else r"(?P<name>[^/]+)")
            position = token.end()
        parts.append(re.escape(self.pattern[position:]))
        return re.compile("".join(parts))

    def match(self, relative_path: str) -> LandingPath | None:
        """The event day and file name of a path relative to the landing prefix, or None.

        Paths with empty, ``.`` or ``..`` segments never match, so a crafted name
        cannot point outside its prefix.
        """
        segments = relative_path.split("/")
        if any(segment in ("", ".", "..") for segment in segments):
            return None
        found = self._regex.fullmatch(relative_path)
        if found is None:
            return None
        try:
            day = dt.date(int(found["yyyy"]), int(found["mm"]), int(found["dd"]))
        except ValueError:
            return None
        return LandingPath(event_date=day, name=found["name"])

    def day_prefix(self, day: dt.date) -> str:
        """The folder, relative to the landing prefix, that holds every file of ``day``."""
        folder = self.pattern.rsplit("/", 1)[0] + "/" if "/" in self.pattern else ""
        return folder.format(yyyy=f"{day.year:04d}", mm=f"{day.month:02d}", dd=f"{day.day:02d}")

    def path_for(self, day: dt.date, name: str) -> str:
        """The path, relative to the landing prefix, of file ``name`` landing on ``day``."""
        if "/" in name or name in ("", ".", ".."):
            raise PathPatternError(f"file name {name!r} must be a single path segment")
        return self.pattern.format(yyyy=f"{day.year:04d}", mm=f"{day.month:02d}", dd=f"{day.day:02d}", name=name)


def _validate(pattern: str) -> None:
    if not pattern or pattern.startswith("/") or "\\" in pattern:
        raise PathPatternError(f"{pattern!r} must be a relative path with '/' separators")
    if any(segment in ("", ".", "..") for segment in pattern.split("/")):
        raise PathPatternError(f"{pattern!r} has an empty, '.' or '..' segment")
    if pattern.count("{") != pattern.count("}") or len(_TOKEN.findall(pattern)) != pattern.count("{"):
        raise PathPatternError(f"{pattern!r} has unbalanced braces")
    tokens = _TOKEN.findall(pattern)
    unknown = sorted(set(tokens) - set(DATE_TOKENS) - {NAME_TOKEN})
    if unknown:
        raise PathPatternError(
            f"{pattern!r} has unknown placeholder(s) {unknown}; use {{yyyy}}, {{mm}}, {{dd}} and {{name}}"
        )
    for token in [*DATE_TOKENS, NAME_TOKEN]:
        if tokens.count(token) != 1:
            raise PathPatternError(f"{pattern!r} must contain {{{token}}} exactly once")
    if pattern.rsplit("/", 1)[-1] != "{name}":
        raise PathPatternError(f"{pattern!r} must end with the segment {{name}}")
    folder = pattern.rsplit("/", 1)[0] if "/" in pattern else ""
    if not all(f"{{{token}}}" in folder for token in DATE_TOKENS):
        raise PathPatternError(
            f"{pattern!r} must spell the day in its folders, before {{name}}, so that one day's files share one prefix"
        )
