"""The code location loads, from Python and through the Dagster CLI from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest
import yaml

from mlops_assets.components import Dataset
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import SpecError
from mlops_assets.definitions import defs as code_location

ROOT = Path(__file__).resolve().parents[1]


def test_definitions_hold_every_layer_check_sensor_and_job(defs, spec) -> None:
    keys = DatasetKeys(spec)
    graph = defs.resolve_asset_graph()
    assert graph.get_all_asset_keys() == {
        keys.landing,
        keys.bronze,
        keys.silver,
        keys.gold,
        keys.forecaster,
        keys.checkpoint,
        keys.decision(keys.forecaster),
        keys.decision(keys.checkpoint),
        keys.predictions,
        keys.drift,
        keys.tuning,
    }
    checks = {check.name for check in graph.asset_check_keys if check.asset_key == keys.silver}
    assert checks == {rule.name for rule in spec.quality}
    blocking = {spec.name for spec in defs.resolve_assets_def(keys.silver).check_specs if spec.blocking}
    assert blocking == {rule.name for rule in spec.quality if rule.action == "fail"}
    assert {sensor.name for sensor in defs.sensors} == {
        "smart_meter_landing_sensor",
        "lakehouse_automation",
        "smart_meter_drift_sensor",
        "fail_runs_of_dead_workers",
        "end_mlflow_runs_of_failed_runs",
    }
    assert {schedule.name for schedule in defs.schedules} == {"smart_meter_nightly_retrain"}
    for candidate in keys.candidates:
        decision_key = keys.decision(candidate)
        gates = [check for check in graph.asset_check_keys if check.asset_key == decision_key]
        assert [check.name for check in gates] == ["beats_champion"]
        # The gate records the decision; a refused candidate keeps the champion before it, so
        # nothing downstream is blocked.
        assert not graph.get(gates[0]).blocking
        # Each decision depends on its candidate and on the decision for the partition before.
        assert graph.get(decision_key).parent_keys == {candidate, decision_key}
    # A model's whole training window is a dependency, not its own day only.
    window = graph.get(keys.forecaster).partition_mappings[keys.gold]
    assert (window.start_offset, window.end_offset) == (-(spec.model.window_partitions - 1), 0)
    # The champion that scores a day is the registry's decision for the day before.
    assert graph.get(keys.predictions).parent_keys == {keys.gold, keys.decision(keys.forecaster)}
    assert defs.resolve_job_def("smart_meter_lifecycle").partitions_def == graph.get(keys.bronze).partitions_def
    assert isinstance(graph.get(keys.gold).automation_condition, dg.AutomationCondition)


def test_dagster_cli_validates_the_workspace(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "MLOPS_HOME": str(tmp_path / "mlops")}
    command = [sys.executable, "-m", "dagster", "definitions", "validate", "-w", "workspace.yaml"]
    completed = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "All code locations passed validation" in completed.stdout + completed.stderr


def test_the_code_location_holds_each_dataset_component_and_each_spec_mlops_specs_names(
    tmp_path: Path, monkeypatch
) -> None:
    """The bundled dataset comes from its Dataset component file under defs/datasets/; a file that
    MLOPS_SPECS names adds a dataset with no code; two files may not declare one name."""
    monkeypatch.setenv("MLOPS_HOME", str(tmp_path / "mlops"))
    monkeypatch.delenv("MLOPS_PROFILE", raising=False)
    monkeypatch.delenv("MLOPS_SPECS", raising=False)
    declared = dg.ComponentTree.for_project(ROOT / "mlops_assets").get_all_components(of_type=Dataset)
    assert [(dataset.name, dataset.source) for dataset in declared] == [("smart_meter", "smart_meter/defs.yaml")]

    document = yaml.safe_load((ROOT / "examples" / "specs" / "us_employment.yaml").read_text())
    (tmp_path / "us_employment.yaml").write_text(yaml.safe_dump(document))
    monkeypatch.setenv("MLOPS_SPECS", str(tmp_path / "us_employment.yaml"))
    keys = {key.to_user_string() for key in code_location().resolve_asset_graph().get_all_asset_keys()}
    for dataset in ("smart_meter", "us_employment"):
        assert {f"bronze/{dataset}", f"models/{dataset}_forecaster", f"serving/{dataset}_predictions"} <= keys

    document["attributes"]["name"] = "smart_meter"
    (tmp_path / "us_employment.yaml").write_text(yaml.safe_dump(document))
    with pytest.raises(SpecError, match=r"dataset name\(s\) \['smart_meter'\] declared by more than one spec"):
        code_location()
