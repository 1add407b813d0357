"""The checkpoint model: one model that keeps learning, day after day.

Day D starts from day D-1's checkpoint (the first day from a fresh model) and trains
for the spec's epochs on day D's gold hours, the latest of them held out for its
metrics and the registry's gate. During the day's training it stores an intermediate
checkpoint every few epochs; a run that dies and is retried resumes from the newest
intact one and ends with the same model as a run that never stopped.
"""

import datetime as dt
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import CheckpointSpec, DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake
from mlops_assets.lakehouse.features import feature_columns
from mlops_assets.ml import gate
from mlops_assets.ml.continued import TrainingState, make_trainer, train_day
from mlops_assets.ml.record import experiment_metadata, lineage_version
from mlops_assets.ml.tracking import MlflowTracking, log_sklearn_model
from mlops_assets.ml.trainer import NotEnoughData, forecast_metrics, split_holdout
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.provenance import git_commit
from mlops_assets.storage.checkpoints import CheckpointStore

CHECKPOINT_CODE_VERSION = "checkpoint-1"


@dataclass
class CheckpointModel:
    """The checkpoint model at the end of a day, with what it was made from."""

    model: Any
    family: str
    features: list[str]
    target: str
    seed: int
    window: tuple[dt.date, dt.date]
    holdout_start: pd.Timestamp
    gold_version: int | None
    days_trained: int
    parent: str | None = None
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.model.predict(rows)


def build_checkpoint_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    settings = spec.checkpoint
    code_version = spec.code_version(CHECKPOINT_CODE_VERSION, "features", "checkpoint")
    partitions = daily_partitions(spec)

    @dg.asset(
        key=keys.checkpoint,
        ins={
            "previous": dg.AssetIn(
                keys.checkpoint,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
                metadata={"allow_missing_partitions": True},
            )
        },
        deps=[keys.gold],
        partitions_def=partitions,
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="object_store",
        check_specs=[gate.gate_check_spec(spec, keys.checkpoint)],
        description=(
            f"A {settings.family} network that continues training each day from the day before: "
            f"{settings.epochs_per_day} epochs over the day's gold hours (the latest "
            f"{spec.model.holdout_fraction:.0%} held out, and trained on the next day), with a resumable "
            f"checkpoint every {settings.checkpoint_every} epochs. The first day starts from a fresh network."
        ),
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        previous: CheckpointModel | None,
        lake: DeltaLake,
        checkpoints: CheckpointStore,
        mlflow_tracking: MlflowTracking,
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        day = partition_day(context)
        parent = _parent_record(context, keys.checkpoint, day, previous)
        days = [day] if previous is None else [day - dt.timedelta(days=1), day]
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days).require(keys.gold)
        train, holdout, holdout_start = day_rows(
            gold.rows, spec, day, previous.holdout_start if previous is not None else None
        )
        trainer = make_trainer(settings.family, spec.target_column, settings.params, settings.seed)
        if previous is None:
            features = [column for column in feature_columns(spec) if train[column].notna().any()]
            start = TrainingState(model=trainer.fresh(features, train), step=0)
        else:
            features, start = previous.features, TrainingState(model=previous.model, step=0)
        fingerprint = _fingerprint(parent, train, day, code_version, settings)

        with checkpoints.training(keys.checkpoint, context.partition_key, fingerprint) as store:
            skipped: list[str] = []
            newest = store.newest_intact(skipped)
            for reason in skipped:
                context.log.warning(f"Skipped a damaged checkpoint: {reason}")
            if newest is not None:
                context.log.info(f"Resuming {day} from its checkpoint after epoch {newest.step}.")
                start = TrainingState(model=newest.state, step=newest.step)

            def save(state: TrainingState) -> None:
                digest = store.save(state.step, state.model)
                context.log.info(f"Checkpoint after epoch {state.step}/{settings.epochs_per_day}: sha256 {digest}")

            def progress(done: int, total: int) -> None:
                context.log.debug(f"epoch {done}/{total}")

            training = train_day(
                trainer,
                start,
                train,
                day,
                steps=settings.epochs_per_day,
                checkpoint_every=settings.checkpoint_every,
                save=save,
                progress=progress,
            )
            model = CheckpointModel(
                model=training.model,
                family=settings.family,
                features=list(features),
                target=spec.target_column,
                seed=settings.seed,
                window=(day, day),
                holdout_start=holdout_start,
                gold_version=gold.version,
                days_trained=(previous.days_trained if previous else 0) + 1,
                parent=parent["partition"] if parent else None,
            )
            metrics = forecast_metrics(holdout, model.predict(holdout), spec)
            params = {"family": settings.family, **settings.params, "epochs_per_day": settings.epochs_per_day}
            inputs = [{"uri": gold.uri, "version": gold.version, "days": [days[0].isoformat(), day.isoformat()]}]
            commit = git_commit()
            with mlflow_tracking.start_run(
                context,
                experiment=spec.name,
                tags={
                    "mlops.code_version": code_version,
                    "mlops.git_commit": commit,
                    "mlops.parent_checkpoint": parent["partition"] if parent else "",
                },
            ) as run:
                mlflow.log_params({**params, "seed": settings.seed, "checkpoint_every": settings.checkpoint_every})
                mlflow.log_metrics({**metrics, "train_rows": len(train), "holdout_rows": len(holdout)})
                model_info = log_sklearn_model(model.model)
            model.mlflow_run_id, model.model_uri = run.info.run_id, model_info.model_uri
            metadata = experiment_metadata(
                params=params,
                metrics=metrics,
                train_rows=len(train),
                holdout_rows=len(holdout),
                holdout_start=holdout_start,
                window=f"{days[0].isoformat()}..{day.isoformat()}",
                inputs=inputs,
                code_version=code_version,
                commit=commit,
                seed=settings.seed,
                model_uri=model_info.model_uri,
                run_id=run.info.run_id,
                run_url=mlflow_tracking.run_url(run),
            )
            metadata.update(
                {
                    "gold_version": dg.MetadataValue.int(gold.version),
                    "parent_checkpoint": dg.MetadataValue.text(parent["partition"] if parent else "fresh"),
                    "parent_sha256": dg.MetadataValue.text(parent["sha256"] if parent else ""),
                    "resumed_from_step": dg.MetadataValue.int(training.resumed_from_step),
                    "steps_run": dg.MetadataValue.int(training.steps_run),
                    "steps": dg.MetadataValue.int(settings.epochs_per_day),
                    "checkpoints_written": dg.MetadataValue.json(training.checkpoints_written),
                    "days_trained": dg.MetadataValue.int(model.days_trained),
                    "training_fingerprint": dg.MetadataValue.text(fingerprint),
                }
            )
            decision = gate.evaluate(spec, lake, mlflow_tracking.registry(), model)
            yield dg.Output(
                model,
                metadata=metadata,
                data_version=lineage_version(inputs=inputs, parent=parent, code=code_version, seed=settings.seed),
            )
            yield decision.check_result(spec)
            store.discard()

    return checkpoint


def day_rows(
    gold: pd.DataFrame, spec: DatasetSpec, day: dt.date, held_out_since: pd.Timestamp | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """A day's (training rows, held-out rows, first held-out hour) from gold rows of the day and
    the day before.

    The latest hours of the day are held out; the hours the day before held out (from
    ``held_out_since``, None on the first day) are trained on today, so every hour is
    learned from once, a day late, and none is held out for ever.
    """
    today = gold[gold[PARTITION_COLUMN] == day]
    if today.dropna(subset=[spec.target_column]).empty:
        raise NotEnoughData(f"no gold rows with {spec.target_column} on {day}: nothing to continue training on")
    fresh_hours, holdout, holdout_start = split_holdout(today, spec, (day, day))
    if held_out_since is None:
        return fresh_hours, holdout, holdout_start
    earlier = gold[(gold[PARTITION_COLUMN] != day) & (gold[spec.timestamp_column] >= held_out_since)]
    earlier = earlier.dropna(subset=[spec.target_column])
    return pd.concat([earlier, fresh_hours], ignore_index=True), holdout, holdout_start


def _parent_record(
    context: dg.AssetExecutionContext, key: dg.AssetKey, day: dt.date, previous: CheckpointModel | None
) -> dict[str, str] | None:
    """The day before's checkpoint (its partition and sha256), None for the first day of the
    chain; a gap in the chain is an error, since days must train in order."""
    before = (day - dt.timedelta(days=1)).isoformat()
    if previous is None:
        earlier = [partition for partition in context.instance.get_materialized_partitions(key) if partition < before]
        if earlier:
            raise dg.Failure(
                f"{key.to_user_string()} has no checkpoint for {before}, but has earlier ones "
                f"(latest {max(earlier)}): days train in order, so materialize {before} first "
                "(a backfill over the missing days runs them in order)."
            )
        return None
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[before]), limit=1
    ).records
    sha = records[0].asset_materialization.metadata.get("sha256") if records else None
    return {"partition": before, "sha256": sha.value if isinstance(sha, dg.TextMetadataValue) else ""}


def _fingerprint(
    parent: dict[str, str] | None, train: pd.DataFrame, day: dt.date, code_version: str, settings: CheckpointSpec
) -> str:
    """What determines a day's training (parent model, the training rows themselves, code and
    settings), so that a retry resumes only the very same training."""
    text = json.dumps(
        {
            "parent": parent,
            "rows": int(pd.util.hash_pandas_object(train, index=False).sum()),
            "day": day.isoformat(),
            "code": code_version,
            "family": settings.family,
            "params": settings.params,
            "seed": settings.seed,
            "epochs": settings.epochs_per_day,
        },
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:16]
