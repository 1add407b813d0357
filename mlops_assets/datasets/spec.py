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
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml

# The cron dialect Dagster schedules accept (five fields), so a spec fails on load, not at deploy.
from dagster._utils.schedules import is_valid_cron_string

from mlops_assets.datasets.path_pattern import PathPattern, PathPatternError

COLUMN_TYPES = ("string", "int", "float", "bool", "timestamp", "date")
FILE_FORMATS = ("csv", "jsonl", "parquet")
RULE_ACTIONS = ("warn", "drop", "fail")
CALENDAR_FEATURES = ("hour", "dayofweek", "dayofyear", "month", "is_weekend")
MODEL_FAMILIES = ("hist_gradient_boosting", "random_forest", "ridge")
CHECKPOINT_FAMILIES = ("mlp",)
GATE_METRICS = ("mae", "rmse", "wape", "r2", "skill")
# Metrics where a larger value is the better model; for the others smaller is better.
HIGHER_IS_BETTER = frozenset({"r2", "skill"})
PARAM_KINDS = ("float", "int", "categorical")
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
class CheckpointSpec:
    """The continued-training model: trained day after day from the previous day's checkpoint.

    Each day runs ``epochs_per_day`` passes over the day's training hours and stores an
    intermediate checkpoint every ``checkpoint_every`` epochs, from which a killed or
    retried run resumes.
    """

    family: str
    params: Mapping[str, Any]
    seed: int
    epochs_per_day: int
    checkpoint_every: int


@dataclass(frozen=True)
class GateSpec:
    """When a candidate model may replace the champion in the registry.

    ``metric`` compares candidate and champion on the same hold-out: the candidate is
    refused when it is worse than the champion by more than ``margin`` (a fraction of
    the champion's value). ``thresholds`` are absolute bounds any candidate must meet,
    as ``{metric: {min: x, max: y}}``.
    """

    model_name: str
    metric: str
    margin: float
    thresholds: Mapping[str, Mapping[str, float]]


@dataclass(frozen=True)
class MonitoringSpec:
    """Drift of a day's features and predictions against the champion's training window."""

    psi_threshold: float
    ks_threshold: float
    bins: int


@dataclass(frozen=True)
class ScheduleSpec:
    """Nightly retraining and the scheduled backfill, as cron expressions in ``timezone``."""

    timezone: str
    retrain_cron: str
    backfill_cron: str
    backfill_days: int


@dataclass(frozen=True)
class SearchParam:
    """One hyper-parameter of the search space: a float or int range, or a list of choices."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()


@dataclass(frozen=True)
class TuningSpec:
    """The opt-in hyper-parameter search: ``trials`` Optuna trials over ``space``."""

    trials: int
    space: tuple[SearchParam, ...]


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
    checkpoint: CheckpointSpec
    gate: GateSpec
    monitoring: MonitoringSpec
    schedules: ScheduleSpec
    tuning: TuningSpec | None = None
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
        checkpoint=_checkpoint(reader, top.get("checkpoint") or {}),
        gate=_gate(reader, top.get("registry") or {}, default_name=name),
        monitoring=_monitoring(reader, top.get("monitoring") or {}),
        schedules=_schedules(reader, top.get("schedules") or {}),
        tuning=_tuning(reader, top["tuning"]) if top.get("tuning") is not None else None,
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


def _checkpoint(reader: _Reader, raw: Any) -> CheckpointSpec:
    raw = reader.mapping(raw, "checkpoint")
    family = raw.get("family", "mlp")
    if family not in CHECKPOINT_FAMILIES:
        reader.fail(
            "checkpoint.family",
            f"unknown model family {family!r} (expected one of: {', '.join(CHECKPOINT_FAMILIES)})",
        )
    epochs = reader.whole(raw, "epochs_per_day", default=20, where="checkpoint.epochs_per_day")
    every = reader.whole(raw, "checkpoint_every", default=5, where="checkpoint.checkpoint_every")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int):
        reader.fail("checkpoint.seed", f"{seed!r} must be an integer")
    return CheckpointSpec(
        family=family,
        params=dict(reader.mapping(raw.get("params", {}), "checkpoint.params")),
        seed=seed,
        epochs_per_day=epochs,
        checkpoint_every=every,
    )


def _gate(reader: _Reader, raw: Any, default_name: str) -> GateSpec:
    raw = reader.mapping(raw, "registry")
    metric = raw.get("metric", "mae")
    if metric not in GATE_METRICS:
        reader.fail("registry.metric", f"unknown metric {metric!r} (expected one of: {', '.join(GATE_METRICS)})")
    margin = raw.get("margin", 0.05)
    if not isinstance(margin, (int, float)) or margin < 0:
        reader.fail("registry.margin", f"{margin!r} must be a fraction >= 0")
    thresholds = reader.mapping(raw.get("thresholds", {}), "registry.thresholds")
    for name, bounds in thresholds.items():
        where = f"registry.thresholds.{name}"
        if name not in GATE_METRICS:
            reader.fail(where, f"unknown metric {name!r} (expected one of: {', '.join(GATE_METRICS)})")
        bounds = reader.mapping(bounds, where)
        if not bounds or set(bounds) - {"min", "max"}:
            reader.fail(where, "give a min, a max or both")
        for bound, value in bounds.items():
            if not isinstance(value, (int, float)):
                reader.fail(f"{where}.{bound}", f"{value!r} must be a number")
    model_name = raw.get("model_name", default_name)
    if not isinstance(model_name, str) or not model_name.strip():
        reader.fail("registry.model_name", f"{model_name!r} must be a non-empty string")
    return GateSpec(
        model_name=model_name,
        metric=metric,
        margin=float(margin),
        thresholds={
            name: {bound: float(value) for bound, value in bounds.items()} for name, bounds in thresholds.items()
        },
    )


def _monitoring(reader: _Reader, raw: Any) -> MonitoringSpec:
    raw = reader.mapping(raw, "monitoring")
    values = {}
    for key, default in (("psi_threshold", 0.25), ("ks_threshold", 0.2)):
        value = raw.get(key, default)
        if not isinstance(value, (int, float)) or value <= 0:
            reader.fail(f"monitoring.{key}", f"{value!r} must be a positive number")
        values[key] = float(value)
    bins = reader.whole(raw, "bins", default=10, where="monitoring.bins")
    if bins < 2:
        reader.fail("monitoring.bins", f"{bins} must be at least 2")
    return MonitoringSpec(bins=bins, **values)


def _schedules(reader: _Reader, raw: Any) -> ScheduleSpec:
    raw = reader.mapping(raw, "schedules")
    timezone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise SpecError(f"{reader.source}: schedules.timezone: unknown time zone {timezone!r}") from error
    crons = {}
    for key, default in (("retrain", "0 2 * * *"), ("backfill", "30 3 * * *")):
        cron = raw.get(key, default)
        if not isinstance(cron, str) or not is_valid_cron_string(cron):
            reader.fail(f"schedules.{key}", f"{cron!r} is not a cron expression such as '0 2 * * *'")
        crons[key] = cron
    days = reader.whole(raw, "backfill_days", default=7, where="schedules.backfill_days")
    return ScheduleSpec(
        timezone=str(timezone), retrain_cron=crons["retrain"], backfill_cron=crons["backfill"], backfill_days=days
    )


def _tuning(reader: _Reader, raw: Any) -> TuningSpec:
    raw = reader.mapping(raw, "tuning")
    trials = reader.whole(raw, "trials", default=20, where="tuning.trials")
    space = reader.mapping(raw.get("space"), "tuning.space")
    if not space:
        reader.fail("tuning.space", "declare at least one hyper-parameter")
    params = []
    for name, entry in space.items():
        where = f"tuning.space.{name}"
        entry = reader.mapping(entry, where)
        if "choices" in entry:
            choices = entry["choices"]
            if not isinstance(choices, list) or not choices:
                reader.fail(f"{where}.choices", "must be a non-empty list")
            params.append(SearchParam(name=name, kind="categorical", choices=tuple(choices)))
            continue
        low, high = entry.get("low"), entry.get("high")
        if not isinstance(low, (int, float)) or not isinstance(high, (int, float)) or not low < high:
            reader.fail(where, f"needs numbers low < high, or a list of choices (got low={low!r}, high={high!r})")
        kind = entry.get("type", "int" if isinstance(low, int) and isinstance(high, int) else "float")
        if kind not in ("int", "float"):
            reader.fail(f"{where}.type", f"{kind!r} must be int or float")
        log = bool(entry.get("log", False))
        if log and low <= 0:
            reader.fail(where, "a log-scale range must have low > 0")
        params.append(SearchParam(name=name, kind=kind, low=low, high=high, log=log))
    return TuningSpec(trials=trials, space=tuple(params))


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

    def whole(self, raw: Mapping[str, Any], key: str, default: int, where: str) -> int:
        """A whole number >= 1."""
        value = raw.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            self.fail(where, f"{value!r} must be a whole number >= 1")
        return value

    def date(self, raw: Mapping[str, Any], key: str) -> dt.date:
        value = raw.get(key)
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError as error:
            raise SpecError(f"{self.source}: {key}: {value!r} is not a date such as 2026-01-01") from error
