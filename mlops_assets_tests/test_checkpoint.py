"""The checkpoint model: days continue from the latest earlier checkpoint (a gap is recorded,
not refused), its inputs and target are standardised, and a training killed mid-way resumes
from its newest intact saved state and ends with the same model."""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import yaml

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import bundled_spec_paths, load_spec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.models.checkpoint import new_rows
from mlops_assets.defs.models.continued import MlpTrainer, TrainingState, train_day
from mlops_assets.resources.profiles import local_resources
from mlops_assets.resources.records import latest_record
from mlops_assets.resources.storage import StorageLocation
from mlops_assets.resources.training_states import TrainingStateStore
from mlops_assets_tests.conftest import materialize_day
from mlops_dev.simulate import simulate

START = dt.date(2026, 3, 1)
DAYS = [START, START + dt.timedelta(days=1)]
EPOCHS, EVERY = 400, 25

# The child process: materialize one checkpoint day on the test's instance and stores.
CHILD = """
import sys, dagster as dg
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import load_spec
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.profiles import local_resources
from pathlib import Path

spec_path, home, tracking, day = sys.argv[1:]
spec = load_spec(spec_path)
resources = {**local_resources(Path(home)), "mlflow_tracking": MlflowTracking(tracking_uri=tracking)}
defs = build_definitions([spec], resources)
with dg.DagsterInstance.get() as instance:
    dg.materialize(list(defs.assets), selection=[DatasetKeys(spec).checkpoint], partition_key=day,
                   instance=instance, resources=resources)
"""


@pytest.fixture
def long_spec(tmp_path: Path):
    """The bundled spec with a day long enough to be killed in the middle of."""
    (path,) = [path for path in bundled_spec_paths() if path.parent.name == "smart_meter"]
    document = yaml.safe_load(path.read_text())
    document["attributes"]["checkpoint"].update(epochs=EPOCHS, checkpoint_every=EVERY)
    target = tmp_path / "smart_meter.yaml"
    target.write_text(yaml.safe_dump(document))
    return target, load_spec(target)


@pytest.fixture
def persistent_instance(tmp_path: Path):
    folder = tmp_path / "dagster"
    folder.mkdir()
    with dg.DagsterInstance.local_temp(str(folder)) as instance:
        yield instance, folder


def _materialize(defs, resources, instance, key, day) -> dg.ExecuteInProcessResult:
    """Materialize one day of ``key``; a candidate the gate refuses is still materialized (only
    its promotion to champion is), so the run's outcome is not what these tests look at."""
    result = materialize_day(defs, resources, instance, [key], day, raise_on_error=False)
    assert result.asset_materializations_for_node(key.to_python_identifier()), f"{key} was not materialized"
    return result


def test_day_after_day_continues_from_the_latest_earlier_checkpoint(tmp_path, spec, mlflow_tracking, instance) -> None:
    resources = {**local_resources(tmp_path / "mlops"), "mlflow_tracking": mlflow_tracking}
    defs = build_definitions([spec], resources)
    keys = DatasetKeys(spec)
    days = [START + dt.timedelta(days=offset) for offset in range(4)]
    simulate(resources["landing"], spec, START, days=len(days), meters=8, meters_per_file=4)
    for day in days:
        for key in (keys.bronze, keys.silver, keys.gold):
            _materialize(defs, resources, instance, key, day)
    _materialize(defs, resources, instance, keys.checkpoint, days[0])

    def stored(day: dt.date) -> dg.AssetMaterialization:
        return (
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=keys.checkpoint, asset_partitions=[day.isoformat()]), limit=1
            )
            .records[0]
            .asset_materialization
        )

    second = _materialize(defs, resources, instance, keys.checkpoint, days[1])
    metadata = second.asset_materializations_for_node(keys.checkpoint.to_python_identifier())[0].metadata
    first = stored(days[0])
    assert metadata["parent_checkpoint"].value == days[0].isoformat()
    assert metadata["parent_sha256"].value == first.metadata["model_sha256"].value
    assert metadata["days_trained"].value == 2 and metadata["skipped_partitions"].value == []
    assert first.metadata["parent_checkpoint"].value == "fresh"
    assert metadata["steps_run"].value == spec.checkpoint.epochs
    # Day 2 trains on the rows that became available since day 1's hold-out started, up to its own.
    lake = resources["lake"]
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days[:2]).rows.dropna(subset=[spec.target_column])
    since = pd.Timestamp(first.metadata["holdout_start"].value, unit="s", tz="UTC")
    until = pd.Timestamp(metadata["holdout_start"].value, unit="s", tz="UTC")
    assert metadata["train_rows"].value == gold["timestamp"].between(since, until, inclusive="left").sum()

    # Day 4 without day 3: it continues from day 2, and says which day it skipped.
    gap = _materialize(defs, resources, instance, keys.checkpoint, days[3])
    skipped = gap.asset_materializations_for_node(keys.checkpoint.to_python_identifier())[0].metadata
    assert skipped["parent_checkpoint"].value == days[1].isoformat()
    assert skipped["skipped_partitions"].value == [days[2].isoformat()]
    assert skipped["days_trained"].value == 3
    # The saved training states are gone once the day's model is stored.
    assert not list((tmp_path / "mlops" / "training-states").rglob("*.state"))


def test_the_network_learns_in_any_unit(tmp_path, spec) -> None:
    """The same readings in Wh instead of kWh: a standardised target gives the same forecasts,
    scaled, where a raw one would learn a different (and far worse) network."""
    rng = np.random.default_rng(5)
    rows = pd.DataFrame({"x": rng.normal(size=400), "z": rng.normal(size=400)})
    rows["kwh"] = 2.0 + 0.8 * rows["x"] - 0.3 * rows["z"]
    in_wh = rows.assign(kwh=rows["kwh"] * 1000)
    models = []
    for frame in (rows, in_wh):
        trainer = MlpTrainer(
            target="kwh", params={"hidden_layer_sizes": [8], "learning_rate_init": 0.01, "batch_size": 32}, seed=3
        )
        training = train_day(
            trainer,
            TrainingState(model=trainer.fresh(["x", "z"], frame), step=0),
            frame,
            START,
            steps=60,
            checkpoint_every=100,
        )
        models.append(training.model)
    kwh, wh = models[0].predict(rows), models[1].predict(in_wh)
    assert wh / 1000 == pytest.approx(kwh, rel=1e-6)
    assert np.abs(kwh - rows["kwh"]).mean() < 0.2 * rows["kwh"].std()


def test_a_killed_training_resumes_from_its_last_checkpoint_and_ends_with_the_same_model(
    tmp_path, long_spec, mlflow_tracking, persistent_instance
) -> None:
    """The process doing the work is killed with SIGKILL, as an evicted pod or an OOM kill
    would; the retry is a new run of the same partition, which is what Dagster's run retry
    launches once run monitoring has marked the dead run failed."""
    spec_path, spec = long_spec
    instance, instance_dir = persistent_instance
    home = tmp_path / "mlops"
    resources = {**local_resources(home), "mlflow_tracking": mlflow_tracking}
    defs = build_definitions([spec], resources)
    keys = DatasetKeys(spec)
    simulate(resources["landing"], spec, START, days=len(DAYS), meters=60, meters_per_file=30)
    for day in DAYS:
        for key in (keys.bronze, keys.silver, keys.gold):
            _materialize(defs, resources, instance, key, day)
    _materialize(defs, resources, instance, keys.checkpoint, DAYS[0])

    folder = home / "training-states" / "models" / f"{spec.name}_checkpoint" / DAYS[1].isoformat()
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            CHILD,
            str(spec_path),
            str(home),
            mlflow_tracking.tracking_uri,
            DAYS[1].isoformat(),
        ],
        env={**os.environ, "DAGSTER_HOME": str(instance_dir)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and child.poll() is None:
        written = sorted(folder.rglob("step-*.state"))
        if len(written) >= 3:
            break
        time.sleep(0.02)
    assert child.poll() is None, "the training ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    saved = sorted(int(path.name.split(".")[0].split("-")[1]) for path in folder.rglob("step-*.state"))
    assert saved and saved[-1] < EPOCHS

    (killed,) = [run for run in instance.get_runs() if run.status == dg.DagsterRunStatus.STARTED]
    reached = max(
        int(entry.user_message.split()[1].split("/")[0])
        for entry in instance.all_logs(killed.run_id)
        if entry.user_message.startswith("epoch ")
    )
    assert reached >= saved[-1]

    retry = _materialize(defs, resources, instance, keys.checkpoint, DAYS[1])
    metadata = retry.asset_materializations_for_node(keys.checkpoint.to_python_identifier())[0].metadata
    resumed = metadata["resumed_from_step"].value
    assert resumed == saved[-1]
    assert reached - resumed < EVERY, "more steps redone than one checkpoint interval"
    assert metadata["steps_run"].value == EPOCHS - resumed

    # The same day trained without interruption, from the same parent model and rows.
    tracking = resources["mlflow_tracking"]
    parent = latest_record(instance, keys.checkpoint, DAYS[0].isoformat())
    lake = resources["lake"]
    gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), DAYS).rows
    window = (max(spec.start_date, DAYS[1] - dt.timedelta(days=spec.model.window_partitions - 1)), DAYS[1])
    train, holdout, _ = new_rows(gold, spec, window, parent)
    trainer = MlpTrainer(target=spec.target_column, params=spec.checkpoint.params, seed=spec.checkpoint.seed)
    uninterrupted = train_day(
        trainer,
        TrainingState(model=tracking.load_model(parent), step=0),
        train,
        DAYS[1],
        steps=EPOCHS,
        checkpoint_every=EVERY,
    )
    resumed_model = tracking.load_model(latest_record(instance, keys.checkpoint, DAYS[1].isoformat()))
    assert np.array_equal(resumed_model.predict(holdout), uninterrupted.model.predict(holdout))


def test_damaged_newer_saved_states_are_skipped_for_the_newest_intact_one(tmp_path) -> None:
    store = TrainingStateStore(location=StorageLocation(uri=(tmp_path / "states").as_uri()))
    with store.training(dg.AssetKey(["models", "toy"]), "2026-03-01", "abc") as run:
        states = {step: {"weights": [step] * 3} for step in (5, 10, 15, 20)}
        for step, state in states.items():
            run.save(step, state)
        run.flush()
        folder = next((tmp_path / "states").rglob("step-00000015.state")).parent
        changed = folder / "step-00000015.state"
        changed.write_bytes(changed.read_bytes()[:-2] + b"xx")
        (folder / "step-00000020.state.sha256").unlink()
        skipped: list[str] = []
        found = run.newest_intact(skipped)
    assert found is not None and found.step == 10 and found.state == states[10]
    assert found.sha256 == hashlib.sha256(pickle.dumps(states[10], protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    assert len(skipped) == 2
    assert "step-00000020.state has no recorded sha256" in skipped[0]
    assert "step-00000015.state was changed after it was written" in skipped[1]
