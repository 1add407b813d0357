"""Dataset specs: the YAML files that declare a dataset, as a typed, validated model.

A spec names everything the pipeline needs to know about a dataset (landing layout,
columns and their types, quality rules, feature recipe, model family), so that a
second dataset needs a new YAML file and no new code. The model below is the one
description of that file: its fields, types, defaults and the rules across fields.
A problem is reported as ``<file>: <field>: <what is wrong>``, one line each, every
problem of the file at once.
"""

from __future__ import annotations

import datetime as dt
import json
import typing
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import dagster as dg
import pandas as pd
import pydantic
import yaml
from pydantic import BeforeValidator, ConfigDict, Field, PlainSerializer, WithJsonSchema

from mlops_assets.datasets.path_pattern import PathPattern
from mlops_assets.datasets.periods import Grain, Span, default_season
from mlops_assets.digests import short_digest

ColumnType = Literal["string", "int", "float", "bool", "timestamp", "date"]
FileFormat = Literal["csv", "jsonl", "parquet"]
RuleAction = Literal["warn", "drop", "fail"]
CalendarFeature = Literal["hour", "dayofweek", "dayofyear", "weekofyear", "month", "is_weekend"]
ModelFamily = Literal["hist_gradient_boosting", "random_forest", "ridge"]
GateMetric = Literal["mae", "rmse", "wape", "r2", "skill"]
# Metrics where a larger value is the better model; for the others smaller is better.
HIGHER_IS_BETTER = frozenset({"r2", "skill"})
ROLE_TYPES = {
    "timestamp_column": ("timestamp",),
    "entity_column": ("string", "int"),
    "target_column": ("float", "int"),
}

# The event day a row belongs to: the Dagster daily partition, and the Delta partition
# column of every table. Quality rules can refer to it.
PARTITION_COLUMN = "event_date"


class SpecError(ValueError):
    """A dataset spec is invalid; the message names the file and the field, one line a problem."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or [message]


def _span(value: Any) -> Span:
    return value if isinstance(value, Span) else Span.parse(value)


def _pattern(value: Any) -> PathPattern:
    return value if isinstance(value, PathPattern) else PathPattern(str(value))


def _date(value: Any) -> dt.date:
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as error:
        raise ValueError(f"{value!r} is not a date such as 2026-01-01") from error


def _cron(value: Any) -> str:
    """A cron expression Dagster schedules accept, so a spec fails on load, not at deploy."""
    if isinstance(value, str):
        try:
            dg.ScheduleDefinition(name="spec_check", cron_schedule=value, job_name="spec_check")
            return value
        except dg.DagsterInvalidDefinitionError:
            pass
    raise ValueError(f"{value!r} is not a cron expression such as '0 2 * * *'")


def _timezone(value: Any) -> str:
    try:
        ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(f"unknown time zone {value!r}") from error
    return str(value)


def _text(kind: str) -> WithJsonSchema:
    return WithJsonSchema({"type": "string", "description": kind})


SpanText = Annotated[Span, BeforeValidator(_span), PlainSerializer(str), _text("a length such as 15min, 1h, 1d, 1mo")]
PatternText = Annotated[
    PathPattern, BeforeValidator(_pattern), PlainSerializer(lambda p: p.pattern), _text("a path pattern")
]
DateText = Annotated[dt.date, BeforeValidator(_date), _text("a date such as 2026-01-01")]
Cron = Annotated[str, BeforeValidator(_cron)]
TimeZone = Annotated[str, BeforeValidator(_timezone)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
Whole = Annotated[int, Field(strict=True, ge=1)]
Number = Annotated[float, Field(strict=True)]


class Section(pydantic.BaseModel):
    """A part of a spec: unknown fields are refused, so a typo never passes as a default."""

    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, arbitrary_types_allowed=True
    )


class LandingSpec(Section):
    """Where the dataset's files land: a prefix in the landing zone and a path pattern."""

    prefix: str = Field(description="Folder of the landing zone holding the dataset's files.")
    path_pattern: PatternText = Field(
        description="Where the event day sits in a file's path below the prefix, e.g. {yyyy}/{mm}/{dd}/{name}."
    )
    formats: tuple[FileFormat, ...] = Field(min_length=1, description="File formats accepted.")

    @pydantic.field_validator("prefix")
    @classmethod
    def _relative(cls, prefix: str) -> str:
        prefix = prefix.strip("/")
        if any(segment in ("", ".", "..") for segment in prefix.split("/")):
            raise ValueError(f"{prefix!r} must be a relative path without '.' or '..'")
        return prefix


class QualityRule(Section):
    """An expectation on silver rows: ``expr`` is true for a good row."""

    name: Identifier = Field(description="The rule's name, and its asset check's.")
    expr: str = Field(min_length=1, description="A pandas expression over the columns and event_date.")
    action: RuleAction = Field(description="warn keeps the row, drop removes it, fail stops the partition.")


class FeatureSpec(Section):
    """The gold feature recipe: target lags, trailing means, calendar and exogenous columns.

    Lags and windows are whole numbers of the series' periods. ``season`` is the lag of
    the seasonal-naive forecast every model is measured against; it is always one of
    ``lags`` (added when the spec does not list it).
    """

    lags: tuple[SpanText, ...] = Field(default=(), description="Lags of the target.")
    rolling_means: tuple[SpanText, ...] = Field(default=(), description="Trailing means of the target.")
    calendar: tuple[CalendarFeature, ...] = Field(default=(), description="Calendar fields of the timestamp.")
    exogenous: tuple[str, ...] = Field(default=(), description="Declared columns used as they are.")
    season: SpanText | None = Field(
        default=None, description="Lag of the seasonal-naive forecast; by default set by the frequency."
    )

    @property
    def spans(self) -> tuple[Span, ...]:
        return (*self.lags, *self.rolling_means)


class ModelSpec(Section):
    """The forecaster: model family, its hyper-parameters and how it is trained.

    ``training_window`` is how much history ending on the model's own partition it trains
    on (``window_partitions`` partitions); the latest ``holdout_fraction`` of their periods
    are held out for its metrics and the gate.
    """

    family: ModelFamily = Field(description="The scikit-learn model.")
    params: dict[str, Any] = Field(default_factory=dict, description="The model's hyper-parameters.")
    seed: Annotated[int, Field(strict=True)] = Field(default=0, description="Random seed.")
    training_window: SpanText | None = Field(
        default=None, description="History trained on, in days (daily) or months (monthly); 7d or 12mo by default."
    )
    holdout_fraction: Number = Field(default=0.2, gt=0, lt=1, description="Share of periods held out.")
    _window_partitions: int = pydantic.PrivateAttr(default=0)

    @property
    def window_partitions(self) -> int:
        """The training window in partitions (days, or months), the model's own included."""
        return self._window_partitions


class CheckpointSpec(Section):
    """The continued-training model: each partition continues from the checkpoint before it.

    Each partition runs ``epochs`` passes over the rows that became available for
    training since its parent checkpoint, and stores an intermediate checkpoint every
    ``checkpoint_every`` epochs, from which a killed or retried run resumes.
    """

    family: Literal["mlp"] = Field(default="mlp", description="The continued-training network.")
    params: dict[str, Any] = Field(default_factory=dict, description="The network's hyper-parameters.")
    seed: Annotated[int, Field(strict=True)] = Field(default=0, description="Random seed.")
    epochs: Whole = Field(default=20, description="Passes over a partition's new rows.")
    checkpoint_every: Whole = Field(default=5, description="Epochs between stored checkpoints.")


class GateSpec(Section):
    """When a candidate model may become the champion (the spec's ``registry`` section).

    A candidate passes when it beats the seasonal-naive forecast on its hold-out (skill
    above ``min_skill``), meets the absolute ``thresholds`` (``{metric: {min: x, max: y}}``),
    and is not worse than the champion it would replace by more than ``margin`` (a
    fraction of the champion's ``metric``), both scored on the same hold-out rows. With
    ``dry_run`` the decision is recorded and no alias moves. The forecaster registers as
    ``model_name``, the checkpoint model as ``checkpoint_model_name``.
    """

    model_name: str = Field(default="", description="Registered name of the forecaster; <dataset>_forecaster.")
    checkpoint_model_name: str = Field(
        default="", description="Registered name of the checkpoint model; <dataset>_checkpoint."
    )
    metric: GateMetric = Field(default="mae", description="Metric compared with the champion's.")
    margin: Number = Field(default=0.05, ge=0, description="How much worse than the champion a candidate may be.")
    min_skill: Number = Field(default=0.0, lt=1, description="Skill over the seasonal-naive forecast to exceed.")
    thresholds: dict[GateMetric, dict[Literal["min", "max"], Number]] = Field(
        default_factory=dict, description="Absolute bounds per metric."
    )
    dry_run: Annotated[bool, Field(strict=True)] = Field(default=False, description="Record decisions, move nothing.")


class MonitoringSpec(Section):
    """Drift of a partition against a comparable one (the same partition a year before, or the
    scoring model's hold-out).

    A partition with actuals drifted when its error is ``error_ratio`` times the scoring
    model's hold-out error. Without actuals, a column drifted when its PSI passes
    ``psi_threshold`` and its KS statistic passes ``ks_threshold``, and the partition when
    at least ``drifted_share`` of the monitored features drifted or the predictions did.
    Partitions with fewer than ``min_rows`` rows are not judged. Retraining is requested
    when ``retrain_after_drifted`` of the last ``retrain_window`` judged partitions drifted.
    """

    psi_threshold: Number = Field(default=1.0, gt=0)
    ks_threshold: Number = Field(default=0.5, gt=0)
    drifted_share: Number = Field(default=0.5, gt=0, le=1)
    error_ratio: Number = Field(default=2.0, gt=0)
    bins: Annotated[int, Field(strict=True, ge=2)] = 10
    min_rows: Whole = 30
    retrain_after_drifted: Whole = 3
    retrain_window: Whole = 7


class ScheduleSpec(Section):
    """Nightly retraining and the healing of failed partitions, as cron expressions in ``timezone``."""

    timezone: TimeZone = Field(default="UTC", description="Time zone of the crons.")
    retrain_cron: Cron = Field(default="0 2 * * *", alias="retrain", description="When the nightly retraining runs.")
    backfill_cron: Cron = Field(
        default="30 3 * * *", alias="backfill", description="After which tick failed partitions are retried."
    )


class SearchRange(Section):
    """One hyper-parameter of the search space: a float or int range, or a list of choices."""

    low: Number | None = None
    high: Number | None = None
    log: bool = False
    type: Literal["int", "float"] | None = None
    choices: list[Any] | None = Field(default=None, min_length=1)

    @pydantic.model_validator(mode="after")
    def _range_or_choices(self) -> SearchRange:
        if self.choices is None:
            if self.low is None or self.high is None or not self.low < self.high:
                raise ValueError(
                    f"needs numbers low < high, or a list of choices (got low={self.low}, high={self.high})"
                )
            if self.log and self.low <= 0:
                raise ValueError("a log-scale range must have low > 0")
        return self

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "categorical"
        whole = float(self.low).is_integer() and float(self.high).is_integer()
        return self.type or ("int" if whole else "float")


class TuningSpec(Section):
    """The opt-in hyper-parameter search: ``trials`` Optuna trials over ``space``."""

    trials: Whole = 20
    space: dict[str, SearchRange] = Field(min_length=1, description="Hyper-parameters and their ranges.")


class DatasetSpec(Section):
    """One dataset, as declared in its YAML spec."""

    name: Identifier = Field(description="The dataset's name: asset keys, tables and models are named after it.")
    description: str = Field(default="", description="What the data is.")
    frequency: SpanText = Field(description="How often the series is measured: 15min, 1h, 1d, 1w, 1mo, 1y.")
    partitions: Literal["daily", "monthly"] = Field(default="daily", description="What one partition holds.")
    start_date: DateText = Field(description="The first partition.")
    landing: LandingSpec
    columns: dict[str, ColumnType] = Field(min_length=1, description="Declared columns and their types.")
    timestamp_column: str
    entity_column: str
    target_column: str
    quality: tuple[QualityRule, ...] = ()
    features: FeatureSpec
    model: ModelSpec
    checkpoint: CheckpointSpec = Field(default_factory=CheckpointSpec)
    gate: GateSpec = Field(default_factory=GateSpec, alias="registry")
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    schedules: ScheduleSpec = Field(default_factory=ScheduleSpec)
    tuning: TuningSpec | None = None
    _source: str = pydantic.PrivateAttr(default="<memory>")

    @property
    def source(self) -> str:
        """The file the spec was read from."""
        return self._source

    @property
    def grain(self) -> Grain:
        return Grain(self.partitions)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns without which a landing file cannot be ingested at all."""
        return (self.timestamp_column, self.entity_column, self.target_column)

    @property
    def raw(self) -> dict[str, Any]:
        """The spec as the plain values of a YAML file (defaults filled in)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def code_version(self, base: str, *sections: str) -> str:
        """``base`` (the version of the code) with a digest of the spec sections the asset is
        built from, so that Dagster marks the asset stale when either changes."""
        dumped = self.raw
        return f"{base}-{short_digest(json.dumps({s: dumped.get(s) for s in sections}, sort_keys=True), 8)}"

    @pydantic.field_validator("columns")
    @classmethod
    def _case_twins(cls, columns: dict[str, str]) -> dict[str, str]:
        lowered = [column.lower() for column in columns]
        twins = sorted(column for column in columns if lowered.count(column.lower()) > 1)
        if twins:
            raise ValueError(f"{twins} differ only in case; Delta column names are case-insensitive")
        return columns

    @pydantic.model_validator(mode="after")
    def _across_fields(self) -> DatasetSpec:
        """The rules that tie fields together; fills the defaults that depend on other fields."""
        problems: list[str] = []
        self.start_date = self.grain.floor(self.start_date)
        for role, allowed in ROLE_TYPES.items():
            column = getattr(self, role)
            if column not in self.columns:
                problems.append(f"{role}: {column!r} is not one of the declared columns {sorted(self.columns)}")
            elif self.columns[column] not in allowed:
                problems.append(
                    f"{role}: {column!r} has type {self.columns[column]}; a {role} must be {' or '.join(allowed)}"
                )
        if self.partitions == "daily" and not self.landing.path_pattern.has_day:
            problems.append(
                f"landing.path_pattern: {self.landing.path_pattern.pattern!r} must contain {{dd}} for daily "
                "partitions (or set partitions: monthly)"
            )
        problems += self._rule_problems() + self._feature_problems() + self._model_problems()
        names = {"model_name": f"{self.name}_forecaster", "checkpoint_model_name": f"{self.name}_checkpoint"}
        for key, default in names.items():
            setattr(self.gate, key, getattr(self.gate, key).strip() or default)
        if self.gate.model_name == self.gate.checkpoint_model_name:
            problems.append("registry.checkpoint_model_name: must differ from registry.model_name")
        for metric, bounds in self.gate.thresholds.items():
            if not bounds:
                problems.append(f"registry.thresholds.{metric}: give a min, a max or both")
        if self.monitoring.retrain_after_drifted > self.monitoring.retrain_window:
            problems.append(
                f"monitoring.retrain_after_drifted: {self.monitoring.retrain_after_drifted} cannot exceed "
                f"monitoring.retrain_window ({self.monitoring.retrain_window})"
            )
        if problems:
            raise ValueError("\n".join(problems))
        return self

    def _rule_problems(self) -> list[str]:
        problems = []
        probe = empty_frame(self.columns).assign(**{PARTITION_COLUMN: pd.Series(dtype=object)})
        seen: set[str] = set()
        for index, rule in enumerate(self.quality):
            if rule.name in seen:
                problems.append(f"quality[{index}].name: rule name {rule.name!r} is used twice")
            seen.add(rule.name)
            try:
                probe.eval(rule.expr, engine="python")
            except (NameError, SyntaxError, TypeError, AttributeError, ValueError, KeyError) as error:
                problems.append(
                    f"quality[{index}].expr: cannot evaluate {rule.expr!r} on the declared columns: {error}"
                )
        return problems

    def _feature_problems(self) -> list[str]:
        features, frequency, problems = self.features, self.frequency, []
        for key in ("lags", "rolling_means"):
            for span in getattr(features, key):
                try:
                    span.periods(frequency)
                except ValueError as error:
                    problems.append(f"features.{key}: {error} (frequency {frequency})")
        roles = {self.timestamp_column, self.entity_column, self.target_column}
        for column in features.exogenous:
            if column not in self.columns or column in roles:
                problems.append(
                    f"features.exogenous: {column!r} must be a declared column other than the timestamp, entity "
                    "and target"
                )
        taken = sorted(set(features.calendar) & set(self.columns))
        if taken:
            problems.append(
                f"features.calendar: {taken} would overwrite the declared column(s) of the same name; rename the "
                "column(s) in `columns`"
            )
        features.season = features.season or default_season(frequency)
        try:
            season = features.season.periods(frequency)
        except ValueError as error:
            return [*problems, f"features.season: {error} (frequency {frequency})"]
        if problems:
            return problems
        if not any(lag.periods(frequency) == season for lag in features.lags):
            features.lags = (*features.lags, features.season)
        for key in ("lags", "rolling_means"):
            values = getattr(features, key)
            if len({span.periods(frequency) for span in values}) < len(values):
                problems.append(f"features.{key}: {[str(span) for span in values]} name the same length twice")
        return problems

    def _model_problems(self) -> list[str]:
        window = self.model.training_window or Span.parse("7d" if self.partitions == "daily" else "12mo")
        try:
            self.model._window_partitions = self.grain.count(window)
        except ValueError as error:
            return [f"model.training_window: {error}"]
        return []


def empty_frame(columns: dict[str, str]) -> pd.DataFrame:
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


# The component type a dataset file names; its ``attributes`` are the spec.
DATASET_TYPE = "mlops_assets.components.Dataset"


def spec_document(attributes: dict[str, Any]) -> dict[str, Any]:
    """The YAML document of a dataset file: the Dataset component with ``attributes``."""
    return {"type": DATASET_TYPE, "attributes": attributes}


def bundled_spec_paths() -> list[Path]:
    """The dataset files of the package (``defs/datasets/<name>/defs.yaml``), sorted by name."""
    folder = Path(str(resources.files("mlops_assets"))) / "defs" / "datasets"
    return sorted(folder.glob("*/defs.yaml"))


def load_bundled_specs() -> list[DatasetSpec]:
    """Every dataset spec shipped with the package."""
    return [load_spec(path) for path in bundled_spec_paths()]


def spec_files(locations: Sequence[str | Path]) -> list[Path]:
    """The dataset files at ``locations``: YAML files, and the ``*.yaml`` files of folders."""
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
    check_unique_names(specs)
    return specs


def check_unique_names(specs: Sequence[DatasetSpec]) -> None:
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(f"dataset name(s) {twice} declared by more than one spec")


def source_label(path: Path) -> str:
    """How problems name a dataset file: ``smart_meter/defs.yaml`` for a component folder's file."""
    return f"{path.parent.name}/{path.name}" if path.name == "defs.yaml" else path.name


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and validate one dataset file (a Dataset component document); raise
    :class:`SpecError` naming what is wrong."""
    path = Path(path)
    source = source_label(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        mark = getattr(error, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise SpecError(f"{source}: not valid YAML{where}: {first_line}") from error
    if not isinstance(document, dict) or document.get("type") != DATASET_TYPE:
        found = document.get("type") if isinstance(document, dict) else type(document).__name__
        raise SpecError(f"{source}: type: {found!r} is not a dataset (write `type: {DATASET_TYPE}`)")
    return parse_spec(document.get("attributes"), source=source)


def parse_spec(raw: Any, source: str = "<memory>") -> DatasetSpec:
    """Validate a spec already read from YAML into plain Python values; one :class:`SpecError`
    lists every problem found, one line each (``<file>: <field>: <what is wrong>``)."""
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: attributes: must be a mapping, not {type(raw).__name__}")
    try:
        spec = DatasetSpec.model_validate(raw)
    except pydantic.ValidationError as error:
        problems = spec_problems(error, source)
        raise SpecError("\n".join(problems), problems) from None
    spec._source = source
    return spec


# What a missing field's message adds, beyond "is missing".
MISSING_HINTS = {"frequency": "say how often the series is measured, e.g. 15min, 1h, 1d, 1w or 1mo"}
# The noun of a field whose value is one of a list, for "unknown <noun> 'x'".
NOUNS = {"family": "model family", "partitions": "partition grain", "formats": "format", "calendar": "calendar feature"}


def spec_problems(error: pydantic.ValidationError, source: str) -> list[str]:
    """One ``<source>: <field>: <problem>`` line per problem; unknown fields first."""
    unknown: list[str] = []
    problems: list[str] = []
    details = error.errors(include_url=False)
    for detail in details:
        loc, kind, value = detail["loc"], detail["type"], detail.get("input")
        if kind == "too_short" and any(
            len(other["loc"]) > len(loc) and other["loc"][: len(loc)] == loc for other in details
        ):
            continue  # a list left empty only because its items were refused
        where = _field_path(loc)
        if kind == "extra_forbidden":
            expected = ", ".join(_field_names(DatasetSpec, loc[:-1]))
            unknown.append(f"{source}: {where}: unknown field (expected one of: {expected})")
            continue
        for line in _message(detail, loc, kind, value).splitlines():
            problems.append(f"{source}: {where}: {line}" if where else f"{source}: {line}")
    return [*unknown, *problems]


def _message(detail: Any, loc: tuple, kind: str, value: Any) -> str:
    field = next((str(part) for part in reversed(loc) if isinstance(part, str)), "spec")
    if kind == "missing":
        hint = MISSING_HINTS.get(field)
        return f"is missing: {hint}" if hint else "is missing"
    if kind == "literal_error":
        expected = detail["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        noun = NOUNS.get(field, field)
        if loc[:1] == ("columns",):
            noun = "type"
        elif "thresholds" in loc:
            noun = "metric" if loc.index("thresholds") == len(loc) - 3 else "bound"
        return f"unknown {noun} {value!r} (expected one of: {expected})"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{value!r} must be a whole number"
    if kind in ("float_type", "float_parsing"):
        return f"{value!r} must be a number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{value!r} must be true or false"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"must be a mapping, not {type(value).__name__}"
    if kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        return f"{value!r} {detail['msg'].replace('Input should be', 'must be')}"
    if kind == "too_short":
        return "list at least one"
    if kind == "string_pattern_mismatch":
        return f"{value!r} must be an identifier (letters, digits, _)"
    if kind == "value_error":
        return str(detail["ctx"]["error"])
    return detail["msg"]


def _field_path(loc: tuple) -> str:
    """``("quality", 0, "action")`` -> ``quality[0].action``; a list item's own index is left
    out (the message quotes the item)."""
    parts = [part for part in (loc[:-1] if loc and isinstance(loc[-1], int) else loc) if part != "[key]"]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _field_names(model: type[pydantic.BaseModel], loc: tuple) -> list[str]:
    """The YAML names of the fields of the section at ``loc``."""
    for part in loc:
        if isinstance(part, int):
            continue
        field = next((f for name, f in model.model_fields.items() if (f.alias or name) == part), None)
        if field is None:
            break
        model = next(
            (
                arg
                for arg in _flatten(field.annotation)
                if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel)
            ),
            model,
        )
    return [field.alias or name for name, field in model.model_fields.items()]


def _flatten(annotation: Any) -> list[Any]:
    args = typing.get_args(annotation)
    return [annotation, *(inner for arg in args for inner in _flatten(arg))]
