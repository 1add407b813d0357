"""Bronze ingestion on real Delta tables: idempotent per file version, bad files quarantined,
and every simulated record accounted for."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.lakehouse.bronze import SOURCE_ETAG, SOURCE_FILE, ingest_days
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.simulate import simulate

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
    landing_file = Path(resources["landing"].location.uri.removeprefix("file://")) / path
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


def _readings(hours: int, *extra: str) -> str:
    return "".join(
        f"MTR-00001,{DAY.isoformat()}T{hour:02d}:00:00Z,1.5,3.0{''.join(',' + value for value in extra)}\n"
        for hour in range(hours)
    )


def test_hostile_headers_are_quarantined_and_the_good_file_of_the_day_still_lands(
    defs, resources, instance, spec
) -> None:
    """Column names Delta cannot hold (twins that differ only in case, a case variant of a
    declared column, the table's own columns) are quarantined instead of failing the write for
    the whole day, and a 2 MB header gives a short reason."""
    keys = DatasetKeys(spec)
    landing = resources["landing"]

    def put(name: str, text: str) -> None:
        landing.write_bytes(f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, name)}", text.encode())

    put("good.csv", "meter_id,timestamp,kwh,temperature\n" + _readings(24))
    put("twins.csv", "meter_id,timestamp,kwh,temperature,STATUS,status\n" + _readings(5, "a", "b"))
    put("case.csv", "meter_id,timestamp,kwh,TEMPERATURE\n" + _readings(6))
    put("reserved.csv", "meter_id,timestamp,kwh,temperature,_Source_File\n" + _readings(7, "x"))
    wide = ",".join(f"unknown_column_{index:06d}" for index in range(100_000))
    put("wide.csv", "meter_id,timestamp,kwh,temperature," + wide + "\n" + _readings(8, *["0"] * 100_000))
    put("missing.csv", "meter_id,timestamp," + wide + "\n" + "MTR-1,2026-01-05T00:00:00Z" + ",0" * 100_000 + "\n")
    put("extras.csv", "meter_id,timestamp,kwh,temperature,voltage\n" + _readings(9, "230"))

    result = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    assert result.success
    reasons = {Path(entry["path"]).name: entry for entry in landing.quarantined(spec)}
    assert set(reasons) == {"twins.csv", "case.csv", "reserved.csv", "missing.csv", "wide.csv"}
    assert "differ only in case ['STATUS', 'status']" in reasons["twins.csv"]["reason"]
    assert "TEMPERATURE (declared: temperature)" in reasons["case.csv"]["reason"]
    assert "['_Source_File'] are reserved" in reasons["reserved.csv"]["reason"]
    assert len(reasons["missing.csv"]["reason"]) < 600 and reasons["missing.csv"]["reason"].startswith("missing")
    assert (
        len(reasons["wide.csv"]["reason"]) < 600
        and "100,000 columns the spec does not declare" in (reasons["wide.csv"]["reason"])
    )
    rows = _bronze_rows(resources, spec)
    assert sorted(Path(path).name for path in rows[SOURCE_FILE].unique()) == ["extras.csv", "good.csv"]
    assert len(rows) + sum(entry["records"] for entry in reasons.values()) == 24 + 5 + 6 + 7 + 8 + 1 + 9
    (materialization,) = _materializations(result, keys.bronze)
    assert len(json.dumps({key: value.value for key, value in materialization.metadata.items()})) < 50_000


def test_gzip_files_are_read_and_counted_by_what_they_hold(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    landing = resources["landing"]

    def put(name: str, data: bytes) -> None:
        landing.write_bytes(f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, name)}", data)

    put("readings.csv.gz", gzip.compress(("meter_id,timestamp,kwh,temperature\n" + _readings(24)).encode()))
    put("named-plain.csv", gzip.compress(("meter_id,timestamp,kwh,temperature\n" + _readings(12)).encode()))
    put("wrong.csv.gz", gzip.compress(("meter,time,value\n" + _readings(20)).encode()))
    put("cut.csv.gz", gzip.compress(("meter_id,timestamp,kwh,temperature\n" + _readings(10)).encode())[:-12])

    assert materialize_day(defs, resources, instance, [keys.bronze], DAY).success
    rows = _bronze_rows(resources, spec)
    assert rows.groupby(SOURCE_FILE).size().rename(lambda path: Path(path).name).to_dict() == {
        "named-plain.csv": 12,
        "readings.csv.gz": 24,
    }
    quarantined = {Path(entry["path"]).name: entry for entry in landing.quarantined(spec)}
    assert quarantined["wrong.csv.gz"]["records"] == 20
    assert "truncated gzip" in quarantined["cut.csv.gz"]["reason"]


def _silver_rows(resources: dict[str, Any], spec: DatasetSpec, day: dt.date = DAY) -> pd.DataFrame:
    lake = resources["lake"]
    keys = DatasetKeys(spec)
    return lake.read_days(lake.table_uri(*keys.table(keys.silver)), [day]).rows


def test_the_file_written_last_wins_a_duplicate_reading(defs, resources, instance, spec) -> None:
    """Two files of one run hold the same reading: the correction (modified later) wins, not
    the file whose name sorts last."""
    keys = DatasetKeys(spec)
    root = Path(resources["landing"].location.uri.removeprefix("file://"))
    header = "meter_id,timestamp,kwh,temperature\n"
    for name, kwh, modified in (("a-correction.csv", 9.0, 2_000_000_000), ("b-original.csv", 1.0, 1_900_000_000)):
        path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, name)}"
        resources["landing"].write_bytes(path, f"{header}MTR-00001,{DAY}T00:00:00Z,{kwh},3.0\n".encode())
        os.utime(root / path, (modified, modified))
    assert materialize_day(defs, resources, instance, [keys.bronze, keys.silver], DAY).success
    assert len(_bronze_rows(resources, spec)) == 2
    assert _silver_rows(resources, spec)["kwh"].tolist() == [9.0]


def test_a_corrected_file_replaces_the_rows_of_its_earlier_version(defs, resources, instance, spec) -> None:
    keys = DatasetKeys(spec)
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, 'readings.csv')}"
    header = "meter_id,timestamp,kwh,temperature\n"
    both = "".join(f"{meter},{DAY}T{hour:02d}:00:00Z,1.0,3.0\n" for meter in ("MTR-1", "MTR-2") for hour in range(24))
    resources["landing"].write_bytes(path, (header + both).encode())
    assert materialize_day(defs, resources, instance, [keys.bronze, keys.silver], DAY).success
    assert len(_silver_rows(resources, spec)) == 48

    corrected = "".join(f"MTR-1,{DAY}T{hour:02d}:00:00Z,2.0,3.0\n" for hour in range(24))
    resources["landing"].write_bytes(path, (header + corrected).encode())
    result = materialize_day(defs, resources, instance, [keys.bronze, keys.silver], DAY)
    silver = _silver_rows(resources, spec)
    assert silver["meter_id"].unique().tolist() == ["MTR-1"] and silver["kwh"].tolist() == [2.0] * 24
    assert len(_bronze_rows(resources, spec)) == 48 + 24  # bronze keeps every version
    (materialization,) = _materializations(result, keys.silver)
    assert materialization.metadata["rows_superseded"].value == 48


def test_rows_committed_by_a_run_that_died_before_dagster_recorded_them_are_recorded(
    defs, resources, instance, spec
) -> None:
    """A run killed between bronze's Delta commit and Dagster's record of it: the commit is
    made here by the same function the asset calls, with no Dagster run around it."""
    keys = DatasetKeys(spec)
    report = simulate(resources["landing"], spec, DAY, days=1, meters=4, meters_per_file=2, dirty_share=0.0)
    ingest_days(resources["lake"], resources["landing"], spec, [DAY], "killed-run", {})
    assert len(_bronze_rows(resources, spec)) == report.records

    result = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    (materialization,) = _materializations(result, keys.bronze)
    assert materialization.metadata["dagster/row_count"].value == report.records
    assert materialization.metadata["recovered_days"].value == [DAY.isoformat()]
    again = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    assert _materializations(again, keys.bronze) == []
