"""Real measurements that ship inside PyPI packages, delivered to the landing zone as their
source systems would: one CSV file per partition (and city), laid out as the specs in
examples/specs/ expect. Nothing here is pipeline code: the pipeline knows these datasets
only through their specs.

- ``city_temperature``: hourly temperatures of Seattle and San Francisco in 2010, from
  ``vega_datasets`` (seattle-temps.csv, sf-temps.csv; local times as the package gives
  them, read as UTC). They are NOAA hourly normals: smooth, nearly the same from one day
  to the next, so the seasonal-naive forecast is very hard to beat.
- ``seattle_weather``: daily weather observed in Seattle, 2012-2015, from ``vega_datasets``
  (seattle-weather.csv).
- ``us_employment``: monthly US employment by industry, 2006-2015, from ``vega_datasets``
  (us-employment.csv, one series per industry column).

Write a range of them into the active profile's landing zone::

    MLOPS_SPECS=examples/specs .venv/bin/python examples/public_data.py city_temperature \\
        --start 2010-03-01 --end 2010-03-31
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import dagster as dg
import pandas as pd

from mlops_assets.datasets.spec import DatasetSpec, load_spec
from mlops_assets.resources.landing_zone import LandingZone
from mlops_assets.resources.profiles import build_profile

SPECS = Path(__file__).resolve().parent / "specs"
CITIES = {"seattle": "seattle-temps.csv", "san_francisco": "sf-temps.csv"}


def _package_csv(name: str) -> pd.DataFrame:
    with (resources.files("vega_datasets") / "_data" / name).open("rb") as handle:
        return pd.read_csv(handle)


def city_temperature() -> pd.DataFrame:
    """Every hourly reading of both cities: city, observed_at (ISO 8601, UTC) and temp_f."""
    frames = []
    for city, name in CITIES.items():
        raw = _package_csv(name)
        stamps = pd.to_datetime(raw["date"], format="mixed").dt.tz_localize("UTC")
        frames.append(pd.DataFrame({"city": city, "observed_at": stamps, "temp_f": raw["temp"]}))
    return pd.concat(frames, ignore_index=True).sort_values(["observed_at", "city"], kind="stable")


def seattle_weather() -> pd.DataFrame:
    """Every daily observation at the Seattle station: station, observed_on, temp_max, temp_min,
    precipitation and wind."""
    raw = _package_csv("seattle-weather.csv")
    return pd.DataFrame(
        {
            "station": "seattle",
            "observed_on": pd.to_datetime(raw["date"], format="%Y/%m/%d").dt.tz_localize("UTC"),
            "temp_max": raw["temp_max"],
            "temp_min": raw["temp_min"],
            "precipitation": raw["precipitation"],
            "wind": raw["wind"],
        }
    )


def us_employment() -> pd.DataFrame:
    """Every monthly figure, one row per industry series: series, period (the month's first day) and
    employees (thousands)."""
    raw = _package_csv("us-employment.csv").drop(columns=["nonfarm_change"])
    rows = raw.melt(id_vars="month", var_name="series", value_name="employees")
    rows["period"] = pd.to_datetime(rows["month"]).dt.tz_localize("UTC")
    return rows[["series", "period", "employees"]].sort_values(["period", "series"], kind="stable")


DATASETS = {"city_temperature": city_temperature, "seattle_weather": seattle_weather, "us_employment": us_employment}


def landing_files(spec: DatasetSpec, start: dt.date, end: dt.date) -> Iterator[tuple[str, bytes]]:
    """(landing path, CSV bytes) of every partition of ``spec``'s dataset from ``start`` to ``end``:
    one file a partition, or a partition and city for the temperatures."""
    rows = DATASETS[spec.name]()
    stamps = rows[spec.timestamp_column]
    partitions = stamps.dt.date.map(spec.grain.floor)
    first, last = spec.grain.floor(start), spec.grain.floor(end)
    selected = rows[(partitions >= first) & (partitions <= last)].assign(_partition=partitions)
    by = ["_partition", "city"] if spec.name == "city_temperature" else ["_partition"]
    for key, group in selected.groupby(by, sort=True):
        partition = key[0]
        name = f"{key[1]}.csv" if len(by) == 2 else f"{spec.name}-{partition:%Y-%m}.csv"
        frame = group.drop(columns="_partition").assign(
            **{spec.timestamp_column: group[spec.timestamp_column].dt.strftime("%Y-%m-%dT%H:%M:%SZ")}
        )
        buffer = io.StringIO()
        frame.to_csv(buffer, index=False, lineterminator="\n")
        yield f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(partition, name)}", buffer.getvalue().encode()


def export(landing: LandingZone, spec: DatasetSpec, start: dt.date, end: dt.date) -> list[str]:
    """Write the partitions ``start``..``end`` into ``landing``; returns the paths written."""
    written = []
    for path, data in landing_files(spec, start, end):
        landing.write_bytes(path, data)
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--start", type=dt.date.fromisoformat, help="first day (default: the spec's start date)")
    parser.add_argument("--end", type=dt.date.fromisoformat, help="last day (default: the last in the data)")
    args = parser.parse_args()
    spec = load_spec(SPECS / f"{args.dataset}.yaml")
    start = args.start or spec.start_date
    end = args.end or dt.date(2100, 1, 1)
    with dg.build_resources({"landing": build_profile().resources["landing"]}) as ready:
        written = export(ready.landing, spec, start, end)
    print(f"{args.dataset}: {len(written)} file(s) written to the landing zone under {spec.landing.prefix}/")


if __name__ == "__main__":
    main()
