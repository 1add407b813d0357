"""The checkpoint model: one model that keeps learning, partition after partition.

Partition D starts from the checkpoint of the partition before it; when that one is
missing (a partition without data, or one not trained yet), from the latest earlier
checkpoint, with the partitions it skipped recorded. The first partition starts from a
fresh model. D uses the forecaster's window and hold-out (the latest periods of the
window ending on D are held out for its metrics and the gate) and trains on the rows
that became available since its parent's hold-out started, so every row is learned
once and none is held out for ever, at any frequency.

During training it stores an intermediate checkpoint every few epochs; a run that
dies and is retried resumes from the newest intact one and ends with the same model
as a run that never stopped.
"""

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dagster as dg
import mlflow
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import PARTITION_COLUMN, CheckpointSpec, DatasetSpec
from mlops_assets.digests import short_digest
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.lakehouse.features import feature_columns
from mlops_assets.ml.continued import TrainingState, make_trainer, train_day
from mlops_assets.ml.record import ModelRecord, experiment_metadata, fitted_digest, window_input
from mlops_assets.ml.tracking import MlflowTracking, log_sklearn_model
from mlops_assets.ml.trainer import NotEnoughData, forecast_metrics, split_holdout
from mlops_assets.partitions import partition_before, partition_start, partitions_back, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES
from mlops_assets.provenance import git_commit
from mlops_assets.storage.checkpoints import CheckpointStore

CHECKPOINT_CODE_VERSION = "checkpoint-2"


@dataclass
class CheckpointModel:
    """The checkpoint model at the end of a partition, with what it was made from."""

    model: Any
    family: str
    features: list[str]
    target: str
    seed: int
    window: tuple[dt.date, dt.date]
    holdout_start: pd.Timestamp
    trained_partitions: tuple[str, ...]
    holdout_partitions: tuple[str, ...]
    gold_uri: str
    gold_version: int | None
    days_trained: int
    parent: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    mlflow_run_id: str | None = None
    model_uri: str | None = None

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        return self.model.predict(rows)

    @property
    def sha256(self) -> str:
        return fitted_digest(self.family, self.features, self.model)

    def record(self, asset: str, partition: str) -> ModelRecord:
        """This model as the gate, the registry and batch scoring know it (``asset``: the asset key
        that made it, as a string)."""
        return ModelRecord.of(self, asset, partition)


@dataclass(frozen=True)
class Parent:
    """The checkpoint a partition continues from: its partition, model and stored sha256, and
    the partitions between it and the child that have no checkpoint."""

    partition: str
    model: CheckpointModel
    sha256: str
    skipped: tuple[str, ...]


def build_checkpoint_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    settings = spec.checkpoint
    code_version = spec.code_version(CHECKPOINT_CODE_VERSION, "frequency", "partitions", "features", "checkpoint")
    window = spec.model.window_partitions
    noun = spec.grain.noun

    @dg.asset(
        key=keys.checkpoint,
        ins={
            "previous": dg.AssetIn(
                keys.checkpoint,
                partition_mapping=partition_before(),
                metadata={"allow_missing_partitions": True},
            )
        },
        deps=[dg.AssetDep(keys.gold, partition_mapping=partitions_back(window - 1))],
        partitions_def=partitions_def(spec),
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="object_store",
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"A {settings.family} network that keeps learning: each {noun} continues from the latest earlier "
            f"checkpoint and trains {settings.epochs} epochs on the rows that became available since (the "
            f"forecaster's {window}-{noun} window, its latest {spec.model.holdout_fraction:.0%} held out), with "
            f"a resumable checkpoint every {settings.checkpoint_every} epochs. Inputs and target are "
            "standardised, so it learns the same way in any unit."
        ),
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        previous: CheckpointModel | None,
        lake: DeltaLake,
        checkpoints: CheckpointStore,
        mlflow_tracking: MlflowTracking,
    ) -> Iterator[dg.Output]:
        day = partition_start(context)
        parent = _parent(context, keys.checkpoint, spec, day, previous)
        if parent is not None and parent.skipped:
            context.log.warning(
                f"No checkpoint for {', '.join(parent.skipped)}: {day} continues from {parent.partition}."
            )
        first = max(spec.start_date, spec.grain.shift(day, -(window - 1)))
        since = spec.grain.floor(parent.model.holdout_start.date()) if parent is not None else first
        partitions = spec.grain.between(min(first, since), day)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), partitions).require(keys.gold)
        try:
            train, holdout, split = new_rows(gold.rows, spec, (first, day), parent.model if parent else None)
        except NotEnoughData as error:
            # The same rows fail the same way: retrying cannot help.
            raise dg.Failure(str(error), allow_retries=False) from error
        trainer = make_trainer(settings.family, spec.target_column, settings.params, settings.seed)
        if parent is None:
            features = [column for column in feature_columns(spec) if train[column].notna().any()]
            start = TrainingState(model=trainer.fresh(features, train), step=0)
        else:
            features, start = parent.model.features, TrainingState(model=parent.model.model, step=0)
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
                context.log.info(f"Checkpoint after epoch {state.step}/{settings.epochs}: sha256 {digest}")

            def progress(done: int, total: int) -> None:
                context.log.debug(f"epoch {done}/{total}")

            training = train_day(
                trainer,
                start,
                train,
                day,
                steps=settings.epochs,
                checkpoint_every=settings.checkpoint_every,
                save=save,
                progress=progress,
            )
            trained = sorted({*(parent.model.trained_partitions if parent else ()), *_partitions(train)})
            model = CheckpointModel(
                model=training.model,
                family=settings.family,
                features=list(features),
                target=spec.target_column,
                seed=settings.seed,
                window=(first, day),
                holdout_start=split,
                trained_partitions=tuple(trained),
                holdout_partitions=_partitions(holdout),
                gold_uri=gold.uri,
                gold_version=gold.version,
                days_trained=(parent.model.days_trained if parent else 0) + 1,
                parent=parent.partition if parent else None,
            )
            model.metrics = forecast_metrics(holdout, model.predict(holdout), spec)
            params = {"family": settings.family, **settings.params, "epochs": settings.epochs}
            rows = {key.isoformat(): count for key, count in gold.rows[PARTITION_COLUMN].value_counts().items()}
            inputs = [window_input(gold.uri, gold.version, [key.isoformat() for key in partitions], rows)]
            commit = git_commit()
            with mlflow_tracking.start_run(
                context,
                experiment=spec.name,
                tags={
                    "mlops.code_version": code_version,
                    "mlops.git_commit": commit,
                    "mlops.parent_checkpoint": parent.partition if parent else "",
                    "mlops.sha256": model.sha256,
                },
            ) as run:
                mlflow.log_params({**params, "seed": settings.seed, "checkpoint_every": settings.checkpoint_every})
                mlflow.log_metrics({**model.metrics, "train_rows": len(train), "holdout_rows": len(holdout)})
                model_info = log_sklearn_model(model.model)
            model.mlflow_run_id, model.model_uri = run.info.run_id, model_info.model_uri
            metadata = experiment_metadata(
                params=params,
                metrics=model.metrics,
                train_rows=len(train),
                holdout_rows=len(holdout),
                holdout_start=split,
                window=f"{first.isoformat()}..{day.isoformat()}",
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
                    "parent_checkpoint": dg.MetadataValue.text(parent.partition if parent else "fresh"),
                    "parent_sha256": dg.MetadataValue.text(parent.sha256 if parent else ""),
                    "skipped_partitions": dg.MetadataValue.json(list(parent.skipped) if parent else []),
                    "resumed_from_step": dg.MetadataValue.int(training.resumed_from_step),
                    "steps_run": dg.MetadataValue.int(training.steps_run),
                    "steps": dg.MetadataValue.int(settings.epochs),
                    "checkpoints_written": dg.MetadataValue.json(training.checkpoints_written),
                    "days_trained": dg.MetadataValue.int(model.days_trained),
                    "model_sha256": dg.MetadataValue.text(model.sha256),
                    "training_fingerprint": dg.MetadataValue.text(fingerprint),
                }
            )
            yield dg.Output(model, metadata=metadata, data_version=dg.DataVersion(model.sha256[:20]))
            store.discard()

    return checkpoint


def _partitions(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted({value.isoformat() for value in rows[PARTITION_COLUMN].unique()}))


def new_rows(
    gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date], parent: CheckpointModel | None
) -> tuple[pd.DataFrame, pd.DataFrame, pd.Timestamp]:
    """A partition's (training rows, held-out rows, first held-out timestamp).

    The hold-out is the forecaster's: the latest periods of the window. Training rows are
    those before it that the parent has not learned from: from the parent's own hold-out
    start on (everything before the hold-out for a fresh model).
    """
    first, last = window
    in_window = gold[(gold[PARTITION_COLUMN] >= first) & (gold[PARTITION_COLUMN] <= last)]
    if in_window.dropna(subset=[spec.target_column]).empty:
        raise NotEnoughData(f"no gold rows with {spec.target_column} in {first}..{last}: nothing to train on")
    split = split_holdout(in_window, spec, window)
    rows = gold.dropna(subset=[spec.target_column])
    rows = rows[rows[spec.timestamp_column] < split.holdout_start]
    if parent is not None:
        rows = rows[rows[spec.timestamp_column] >= parent.holdout_start]
    train = rows.sort_values([spec.timestamp_column, spec.entity_column], kind="stable").reset_index(drop=True)
    if train.empty:
        raise NotEnoughData(
            f"no rows became available for training between the parent's hold-out ({parent.holdout_start}) and "
            f"{split.holdout_start}"
        )
    return train, split.holdout, split.holdout_start


def _parent(
    context: dg.AssetExecutionContext,
    key: dg.AssetKey,
    spec: DatasetSpec,
    day: dt.date,
    previous: CheckpointModel | None,
) -> Parent | None:
    """The checkpoint ``day`` continues from: the partition before it, or the latest earlier one
    (loaded from the object store), or None for the first of the chain."""
    before = spec.grain.shift(day, -1).isoformat()
    if previous is not None:
        partition, model, skipped = before, previous, ()
    else:
        earlier = sorted(
            partition for partition in context.instance.get_materialized_partitions(key) if partition < before
        )
        if not earlier:
            return None
        partition = earlier[-1]
        model = context.resources.object_store.load_partition(context.instance, key, partition)
        start = dt.date.fromisoformat(partition)
        skipped = tuple(value.isoformat() for value in spec.grain.between(spec.grain.shift(start, 1), day)[:-1])
    records = context.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
    ).records
    sha = records[0].asset_materialization.metadata.get("sha256") if records else None
    return Parent(
        partition=partition,
        model=model,
        sha256=sha.value if isinstance(sha, dg.TextMetadataValue) else "",
        skipped=skipped,
    )


def _fingerprint(
    parent: Parent | None, train: pd.DataFrame, day: dt.date, code_version: str, settings: CheckpointSpec
) -> str:
    """What determines a partition's training (parent model, the training rows themselves, code
    and settings), so that a retry resumes only the very same training."""
    text = json.dumps(
        {
            "parent": {"partition": parent.partition, "sha256": parent.sha256} if parent else None,
            "rows": int(pd.util.hash_pandas_object(train, index=False).sum()),
            "day": day.isoformat(),
            "code": code_version,
            "family": settings.family,
            "params": settings.params,
            "seed": settings.seed,
            "epochs": settings.epochs,
        },
        sort_keys=True,
        default=str,
    )
    return short_digest(text)
