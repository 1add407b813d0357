"""The registry's decisions: a candidate becomes champion only when it beats the seasonal-naive
forecast and the champion before it; decisions form a chain in data time, so a late day never
takes the alias from a champion chosen for a later day; identical models are not registered
twice; every alias move is audited; a dry run moves nothing; rollback restores."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
import os
import subprocess
import sys
import threading

import dagster as dg
import pandas as pd
import pytest
from click.testing import CliRunner

from mlops_assets.cli import main
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.registry.decisions import REGISTRY_POOL, decision_for
from mlops_assets.defs.registry.gate import GATE_CHECK, judge
from mlops_assets.resources.model_registry import CHALLENGER, CHAMPION, PREVIOUS
from mlops_assets.resources.profiles import local_resources
from mlops_assets.resources.records import ModelRecord
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.demo import reset_state
from mlops_dev.simulate import simulate

START = dt.date(2026, 2, 2)
DAYS = [START + dt.timedelta(days=offset) for offset in range(5)]


def _gold_days(home, spec, instance, days, meters: int = 16) -> tuple[dict, dg.Definitions, dg.Definitions]:
    """Local-profile resources with gold built for ``days``, the definitions of the spec, and
    those of a spec whose model cannot learn (one boosting round barely moves from the mean)."""
    resources = local_resources(home)
    keys = DatasetKeys(spec)
    weak = spec.model_copy(update={"model": spec.model.model_copy(update={"params": {"max_iter": 1}})})
    defs, weak_defs = build_definitions([spec], resources), build_definitions([weak], resources)
    simulate(resources["landing"], spec, days[0], days=len(days), meters=meters, meters_per_file=8)
    for day in days:
        materialize_day(defs, resources, instance, [keys.bronze, keys.silver, keys.gold], day)
    return resources, defs, weak_defs


def _gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    (evaluation,) = [
        evaluation for evaluation in result.get_asset_check_evaluations() if evaluation.check_name == GATE_CHECK
    ]
    return evaluation


def _decide(defs, resources, instance, keys, day) -> dg.ExecuteInProcessResult:
    return materialize_day(defs, resources, instance, [keys.forecaster, keys.decision(keys.forecaster)], day)


@pytest.fixture
def home(tmp_path, monkeypatch):
    """A local-profile home that the CLI sees too (its own MLflow store and registry)."""
    folder = tmp_path / "mlops"
    monkeypatch.setenv("MLOPS_PROFILE", "local")
    monkeypatch.setenv("MLOPS_HOME", str(folder))
    return folder


def test_the_gate_refuses_what_the_seasonal_naive_forecast_beats(home, spec, instance) -> None:
    """A model that barely moves from the mean is worse than repeating yesterday's value: with no
    thresholds in the spec at all, it must still never become champion."""
    resources, defs, weak_defs = _gold_days(home, spec, instance, DAYS[:2])
    no_thresholds = spec.model_copy(update={"gate": spec.gate.model_copy(update={"thresholds": {}})})
    weak = no_thresholds.model_copy(update={"model": spec.model.model_copy(update={"params": {"max_iter": 1}})})
    keys = DatasetKeys(spec)
    refused = _decide(build_definitions([weak], resources), resources, instance, keys, DAYS[1])
    verdict = _gate(refused)
    assert not verdict.passed
    assert verdict.metadata["candidate_skill"].value < 0
    assert "does not beat the seasonal-naive forecast" in verdict.metadata["decision"].value
    registry = resources["mlflow_tracking"].registry()
    assert registry.champion(spec.gate.model_name) is None
    # The candidate is registered and under review, but it does not serve.
    assert registry.alias(spec.gate.model_name, CHALLENGER) is not None


def test_worse_candidate_keeps_the_champion_better_is_promoted_and_rollback_restores(home, spec, instance) -> None:
    resources, defs, weak_defs = _gold_days(home, spec, instance, DAYS[:3])
    keys = DatasetKeys(spec)
    registry = resources["mlflow_tracking"].registry()
    name = spec.gate.model_name

    first = _decide(defs, resources, instance, keys, DAYS[1])
    assert _gate(first).passed
    champion = registry.champion(name)
    assert champion is not None and champion.tag("partition") == DAYS[1].isoformat()
    assert registry.alias(name, PREVIOUS) is None and registry.alias(name, CHALLENGER) is None

    worse = _decide(weak_defs, resources, instance, keys, DAYS[2])
    verdict = _gate(worse)
    assert not verdict.passed
    assert verdict.metadata["candidate_mae"].value > verdict.metadata["champion_mae"].value * (1 + spec.gate.margin)
    assert registry.champion(name).version == champion.version
    decision = decision_for(instance, keys.decision(keys.forecaster), DAYS[2].isoformat())
    assert decision.champion.partition == DAYS[1].isoformat(), "a refused day keeps the champion before it"
    assert registry.alias(name, CHALLENGER).tag("partition") == DAYS[2].isoformat()

    better = _decide(defs, resources, instance, keys, DAYS[2])
    assert _gate(better).passed
    promoted = registry.champion(name)
    assert promoted.version != champion.version and promoted.tag("partition") == DAYS[2].isoformat()
    assert registry.alias(name, PREVIOUS).version == champion.version
    assert registry.alias(name, CHALLENGER) is None

    result = CliRunner().invoke(main, ["rollback", "--reason", "alerts from the field"])
    assert result.exit_code == 0, result.output
    assert registry.champion(name).version == champion.version
    assert registry.alias(name, PREVIOUS) is None
    again = CliRunner().invoke(main, ["rollback", "--reason", "twice"])
    assert again.exit_code != 0 and "no previous champion" in again.output

    result = CliRunner().invoke(main, ["promote", promoted.version, "--reason", "field issue fixed"])
    assert result.exit_code == 0, result.output
    assert registry.champion(name).version == promoted.version

    # Every move, by the pipeline or by hand, is in the audit trail, in order.
    history = registry.history(name)
    moves = [(entry["action"], entry["alias"], entry["version"], entry["replaced"]) for entry in history]
    assert moves == [
        ("move", CHALLENGER, champion.version, None),
        ("move", CHAMPION, champion.version, None),
        ("move", CHALLENGER, verdict_version(registry, name, DAYS[2], weak=True), None),
        ("move", CHALLENGER, promoted.version, verdict_version(registry, name, DAYS[2], weak=True)),
        ("move", CHAMPION, promoted.version, champion.version),
        ("rollback", CHAMPION, champion.version, promoted.version),
        ("move", CHAMPION, promoted.version, champion.version),
    ]
    assert history[-1]["reason"] == "field issue fixed" and history[-1]["actor"].endswith("via mlops")
    printed = CliRunner().invoke(main, ["registry", "history", name])
    assert printed.exit_code == 0, printed.output
    lines = printed.output.strip().splitlines()
    assert len(lines) == len(history) + 1
    assert "alerts from the field" in printed.output and f"champion -> v{promoted.version}" in lines[-1]


def verdict_version(registry, name: str, day: dt.date, weak: bool) -> str:
    """The version registered for ``day``'s refused (weak) or passed candidate."""
    versions = [version for version in registry.versions(name) if version.tag("partition") == day.isoformat()]
    return versions[0 if weak else -1].version


def test_a_late_day_never_takes_the_alias_from_a_later_champion(home, spec, instance) -> None:
    """Day 4 is decided first; day 3 arrives late. Its decision is judged against the champion
    for day 2 and recorded, and the alias stays with the champion chosen for day 4."""
    resources, defs, _ = _gold_days(home, spec, instance, DAYS)
    keys = DatasetKeys(spec)
    registry = resources["mlflow_tracking"].registry()
    name = spec.gate.model_name
    for day in (DAYS[1], DAYS[2], DAYS[4]):
        _decide(defs, resources, instance, keys, day)
    latest = registry.champion(name)
    assert registry.champion_for(name) == DAYS[4].isoformat()

    late = _decide(defs, resources, instance, keys, DAYS[3])
    decision = decision_for(instance, keys.decision(keys.forecaster), DAYS[3].isoformat())
    judged_against = decision_for(instance, keys.decision(keys.forecaster), DAYS[2].isoformat()).champion
    assert _gate(late).metadata["champion"].value == judged_against.label
    assert _gate(late).metadata["holdout_rows"].value > 0, "a late day is judged on rows, not refused for its date"
    assert registry.champion(name).version == latest.version
    metadata = late.asset_materializations_for_node(keys.decision(keys.forecaster).to_python_identifier())[0].metadata
    assert "chosen for a later day" in metadata["alias_moves"].value[0]
    assert decision.registered_version is None


def test_an_identical_candidate_is_not_registered_again(home, spec, instance) -> None:
    """A day trained again on the same rows (a file sent twice, a nightly retrain) gives the same
    model: no new version, no alias move."""
    resources, defs, _ = _gold_days(home, spec, instance, DAYS[:3])
    keys = DatasetKeys(spec)
    registry = resources["mlflow_tracking"].registry()
    name = spec.gate.model_name
    for day in DAYS[1:3]:
        _decide(defs, resources, instance, keys, day)
    versions, history = registry.versions(name), registry.history(name)
    again = _decide(defs, resources, instance, keys, DAYS[2])
    metadata = again.asset_materializations_for_node(keys.decision(keys.forecaster).to_python_identifier())[0].metadata
    assert [version.version for version in registry.versions(name)] == [version.version for version in versions]
    assert registry.history(name) == history
    assert metadata["alias_moves"].value == []


def test_a_dry_run_records_the_decision_and_moves_nothing(home, spec, instance) -> None:
    resources, _, _ = _gold_days(home, spec, instance, DAYS[:2])
    dry = spec.model_copy(update={"gate": spec.gate.model_copy(update={"dry_run": True})})
    keys = DatasetKeys(spec)
    result = _decide(build_definitions([dry], resources), resources, instance, keys, DAYS[1])
    assert _gate(result).passed
    registry = resources["mlflow_tracking"].registry()
    name = spec.gate.model_name
    assert registry.versions(name) == [] and registry.champion(name) is None
    (entry,) = registry.history(name)
    assert entry["action"] == "dry_run" and entry["reason"].startswith(f"dry run: decision for {DAYS[1]}")
    decision = decision_for(instance, keys.decision(keys.forecaster), DAYS[1].isoformat())
    assert decision.passed and decision.champion is not None and decision.registered_version is None


def test_seen_in_training_is_judged_by_rows_not_by_a_time_cutoff(spec) -> None:
    """A champion trained on later days has not seen an earlier day's rows, although they are
    older than its hold-out: the gate still finds rows to judge a backfilled day on."""
    later = ModelRecord(
        asset="models/x",
        partition="2026-03-10",
        family="ridge",
        model_uri="models:/m-1",
        run_id="r",
        sha256="a",
        gold_uri="gold",
        gold_version=3,
        trained_partitions=("2026-03-08", "2026-03-09"),
        holdout_partitions=("2026-03-09", "2026-03-10"),
        holdout_start="2026-03-09T20:00:00+00:00",
    )
    stamps = pd.date_range("2026-03-02T18:00", periods=12, freq="h", tz="UTC")
    rows = pd.DataFrame(
        {
            "event_date": [stamp.date() for stamp in stamps],
            "meter_id": "M1",
            "timestamp": stamps,
            "kwh": 1.0,
            "kwh_lag_24h": 2.0,
        }
    )
    assert not later.seen(rows, spec).any()
    decision = judge(
        spec,
        lambda frame: frame["kwh"].to_numpy() * 0 + 1.0,
        rows,
        later,
        lambda frame: frame["kwh_lag_24h"].to_numpy(),
    )
    assert decision.rows == len(rows) and decision.passed
    trained = dataclasses.replace(later, trained_partitions=("2026-03-02", "2026-03-03"))
    assert trained.seen(rows, spec).all()
    assert not judge(spec, lambda frame: frame["kwh"].to_numpy(), rows, trained, None).passed


# A child run: decide one day of the forecaster on the instance of DAGSTER_HOME.
DECIDE = """
import sys
from pathlib import Path
import dagster as dg
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.profiles import local_resources

home, day = sys.argv[1:]
(spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
resources = local_resources(Path(home))
keys = DatasetKeys(spec)
with dg.DagsterInstance.get() as instance:
    assets = list(build_definitions([spec], resources).assets)
    result = dg.materialize(assets, selection=[keys.decision(keys.forecaster)], partition_key=day,
                            instance=instance, resources=resources, raise_on_error=False)
sys.exit(0 if result.success else 1)
"""


@pytest.fixture
def pooled_instance(tmp_path):
    """An instance on disk with the concurrency setting of the project's dagster.yaml: one step of a
    pool at a time."""
    folder = tmp_path / "dagster"
    folder.mkdir()
    (folder / "dagster.yaml").write_text("concurrency:\n  pools:\n    default_limit: 1\n")
    with dg.DagsterInstance.local_temp(str(folder)) as instance:
        yield instance, folder


def test_decisions_move_aliases_one_at_a_time_across_runs(home, spec, pooled_instance) -> None:
    """Two runs decide two days at the same moment, in two processes: their decision steps, which
    move the registry's aliases, never overlap."""
    instance, folder = pooled_instance
    resources, defs, _ = _gold_days(home, spec, instance, DAYS[:4])
    keys = DatasetKeys(spec)
    for day in DAYS[1:4]:
        materialize_day(defs, resources, instance, [keys.forecaster], day)
    # The pool's limit is set from the default when a step first uses it; the first decision
    # does that before the two that race.
    _decide(defs, resources, instance, keys, DAYS[1])
    environment = {**os.environ, "DAGSTER_HOME": str(folder)}
    children = [
        subprocess.Popen([sys.executable, "-c", DECIDE, str(home), day.isoformat()], env=environment)
        for day in DAYS[2:4]
    ]
    assert [child.wait(timeout=300) for child in children] == [0, 0]
    step = keys.decision(keys.forecaster).to_python_identifier()
    windows = []
    for record in instance.get_run_records():
        events = instance.all_logs(record.dagster_run.run_id)
        steps = [event for event in events if event.is_dagster_event and event.step_key == step]
        started = [event.timestamp for event in steps if event.dagster_event.is_step_start]
        ended = [event.timestamp for event in steps if event.dagster_event.is_step_success]
        windows += list(zip(started, ended, strict=True))
    windows.sort()
    assert len(windows) == 3
    for (_, end), (start, _) in itertools.pairwise(windows):
        assert end <= start, "two decision steps moved aliases at the same time"
    registered = resources["mlflow_tracking"].registry().versions(spec.gate.model_name)
    assert registered and {version.tag("partition") for version in registered} <= {day.isoformat() for day in DAYS[1:4]}


def test_a_reset_keeps_the_registry_pool_usable(tmp_path, pooled_instance) -> None:
    """The demo's reset empties the instance's runs and asset history; a step of the registry's
    pool must still get its slot afterwards, not wait for ever."""
    instance, _ = pooled_instance

    @dg.asset(pool=REGISTRY_POOL)
    def decision_like() -> int:
        return 1

    assert dg.materialize([decision_like], instance=instance).success
    reset_state(tmp_path / "mlops-home", instance)
    assert instance.get_run_records() == []
    done = threading.Event()
    worker = threading.Thread(
        target=lambda: done.set() if dg.materialize([decision_like], instance=instance).success else None,
        daemon=True,
    )
    worker.start()
    assert done.wait(timeout=120), "a step of the registry's pool waited for a slot that the reset took away"
