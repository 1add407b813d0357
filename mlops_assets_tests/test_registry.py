"""The quality gate in front of the MLflow registry: a worse candidate is blocked and keeps
the champion where it is, a better one is promoted, and rollback restores the champion
it replaced; batch scoring uses the champion and records its version."""

from __future__ import annotations

import dataclasses
import datetime as dt

import dagster as dg
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.landing.simulate import simulate
from mlops_assets.ml.gate import GATE_CHECK
from mlops_assets.ml.registry import PREVIOUS
from mlops_assets.profiles import local_resources
from mlops_assets_tests.conftest import materialize_day

START = dt.date(2026, 2, 2)
DAYS = [START + dt.timedelta(days=offset) for offset in range(3)]


def _gold_days(home, spec, instance, days) -> tuple[dict, dg.Definitions, dg.Definitions]:
    """Local-profile resources with gold built for ``days``, the definitions of the spec, and
    those of a spec whose model cannot learn (one boosting round barely moves from the mean)."""
    resources = local_resources(home)
    keys = DatasetKeys(spec)
    weak = dataclasses.replace(spec, model=dataclasses.replace(spec.model, params={"max_iter": 1}))
    defs, weak_defs = build_definitions([spec], resources), build_definitions([weak], resources)
    simulate(resources["landing"], spec, days[0], days=len(days), meters=8, meters_per_file=4)
    for day in days:
        materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], day)
    return resources, defs, weak_defs


def _gate(result: dg.ExecuteInProcessResult):
    (evaluation,) = [
        event.event_specific_data
        for event in result.all_events
        if event.event_type_value == "ASSET_CHECK_EVALUATION" and event.event_specific_data.check_name == GATE_CHECK
    ]
    return evaluation


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A local-profile home that the CLI sees too (its own MLflow store and registry)."""
    folder = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_HOME", str(folder))
    return folder


def test_worse_candidate_is_blocked_better_is_promoted_and_rollback_restores(home, spec, instance) -> None:
    resources, defs, weak_defs = _gold_days(home, spec, instance, DAYS)
    keys = DatasetKeys(spec)
    registry = resources["mlflow_tracking"].registry()
    name = spec.gate.model_name
    candidate_and_release = [keys.forecaster, keys.release(keys.forecaster)]

    first = materialize_day(defs, resources, instance, candidate_and_release, DAYS[1])
    assert first.success and _gate(first).passed
    champion = registry.champion(name)
    assert champion is not None and champion.tag("partition") == DAYS[1].isoformat()
    assert registry.alias(name, PREVIOUS) is None

    worse = materialize_day(weak_defs, resources, instance, candidate_and_release, DAYS[2], raise_on_error=False)
    verdict = _gate(worse)
    assert not verdict.passed
    assert verdict.metadata["candidate_mae"].value > verdict.metadata["champion_mae"].value * (1 + spec.gate.margin)
    assert not worse.asset_materializations_for_node(keys.release(keys.forecaster).to_python_identifier())
    assert registry.champion(name).version == champion.version
    assert len(registry.versions(name)) == 1, "a refused candidate is not registered"

    better = materialize_day(defs, resources, instance, candidate_and_release, DAYS[2])
    assert better.success and _gate(better).passed
    promoted = registry.champion(name)
    assert promoted.version != champion.version and promoted.tag("partition") == DAYS[2].isoformat()
    assert registry.alias(name, PREVIOUS).version == champion.version
    assert "gate on models/smart_meter_forecaster@" in promoted.tag("promoted_reason")

    # Batch scoring uses models:/<name>@champion and records the version on every row.
    scored = materialize_day(defs, resources, instance, [keys.predictions], DAYS[2])
    metadata = scored.asset_materializations_for_node(keys.predictions.to_python_identifier())[0].metadata
    assert metadata["model_version"].value == promoted.version
    lake = resources["lake"]
    rows = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [DAYS[2]]).rows
    assert set(rows["model_version"]) == {promoted.version}

    result = CliRunner().invoke(main, ["rollback", "--reason", "alerts from the field"])
    assert result.exit_code == 0, result.output
    assert registry.champion(name).version == champion.version
    assert registry.alias(name, PREVIOUS) is None
    assert registry.get(name, promoted.version).tag("rolled_back_reason") == "alerts from the field"
    again = CliRunner().invoke(main, ["rollback", "--reason", "twice"])
    assert again.exit_code != 0 and "no previous champion" in again.output

    result = CliRunner().invoke(main, ["promote", promoted.version, "--reason", "field issue fixed"])
    assert result.exit_code == 0, result.output
    assert registry.champion(name).version == promoted.version
    assert registry.alias(name, PREVIOUS).version == champion.version


def test_no_champion_means_no_predictions_yet(tmp_path, spec, instance, mlflow_tracking) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    keys = DatasetKeys(spec)
    defs = build_definitions([spec], resources)
    simulate(resources["landing"], spec, START, days=1, meters=4, meters_per_file=4)
    result = materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold, keys.predictions], START)
    assert result.success
    assert not result.asset_materializations_for_node(keys.predictions.to_python_identifier())
    assert instance.get_materialized_partitions(keys.gold) == {START.isoformat()}


def test_automation_releases_a_day_only_when_that_day_passed_the_gate(home, spec, instance) -> None:
    """The gate is a per-day check: a later day passing does not release a refused day."""
    days = [START + dt.timedelta(days=offset) for offset in range(4)]
    resources, defs, weak_defs = _gold_days(home, spec, instance, days)
    keys = DatasetKeys(spec)
    initial = dg.evaluate_automation_conditions(defs=defs, instance=instance)
    assert materialize_day(defs, resources, instance, [keys.forecaster, keys.release(keys.forecaster)], days[1]).success

    refused = materialize_day(weak_defs, resources, instance, [keys.forecaster], days[2], raise_on_error=False)
    assert not _gate(refused).passed
    passed = materialize_day(defs, resources, instance, [keys.forecaster], days[3])
    assert _gate(passed).passed

    after = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=initial.cursor)
    assert after.get_requested_partitions(keys.release(keys.forecaster)) == {days[3].isoformat()}
