"""The `mlops` command as a user runs it: the demo end to end on a small fleet, and clear
refusals for bad arguments."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest
import requests
import yaml
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from click.testing import CliRunner

from mlops_assets.cli import main, supervise
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_spec, spec_document
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME
from mlops_assets.listener import LISTENER_TAG
from mlops_assets.resources.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.services import AZURITE_ACCOUNT, REPOSITORY, free_port
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
    # Resetting an empty home may take less than the 0.1 s shown; every other phase does real work.
    assert all(value > 0 for name, value in seconds.items() if name != "reset")
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
sys.exit(supervise([[sys.executable, "-c", child, sys.argv[1]]], env=dict(os.environ)))
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


@contextmanager
def mlops_dev_on_azurite(tmp_path: Path, variables: dict[str, str]) -> Iterator[tuple[set[str], dict[str, str]]]:
    """``mlops dev --profile azurite`` started for real (its own Azurite, MLflow server and, with
    listener arrivals, queue listener) with ``variables`` set; yields the sensors its UI shows
    running once it answers, and the variables it printed for other shells."""
    port = free_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MLOPS_HOME": str(tmp_path / "mlops"),
        **variables,
    }
    if "MLOPS_ARRIVALS" not in variables:
        environment.pop("MLOPS_ARRIVALS", None)
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
        exported = dict(re.findall(r"^  export (\w+)='(.*)'$", log.read_text(), flags=re.M))
        yield sensors, exported
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)


def test_mlops_arrivals_picks_polling_for_mlops_dev_on_azurite(tmp_path: Path) -> None:
    """``MLOPS_ARRIVALS=poll make dev PROFILE=azurite``, as the README documents it: the UI runs
    the polling sensor, not the queue listener that is the azurite profile's default."""
    with mlops_dev_on_azurite(tmp_path, {"MLOPS_ARRIVALS": "poll"}) as (sensors, exported):
        assert exported["MLOPS_ARRIVALS"] == "poll"
    assert "smart_meter_landing_sensor" in sensors and EVENT_SENSOR_NAME not in sensors, sensors


def test_mlops_dev_on_azurite_listens_for_events_by_default(tmp_path: Path) -> None:
    """``make dev PROFILE=azurite``: neither arrival sensor runs; the queue listener it starts
    turns an uploaded file's BlobCreated event into a bronze run for the file's day."""
    with mlops_dev_on_azurite(tmp_path, {}) as (sensors, exported):
        assert exported["MLOPS_ARRIVALS"] == "listen"
        assert "smart_meter_landing_sensor" not in sensors and EVENT_SENSOR_NAME not in sensors, sensors
        today = dt.datetime.now(dt.UTC).date()
        path = f"smart_meter/{today:%Y/%m/%d}/listened.csv"
        service = BlobServiceClient.from_connection_string(exported["AZURE_STORAGE_CONNECTION_STRING"])
        blob = service.get_container_client("landing").upload_blob(path, b"meter_id,timestamp,kwh,temperature\n")
        etag = blob.get_blob_properties().etag.strip('"')
        queue = QueueClient.from_connection_string(exported["AZURE_STORAGE_CONNECTION_STRING"], "landing-events")
        queue.send_message(blob_created_event(AZURITE_ACCOUNT, "landing", path, etag, 36))
        with dg.DagsterInstance.from_config(str(tmp_path / "dagster")) as instance:
            deadline = time.monotonic() + 60
            while not (runs := instance.get_runs(dg.RunsFilter(tags={LISTENER_TAG: "queue"}))):
                assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
                time.sleep(0.5)
    (run,) = runs
    assert run.tags["dagster/partition"] == today.isoformat()
    assert run.asset_selection == {dg.AssetKey(["bronze", "smart_meter"])}


def test_queue_arrivals_on_the_local_profile_are_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("MLOPS_ARRIVALS", "queue")
    result = CliRunner().invoke(main, ["dev"])
    assert result.exit_code == 2 and "polling only" in result.output


def test_when_one_supervised_child_ends_the_others_are_stopped(tmp_path: Path) -> None:
    """`mlops dev` runs `dagster dev` and the queue listener side by side: when one of them
    ends, the other must not run on alone, and the exit code is the one that ended first's."""
    marker = tmp_path / "sleeper.pid"
    written = f"{marker}.partial"
    sleeper = (
        f"import os, time; open({written!r}, 'w').write(str(os.getpid())); "
        f"os.rename({written!r}, {str(marker)!r}); time.sleep(120)"
    )
    quitter = f"import os, sys, time\nwhile not os.path.exists({str(marker)!r}): time.sleep(0.05)\nsys.exit(3)"
    started = time.monotonic()
    code = supervise([[sys.executable, "-c", sleeper], [sys.executable, "-c", quitter]], env=dict(os.environ))
    assert code == 3 and time.monotonic() - started < 60
    with pytest.raises(ProcessLookupError):
        os.kill(int(marker.read_text()), 0)


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
