"""Arrival order does not change the result: real weather files replayed through the real
Dagster daemon in order, and out of order with a month two months late and another sent
twice, end with the same tables, the same model for every month, the same registry decisions
and the same champion; no run builds nothing, and earlier months go first."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from examples.public_data import SPECS, landing_files
from mlops_assets.datasets.spec import load_spec
from mlops_assets.run_queue import partition_priority
from mlops_dev.replay import arrivals_by_partition, late_and_twice, replay

FIRST, LAST = dt.date(2013, 1, 1), dt.date(2013, 4, 30)


@pytest.fixture(scope="module")
def weather(tmp_path_factory: pytest.TempPathFactory):
    """The seattle_weather example spec from 2013 on, with a three-month training window so that a
    late month is in the window of the two months after it."""
    document = yaml.safe_load((SPECS / "seattle_weather.yaml").read_text())
    raw = document["attributes"]
    raw.update(start_date=FIRST.isoformat())
    raw["model"]["training_window"] = "3mo"
    path = tmp_path_factory.mktemp("spec") / "seattle_weather.yaml"
    path.write_text(yaml.safe_dump(document))
    return path, load_spec(path)


def test_a_shuffled_replay_ends_where_the_ordered_one_does(weather, tmp_path: Path) -> None:
    path, spec = weather
    in_order = arrivals_by_partition(spec, list(landing_files(spec, FIRST, LAST)))
    assert [arrival.label for arrival in in_order] == [f"2013-0{month}-01" for month in range(1, 5)]
    # February lands after April; January is sent again at the end.
    shuffled = late_and_twice(in_order, late={1: 2}, twice=[0])
    assert [arrival.label for arrival in shuffled] == [
        "2013-01-01",
        "2013-03-01",
        "2013-04-01",
        "2013-02-01",
        "2013-01-01 again",
    ]

    # Two homes, two daemons, side by side: the test compares outcomes, not speed (the
    # arrival_order benchmark times them one after the other).
    with ThreadPoolExecutor(max_workers=2) as pool:
        replays = [
            pool.submit(replay, spec, path, arrivals, tmp_path / name, interval=6.0, progress=print)
            for name, arrivals in (("in-order", in_order), ("shuffled", shuffled))
        ]
        ordered, late = (future.result() for future in replays)

    for result in (ordered, late):
        assert result.failed_runs == [], f"failed runs, see {result.log}"
        assert result.empty_runs == [], "a run was launched that built nothing"
        assert result.state.champion is not None, "some month must have beaten the seasonal-naive forecast"
    assert len(ordered.state.models) == 4 and len(ordered.state.decisions) == 4
    assert ordered.state.differences(late.state) == []
    # Every run of a month carried its month's priority, so the queue hands out earlier months first.
    for partition, priority in late.priorities:
        if partition:
            assert priority == partition_priority(partition)
    print(f"in order {ordered.seconds:.1f} s in {ordered.runs} runs; shuffled {late.seconds:.1f} s in {late.runs} runs")
