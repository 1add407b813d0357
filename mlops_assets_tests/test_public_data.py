"""Real measurements nobody here generated, each added with a spec only (examples/specs/):
monthly US employment by industry, daily Seattle weather, and hourly temperature normals,
from the vega_datasets package. Their history is loaded with one data run; lags find the
right readings at every frequency; a model becomes champion only when it beats the
seasonal-naive forecast; normal months do not drift."""

from __future__ import annotations

import datetime as dt
import math
from importlib import resources

import dagster as dg
import pandas as pd
import pytest

from examples.public_data import SPECS, export
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_spec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.retraining import latest_judgements
from mlops_assets.defs.registry.decisions import decision_for
from mlops_assets.history import load_history
from mlops_assets.resources.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day


def _package_csv(name: str) -> pd.DataFrame:
    with (resources.files("vega_datasets") / "_data" / name).open("rb") as handle:
        return pd.read_csv(handle)


def _load(tmp_path, mlflow_tracking, instance, name: str, first: dt.date, last: dt.date):
    spec = load_spec(SPECS / f"{name}.yaml")
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    export(resources["landing"], spec, first, last)
    load = load_history(spec, resources, instance, first, last, progress=lambda line: None)
    assert load.failed == []
    return spec, resources


def _decisions(spec, instance) -> list:
    decision_key = DatasetKeys(spec).decision(DatasetKeys(spec).forecaster)
    return [
        decision_for(instance, decision_key, key) for key in sorted(instance.get_materialized_partitions(decision_key))
    ]


def _champions_beat_the_naive_forecast(decisions) -> int:
    """Every candidate that became a partition's champion beat the seasonal-naive forecast on its
    hold-out; returns how many did."""
    promoted = [decision for decision in decisions if decision.passed and decision.champion is not None]
    for decision in promoted:
        skill = decision.gate.get("candidate_metrics", {}).get("skill")
        if decision.champion.sha256 == decision.candidate.sha256 and skill is not None:
            assert skill > 0, decision.summary
    return len(promoted)


def test_monthly_employment_history(tmp_path, mlflow_tracking, instance) -> None:
    spec, resources = _load(
        tmp_path, mlflow_tracking, instance, "us_employment", dt.date(2006, 1, 1), dt.date(2008, 6, 1)
    )
    keys = DatasetKeys(spec)
    assert spec.grain.name == "monthly" and str(spec.frequency) == "1mo"
    lake = resources["lake"]
    months = lake.days(lake.table_uri(*keys.table(keys.gold)))
    assert months == spec.grain.between(dt.date(2006, 1, 1), dt.date(2008, 6, 1))
    # One data run built every month of bronze, silver and gold.
    data_runs = {
        record.run_id
        for key in (keys.bronze, keys.silver, keys.gold)
        for record in instance.fetch_materializations(key, limit=1000).records
    }
    assert len(data_runs) == 1

    # The lags are the source's own figures a month and a year earlier, read from the package.
    raw = _package_csv("us-employment.csv").set_index("month")
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [dt.date(2008, 3, 1)]).rows.set_index("series")
    for series in ("construction", "manufacturing", "government"):
        assert gold.loc[series, "employees"] == raw.loc["2008-03-01", series]
        assert gold.loc[series, "employees_lag_1mo"] == raw.loc["2008-02-01", series]
        assert gold.loc[series, "employees_lag_12mo"] == raw.loc["2007-03-01", series]
        assert gold.loc[series, "employees_mean_3mo"] == pytest.approx(
            raw.loc["2007-12-01":"2008-02-01", series].mean()
        )
    assert gold["employees_lag_12mo"].notna().all()

    decisions = _decisions(spec, instance)
    assert _champions_beat_the_naive_forecast(decisions) > 0
    # A year of history before the seasonal-naive forecast exists: no champion before it.
    assert all(decision.champion is None for decision in decisions if decision.partition < "2007-01-01")
    predictions = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), months).rows
    assert predictions["event_date"].min() > dt.date(2007, 1, 1) and not predictions["in_training"].any()
    # Calm months (before the 2008 recession reached payrolls): no month drifted.
    judged = latest_judgements(instance, keys.drift, window=100)
    assert len(judged) >= 12
    assert [partition for partition, reason in judged if reason] == []


def test_daily_weather_in_monthly_partitions(tmp_path, mlflow_tracking, instance) -> None:
    spec, resources = _load(
        tmp_path, mlflow_tracking, instance, "seattle_weather", dt.date(2012, 1, 1), dt.date(2013, 12, 31)
    )
    keys = DatasetKeys(spec)
    lake = resources["lake"]
    raw = _package_csv("seattle-weather.csv").set_index("date")
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [dt.date(2013, 3, 1)]).rows
    first = gold.set_index(gold["observed_on"].dt.strftime("%Y/%m/%d")).loc["2013/03/01"]
    # Lags reach into the month before, by day: the 28th of February is a day before the 1st of March.
    assert first["temp_max_lag_1d"] == raw.loc["2013/02/28", "temp_max"]
    assert first["temp_max_lag_7d"] == raw.loc["2013/02/22", "temp_max"]
    assert first["temp_max_mean_3d"] == pytest.approx(raw.loc["2013/02/26":"2013/02/28", "temp_max"].mean())
    assert gold[[column for column in gold.columns if "_lag_" in column]].notna().all().all()

    assert _champions_beat_the_naive_forecast(_decisions(spec, instance)) > 0
    # The second year's months are compared with the same month a year before: none drifted.
    judged = dict(latest_judgements(instance, keys.drift, window=100))
    second_year = {partition: reason for partition, reason in judged.items() if partition >= "2013-01-01"}
    assert len(second_year) == 12 and not any(second_year.values()), second_year

    # The checkpoint model trains on one reading a day, continuing month after month.
    months = [dt.date(2013, month, 1) for month in (1, 2, 3)]
    defs = build_definitions([spec], resources)
    for month in months:
        materialize_day(defs, resources, instance, [keys.checkpoint], month)
    (record,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=keys.checkpoint, asset_partitions=[months[-1].isoformat()]), limit=1
    ).records
    metadata = record.asset_materialization.metadata
    assert metadata["parent_checkpoint"].value == months[1].isoformat()
    assert metadata["train_rows"].value > 0 and math.isfinite(metadata["mae"].value)
    # Standardised inputs and target: the network's error is of the order of the forecaster's.
    (forecaster,) = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=keys.forecaster, asset_partitions=[months[-1].isoformat()]), limit=1
    ).records
    assert metadata["mae"].value < 3 * forecaster.asset_materialization.metadata["mae"].value


def test_hourly_normals_the_naive_forecast_cannot_be_beaten(tmp_path, mlflow_tracking, instance) -> None:
    """Temperature normals repeat almost exactly from one day to the next: no model beats
    repeating yesterday's hour, and none may serve."""
    spec, resources = _load(
        tmp_path, mlflow_tracking, instance, "city_temperature", dt.date(2010, 3, 1), dt.date(2010, 3, 8)
    )
    decisions = _decisions(spec, instance)
    assert len(decisions) == 8
    assert all(decision.champion is None for decision in decisions)
    beaten = [decision.gate["candidate_metrics"].get("skill") for decision in decisions[1:]]
    assert all(skill is not None and skill <= 0 for skill in beaten), beaten
    assert resources["mlflow_tracking"].registry().champion(spec.gate.model_name) is None
