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
    (path,) = [path for path in bundled_spec_paths() if path.stem == "smart_meter"]
    return yaml.safe_load(path.read_text())


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
        ("{yyyy}/{mm}/{name}", "must contain {dd} exactly once"),
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
    assert "features.lags: 'yesterday' is not a duration" in _error(raw)


def test_load_spec_reports_invalid_yaml(tmp_path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
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
    assert pattern.match("2026/02/28/sub/batch.csv") is None
    assert pattern.day_prefix(dt.date(2026, 3, 4)) == "2026/03/04/"
    with pytest.raises(PathPatternError):
        pattern.path_for(dt.date(2026, 3, 4), "../escape.csv")
