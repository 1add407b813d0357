"""Realistic landing files for a load-forecasting dataset, for demos and tests.

Each meter has its own base load, heating sensitivity and noise. Load follows a
daily shape (night trough, morning and evening peaks), weekends and holidays shift
it towards midday, and cold weather raises it. Temperature has a seasonal level,
day-to-day weather and a diurnal swing. A share of records is made dirty (nulls,
duplicates, out-of-range values) and, on request, whole files are broken.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.resources.landing_zone import LandingFile, LandingZone

HOLIDAYS = {(1, 1), (1, 6), (5, 1), (12, 24), (12, 25), (12, 26), (12, 31)}
BAD_FILE_KINDS = ("corrupt", "wrong_schema")


@dataclass(frozen=True)
class SimulatedFile:
    """A file written to the landing zone; ``records`` is what the simulator put in it."""

    path: str
    event_date: dt.date
    records: int
    kind: str  # "good", "corrupt" or "wrong_schema"


@dataclass
class SimulationReport:
    """Everything one simulation wrote."""

    files: list[SimulatedFile] = field(default_factory=list)

    @property
    def records(self) -> int:
        return sum(file.records for file in self.files)

    @property
    def bad_files(self) -> list[SimulatedFile]:
        return [file for file in self.files if file.kind != "good"]


def simulate(
    landing: LandingZone,
    spec: DatasetSpec,
    start: dt.date,
    days: int,
    meters: int,
    meters_per_file: int = 25,
    dirty_share: float = 0.02,
    bad_files: int = 0,
    file_format: str = "csv",
    seed: int = 7,
    run_label: str = "readings",
) -> SimulationReport:
    """Write ``days`` days of hourly readings for ``meters`` meters into the landing zone."""
    if days < 1 or meters < 1 or meters_per_file < 1:
        raise ValueError("days, meters and meters_per_file must be at least 1")
    if not 0 <= dirty_share < 1:
        raise ValueError(f"dirty_share must be in [0, 1), got {dirty_share}")
    if file_format not in spec.landing.formats:
        raise ValueError(f"{spec.name} accepts {', '.join(spec.landing.formats)}, not {file_format!r}")
    if bad_files > days:
        raise ValueError(f"at most one bad file per day: {bad_files} bad files for {days} days")
    rng = np.random.default_rng(seed)
    fleet = _fleet(rng, meters)
    bad_days = set(np.linspace(0, days - 1, bad_files).round().astype(int)) if bad_files else set()
    report = SimulationReport()
    weather = 0.0
    for offset in range(days):
        day = start + dt.timedelta(days=offset)
        weather = 0.7 * weather + rng.normal(0, 2.0)
        readings = _day_readings(rng, spec, fleet, day, weather)
        for batch, first in enumerate(range(0, meters, meters_per_file)):
            ids = fleet["meter_id"][first : first + meters_per_file]
            rows = _dirty(rng, spec, readings[readings[spec.entity_column].isin(ids)], dirty_share)
            name = f"{run_label}-{batch:03d}.{file_format}"
            report.files.append(_write(landing, spec, day, name, rows, file_format, "good"))
        if offset in bad_days:
            kind = BAD_FILE_KINDS[len(report.bad_files) % 2] if file_format != "parquet" else "wrong_schema"
            rows = readings[readings[spec.entity_column].isin(fleet["meter_id"][:meters_per_file])]
            report.files.append(
                _write(landing, spec, day, f"{run_label}-resent.{file_format}", rows, file_format, kind)
            )
    return report


def _fleet(rng: np.random.Generator, meters: int) -> dict[str, np.ndarray]:
    return {
        "meter_id": np.array([f"MTR-{index:05d}" for index in range(meters)]),
        "base": rng.uniform(0.2, 0.9, meters),
        "heating": rng.uniform(0.01, 0.06, meters),
        "noise": rng.uniform(0.03, 0.10, meters),
        "offset": rng.normal(0, 0.8, meters),
    }


def _day_readings(
    rng: np.random.Generator, spec: DatasetSpec, fleet: dict[str, np.ndarray], day: dt.date, weather: float
) -> pd.DataFrame:
    hours = np.arange(24)
    day_of_year = day.timetuple().tm_yday
    seasonal = 10.0 - 9.0 * np.cos(2 * np.pi * (day_of_year - 20) / 365.25)
    outdoor = seasonal + weather + 3.5 * np.sin(2 * np.pi * (hours - 9) / 24)
    off_day = day.weekday() >= 5 or (day.month, day.day) in HOLIDAYS
    morning = 7.5 + (1.5 if off_day else 0.0)
    shape = (
        0.45
        + 0.55 * np.exp(-((hours - morning) ** 2) / 3.0)
        + 0.95 * np.exp(-((hours - 19.0) ** 2) / 5.0)
        + (0.35 * np.exp(-((hours - 13.0) ** 2) / 8.0) if off_day else 0.0)
    )
    meters = len(fleet["meter_id"])
    temperature = outdoor[None, :] + fleet["offset"][:, None] + rng.normal(0, 0.3, (meters, 24))
    heating = fleet["heating"][:, None] * np.clip(15.0 - temperature, 0, None)
    level = fleet["base"][:, None] * shape[None, :] + heating
    load = np.clip(level * (1 + rng.normal(0, 1, (meters, 24)) * fleet["noise"][:, None]), 0.01, None)
    stamps = pd.date_range(pd.Timestamp(day, tz="UTC"), periods=24, freq="h")
    exogenous = spec.features.exogenous[0] if spec.features.exogenous else None
    frame = pd.DataFrame(
        {
            spec.entity_column: np.repeat(fleet["meter_id"], 24),
            spec.timestamp_column: np.tile(stamps.strftime("%Y-%m-%dT%H:%M:%SZ"), meters),
            spec.target_column: load.ravel().round(4),
        }
    )
    if exogenous:
        frame[exogenous] = temperature.ravel().round(2)
    return frame


def _dirty(rng: np.random.Generator, spec: DatasetSpec, rows: pd.DataFrame, share: float) -> pd.DataFrame:
    """Null, out-of-range and duplicated records, ``share`` of the rows in all."""
    rows = rows.astype(object).copy()
    chosen = np.flatnonzero(rng.random(len(rows)) < share)
    kinds = rng.integers(0, 4, len(chosen))
    target = rows.columns.get_loc(spec.target_column)
    exogenous = spec.features.exogenous
    for position, kind in zip(chosen, kinds, strict=True):
        if kind == 0:
            rows.iat[position, target] = None
        elif kind == 1:
            rows.iat[position, target] = float(rng.choice([-3.0, 999.0]))
        elif kind == 2 and exogenous:
            rows.iat[position, rows.columns.get_loc(exogenous[0])] = None
    duplicates = rows.iloc[chosen[kinds == 3]]
    return pd.concat([rows, duplicates]).sort_index(kind="stable").reset_index(drop=True)


def _write(
    landing: LandingZone, spec: DatasetSpec, day: dt.date, name: str, rows: pd.DataFrame, fmt: str, kind: str
) -> SimulatedFile:
    if kind == "wrong_schema":
        rows = rows.rename(columns={spec.target_column: f"{spec.target_column}_reading"})
    data = _encode(rows, fmt)
    if kind == "corrupt":
        # Bytes that are not UTF-8, in the middle of a line: the line count is unchanged.
        cut = data.index(b"\n", len(data) // 2) - 3
        data = data[:cut] + b"\xff\xfe\x9c" + data[cut:]
    path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(day, name)}"
    landing.write_bytes(path, data)
    return SimulatedFile(path=path, event_date=day, records=len(rows), kind=kind)


def _encode(rows: pd.DataFrame, fmt: str) -> bytes:
    if fmt == "csv":
        return rows.to_csv(index=False, lineterminator="\n").encode("utf-8")
    if fmt == "jsonl":
        return "".join(json.dumps(record) + "\n" for record in rows.to_dict("records")).encode()
    buffer = io.BytesIO()
    rows.to_parquet(buffer, index=False)
    return buffer.getvalue()


def blob_created_message(landing: LandingZone, file: LandingFile) -> str:
    """The queue message Azure Event Grid delivers when ``file`` lands in a landing zone on Blob
    (an emulator has no Event Grid)."""
    if landing.account is None:
        raise ValueError("BlobCreated events describe blobs: this landing zone is a local folder")
    container, blob = landing.blob_name(file.path)
    return blob_created_event(landing.account.account_name, container, blob, file.etag, file.size)
