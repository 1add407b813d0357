"""A second dataset needs a spec and no code: another entity, target, cadence and format
go from landing files to predictions through the same assets."""

from __future__ import annotations

import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_spec, spec_document
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.registry.decisions import decision_for
from mlops_assets_tests.conftest import run_lifecycle

SPEC = {
    "name": "store_sales",
    "description": "Units sold per store every 30 minutes.",
    "start_date": "2026-03-01",
    "frequency": "30min",
    "landing": {"prefix": "retail/sales", "path_pattern": "day={yyyy}-{mm}-{dd}/{name}", "formats": ["parquet"]},
    "columns": {"store": "int", "sold_at": "timestamp", "units": "float", "price": "float"},
    "timestamp_column": "sold_at",
    "entity_column": "store",
    "target_column": "units",
    "quality": [
        {"name": "units_present", "expr": "units.notna()", "action": "drop"},
        {"name": "store_known", "expr": "store.notna()", "action": "fail"},
    ],
    "features": {"lags": ["30min", "1h"], "rolling_means": ["2h"], "calendar": ["hour"], "exogenous": ["price"]},
    "model": {"family": "ridge", "params": {"alpha": 1.0}, "seed": 3, "training_window": "2d"},
}
DAYS = [dt.date(2026, 3, 1), dt.date(2026, 3, 2), dt.date(2026, 3, 3)]


@pytest.fixture
def sales_spec(tmp_path):
    path = tmp_path / "store_sales.yaml"
    path.write_text(yaml.safe_dump(spec_document(SPEC)))
    return load_spec(path)


def _sales_file(day: dt.date, stores: int) -> bytes:
    rng = np.random.default_rng(day.toordinal())
    stamps = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=48, freq="30min")
    frame = pd.DataFrame(
        {
            "store": np.repeat(np.arange(stores), len(stamps)),
            "sold_at": np.tile(stamps, stores),
            "units": rng.poisson(20, stores * len(stamps)).astype(float),
            "price": rng.uniform(1, 3, stores * len(stamps)).round(2),
        }
    )
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_a_second_spec_runs_end_to_end(sales_spec, resources, instance) -> None:
    keys = DatasetKeys(sales_spec)
    defs = build_definitions([sales_spec], resources)
    for day in DAYS:
        path = f"retail/sales/{sales_spec.landing.path_pattern.path_for(day, 'pos-export.parquet')}"
        assert path == f"retail/sales/day={day.isoformat()}/pos-export.parquet"
        resources["landing"].write_bytes(path, _sales_file(day, stores=3))
        assert run_lifecycle(defs, sales_spec, instance, day).success

    lake = resources["lake"]
    predictions = lake.read_days(lake.table_uri("serving", "store_sales_predictions"), DAYS).rows
    # A day is scored by the champion for the day before it; the first day has none (its
    # candidate has no seasonal-naive forecast to beat), so at most the last two are scored.
    champions = [decision_for(instance, keys.decision(keys.forecaster), day.isoformat()).champion for day in DAYS]
    assert champions[0] is None
    scored = [day for day, before in zip(DAYS[1:], champions[:-1], strict=True) if before is not None]
    assert scored, "on sales that vary at random, a model near the mean beats repeating a value a day old"
    assert sorted(set(predictions["event_date"])) == scored and len(predictions) == len(scored) * 3 * 48
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [DAYS[1]]).rows
    # Feature names say the length they use; the season (a day of half hours) is a lag too.
    assert {"units_lag_30min", "units_lag_1h", "units_lag_1d", "units_mean_2h", "hour", "price"} <= set(gold.columns)
    assert gold.sort_values(["store", "sold_at"])["units_lag_30min"].notna().all()
    assert instance.get_materialized_partitions(keys.forecaster) == {day.isoformat() for day in DAYS}
