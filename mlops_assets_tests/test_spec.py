"""Dataset specs: the bundled spec loads, and bad specs fail with errors that say where."""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import pytest
import yaml

from mlops_assets.datasets.path_pattern import PathPattern, PathPatternError
from mlops_assets.datasets.spec import SpecError, bundled_spec_paths, load_spec, parse_spec


@pytest.fixture
def raw() -> dict[str, Any]:
    (path,) = [path for path in bundled_spec_paths() if path.parent.name == "smart_meter"]
    return yaml.safe_load(path.read_text())["attributes"]


def test_bundled_spec_declares_the_smart_meter_dataset(raw: dict[str, Any]) -> None:
    spec = parse_spec(raw, source="smart_meter.yaml")
    assert spec.columns == {"meter_id": "string", "timestamp": "timestamp", "kwh": "float", "temperature": "float"}
    assert spec.required_columns == ("timestamp", "meter_id", "kwh")
    assert {rule.action for rule in spec.quality} == {"warn", "drop", "fail"}


def _error(raw: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source="broken.yaml")
    return str(caught.value)


def test_unknown_column_type_is_named(raw: dict[str, Any]) -> None:
    raw["columns"]["kwh"] = "decimal128"
    message = _error(raw)
    assert message.startswith("broken.yaml: columns.kwh:")
    assert "'decimal128'" in message and "float" in message


def test_missing_target_is_reported(raw: dict[str, Any]) -> None:
    del raw["target_column"]
    assert _error(raw) == "broken.yaml: target_column: is missing"


def test_target_that_is_not_a_declared_column_is_reported(raw: dict[str, Any]) -> None:
    raw["target_column"] = "watts"
    message = _error(raw)
    assert message.startswith("broken.yaml: target_column: 'watts' is not one of the declared columns")


def test_target_must_be_numeric(raw: dict[str, Any]) -> None:
    raw["target_column"] = "meter_id"
    assert "target_column" in _error(raw) and "float or int" in _error(raw)


@pytest.mark.parametrize(
    ("pattern", "complaint"),
    [
        ("{yyyy}/{mm}/{name}", "must contain {dd} for daily partitions"),
        ("{yyyy}/{mm}/{dd}/{dd}/{name}", "must contain {dd} at most once"),
        ("{yyyy}/{dd}/{name}", "must contain {mm} exactly once"),
        ("{yyyy}/{mm}/{dd}/{name}/{yyyy}", "must contain {yyyy} exactly once"),
        ("{yyyy}/{mm}/{dd}/{name}.csv", "must end with the segment {name}"),
        ("/{yyyy}/{mm}/{dd}/{name}", "must be a relative path"),
        ("{yyyy}/../{mm}/{dd}/{name}", "'..' segment"),
        ("{yyyy}/{mm}/{dd}/{hour}/{name}", "unknown placeholder(s) ['hour']"),
        ("{yyyy}/{mm}/{dd/{name}", "unbalanced braces"),
        ("{yyyy}{mm}{dd}-{name}", "must end with the segment {name}"),
    ],
)
def test_bad_path_pattern_is_reported(raw: dict[str, Any], pattern: str, complaint: str) -> None:
    raw["landing"]["path_pattern"] = pattern
    message = _error(raw)
    assert message.startswith("broken.yaml: landing.path_pattern:")
    assert complaint in message


def test_rule_on_an_unknown_column_is_reported(raw: dict[str, Any]) -> None:
    raw["quality"].append({"name": "voltage_ok", "expr": "voltage > 200", "action": "warn"})
    message = _error(raw)
    assert message.startswith(f"broken.yaml: quality[{len(raw['quality']) - 1}].expr:")
    assert "voltage" in message


def test_unknown_rule_action_is_reported(raw: dict[str, Any]) -> None:
    raw["quality"][0]["action"] = "ignore"
    assert "quality[0].action: unknown action 'ignore'" in _error(raw)


def test_unknown_model_family_is_reported(raw: dict[str, Any]) -> None:
    raw["model"]["family"] = "transformer"
    assert "model.family: unknown model family 'transformer'" in _error(raw)


def test_bad_lag_duration_is_reported(raw: dict[str, Any]) -> None:
    raw["features"]["lags"] = ["1h", "yesterday"]
    assert "features.lags: 'yesterday' is not a length such as 15min, 1h, 1d, 1w, 1mo or 1y" in _error(raw)


def test_a_lag_must_be_a_whole_number_of_periods(raw: dict[str, Any]) -> None:
    raw["features"]["lags"] = ["90min"]
    assert "features.lags: 90min is not a whole number of 1h periods" in _error(raw)
    raw["features"]["lags"] = ["1mo"]
    assert "features.lags: 1mo cannot be counted in 1h periods" in _error(raw)


def test_the_frequency_is_required(raw: dict[str, Any]) -> None:
    del raw["frequency"]
    assert _error(raw).startswith("broken.yaml: frequency: is missing: say how often the series is measured")


def test_the_season_is_always_a_lag_and_names_say_their_length(raw: dict[str, Any]) -> None:
    raw["features"]["lags"] = ["1h", "2h"]
    spec = parse_spec(raw)
    assert [lag.label for lag in spec.features.lags] == ["1h", "2h", "1d"]
    raw["features"]["lags"] = ["1h", "24h"]
    assert [lag.label for lag in parse_spec(raw).features.lags] == ["1h", "24h"], "24h is the 1d season already"


def test_a_typo_in_a_field_name_is_reported_with_every_other_problem(raw: dict[str, Any]) -> None:
    raw["model"]["trainig_window"] = "7d"
    raw["monitoring"]["psi_treshold"] = 1.0
    raw["columns"]["kwh"] = "decimal128"
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source="broken.yaml")
    assert caught.value.problems == [
        "broken.yaml: model.trainig_window: unknown field (expected one of: family, params, seed, "
        "training_window, holdout_fraction)",
        "broken.yaml: monitoring.psi_treshold: unknown field (expected one of: psi_threshold, ks_threshold, "
        "drifted_share, error_ratio, bins, min_rows, retrain_after_drifted, retrain_window)",
        "broken.yaml: columns.kwh: unknown type 'decimal128' (expected one of: string, int, float, bool, "
        "timestamp, date)",
    ]
    assert str(caught.value) == "\n".join(caught.value.problems)


def test_columns_that_differ_only_in_case_are_refused(raw: dict[str, Any]) -> None:
    raw["columns"]["KWH"] = "float"
    assert "columns: ['KWH', 'kwh'] differ only in case" in _error(raw)


def test_monthly_partitions_take_a_pattern_without_a_day_and_a_window_in_months(raw: dict[str, Any]) -> None:
    raw.update(partitions="monthly", frequency="1mo", start_date="2026-01-15")
    raw["landing"]["path_pattern"] = "{yyyy}-{mm}/{name}"
    raw["features"] = {"lags": ["1mo", "2mo"], "rolling_means": ["3mo"], "calendar": ["month"]}
    raw["model"]["training_window"] = "2y"
    del raw["checkpoint"]
    raw["quality"] = [rule for rule in raw["quality"] if "event_date" not in rule["expr"]]
    spec = parse_spec(raw)
    assert spec.start_date == dt.date(2026, 1, 1), "a monthly partition starts on the first"
    assert spec.model.window_partitions == 24
    assert [lag.label for lag in spec.features.lags] == ["1mo", "2mo", "12mo"]
    raw["model"]["training_window"] = "10d"
    assert "model.training_window: 10d is not a whole number of months" in _error(raw)


def test_load_spec_reports_invalid_yaml(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("type: mlops_assets.components.Dataset\nattributes:\n  name: [unclosed\n")
    with pytest.raises(SpecError, match=r"^bad.yaml: not valid YAML"):
        load_spec(path)


def test_a_second_dataset_needs_only_a_spec(raw: dict[str, Any]) -> None:
    other = copy.deepcopy(raw)
    other.update(name="store_sales", entity_column="store", target_column="units", timestamp_column="sold_at")
    other["columns"] = {"store": "int", "sold_at": "timestamp", "units": "int", "price": "float"}
    other["quality"] = [{"name": "units_present", "expr": "units.notna()", "action": "drop"}]
    other["features"]["exogenous"] = ["price"]
    spec = parse_spec(other)
    assert spec.required_columns == ("sold_at", "store", "units")


def test_path_pattern_matches_days_and_refuses_escapes() -> None:
    pattern = PathPattern("{yyyy}/{mm}/{dd}/{name}")
    matched = pattern.match("2026/02/28/batch-1.csv")
    assert matched is not None and matched.event_date == dt.date(2026, 2, 28) and matched.name == "batch-1.csv"
    assert pattern.match("2026/02/30/batch.csv") is None
    assert pattern.match("2026/02/28/../batch.csv") is None
    nested = pattern.match("2026/02/28/sub/batch.csv")  # listed, to be quarantined with its reason
    assert nested is not None and nested.subfolder == "sub/" and nested.name == "batch.csv"
    assert pattern.prefix(dt.date(2026, 3, 4)) == "2026/03/04/"
    assert pattern.prefix(dt.date(2026, 3, 4), through="mm") == "2026/03/"
    assert PathPattern("day={yyyy}-{mm}-{dd}/{name}").prefix(dt.date(2026, 3, 4), through="mm") == "day=2026-03-"
    monthly = PathPattern("{yyyy}/{mm}/{name}")
    assert monthly.match("2026/02/batch.csv").event_date == dt.date(2026, 2, 1)
    assert monthly.path_for(dt.date(2026, 2, 17), "batch.csv") == "2026/02/batch.csv"
    with pytest.raises(PathPatternError):
        pattern.path_for(dt.date(2026, 3, 4), "../escape.csv")


def test_a_calendar_feature_may_not_overwrite_a_column(raw: dict[str, Any]) -> None:
    raw["columns"]["month"] = "timestamp"
    raw["features"]["calendar"] = ["month"]
    assert "features.calendar: ['month'] would overwrite the declared column(s) of the same name" in _error(raw)


@pytest.mark.parametrize(("field", "value"), [("retrain", "0 2 * *"), ("backfill", "61 * * * *"), ("retrain", 7)])
def test_a_cron_that_dagster_cannot_schedule_is_reported(raw: dict[str, Any], field: str, value: Any) -> None:
    raw["schedules"][field] = value
    assert _error(raw) == f"broken.yaml: schedules.{field}: {value!r} is not a cron expression such as '0 2 * * *'"


def test_an_unknown_time_zone_is_reported(raw: dict[str, Any]) -> None:
    raw["schedules"]["timezone"] = "Europe/Atlantis"
    assert _error(raw) == "broken.yaml: schedules.timezone: unknown time zone 'Europe/Atlantis'"


def test_wrong_types_and_values_in_every_section_are_reported_at_once(raw: dict[str, Any]) -> None:
    raw["model"]["seed"] = "x"
    raw["checkpoint"]["epochs"] = True
    raw["registry"]["dry_run"] = "yes"
    raw["registry"]["thresholds"] = {"speed": {"max": 1}, "wape": {"maxx": 2}}
    raw["landing"]["formats"] = ["xml"]
    raw["tuning"]["space"]["learning_rate"] = {"low": 3, "high": 1}
    with pytest.raises(SpecError) as caught:
        parse_spec(raw, source="broken.yaml")
    problems = caught.value.problems
    assert len(problems) == 7, problems
    for expected in (
        "broken.yaml: model.seed: 'x' must be a whole number",
        "broken.yaml: checkpoint.epochs: True must be a whole number",
        "broken.yaml: registry.dry_run: 'yes' must be true or false",
        "broken.yaml: registry.thresholds.speed: unknown metric 'speed'",
        "broken.yaml: registry.thresholds.wape.maxx: unknown bound 'maxx'",
        "broken.yaml: landing.formats: unknown format 'xml'",
        "broken.yaml: tuning.space.learning_rate: needs numbers low < high",
    ):
        assert any(problem.startswith(expected) for problem in problems), (expected, problems)
