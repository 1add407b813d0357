"""Dataset specs: the YAML files that declare a dataset, loaded and validated.

A spec names everything the pipeline needs to know about a dataset (landing layout,
columns and their types, quality rules, feature recipe, model family), so that a
second dataset needs a new YAML file and no new code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml

from mlops_assets.datasets.path_pattern import PathPattern, PathPatternError

COLUMN_TYPES = ("string", "int", "float", "bool", "timestamp", "date")
FILE_FORMATS = ("csv", "jsonl", "parquet")
RULE_ACTIONS = ("warn", "drop", "fail")
CALENDAR_FEATURES = ("hour", "dayofweek", "dayofyear", "month", "is_weekend")
MODEL_FAMILIES = ("hist_gradient_boosting", "random_forest", "ridge")
ROLE_TYPES = {
    "timestamp_column": ("timestamp",),
    "entity_column": ("string", "int"),
    "target_column": ("float", "int"),
}

RuleAction = Literal["warn", "drop", "fail"]

# The event day a row belongs to: the Dagster daily partition, and the Delta partition
# column of every table. Quality rules can refer to it.
PARTITION_COLUMN = "event_date"


class SpecError(ValueError):
    """A dataset spec is invalid; the message names the file and the field."""


@dataclass(frozen=True)
class LandingSpec:
    """Where the dataset's files land: a prefix in the landing zone and a path pattern."""

    prefix: str
    path_pattern: PathPattern
    formats: tuple[str, ...]


@dataclass(frozen=True)
class QualityRule:
    """An expectation on silver rows: ``expr`` is true for a good row."""

    name: str
    expr: str
    action: RuleAction


@dataclass(frozen=True)
class FeatureSpec:
    """The gold feature recipe: target lags, trailing means, calendar and exogenous columns."""

    lags: tuple[pd.Timedelta, ...]
    rolling_means: tuple[pd.Timedelta, ...]
    calendar: tuple[str, ...]
    exogenous: tuple[str, ...]

    @property
    def lookback(self) -> pd.Timedelta:
        """How far before a day's first row the features look."""
        spans = [*self.lags, *self.rolling_means]
        return max(spans) if spans else pd.Timedelta(0)


@dataclass(frozen=True)
class ModelSpec:
    """The forecaster: model family, its hyper-parameters and how it is trained."""

    family: str
    params: Mapping[str, Any]
    seed: int
    training_window_days: int
    holdout_fraction: float


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset, as declared in its YAML spec."""

    name: str
    description: str
    start_date: dt.date
    landing: LandingSpec
    columns: Mapping[str, str]
    timestamp_column: str
    entity_column: str
    target_column: str
    quality: tuple[QualityRule, ...]
    features: FeatureSpec
    model: ModelSpec
    source: str = field(default="<memory>", compare=False)
    raw: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def code_version(self, base: str, *sections: str) -> str:
        """``base`` (the version of the code) with a digest of the spec sections the asset is
        built from, so that Dagster marks the asset stale when either changes."""
        text = json.dumps({section: self.raw.get(section) for section in sections}, sort_keys=True, default=str)
        return f"{base}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns without which a landing file cannot be ingested at all."""
        return (self.timestamp_column, self.entity_column, self.target_column)


def bundled_spec_paths() -> list[Path]:
    """The YAML specs shipped with the package, sorted by name."""
    folder = resources.files("mlops_assets") / "specs"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_bundled_specs() -> list[DatasetSpec]:
    """Every dataset spec shipped with the package."""
    return [load_spec(path) for path in bundled_spec_paths()]


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise SpecError(f"{path.name}: not valid YAML: {error}") from error
    return parse_spec(raw, source=path.name)


def parse_spec(raw: Any, source: str = "<memory>") -> DatasetSpec:
    """Validate a spec already read from YAML into plain Python values."""
    reader = _Reader(source)
    top = reader.mapping(raw, "spec")
    name = reader.identifier(top, "name")
    columns = reader.mapping(top.get("columns"), "columns")
    if not columns:
        reader.fail("columns", "declare at least one column")
    for column, kind in columns.items():
        if kind not in COLUMN_TYPES:
            reader.fail(
                f"columns.{column}",
                f"unknown type {kind!r} (expected one of: {', '.join(COLUMN_TYPES)})",
            )
    roles = {}
    for role, allowed in ROLE_TYPES.items():
        column = reader.text(top, role)
        if column not in columns:
            reader.fail(role, f"{column!r} is not one of the declared columns {sorted(columns)}")
        if columns[column] not in allowed:
            reader.fail(role, f"{column!r} has type {columns[column]}; a {role} must be {' or '.join(allowed)}")
        roles[role] = column
    spec = DatasetSpec(
        name=name,
        description=str(top.get("description", "")),
        start_date=reader.date(top, "start_date"),
        landing=_landing(reader, reader.mapping(top.get("landing"), "landing")),
        columns=dict(columns),
        quality=tuple(_rules(reader, top.get("quality", []), columns)),
        features=_features(reader, reader.mapping(top.get("features"), "features"), columns, roles),
        model=_model(reader, reader.mapping(top.get("model"), "model")),
        source=source,
        raw=dict(top),
        **roles,
    )
    return spec


def empty_frame(columns: Mapping[str, str]) -> pd.DataFrame:
    """An empty frame with the pandas dtypes of the declared column types."""
    dtypes = {
        "string": "string",
        "int": "Int64",
        "float": "float64",
        "bool": "boolean",
        "timestamp": "datetime64[us, UTC]",
        "date": "object",
    }
    return pd.DataFrame({name: pd.Series(dtype=dtypes[kind]) for name, kind in columns.items()})


def _landing(reader: _Reader, raw: Mapping[str, Any]) -> LandingSpec:
    prefix = reader.text(raw, "prefix", where="landing.prefix").strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")):
        reader.fail("landing.prefix", f"{prefix!r} must be a relative path without '.' or '..'")
    try:
        pattern = PathPattern(reader.text(raw, "path_pattern", where="landing.path_pattern"))
    except PathPatternError as error:
        raise SpecError(f"{reader.source}: landing.path_pattern: {error}") from error
    formats = tuple(raw.get("formats") or ())
    if not formats:
        reader.fail("landing.formats", f"list at least one of {', '.join(FILE_FORMATS)}")
    for fmt in formats:
        if fmt not in FILE_FORMATS:
            reader.fail("landing.formats", f"unknown format {fmt!r} (expected one of: {', '.join(FILE_FORMATS)})")
    return LandingSpec(prefix=prefix, path_pattern=pattern, formats=formats)


def _rules(reader: _Reader, raw: Any, columns: Mapping[str, str]) -> list[QualityRule]:
    if not isinstance(raw, list):
        reader.fail("quality", "must be a list of rules")
    probe = empty_frame(columns).assign(**{PARTITION_COLUMN: pd.Series(dtype=object)})
    rules: list[QualityRule] = []
    for index, entry in enumerate(raw):
        where = f"quality[{index}]"
        entry = reader.mapping(entry, where)
        rule = QualityRule(
            name=reader.identifier(entry, "name", where=f"{where}.name"),
            expr=reader.text(entry, "expr", where=f"{where}.expr"),
            action=entry.get("action"),
        )
        if rule.action not in RULE_ACTIONS:
            reader.fail(
                f"{where}.action", f"unknown action {rule.action!r} (expected one of: {', '.join(RULE_ACTIONS)})"
            )
        if rule.name in {existing.name for existing in rules}:
            reader.fail(f"{where}.name", f"rule name {rule.name!r} is used twice")
        try:
            probe.eval(rule.expr, engine="python")
        except (NameError, SyntaxError, TypeError, AttributeError, ValueError) as error:
            reader.fail(f"{where}.expr", f"cannot evaluate {rule.expr!r} on the declared columns: {error}")
        rules.append(rule)
    return rules


def _features(
    reader: _Reader, raw: Mapping[str, Any], columns: Mapping[str, str], roles: Mapping[str, str]
) -> FeatureSpec:
    def durations(key: str) -> tuple[pd.Timedelta, ...]:
        values = []
        for value in raw.get(key) or ():
            try:
                duration = pd.Timedelta(str(value))
            except ValueError as error:
                reader.fail(f"features.{key}", f"{value!r} is not a duration such as 1h or 30min ({error})")
            if duration <= pd.Timedelta(0):
                reader.fail(f"features.{key}", f"{value!r} must be positive")
            values.append(duration)
        return tuple(values)

    calendar = tuple(raw.get("calendar") or ())
    for item in calendar:
        if item not in CALENDAR_FEATURES:
            reader.fail(
                "features.calendar", f"unknown calendar feature {item!r} (expected: {', '.join(CALENDAR_FEATURES)})"
            )
    exogenous = tuple(raw.get("exogenous") or ())
    for column in exogenous:
        if column not in columns or column in roles.values():
            reader.fail(
                "features.exogenous",
                f"{column!r} must be a declared column other than the timestamp, entity and target",
            )
    features = FeatureSpec(
        lags=durations("lags"), rolling_means=durations("rolling_means"), calendar=calendar, exogenous=exogenous
    )
    if not (features.lags or features.rolling_means or features.calendar or features.exogenous):
        reader.fail("features", "declare at least one feature")
    return features


def _model(reader: _Reader, raw: Mapping[str, Any]) -> ModelSpec:
    family = raw.get("family")
    if family not in MODEL_FAMILIES:
        reader.fail("model.family", f"unknown model family {family!r} (expected one of: {', '.join(MODEL_FAMILIES)})")
    window = raw.get("training_window_days", 7)
    if not isinstance(window, int) or window < 1:
        reader.fail("model.training_window_days", f"{window!r} must be a whole number of days >= 1")
    holdout = raw.get("holdout_fraction", 0.2)
    if not isinstance(holdout, (int, float)) or not 0 < holdout < 1:
        reader.fail("model.holdout_fraction", f"{holdout!r} must be a fraction between 0 and 1")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        reader.fail("model.seed", f"{seed!r} must be an integer")
    params = reader.mapping(raw.get("params", {}), "model.params")
    return ModelSpec(
        family=family, params=dict(params), seed=seed, training_window_days=window, holdout_fraction=float(holdout)
    )


@dataclass(frozen=True)
class _Reader:
    """Typed access to raw YAML values that raises SpecError with the field's path."""

    source: str

    def fail(self, where: str, message: str) -> None:
        raise SpecError(f"{self.source}: {where}: {message}")

    def mapping(self, value: Any, where: str) -> Mapping[str, Any]:
        if value is None:
            self.fail(where, "is missing")
        if not isinstance(value, Mapping):
            self.fail(where, f"must be a mapping, not {type(value).__name__}")
        return value

    def text(self, raw: Mapping[str, Any], key: str, where: str | None = None) -> str:
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            self.fail(where or key, "is missing" if value is None else f"must be a non-empty string, not {value!r}")
        return value

    def identifier(self, raw: Mapping[str, Any], key: str, where: str | None = None) -> str:
        value = self.text(raw, key, where)
        if not value.isidentifier():
            self.fail(where or key, f"{value!r} must be a lower-case identifier (letters, digits, _)")
        return value

    def date(self, raw: Mapping[str, Any], key: str) -> dt.date:
        value = raw.get(key)
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError as error:
            raise SpecError(f"{self.source}: {key}: {value!r} is not a date such as 2026-01-01") from error
