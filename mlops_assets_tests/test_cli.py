"""The `mlops` command as a user runs it: the demo end to end on a small fleet, and clear
refusals for bad arguments."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from mlops_assets.cli import main


def test_demo_runs_end_to_end_and_summarizes(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    result = CliRunner().invoke(main, ["demo", "--reset", "--days", "3", "--meters", "4", "--bad-files", "1"])
    assert result.exit_code == 0, result.output
    table = {
        line.split()[0]: line.split()[1:]
        for line in result.output.splitlines()
        if line.startswith(
            ("landing/", "bronze/", "silver/", "gold/", "models/", "registry/", "serving/", "monitoring/")
        )
    }
    every_day = ["landing/smart_meter", "bronze/smart_meter", "silver/smart_meter", "gold/smart_meter_features"]
    assert all(table[asset][0] == "3" for asset in every_day)
    assert table["models/smart_meter_forecaster"][0] == "3"
    assert table["models/smart_meter_checkpoint"][0] == "3"
    # The first day is scored by no one: its model is released after the day's scoring.
    assert table["serving/smart_meter_predictions"][0] == "2"
    assert table["monitoring/smart_meter_drift"][0] == "2"
    assert "@champion: v" in result.output
    assert "Quarantined files: 1" in result.output
    assert "Models: 3" in result.output


def test_more_bad_files_than_days_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    result = CliRunner().invoke(main, ["simulate", "--days", "1", "--bad-files", "2"])
    assert result.exit_code == 2
    assert "at most one bad file a day" in result.output


def test_unknown_dataset_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    result = CliRunner().invoke(main, ["simulate", "--dataset", "weather"])
    assert result.exit_code == 2
    assert "unknown dataset 'weather'; bundled: smart_meter" in result.output


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
