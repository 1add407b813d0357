"""Bronze ingestion on real Delta tables: idempotent per file version, bad files quarantined,
and every simulated record accounted for."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.bronze import SOURCE_ETAG, SOURCE_FILE
from mlops_assets.landing.simulate import simulate
from mlops_assets_tests.conftest import materialize_day

DAY = dt.date(2026, 1, 5)


def _bronze_rows(resources: dict[str, Any], spec: DatasetSpec, day: dt.date = DAY) -> pd.DataFrame:
    lake = resources["lake"]
    keys = DatasetKeys(spec)
    return lake.read_days(lake.table_uri(*keys.table(keys.bronze)), [day]).rows


def _materializations(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list[dg.AssetMaterialization]:
    return [event.materialization for event in result.get_asset_materialization_events() if event.asset_key == key]


def test_same_file_twice_is_ingested_once(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    report = simulate(resources["landing"], spec, DAY, days=1, meters=4, meters_per_file=2, dirty_share=0.0)
    first = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    rows_after_first = _bronze_rows(resources, spec)
    assert len(rows_after_first) == report.records == 4 * 24

    second = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    assert second.success
    assert _materializations(second, keys.bronze) == []
    pd.testing.assert_frame_equal(_bronze_rows(resources, spec), rows_after_first)
    assert len(_materializations(first, keys.bronze)) == 1


def test_a_replaced_file_is_ingested_again_as_a_new_version(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    simulate(resources["landing"], spec, DAY, days=1, meters=2, meters_per_file=2, dirty_share=0.0)
    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    (path,) = {*(_bronze_rows(resources, spec)[SOURCE_FILE])}
    landing_file = Path(resources["landing"].root.removeprefix("file://")) / path
    landing_file.write_text(landing_file.read_text().replace("MTR-00001", "MTR-00009"))

    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    rows = _bronze_rows(resources, spec)
    assert rows.groupby(SOURCE_FILE)[SOURCE_ETAG].nunique().to_dict() == {path: 2}
    assert len(rows) == 2 * 2 * 24
    assert (rows["meter_id"] == "MTR-00009").sum() == 24


def test_bad_files_are_quarantined_and_every_record_is_accounted_for(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    report = simulate(
        resources["landing"], spec, DAY, days=2, meters=6, meters_per_file=3, dirty_share=0.05, bad_files=2
    )
    assert {file.kind for file in report.bad_files} == {"corrupt", "wrong_schema"}
    days = sorted({file.event_date for file in report.files})
    for day in days:
        assert materialize_day(defs, resources, instance, [keys.bronze], day).success

    bronze_rows = sum(len(_bronze_rows(resources, spec, day)) for day in days)
    quarantined = resources["landing"].quarantined(spec)
    assert sorted(entry["path"] for entry in quarantined) == sorted(file.path for file in report.bad_files)
    assert bronze_rows + sum(entry["records"] for entry in quarantined) == report.records

    # Good files of the same days landed; bad ones left the landing zone with their reasons.
    ingested = {path for day in days for path in _bronze_rows(resources, spec, day)[SOURCE_FILE]}
    assert ingested == {file.path for file in report.files if file.kind == "good"}
    assert {file.path for file in resources["landing"].list_dataset(spec)} == ingested
    reasons = [entry["reason"] for entry in quarantined]
    assert any("UnicodeDecodeError" in reason for reason in reasons)
    assert any("missing required column(s) ['kwh']" in reason for reason in reasons)
    by_path = {entry["path"]: entry for entry in quarantined}
    for file in report.bad_files:
        kept = Path(by_path[file.path]["quarantined_to"].removeprefix("file://"))
        assert kept.name == Path(file.path).name and kept.read_bytes()
        assert by_path[file.path]["records"] == file.records


def test_quarantining_the_same_path_twice_keeps_both_versions(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, 'broken.csv')}"
    for attempt in ("first", "second, longer"):
        resources["landing"].write_bytes(path, f"not,the,columns\n{attempt},1,2\n".encode())
        materialize_day(defs, resources, instance, [keys.bronze], DAY)
    quarantined = resources["landing"].quarantined(spec)
    assert [entry["path"] for entry in quarantined] == [path, path]
    assert len({entry["etag"] for entry in quarantined}) == 2
    assert resources["landing"].list_partition(spec, DAY) == []


def test_a_file_with_only_a_header_is_quarantined_not_retried(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, 'header-only.csv')}"
    resources["landing"].write_bytes(path, b"meter_id,timestamp,kwh,temperature\n")
    first = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    assert _materializations(first, keys.bronze) == []
    (entry,) = resources["landing"].quarantined(spec)
    assert entry["reason"] == "the file holds no records" and entry["records"] == 0
    assert resources["landing"].list_partition(spec, DAY) == []


def test_unparseable_values_are_rescued_not_lost(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, 'manual.csv')}"
    resources["landing"].write_bytes(
        path,
        b"meter_id,timestamp,kwh,temperature,firmware\n"
        b"MTR-1,2026-01-05T00:00:00Z,1.5,3.0,v2\n"
        b"MTR-1,2026-01-05T01:00:00Z,n/a,3.5,v2\n",
    )
    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    rows = _bronze_rows(resources, spec).sort_values("timestamp").reset_index(drop=True)
    assert rows["kwh"].isna().tolist() == [False, True]
    assert json.loads(rows.loc[1, "_rescued"]) == {"kwh": "n/a"}
    assert rows["firmware"].tolist() == ["v2", "v2"]


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_json_lines_and_parquet_files_land_like_csv(defs, resources, instance, spec, file_format) -> None:
    keys = DatasetKeys(spec)
    report = simulate(
        resources["landing"], spec, DAY, days=1, meters=4, meters_per_file=2, bad_files=1, file_format=file_format
    )
    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    rows = _bronze_rows(resources, spec)
    (bad,) = report.bad_files
    assert len(rows) == report.records - bad.records
    assert rows["kwh"].dtype == "float64" and str(rows["timestamp"].dtype).startswith("datetime64")
    assert [entry["path"] for entry in resources["landing"].quarantined(spec)] == [bad.path]


def test_columns_the_spec_does_not_declare_are_reported(defs, resources, instance, spec) -> None:
    """A feed that starts sending a new column: the rows land, and the run says which columns
    silver will leave out until the spec declares them."""
    keys = DatasetKeys(spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, 'with-extras.csv')}"
    rows = "".join(f"MTR-00001,{DAY.isoformat()}T{hour:02d}:00:00Z,1.5,3.0,230,ok\n" for hour in range(24))
    resources["landing"].write_bytes(path, ("meter_id,timestamp,kwh,temperature,voltage,status\n" + rows).encode())
    result = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    (materialization,) = _materializations(result, keys.bronze)
    assert materialization.metadata["undeclared_columns"].value == ["status", "voltage"]
    (ingested,) = materialization.metadata["ingested"].value
    assert ingested["undeclared_columns"] == ["voltage", "status"]
    warnings = [
        entry.user_message
        for entry in instance.all_logs(result.run_id)
        if entry.level >= 30 and "does not declare" in entry.user_message
    ]
    assert len(warnings) == 1 and "['voltage', 'status']" in warnings[0]
    assert len(_bronze_rows(resources, spec)) == 24
