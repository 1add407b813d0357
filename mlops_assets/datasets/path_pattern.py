"""Landing path patterns: where a file's event day is written in its path.

A pattern such as ``{yyyy}/{mm}/{dd}/{name}`` is relative to the dataset's landing
prefix. ``{yyyy}`` and ``{mm}`` appear exactly once, ``{dd}`` at most once, and they
spell the event day (the first of the month without ``{dd}``); ``{name}`` is the last
segment, the file name with its extension.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

DATE_TOKENS = {"yyyy": r"(?P<yyyy>\d{4})", "mm": r"(?P<mm>\d{2})", "dd": r"(?P<dd>\d{2})"}
REQUIRED_TOKENS = ("yyyy", "mm")
NAME_TOKEN = "name"
_TOKEN = re.compile(r"\{([^{}]*)\}")


class PathPatternError(ValueError):
    """The path pattern of a dataset spec cannot be used."""


@dataclass(frozen=True)
class LandingPath:
    """A landing file path that matched the pattern."""

    event_date: dt.date
    name: str
    subfolder: str = ""
    """Folders between the pattern's folder and the file (``"exports/"``); the pattern puts
    none there, so such a file is listed in order to be quarantined, never silently left."""


@dataclass(frozen=True)
class PathPattern:
    """A validated landing path pattern, compiled for matching and prefix listing."""

    pattern: str

    def __post_init__(self) -> None:
        _validate(self.pattern)

    @property
    def _regex(self) -> re.Pattern[str]:
        return self._compile(r"(?P<name>[^/]+)")

    @property
    def _nested_regex(self) -> re.Pattern[str]:
        return self._compile(r"(?P<subfolder>(?:[^/]+/)+)(?P<name>[^/]+)")

    def _compile(self, name: str) -> re.Pattern[str]:
        parts: list[str] = []
        position = 0
        for token in _TOKEN.finditer(self.pattern):
            parts.append(re.escape(self.pattern[position : token.start()]))
            key = token.group(1)
            parts.append(DATE_TOKENS[key] if key in DATE_TOKENS else name)
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
        found = self._regex.fullmatch(relative_path) or self._nested_regex.fullmatch(relative_path)
        if found is None:
            return None
        try:
            day = dt.date(int(found["yyyy"]), int(found["mm"]), int(found["dd"]) if self.has_day else 1)
        except ValueError:
            return None
        return LandingPath(event_date=day, name=found["name"], subfolder=found.groupdict().get("subfolder") or "")

    @property
    def has_day(self) -> bool:
        """Whether the pattern spells the day of the month, or only the month."""
        return "{dd}" in self.pattern

    def prefix(self, day: dt.date, through: str = "dd") -> str:
        """The path prefix, relative to the landing prefix, shared by every file of ``day``
        (``through="dd"``) or of its month (``through="mm"``): the pattern up to its first
        placeholder that ``through`` leaves open, filled in. It may end inside a segment
        (``day=2026-03-``), so listing it needs a name prefix, not a folder."""
        known = {"yyyy", "mm"} | ({"dd"} if through == "dd" else set())
        values = {"yyyy": f"{day.year:04d}", "mm": f"{day.month:02d}", "dd": f"{day.day:02d}"}
        text, position = [], 0
        for token in _TOKEN.finditer(self.pattern):
            text.append(self.pattern[position : token.start()])
            if token.group(1) not in known:
                return "".join(text)
            text.append(values[token.group(1)])
            position = token.end()
        return "".join(text)

    def path_for(self, day: dt.date, name: str) -> str:
        """The path, relative to the landing prefix, of file ``name`` landing on ``day``."""
        if "/" in name or name in ("", ".", ".."):
            raise PathPatternError(f"file name {name!r} must be a single path segment")
        values = {"yyyy": f"{day.year:04d}", "mm": f"{day.month:02d}", "name": name}
        if self.has_day:
            values["dd"] = f"{day.day:02d}"
        return self.pattern.format(**values)


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
    for token in [*REQUIRED_TOKENS, NAME_TOKEN]:
        if tokens.count(token) != 1:
            raise PathPatternError(f"{pattern!r} must contain {{{token}}} exactly once")
    if tokens.count("dd") > 1:
        raise PathPatternError(f"{pattern!r} must contain {{dd}} at most once")
    if pattern.rsplit("/", 1)[-1] != "{name}":
        raise PathPatternError(f"{pattern!r} must end with the segment {{name}}")
    folder = pattern.rsplit("/", 1)[0] if "/" in pattern else ""
    if not all(f"{{{token}}}" in folder for token in tokens if token in DATE_TOKENS):
        raise PathPatternError(
            f"{pattern!r} must spell the day in its folders, before {{name}}, so that one day's files share one prefix"
        )
