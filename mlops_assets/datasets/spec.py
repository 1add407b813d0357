"""Dataset specs: the YAML files that declare a dataset, loaded and validated.

A spec names everything the pipeline needs to know about a dataset (landing layout,
columns and their types, quality rules, feature recipe, model family), so that a
second dataset needs a new YAML file and no new code.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import pandas as pd
import yaml

from mlops_assets.datasets.path_pattern import PathPattern, PathPatternError
from mlops_assets.datasets.periods import GRAINS, Grain, Span, default_season

COLUMN_TYPES = ("string", "int", "float", "bool", "timestamp", "date")
FILE_FORMATS = ("csv", "jsonl", "parquet")
RULE_ACTIONS = ("warn", "drop", "fail")
CALENDAR_FEATURES = ("hour", "dayofweek", "dayofyear", "weekofyear", "month", "is_weekend")
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
    """A dataset spec is invalid; the message names the file and the field, one line a problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


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
    """The gold feature recipe: target lags, trailing means, calendar and exogenous columns.

    Lags and windows are whole numbers of the series' periods. ``season`` is the lag of
    the seasonal-naive forecast every model is measured against; it is always one of
    ``lags`` (added when the spec does not list it).
    """

    lags: tuple[Span, ...]
    rolling_means: tuple[Span, ...]
    calendar: tuple[str, ...]
    exogenous: tuple[str, ...]
    season: Span

    @property
    def spans(self) -> tuple[Span, ...]:
        return (*self.lags, *self.rolling_means)


@dataclass(frozen=True)
class ModelSpec:
    """The forecaster: model family, its hyper-parameters and how it is trained.

    ``training_window`` is how many partitions (days, or months) ending on the model's
    own partition it trains on; the latest ``holdout_fraction`` of their periods are held
    out for its metrics and the gate.
    """

    family: str
    params: Mapping[str, Any]
    seed: int
    training_window: int
    holdout_fraction: float


@dataclass(frozen=True)
class CheckpointSpec:
    """The continued-training model: each partition continues from the checkpoint before it.

    Each partition runs ``epochs`` passes over the rows that became available for
    training since its parent checkpoint, and stores an intermediate checkpoint every
    ``checkpoint_every`` epochs, from which a killed or retried run resumes.
    """

    family: str
    params: Mapping[str, Any]
    seed: int
    epochs: int
    checkpoint_every: int


@dataclass(frozen=True)
class GateSpec:
    """When a candidate model may become the champion.

    A candidate passes when it beats the seasonal-naive forecast on its hold-out (skill
    above ``min_skill``), meets the absolute ``thresholds`` (``{metric: {min: x, max: y}}``),
    and is not worse than the champion it would replace by more than ``margin`` (a
    fraction of the champion's ``metric``), both scored on the same hold-out rows. With
    ``dry_run`` the decision is recorded and no alias moves. The forecaster registers as
    ``model_name``, the checkpoint model as ``checkpoint_model_name``.
    """

    model_name: str
    checkpoint_model_name: str
    metric: str
    margin: float
    min_skill: float
    thresholds: Mapping[str, Mapping[str, float]]
    dry_run: bool


@dataclass(frozen=True)
class MonitoringSpec:
    """Drift of a partition against a comparable one (the same partition a year before, or the
    scoring model's hold-out).

    A partition with actuals drifted when its error is ``error_ratio`` times the scoring
    model's hold-out error. Without actuals, a column drifted when its PSI passes
    ``psi_threshold`` and its KS statistic passes ``ks_threshold``, and the partition when
    at least ``drifted_share`` of the monitored features drifted or the predictions did.
    Partitions with fewer than ``min_rows`` rows are not judged. Retraining is requested
    when ``retrain_after_drifted`` of the last ``retrain_window`` judged partitions drifted.
    """

    psi_threshold: float
    ks_threshold: float
    bins: int
    min_rows: int
    drifted_share: float
    error_ratio: float
    retrain_after_drifted: int
    retrain_window: int


@dataclass(frozen=True)
class ScheduleSpec:
    """Nightly retraining and the scheduled gap backfill, as cron expressions in ``timezone``."""

    timezone: str
    retrain_cron: str
    backfill_cron: str


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
    frequency: Span
    grain: Grain
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


def spec_files(locations: Sequence[str | Path]) -> list[Path]:
    """The spec files at ``locations``: YAML files, and the ``*.yaml`` files of folders."""
    found: list[Path] = []
    for location in map(Path, locations):
        if location.is_dir():
            found.extend(sorted(location.glob("*.yaml")))
        elif location.is_file():
            found.append(location)
        else:
            raise SpecError(f"{location}: no such spec file or folder")
    return found


def load_specs(extra: Sequence[str | Path] = ()) -> list[DatasetSpec]:
    """The bundled specs and those at ``extra`` (files or folders); two specs may not share a name."""
    specs = [*load_bundled_specs(), *(load_spec(path) for path in spec_files(extra))]
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(f"dataset name(s) {twice} declared by more than one spec")
    return specs


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one spec file; raise :class:`SpecError` naming what is wrong."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(f"{path.name}: not valid YAML{where}: {first_line}") from error
    return parse_spec(raw, source=path.name)


TOP_LEVEL_FIELDS = (
    "name",
    "description",
    "start_date",
    "frequency",
    "partitions",
    "landing",
    "columns",
    "timestamp_column",
    "entity_column",
    "target_column",
    "quality",
    "features",
    "model",
    "checkpoint",
    "registry",
    "monitoring",
    "schedules",
    "tuning",
)


def parse_spec(raw: Any, source: str = "<memory>") -> DatasetSpec:
    """Validate a spec already read from YAML into plain Python values.

    Every section is checked, so one :class:`SpecError` lists every problem found, one
    line each (``<file>: <field>: <what is wrong>``).
    """
    reader = _Reader(source)
    top = reader.mapping(raw, "spec")
    reader.known_fields(top, TOP_LEVEL_FIELDS, "")
    problems: list[str] = []

    def section(parse: Any, *args: Any) -> Any:
        try:
            return parse(*args)
        except SpecError as error:
            problems.extend(error.problems)
            return None

    name = section(reader.identifier, top, "name")
    start_date = section(reader.date, top, "start_date")
    frequency = section(_frequency, reader, top)
    grain = section(_grain, reader, top)
    columns = section(_columns, reader, top)
    roles = section(_roles, reader, top, columns) if columns is not None else None
    landing = section(_landing, reader, top.get("landing"), grain)
    quality = section(_rules, reader, top.get("quality", []), columns) if columns is not None else None
    features = None
    if columns is not None and roles is not None and frequency is not None:
        features = section(_features, reader, top.get("features"), columns, roles, frequency)
    model = section(_model, reader, top.get("model"), grain) if grain is not None else None
    checkpoint = section(_checkpoint, reader, top.get("checkpoint") or {})
    gate = section(_gate, reader, top.get("registry") or {}, name or "dataset")
    monitoring = section(_monitoring, reader, top.get("monitoring") or {})
    schedules = section(_schedules, reader, top.get("schedules") or {})
    tuning = section(_tuning, reader, top["tuning"]) if top.get("tuning") is not None else None
    problems = [*reader.problems, *problems]
    if problems:
        raise SpecError("\n".join(problems), problems)
    return DatasetSpec(
        name=name,
        description=str(top.get("description", "")),
        start_date=grain.floor(start_date),
        frequency=frequency,
        grain=grain,
        landing=landing,
        columns=dict(columns),
        quality=tuple(quality),
        features=features,
        model=model,
        checkpoint=checkpoint,
        gate=gate,
        monitoring=monitoring,
        schedules=schedules,
        tuning=tuning,
        source=source,
        raw=dict(top),
        **roles,
    )


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


def is_schedulable_cron(expression: str) -> bool:
    """Whether Dagster schedules accept ``expression``, so a spec fails on load, not at deploy."""
    try:
        dg.ScheduleDefinition(name="spec_check", cron_schedule=expression, job_name="spec_check")
    except dg.DagsterInvalidDefinitionError:
        return False
    return True


def _frequency(reader: _Reader, top: Mapping[str, Any]) -> Span:
    value = top.get("frequency")
    if value is None:
        reader.fail("frequency", "is missing: say how often the series is measured, e.g. 15min, 1h, 1d, 1w or 1mo")
    return reader.span(value, "frequency")


def _grain(reader: _Reader, top: Mapping[str, Any]) -> Grain:
    value = top.get("partitions", "daily")
    if value not in GRAINS:
        reader.fail("partitions", f"unknown partition grain {value!r} (expected one of: {', '.join(GRAINS)})")
    return Grain(value)


def _columns(reader: _Reader, top: Mapping[str, Any]) -> Mapping[str, str]:
    columns = reader.mapping(top.get("columns"), "columns")
    if not columns:
        reader.fail("columns", "declare at least one column")
    for column, kind in columns.items():
        if kind not in COLUMN_TYPES:
            reader.fail(f"columns.{column}", f"unknown type {kind!r} (expected one of: {', '.join(COLUMN_TYPES)})")
    lowered = [str(column).lower() for column in columns]
    twins = sorted({column for column in columns if lowered.count(str(column).lower()) > 1})
    if twins:
        reader.fail("columns", f"{twins} differ only in case; Delta column names are case-insensitive")
    return columns


def _roles(reader: _Reader, top: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, str]:
    roles = {}
    for role, allowed in ROLE_TYPES.items():
        column = reader.text(top, role)
        if column not in columns:
            reader.fail(role, f"{column!r} is not one of the declared columns {sorted(columns)}")
        if columns[column] not in allowed:
            reader.fail(role, f"{column!r} has type {columns[column]}; a {role} must be {' or '.join(allowed)}")
        roles[role] = column
    return roles


def _landing(reader: _Reader, raw: Any, grain: Grain | None) -> LandingSpec:
    raw = reader.mapping(raw, "landing")
    reader.known_fields(raw, ("prefix", "path_pattern", "formats"), "landing")
    prefix = reader.text(raw, "prefix", where="landing.prefix").strip("/")
    if any(segment in ("", ".", "..") for segment in prefix.split("/")):
        reader.fail("landing.prefix", f"{prefix!r} must be a relative path without '.' or '..'")
    try:
        pattern = PathPattern(reader.text(raw, "path_pattern", where="landing.path_pattern"))
    except PathPatternError as error:
        raise SpecError(f"{reader.source}: landing.path_pattern: {error}") from error
    if grain is not None and grain.name == "daily" and not pattern.has_day:
        reader.fail(
            "landing.path_pattern",
            f"{pattern.pattern!r} must contain {{dd}} for daily partitions (or set partitions: monthly)",
        )
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
        reader.known_fields(entry, ("name", "expr", "action"), where)
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
        except (NameError, SyntaxError, TypeError, AttributeError, ValueError, KeyError) as error:
            reader.fail(f"{where}.expr", f"cannot evaluate {rule.expr!r} on the declared columns: {error}")
        rules.append(rule)
    return rules


def _features(
    reader: _Reader, raw: Any, columns: Mapping[str, str], roles: Mapping[str, str], frequency: Span
) -> FeatureSpec:
    raw = reader.mapping(raw, "features")
    reader.known_fields(raw, ("lags", "rolling_means", "calendar", "exogenous", "season"), "features")

    def spans(key: str) -> tuple[Span, ...]:
        values = []
        for value in raw.get(key) or ():
            span = reader.span(value, f"features.{key}")
            try:
                span.periods(frequency)
            except ValueError as error:
                reader.fail(f"features.{key}", f"{error} (frequency {frequency})")
            values.append(span)
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
    taken = sorted(set(calendar) & set(columns))
    if taken:
        reader.fail(
            "features.calendar",
            f"{taken} would overwrite the declared column(s) of the same name; rename the column(s) in `columns`",
        )
    lags, rolling = spans("lags"), spans("rolling_means")
    season = default_season(frequency) if raw.get("season") is None else reader.span(raw["season"], "features.season")
    try:
        season_periods = season.periods(frequency)
    except ValueError as error:
        reader.fail("features.season", f"{error} (frequency {frequency})")
    if not any(lag.periods(frequency) == season_periods for lag in lags):
        lags = (*lags, season)
    for key, values in (("lags", lags), ("rolling_means", rolling)):
        periods = [span.periods(frequency) for span in values]
        if len(set(periods)) < len(periods):
            reader.fail(f"features.{key}", f"{[str(span) for span in values]} name the same length twice")
    return FeatureSpec(lags=lags, rolling_means=rolling, calendar=calendar, exogenous=exogenous, season=season)


def _model(reader: _Reader, raw: Any, grain: Grain) -> ModelSpec:
    raw = reader.mapping(raw, "model")
    reader.known_fields(raw, ("family", "params", "seed", "training_window", "holdout_fraction"), "model")
    family = raw.get("family")
    if family not in MODEL_FAMILIES:
        reader.fail("model.family", f"unknown model family {family!r} (expected one of: {', '.join(MODEL_FAMILIES)})")
    window_text = raw.get("training_window", "7d" if grain.name == "daily" else "12mo")
    window = reader.span(window_text, "model.training_window")
    try:
        partitions = grain.count(window)
    except ValueError as error:
        reader.fail("model.training_window", str(error))
    holdout = raw.get("holdout_fraction", 0.2)
    if not isinstance(holdout, (int, float)) or isinstance(holdout, bool) or not 0 < holdout < 1:
        reader.fail("model.holdout_fraction", f"{holdout!r} must be a fraction between 0 and 1")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        reader.fail("model.seed", f"{seed!r} must be an integer")
    params = reader.mapping(raw.get("params", {}), "model.params")
    return ModelSpec(
        family=family, params=dict(params), seed=seed, training_window=partitions, holdout_fraction=float(holdout)
    )


def _checkpoint(reader: _Reader, raw: Any) -> CheckpointSpec:
    raw = reader.mapping(raw, "checkpoint")
    reader.known_fields(raw, ("family", "params", "seed", "epochs", "checkpoint_every"), "checkpoint")
    family = raw.get("family", "mlp")
    if family not in CHECKPOINT_FAMILIES:
        reader.fail(
            "checkpoint.family",
            f"unknown model family {family!r} (expected one of: {', '.join(CHECKPOINT_FAMILIES)})",
        )
    epochs = reader.whole(raw, "epochs", default=20, where="checkpoint.epochs")
    every = reader.whole(raw, "checkpoint_every", default=5, where="checkpoint.checkpoint_every")
    seed = raw.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        reader.fail("checkpoint.seed", f"{seed!r} must be an integer")
    return CheckpointSpec(
        family=family,
        params=dict(reader.mapping(raw.get("params", {}), "checkpoint.params")),
        seed=seed,
        epochs=epochs,
        checkpoint_every=every,
    )


def _gate(reader: _Reader, raw: Any, dataset: str) -> GateSpec:
    raw = reader.mapping(raw, "registry")
    reader.known_fields(
        raw,
        ("model_name", "checkpoint_model_name", "metric", "margin", "min_skill", "thresholds", "dry_run"),
        "registry",
    )
    metric = raw.get("metric", "mae")
    if metric not in GATE_METRICS:
        reader.fail("registry.metric", f"unknown metric {metric!r} (expected one of: {', '.join(GATE_METRICS)})")
    margin = reader.number(raw, "margin", default=0.05, where="registry.margin", minimum=0.0)
    min_skill = reader.number(raw, "min_skill", default=0.0, where="registry.min_skill")
    if not min_skill < 1:
        reader.fail("registry.min_skill", f"{min_skill!r} must be below 1 (a skill of 1 is a perfect forecast)")
    thresholds = reader.mapping(raw.get("thresholds", {}), "registry.thresholds")
    for name, bounds in thresholds.items():
        where = f"registry.thresholds.{name}"
        if name not in GATE_METRICS:
            reader.fail(where, f"unknown metric {name!r} (expected one of: {', '.join(GATE_METRICS)})")
        bounds = reader.mapping(bounds, where)
        if not bounds or set(bounds) - {"min", "max"}:
            reader.fail(where, "give a min, a max or both")
        for bound, value in bounds.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                reader.fail(f"{where}.{bound}", f"{value!r} must be a number")
    names = {}
    for key, default in (("model_name", f"{dataset}_forecaster"), ("checkpoint_model_name", f"{dataset}_checkpoint")):
        value = raw.get(key, default)
        if not isinstance(value, str) or not value.strip():
            reader.fail(f"registry.{key}", f"{value!r} must be a non-empty string")
        names[key] = value
    if names["model_name"] == names["checkpoint_model_name"]:
        reader.fail("registry.checkpoint_model_name", "must differ from registry.model_name")
    dry_run = raw.get("dry_run", False)
    if not isinstance(dry_run, bool):
        reader.fail("registry.dry_run", f"{dry_run!r} must be true or false")
    return GateSpec(
        metric=metric,
        margin=margin,
        min_skill=min_skill,
        thresholds={
            name: {bound: float(value) for bound, value in bounds.items()} for name, bounds in thresholds.items()
        },
        dry_run=dry_run,
        **names,
    )


def _monitoring(reader: _Reader, raw: Any) -> MonitoringSpec:
    raw = reader.mapping(raw, "monitoring")
    fields = {
        "psi_threshold": 1.0,
        "ks_threshold": 0.5,
        "drifted_share": 0.5,
        "error_ratio": 2.0,
    }
    reader.known_fields(raw, (*fields, "bins", "min_rows", "retrain_after_drifted", "retrain_window"), "monitoring")
    values: dict[str, Any] = {
        key: reader.number(raw, key, default=default, where=f"monitoring.{key}", minimum=0.0, strict=True)
        for key, default in fields.items()
    }
    if values["drifted_share"] > 1:
        reader.fail("monitoring.drifted_share", f"{values['drifted_share']!r} must be a share between 0 and 1")
    values["bins"] = reader.whole(raw, "bins", default=10, where="monitoring.bins")
    if values["bins"] < 2:
        reader.fail("monitoring.bins", f"{values['bins']} must be at least 2")
    values["min_rows"] = reader.whole(raw, "min_rows", default=30, where="monitoring.min_rows")
    values["retrain_after_drifted"] = reader.whole(
        raw, "retrain_after_drifted", default=3, where="monitoring.retrain_after_drifted"
    )
    values["retrain_window"] = reader.whole(raw, "retrain_window", default=7, where="monitoring.retrain_window")
    if values["retrain_after_drifted"] > values["retrain_window"]:
        reader.fail(
            "monitoring.retrain_after_drifted",
            f"{values['retrain_after_drifted']} cannot exceed monitoring.retrain_window ({values['retrain_window']})",
        )
    return MonitoringSpec(**values)


def _schedules(reader: _Reader, raw: Any) -> ScheduleSpec:
    raw = reader.mapping(raw, "schedules")
    reader.known_fields(raw, ("timezone", "retrain", "backfill"), "schedules")
    timezone = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise SpecError(f"{reader.source}: schedules.timezone: unknown time zone {timezone!r}") from error
    crons = {}
    for key, default in (("retrain", "0 2 * * *"), ("backfill", "30 3 * * *")):
        cron = raw.get(key, default)
        if not isinstance(cron, str) or not is_schedulable_cron(cron):
            reader.fail(f"schedules.{key}", f"{cron!r} is not a cron expression such as '0 2 * * *'")
        crons[key] = cron
    return ScheduleSpec(timezone=str(timezone), retrain_cron=crons["retrain"], backfill_cron=crons["backfill"])


def _tuning(reader: _Reader, raw: Any) -> TuningSpec:
    raw = reader.mapping(raw, "tuning")
    reader.known_fields(raw, ("trials", "space"), "tuning")
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


@dataclass
class _Reader:
    """Typed access to raw YAML values that raises SpecError with the field's path.

    Unknown fields (a typo such as ``trainig_window``) are collected in ``problems``
    rather than raised, so that they are reported beside the other problems of the spec.
    """

    source: str
    problems: list[str] = field(default_factory=list)

    def fail(self, where: str, message: str) -> None:
        raise SpecError(f"{self.source}: {where}: {message}")

    def known_fields(self, raw: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
        for key in raw:
            if key not in allowed:
                place = f"{where}.{key}" if where else str(key)
                self.problems.append(f"{self.source}: {place}: unknown field (expected one of: {', '.join(allowed)})")

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

    def number(
        self,
        raw: Mapping[str, Any],
        key: str,
        default: float,
        where: str,
        minimum: float | None = None,
        strict: bool = False,
    ) -> float:
        """A number, at least (or, ``strict``, above) ``minimum`` when one is given."""
        value = raw.get(key, default)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            self.fail(where, f"{value!r} must be a number")
        if minimum is not None and (value <= minimum if strict else value < minimum):
            self.fail(where, f"{value!r} must be {'above' if strict else 'at least'} {minimum:g}")
        return float(value)

    def span(self, value: Any, where: str) -> Span:
        try:
            return Span.parse(value)
        except ValueError as error:
            raise SpecError(f"{self.source}: {where}: {error}") from error

    def date(self, raw: Mapping[str, Any], key: str) -> dt.date:
        value = raw.get(key)
        if isinstance(value, dt.date):
            return value
        try:
            return dt.date.fromisoformat(str(value))
        except ValueError as error:
            raise SpecError(f"{self.source}: {key}: {value!r} is not a date such as 2026-01-01") from error
