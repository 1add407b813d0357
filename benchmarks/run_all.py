"""Run the benchmarks one after the other and write their result table (`make bench`).

Each benchmark runs as its own process with the arguments below, on this machine as it is;
its last line (benchmarks/report.py) is appended to `benchmarks/history.jsonl` with the date
and commit, and the table between the result markers of `benchmarks/README.md` is written
again from the newest result of every benchmark, with how many of its latest three results
met the target.

    python benchmarks/run_all.py [NAME ...]      # all benchmarks, or the ones named
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HISTORY = HERE / "history.jsonl"
README = HERE / "README.md"
START, END = "<!-- results:start -->", "<!-- results:end -->"

# The arguments each benchmark runs with; the README's table is only comparable across runs
# made with these.
BENCHMARKS: dict[str, list[str]] = {
    "sensor_tick_scale": ["--repeats", "5"],
    "blob_io": ["--repeats", "5"],
    "checkpoint_overhead": ["--repeats", "5"],
    "backfill_90d": ["--repeats", "3"],
    "queue_storm": ["--events", "1000", "--repeats", "3"],
    "arrival_latency": ["--uploads", "60", "--spacing", "15"],
    "arrival_to_champion": ["--days", "10"],
    "arrival_order": ["--months", "8", "--repeats", "3", "--interval", "6"],
}


def commit() -> str:
    answer = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    return answer.stdout.strip() or "unknown"


def run(name: str) -> dict[str, Any]:
    """Run one benchmark; its result line, with when it ran, how long it took and the commit."""
    started = time.monotonic()
    log = HERE / ".data" / f"{name}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w") as output:
        process = subprocess.Popen(
            [sys.executable, str(HERE / f"{name}.py"), *BENCHMARKS[name]],
            stdout=subprocess.PIPE,
            stderr=output,
            text=True,
        )
        lines = []
        for line in process.stdout or []:
            output.write(line)
            lines.append(line)
            if not line.startswith("{"):
                print(f"  {line.rstrip()}", flush=True)
        returncode = process.wait()
    lines = [line for line in lines if line.startswith("{")]
    if returncode != 0 or not lines:
        raise RuntimeError(f"{name} failed (exit {returncode}); its output is in {log}")
    result = json.loads(lines[-1])
    result.update(
        run_on=dt.datetime.now(dt.UTC).date().isoformat(), seconds=round(time.monotonic() - started), commit=commit()
    )
    return result


def side(figures: dict[str, Any]) -> str:
    text = f"{figures['min']:g} / {figures['median']:g} / {figures['max']:g}"
    return text + (f" (p95 {figures['p95']:g})" if "p95" in figures else "") + f", n={figures['n']}"


def table(history: list[dict[str, Any]]) -> str:
    """The newest result of each benchmark, and how many of its latest three met the target."""
    lines = [
        "| benchmark | project min / median / max | baseline min / median / max | unit | ratio | target "
        "| met | met in the latest 3 | cores, load before | commit, run on |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in BENCHMARKS:
        results = [result for result in history if result["benchmark"] == name]
        if not results:
            lines.append(f"| `{name}` | not run yet | | | | | | | | |")
            continue
        newest, latest = results[-1], results[-3:]
        machine = newest["machine"]
        lines.append(
            f"| `{name}` | {side(newest['project'])} | {side(newest['baseline'])} | {newest['unit']} "
            f"| {newest['ratio']:g} | {newest['target']} | {'yes' if newest['met'] else 'no'} "
            f"| {sum(result['met'] for result in latest)} of {len(latest)} "
            f"| {machine['cores']}, {machine['load_before']:g} | {newest['commit']}, {newest['run_on']} |"
        )
    return "\n".join(lines)


def write_table(history: list[dict[str, Any]]) -> None:
    text = README.read_text()
    if START not in text or END not in text:
        raise RuntimeError(f"{README} has no {START} ... {END} markers for the result table")
    before, rest = text.split(START, 1)
    _, after = rest.split(END, 1)
    README.write_text(f"{before}{START}\n{table(history)}\n{END}{after}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"benchmarks to run (default: all of {', '.join(BENCHMARKS)})")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(BENCHMARKS))
    if unknown:
        raise SystemExit(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    for index, name in enumerate(args.names or list(BENCHMARKS), start=1):
        print(f"[{index}/{len(args.names or BENCHMARKS)}] {name} {' '.join(BENCHMARKS[name])}", flush=True)
        result = run(name)
        with HISTORY.open("a") as history:
            history.write(json.dumps(result) + "\n")
        print(f"  ratio {result['ratio']:g} ({result['target']}): {'met' if result['met'] else 'NOT met'}", flush=True)
        write_table([json.loads(line) for line in HISTORY.read_text().splitlines() if line.strip()])


if __name__ == "__main__":
    main()
