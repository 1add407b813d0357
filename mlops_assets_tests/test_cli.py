"""The `mlops` command as a user runs it: the demo end to end on a small fleet, and clear
refusals for bad arguments."""

from __future__ import annotations

from pathlib import Path

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
        if line.startswith(("landing/", "bronze/", "silver/", "gold/", "models/", "serving/"))
    }
    assert len(table) == 6
    assert all(columns[0] == "3" for columns in table.values())
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
