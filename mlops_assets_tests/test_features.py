"""Gold features and silver quality rules on small frames with known answers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlops_assets.datasets.spec import QualityRule, parse_spec
from mlops_assets.defs.lakehouse.features import build_features, build_features_for_days, feature_columns
from mlops_assets.defs.lakehouse.quality import apply_rules

DAY1, DAY2 = dt.date(2026, 1, 3), dt.date(2026, 1, 4)


def _silver(missing_hours: tuple[int, ...] = ()) -> pd.DataFrame:
    """One meter, 48 hours over two days, whose load at hour i is i kWh."""
    hours = [hour for hour in range(48) if hour not in missing_hours]
    stamps = pd.Timestamp(DAY1, tz="UTC") + pd.to_timedelta(hours, unit="h")
    return pd.DataFrame(
        {
            "meter_id": "M1",
            "timestamp": stamps.astype("datetime64[us, UTC]"),
            "kwh": np.array(hours, dtype=float),
            "temperature": 5.0,
            "event_date": [stamp.date() for stamp in stamps],
        }
    )


def test_lags_and_trailing_means_look_only_backwards_in_time(spec) -> None:
    gold = build_features(_silver(), DAY2, spec).set_index("kwh")
    assert list(gold.index) == [float(hour) for hour in range(24, 48)]
    assert (gold["kwh_lag_1h"] == gold.index - 1).all()
    assert (gold["kwh_lag_24h"] == gold.index - 24).all()
    assert gold["kwh_mean_3h"].to_numpy() == pytest.approx(gold.index - 2)
    assert gold["kwh_mean_24h"].to_numpy() == pytest.approx(gold.index - 12.5)
    assert (gold["hour"] == np.arange(24)).all()
    assert set(gold["dayofweek"]) == {DAY2.weekday()}
    assert list(build_features(_silver(), DAY2, spec).columns[4:]) == feature_columns(spec)


def test_a_missing_hour_leaves_its_lag_empty_instead_of_shifting(spec) -> None:
    gold = build_features(_silver(missing_hours=(30,)), DAY2, spec).set_index("kwh")
    assert np.isnan(gold.loc[31.0, "kwh_lag_1h"])
    assert np.isnan(gold.loc[32.0, "kwh_lag_2h"])
    assert gold.loc[33.0, "kwh_mean_3h"] == pytest.approx((31 + 32) / 2)


def test_first_day_has_no_24h_lag(spec) -> None:
    gold = build_features(_silver(), DAY1, spec)
    assert gold["kwh_lag_24h"].isna().all()
    assert gold["kwh_lag_1h"].isna().sum() == 1


def test_rules_warn_drop_and_report_failures() -> None:
    rows = pd.DataFrame({"kwh": [1.0, None, -2.0, 3.0], "temperature": [1.0, 2.0, 99.0, None]})
    rules = [
        QualityRule(name="kwh_present", expr="kwh.notna()", action="drop"),
        QualityRule(name="kwh_in_range", expr="kwh >= 0 and kwh <= 50", action="drop"),
        QualityRule(name="temperature_plausible", expr="temperature.between(-40, 50)", action="warn"),
    ]
    kept, outcomes = apply_rules(rows, rules)
    assert kept["kwh"].tolist() == [1.0, 3.0]
    assert {outcome.rule.name: outcome.rows_failed for outcome in outcomes} == {
        "kwh_present": 1,
        "kwh_in_range": 2,
        "temperature_plausible": 2,
    }
    assert all(outcome.rows_checked == 4 for outcome in outcomes)


def _series_spec(spec, frequency: str, lags: list[str], rolling: list[str], partitions: str = "daily"):
    """The bundled spec turned into a series measured every ``frequency``."""
    raw = dict(spec.raw)
    raw.update(frequency=frequency, partitions=partitions)
    raw["features"] = {"lags": lags, "rolling_means": rolling, "calendar": ["month"]}
    raw["model"] = {**raw["model"], "training_window": "12mo" if partitions == "monthly" else "7d"}
    raw["quality"] = []
    if partitions == "monthly":
        raw["landing"] = {**raw["landing"], "path_pattern": "{yyyy}/{mm}/{name}"}
    return parse_spec(raw)


def test_a_monthly_lag_finds_last_month_whatever_its_length(spec) -> None:
    monthly = _series_spec(spec, "1mo", ["1mo"], ["2mo"], partitions="monthly")
    months = pd.date_range("2025-01-01", periods=15, freq="MS", tz="UTC")
    silver = pd.DataFrame(
        {
            "meter_id": "M1",
            "timestamp": months.astype("datetime64[us, UTC]"),
            "kwh": np.arange(15, dtype=float),
            "temperature": 1.0,
            "event_date": [stamp.date() for stamp in months],
        }
    )
    march = dt.date(2026, 3, 1)
    (row,) = build_features(silver, march, monthly).to_dict("records")
    assert row["kwh"] == 14.0
    assert row["kwh_lag_1mo"] == 13.0, "February is 28 days long: a 30-day lag would miss it"
    assert row["kwh_lag_12mo"] == 2.0, "the season (a year) is a lag of its own"
    assert row["kwh_mean_2mo"] == pytest.approx((12 + 13) / 2)
    assert feature_columns(monthly) == ["kwh_lag_1mo", "kwh_lag_12mo", "kwh_mean_2mo", "month"]


def test_a_daily_series_names_its_lags_in_days_and_finds_them(spec) -> None:
    daily = _series_spec(spec, "1d", ["1d", "2d"], ["3d"])
    days = pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")
    # Readings taken at noon: the day's period holds them wherever in the day they fall.
    stamps = days + pd.Timedelta(hours=12)
    silver = pd.DataFrame(
        {
            "meter_id": "M1",
            "timestamp": stamps.astype("datetime64[us, UTC]"),
            "kwh": np.arange(10, dtype=float) * 10,
            "temperature": 1.0,
            "event_date": [stamp.date() for stamp in days],
        }
    )
    (row,) = build_features(silver, dt.date(2026, 1, 9), daily).to_dict("records")
    assert row["kwh_lag_1d"] == 70.0 and row["kwh_lag_2d"] == 60.0 and row["kwh_lag_7d"] == 10.0
    assert row["kwh_mean_3d"] == pytest.approx(60.0)
    assert "kwh_lag_24h" not in feature_columns(daily)


def test_a_day_built_alone_equals_the_same_day_built_inside_a_range(spec) -> None:
    """Bit for bit: a late day rebuilds its neighbours one at a time, a backfill builds them in one
    go, and models trained on either must be the same model."""
    rng = np.random.default_rng(4)
    stamps = pd.date_range("2026-01-01", periods=24 * 30, freq="h", tz="UTC")
    silver = pd.DataFrame(
        {
            "meter_id": np.repeat(["M1", "M2"], len(stamps)),
            "timestamp": pd.DatetimeIndex(np.tile(stamps, 2)).astype("datetime64[us, UTC]"),
            "kwh": rng.gamma(2.0, 0.37, 2 * len(stamps)),
            "temperature": rng.normal(5, 3, 2 * len(stamps)),
        }
    )
    silver["event_date"] = silver["timestamp"].dt.date
    day = dt.date(2026, 1, 29)
    alone = build_features(silver[silver["event_date"] >= day - dt.timedelta(days=1)], day, spec)
    days = sorted(set(silver["event_date"]))
    inside = build_features_for_days(silver, days, spec)
    inside = inside[inside["event_date"] == day].reset_index(drop=True)
    for column in feature_columns(spec):
        assert np.array_equal(alone[column].to_numpy(), inside[column].to_numpy(), equal_nan=True), column


def test_a_quarter_hourly_series_counts_its_lags_in_quarter_hours(spec) -> None:
    quarter = _series_spec(spec, "15min", ["15min", "1h"], ["30min"])
    stamps = pd.date_range("2026-01-01", periods=4 * 24 * 2, freq="15min", tz="UTC")
    silver = pd.DataFrame(
        {
            "meter_id": "M1",
            "timestamp": stamps.astype("datetime64[us, UTC]"),
            "kwh": np.arange(len(stamps), dtype=float),
            "temperature": 1.0,
            "event_date": [stamp.date() for stamp in stamps],
        }
    )
    gold = build_features(silver, dt.date(2026, 1, 2), quarter).set_index("kwh")
    assert (gold["kwh_lag_15min"] == gold.index - 1).all()
    assert (gold["kwh_lag_1h"] == gold.index - 4).all()
    assert (gold["kwh_lag_1d"] == gold.index - 96).all(), "the season of a sub-daily series is a day"
    assert gold["kwh_mean_30min"].to_numpy() == pytest.approx(gold.index - 1.5)
