"""checkpoint_overhead: a day of continued training of the checkpoint model that saves its
training state every k epochs, through the training-state store to Azurite, against the same
training without saved states.

Both sides run in this process on the same rows, from the same fresh model and seed,
alternating; the saving side pickles the model, hashes it and uploads it to a real Azurite
(started on free ports, data in a temporary folder) every ``--every`` epochs, and its time
ends only when every state is written. Both must end with the same model.

    python benchmarks/checkpoint_overhead.py [--meters 200] [--epochs 60] [--every 5] [--repeats 5]

Prints, as its last line, the result (benchmarks/report.py): min, median and max of both
sides, ratio = median with saved states / median without (target <= 1.10), the size of one
state and what one costs the training in ms.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import pickle
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource
from report import machine, report, spread

from mlops_assets.datasets.spec import load_bundled_specs
from mlops_assets.defs.lakehouse.features import feature_columns
from mlops_assets.defs.models.continued import MlpTrainer, TrainingState, train_day
from mlops_assets.resources.storage import StorageAccount, StorageLocation
from mlops_assets.resources.training_states import TrainingStateStore
from mlops_dev.services import AZURITE_KEY, run_azurite

DAY = dt.date(2026, 1, 15)


def day_rows(meters: int, columns: list[str], target: str, seed: int = 5) -> pd.DataFrame:
    """Feature rows shaped like a gold day: ``meters`` x 24 hours, a few missing values."""
    rng = np.random.default_rng(seed)
    rows = pd.DataFrame(rng.normal(1.0, 0.4, (meters * 24, len(columns))), columns=columns)
    rows.loc[rng.random(len(rows)) < 0.02, columns[0]] = np.nan
    rows[target] = rows[columns].fillna(0).to_numpy() @ rng.uniform(0.1, 0.5, len(columns)) + rng.normal(
        0, 0.1, len(rows)
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--meters", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--every", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = machine()
    (spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
    settings = spec.checkpoint
    columns = feature_columns(spec)
    rows = day_rows(args.meters, columns, spec.target_column)
    trainer = MlpTrainer(target=spec.target_column, params=settings.params, seed=settings.seed)
    fresh = trainer.fresh(columns, rows)
    with_seconds, without_seconds, written = [], [], 0
    with tempfile.TemporaryDirectory() as folder, run_azurite(Path(folder) / "azurite") as endpoints:
        account = StorageAccount(
            blob=AzureBlobStorageResource(
                account_url=endpoints.blob_url, credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY)
            )
        )
        store = TrainingStateStore(location=StorageLocation(uri="az://models/training-states", account=account))
        for repeat in range(args.repeats):
            started = time.perf_counter()
            plain = train_day(trainer, TrainingState(copy.deepcopy(fresh), 0), rows, DAY, args.epochs, args.every)
            without_seconds.append(time.perf_counter() - started)

            with store.training(dg.AssetKey(["models", "bench_checkpoint"]), DAY.isoformat(), f"run{repeat}") as run:
                started = time.perf_counter()
                saved = train_day(
                    trainer,
                    TrainingState(copy.deepcopy(fresh), 0),
                    rows,
                    DAY,
                    args.epochs,
                    args.every,
                    save=lambda state, run=run: run.save(state.step, state.model),
                )
                run.flush()
                with_seconds.append(time.perf_counter() - started)
                written = len(saved.states_saved)
                if run.newest_intact() is None or not np.array_equal(
                    plain.model.predict(rows), saved.model.predict(rows)
                ):
                    raise SystemExit("the training with saved states did not end with the same model")
            print(
                f"[{repeat + 1}/{args.repeats}] without {without_seconds[-1]:.2f} s, "
                f"with {written} saved states {with_seconds[-1]:.2f} s",
                file=sys.stderr,
            )
    saving, plain_side = spread(with_seconds), spread(without_seconds)
    ratio = saving["median"] / plain_side["median"]
    state_bytes = len(pickle.dumps(fresh, protocol=pickle.HIGHEST_PROTOCOL))
    report(
        "checkpoint_overhead",
        project=saving,
        baseline=plain_side,
        unit="s",
        ratio=ratio,
        target="median with saved states / median without <= 1.10",
        met=ratio <= 1.10,
        machine=before,
        rows=len(rows),
        epochs=args.epochs,
        every=args.every,
        saved_states=written,
        state_mb=round(state_bytes / 1e6, 3),
        ms_per_state=round(1000 * (saving["median"] - plain_side["median"]) / max(written, 1), 1),
    )


if __name__ == "__main__":
    main()
