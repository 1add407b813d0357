"""The `mlops` command as a user runs it: the demo end to end on a small fleet, and clear
refusals for bad arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_spec, spec_document
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME
from mlops_assets.resources.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.services import REPOSITORY, free_port
from mlops_dev.simulate import simulate


def test_demo_runs_end_to_end_and_summarizes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["demo", "--reset", "--days", "4", "--meters", "12", "--bad-files", "1"])
    assert result.exit_code == 0, result.output
    table = {
        line.split()[0]: line.split()[1:]
        for line in result.output.splitlines()
        if line.startswith(
            ("landing/", "bronze/", "silver/", "gold/", "models/", "registry/", "serving/", "monitoring/")
        )
    }
    every_day = ["landing/smart_meter", "bronze/smart_meter", "silver/smart_meter", "gold/smart_meter_features"]
    assert all(table[asset][0] == "4" for asset in every_day)
    for asset in ("models/smart_meter_forecaster", "models/smart_meter_checkpoint", "registry/smart_meter_forecaster"):
        assert table[asset][0] == "4"
    # Each day's gate decision against the seasonal-naive forecast is in the summary; the first
    # day has no day before it to compare with and is refused.
    gates = [line.split()[0] for line in result.output.splitlines() if line.startswith("  2026-")]
    decisions = [line for line in result.output.splitlines() if line.startswith("  2026-")]
    assert len(gates) == 4 and "refused: no seasonal-naive forecast" in decisions[0]
    passed = [index for index, line in enumerate(decisions) if "  passed (" in line]
    assert passed, result.output
    # A day is scored by the champion for the day before: the days after the first that passed.
    assert table["serving/smart_meter_predictions"][0] == str(4 - passed[0] - 1)
    assert f"{len(passed)} of 4 passed the gate" in result.output
    assert "@champion: v" in result.output
    assert "Quarantined files: 1" in result.output
    # The demo reports where its own time went: each phase, and a total that covers them all.
    (timing,) = [line for line in result.output.splitlines() if line.startswith("Time: ")]
    phases, total = timing.removeprefix("Time: ").split("; total ")
    seconds = {name: float(figure) for name, figure in (part.rsplit(" ", 2)[:2] for part in phases.split(", "))}
    assert list(seconds) == ["reset", "simulate", "sensor", "ingest", "lifecycle", "checkpoint", "summary"]
    assert all(value > 0 for value in seconds.values())
    assert sum(seconds.values()) <= float(total.removesuffix(" s")) + 0.1 * len(seconds)


def test_more_bad_files_than_days_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    result = CliRunner().invoke(main, ["simulate", "--days", "1", "--bad-files", "2"])
    assert result.exit_code == 2
    assert "at most one bad file a day" in result.output


def test_unknown_dataset_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    result = CliRunner().invoke(main, ["simulate", "--dataset", "weather"])
    assert result.exit_code == 2
    assert "unknown dataset 'weather'; known: smart_meter" in result.output


SUPERVISOR = """
import os, sys
from mlops_assets.cli import supervise
child = "import os, sys, time; open(sys.argv[1], 'w').write(str(os.getpid())); time.sleep(120)"
sys.exit(supervise([sys.executable, "-c", child, sys.argv[1]], env=dict(os.environ)))
"""


def test_a_terminated_supervisor_takes_its_child_with_it(tmp_path: Path) -> None:
    """`mlops dev` runs `dagster dev` as a child; a SIGTERM to `mlops dev` alone must stop the
    child too, before the services started for it go away."""
    marker = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(marker)])
    deadline = time.monotonic() + 60
    while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    child = int(marker.read_text())
    parent.send_signal(signal.SIGTERM)
    assert parent.wait(timeout=30) != 0
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)


SENSORS_QUERY = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { name sensorState { status } } } } } }
"""


def running_sensors(port: int) -> set[str] | None:
    """The names of the sensors the Dagster UI on ``port`` shows as running; None until it answers."""
    try:
        answer = requests.post(f"http://127.0.0.1:{port}/graphql", json={"query": SENSORS_QUERY}, timeout=5)
    except requests.ConnectionError:
        return None
    if answer.status_code != 200:
        return None
    repositories = answer.json()["data"]["repositoriesOrError"].get("nodes", [])
    return {
        sensor["name"]
        for repository in repositories
        for sensor in repository["sensors"]
        if sensor["sensorState"]["status"] == "RUNNING"
    } or None


def test_mlops_arrivals_picks_polling_for_mlops_dev_on_azurite(tmp_path: Path) -> None:
    """``MLOPS_ARRIVALS=poll make dev PROFILE=azurite``, as the README documents it: the UI that
    ``mlops dev`` starts (with its own Azurite and MLflow server) runs the polling sensor, not
    the queue sensor that is the azurite profile's default."""
    port = free_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MLOPS_HOME": str(tmp_path / "mlops"),
        "MLOPS_ARRIVALS": "poll",
    }
    (tmp_path / "dagster").mkdir()
    command = [sys.executable, "-c", "from mlops_assets.console import run; run()"]
    command += ["dev", "--profile", "azurite", "--port", str(port)]
    log = tmp_path / "dev.log"
    with log.open("wb") as output:
        dev = subprocess.Popen(command, env=environment, cwd=REPOSITORY, stdout=output, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while (sensors := running_sensors(port)) is None:
            assert dev.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(1)
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
    assert "smart_meter_landing_sensor" in sensors and EVENT_SENSOR_NAME not in sensors, sensors
    assert "export MLOPS_ARRIVALS='poll'" in log.read_text()


def test_queue_arrivals_on_the_local_profile_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("MLOPS_ARRIVALS", "queue")
    result = CliRunner().invoke(main, ["dev"])
    assert result.exit_code == 2 and "polling only" in result.output


def test_check_prints_one_line_per_problem_and_fails(tmp_path: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        "type: mlops_assets.components.Dataset\nattributes:\n"
        "  name: broken\n  start_date: 2026-01-01\n  frequency: 1h\n"
        "  landing: {prefix: b, path_pattern: '{yyyy}/{mm}/{dd}/{name}', formats: [csv]}\n"
        "  columns: {id: string, at: timestamp, value: decimal}\n"
        "  timestamp_column: at\n  entity_column: id\n  target_column: value\n"
        "  features: {lags: [1h]}\n  model: {family: ridge, trainig_window: 7d}\n"
    )
    result = CliRunner().invoke(main, ["check", str(broken)])
    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0].startswith("smart_meter/defs.yaml: ok (smart_meter, every 1h, daily partitions)")
    assert "broken.yaml: model.trainig_window: unknown field (expected one of: family, params, seed, " in result.output
    assert "broken.yaml: columns.value: unknown type 'decimal'" in result.output
    assert "Traceback" not in result.output
    assert lines[-1] == "Error: 2 problem(s) in 2 spec(s)"


def test_a_file_quarantined_for_a_spec_mistake_is_replayed_after_the_fix(tmp_path: Path, monkeypatch, spec) -> None:
    """A spec that names its target wrongly quarantines every file; after the fix, `mlops quarantine
    replay` puts the files back where the sensor finds them, and they land in bronze."""
    home = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_HOME", str(home))
    day = spec.start_date
    resources = local_resources(home)
    report = simulate(resources["landing"], spec, day, days=1, meters=4, meters_per_file=2)
    typo = dict(spec.raw, target_column="kwh_reading", columns={**spec.raw["columns"], "kwh_reading": "float"})
    typo_path = tmp_path / "smart_meter.yaml"
    typo_path.write_text(yaml.safe_dump(spec_document(typo)))
    wrong = load_spec(typo_path)
    with dg.instance_for_test() as instance:
        materialize_day(build_definitions([wrong], resources), resources, instance, [DatasetKeys(wrong).bronze], day)
        listed = CliRunner().invoke(main, ["quarantine", "list"])
        assert listed.exit_code == 0, listed.output
        assert f"{len(report.files)} quarantined file version(s) of smart_meter" in listed.output
        assert "missing required column(s) ['kwh_reading']" in listed.output
        assert resources["landing"].list_dataset(spec) == []

        replayed = CliRunner().invoke(main, ["quarantine", "replay", "smart_meter", "--day", day.isoformat()])
        assert replayed.exit_code == 0, replayed.output
        assert f"{len(report.files)} file(s) back in the landing zone" in replayed.output
        assert resources["landing"].quarantined(spec) == []
        back = resources["landing"].list_dataset(spec)
        assert sorted(file.path for file in back) == sorted(file.path for file in report.files)

        keys = DatasetKeys(spec)
        defs = build_definitions([spec], resources)
        materialize_day(defs, resources, instance, [keys.bronze], day)
        lake = resources["lake"]
        assert lake.count_rows(lake.table_uri(*keys.table(keys.bronze))) == report.records
