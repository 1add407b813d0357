"""arrival_order: real data replayed through the real daemon in order, and shuffled with late
partitions and a partition sent twice; wall time of each, and whether they end the same.

The files are real measurements that ship inside the vega_datasets package (the
seattle_weather example: one file a month of daily observations), landing one partition
every ``--interval`` seconds into a fresh local-profile home while a real `dagster-daemon`
(landing sensor, declarative automation, the partition-ordered run queue) processes them.
A replay's time runs from the first file landing to the end of the last run. The shuffled
order holds back every fourth month until two more have landed and sends the second month
again at the end. Both replays must end with the same silver, gold and prediction rows,
the same model (fitted digest and hold-out metrics) and registry decision for every
month, and the same champion.

    python benchmarks/arrival_order.py [--months 8] [--repeats 3] [--interval 6]

Prints, as its last line, the result (benchmarks/report.py): min, median and max of both
sides, the run counts, ratio = median shuffled / median in-order wall time (target <= 1.3)
and `equal` (required).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # examples/ beside the package

from report import machine, report, spread  # noqa: E402

from examples.public_data import SPECS, landing_files  # noqa: E402
from mlops_assets.datasets.spec import load_spec  # noqa: E402
from mlops_dev.replay import arrivals_by_partition, late_and_twice, replay  # noqa: E402

FIRST = dt.date(2013, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--months", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--interval", type=float, default=6.0, help="seconds between two partitions landing")
    parser.add_argument("--window", default="3mo", help="the forecaster's training window")
    args = parser.parse_args()
    before = machine()
    with tempfile.TemporaryDirectory() as folder:
        document = yaml.safe_load((SPECS / "seattle_weather.yaml").read_text())
        raw = document["attributes"]
        raw.update(start_date=FIRST.isoformat())
        raw["model"]["training_window"] = args.window
        spec_path = Path(folder) / "seattle_weather.yaml"
        spec_path.write_text(yaml.safe_dump(document))
        spec = load_spec(spec_path)
        last = spec.grain.shift(FIRST, args.months) - dt.timedelta(days=1)
        in_order = arrivals_by_partition(spec, list(landing_files(spec, FIRST, last)))
        late = {index: 2 for index in range(2, len(in_order) - 2, 4)}
        shuffled = late_and_twice(in_order, late=late, twice=[1])
        print("shuffled order:", ", ".join(arrival.label for arrival in shuffled), flush=True)
        sides: dict[str, list] = {"in_order": [], "shuffled": []}
        equal = True
        for repeat in range(args.repeats):
            # Alternate which side goes first, so that neither always runs on a warmer machine.
            order = [("in_order", in_order), ("shuffled", shuffled)]
            for name, arrivals in order if repeat % 2 == 0 else order[::-1]:
                result = replay(
                    spec,
                    spec_path,
                    arrivals,
                    Path(folder) / f"{name}-{repeat}",
                    interval=args.interval,
                    progress=lambda line: None,
                )
                sides[name].append(result)
                runs = sorted(result.run_seconds)
                print(
                    f"repeat {repeat + 1} {name}: {result.seconds:.1f} s, {result.runs} runs "
                    f"(run median {statistics.median(runs):.1f} s), {len(result.failed_runs)} failed, "
                    f"{len(result.empty_runs)} built nothing",
                    flush=True,
                )
            differences = sides["in_order"][-1].state.differences(sides["shuffled"][-1].state)
            for line in differences:
                print(f"  differs: {line}", flush=True)
            equal = (
                equal
                and not differences
                and not any(result.failed_runs or result.empty_runs for results in sides.values() for result in results)
            )

    in_order = spread([result.seconds for result in sides["in_order"]], 1)
    shuffled_figures = spread([result.seconds for result in sides["shuffled"]], 1)
    ratio = shuffled_figures["median"] / in_order["median"]
    report(
        "arrival_order",
        project=shuffled_figures,
        baseline=in_order,
        unit="s",
        ratio=ratio,
        target="shuffled median / in-order median <= 1.3, and both end equal",
        met=ratio <= 1.3 and equal,
        machine=before,
        months=args.months,
        late=len(late),
        sent_twice=1,
        interval_s=args.interval,
        runs={name: [result.runs for result in results] for name, results in sides.items()},
        equal=equal,
    )


if __name__ == "__main__":
    main()
