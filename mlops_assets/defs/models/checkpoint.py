"""The checkpoint model: one model that keeps learning, partition after partition.

Partition D continues from the checkpoint of the latest partition before it among the
window's partitions (an input: the checkpoint records of those partitions), with the
partitions it skipped recorded; with none, it starts from a fresh model. D uses the
forecaster's window and hold-out (the latest periods of the window ending on D are held
out for its metrics and the gate) and trains on the rows that became available since its
parent's hold-out started, so every row is learned once and none is held out for ever,
at any frequency.

During training it saves its state every few epochs; a run that dies and is retried
resumes from the newest intact state and ends with the same model as a run that never
stopped. The finished model is logged to MLflow; the asset's value is its record.
"""

import datetime as dt
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import mlflow
import pandas as pd

from mlops_assets.automation import TRANSIENT_FAILURES
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import PARTITION_COLUMN, CheckpointSpec, DatasetSpec
from mlops_assets.defs.lakehouse.features import feature_columns
from mlops_assets.defs.models.continued import MlpTrainer, TrainingState, train_day
from mlops_assets.defs.models.experiment import experiment_metadata, fitted_digest, window_input
from mlops_assets.defs.models.training import NotEnoughData, forecast_metrics, split_holdout
from mlops_assets.digests import short_digest
from mlops_assets.partitions import partition_start, partitions_back, partitions_def
from mlops_assets.provenance import git_commit
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking, log_sklearn_model
from mlops_assets.resources.records import MANY_PARTITIONS, ModelRecord
from mlops_assets.resources.training_states import TrainingStateStore

CHECKPOINT_CODE_VERSION = "checkpoint-3"


@dataclass(frozen=True)
class Parent:
    """The checkpoint a partition continues from: its record, the model itself (loaded from
    MLflow), and the partitions between it and the child that have no checkpoint."""

    record: ModelRecord
    model: Any
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
            "earlier": dg.AssetIn(
                keys.checkpoint,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-window, end_offset=-1, allow_nonexistent_upstream_partitions=True
                ),
                metadata={MANY_PARTITIONS: True},
            )
        },
        deps=[dg.AssetDep(keys.gold, partition_mapping=partitions_back(window - 1))],
        partitions_def=partitions_def(spec),
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="records",
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"A {settings.family} network that keeps learning: each {noun} continues from the latest "
            f"checkpoint of the {window} {noun}(s) before it and trains {settings.epochs} epochs on the rows "
            f"that became available since (the forecaster's {window}-{noun} window, its latest "
            f"{spec.model.holdout_fraction:.0%} held out), saving a state to resume from every "
            f"{settings.checkpoint_every} epochs. Inputs and target are standardised, so it learns the same "
            "way in any unit. The model is logged to MLflow; the asset's value is its record."
        ),
    )
    def checkpoint(
        context: dg.AssetExecutionContext,
        earlier: Mapping[str, ModelRecord],
        lake: DeltaLake,
        training_states: TrainingStateStore,
        mlflow_tracking: MlflowTracking,
    ) -> Iterator[dg.Output[ModelRecord]]:
        day = partition_start(context)
        parent = _parent(spec, day, earlier, mlflow_tracking)
        if parent is not None and parent.skipped:
            context.log.warning(
                f"No checkpoint for {', '.join(parent.skipped)}: {day} continues from {parent.record.partition}."
            )
        first = max(spec.start_date, spec.grain.shift(day, -(window - 1)))
        since = spec.grain.floor(pd.Timestamp(parent.record.holdout_start).date()) if parent is not None else first
        partitions = spec.grain.between(min(first, since), day)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), partitions).require(keys.gold)
        try:
            train, holdout, split = new_rows(gold.rows, spec, (first, day), parent.record if parent else None)
        except NotEnoughData as error:
            # The same rows fail the same way: retrying cannot help.
            raise dg.Failure(str(error), allow_retries=False) from error
        trainer = MlpTrainer(target=spec.target_column, params=settings.params, seed=settings.seed)
        if parent is None:
            features = [column for column in feature_columns(spec) if train[column].notna().any()]
            start = TrainingState(model=trainer.fresh(features, train), step=0)
        else:
            features, start = list(parent.record.features), TrainingState(model=parent.model, step=0)
        fingerprint = _fingerprint(parent, train, day, code_version, settings)

        with training_states.training(keys.checkpoint, context.partition_key, fingerprint) as states:
            skipped: list[str] = []
            newest = states.newest_intact(skipped)
            for reason in skipped:
                context.log.warning(f"Skipped a damaged training state: {reason}")
            if newest is not None:
                context.log.info(f"Resuming {day} from its state after epoch {newest.step}.")
                start = TrainingState(model=newest.state, step=newest.step)

            def save(state: TrainingState) -> None:
                states.save(state.step, state.model)
                context.log.info(f"Saving the state after epoch {state.step}/{settings.epochs} in the background.")

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
            model = training.model
            metrics = forecast_metrics(holdout, model.predict(holdout), spec)
            params = {"family": settings.family, **settings.params, "epochs": settings.epochs}
            rows = {key.isoformat(): count for key, count in gold.rows[PARTITION_COLUMN].value_counts().items()}
            inputs = [window_input(gold.uri, gold.version, [key.isoformat() for key in partitions], rows)]
            digest = fitted_digest(settings.family, features, model)
            commit = git_commit()
            with mlflow_tracking.start_run(
                context,
                experiment=spec.name,
                tags={
                    "mlops.code_version": code_version,
                    "mlops.git_commit": commit,
                    "mlops.parent_checkpoint": parent.record.partition if parent else "",
                    "mlops.sha256": digest,
                },
            ) as run:
                mlflow.log_params({**params, "seed": settings.seed, "checkpoint_every": settings.checkpoint_every})
                mlflow.log_metrics({**metrics, "train_rows": len(train), "holdout_rows": len(holdout)})
                logged = log_sklearn_model(model)
            trained = sorted({*(parent.record.trained_partitions if parent else ()), *_partitions(train)})
            record = ModelRecord(
                asset=keys.checkpoint.to_user_string(),
                partition=context.partition_key,
                family=settings.family,
                model_uri=logged.uri,
                run_id=run.info.run_id,
                sha256=digest,
                artifact_sha256=logged.sha256,
                gold_uri=gold.uri,
                gold_version=gold.version,
                features=tuple(features),
                trained_partitions=tuple(trained),
                holdout_partitions=_partitions(holdout),
                holdout_start=split.isoformat(),
                metrics=metrics,
                parent=parent.record.partition if parent else None,
                days_trained=(parent.record.days_trained + 1) if parent else 1,
            )
            metadata = experiment_metadata(
                record=record,
                params=params,
                train_rows=len(train),
                holdout_rows=len(holdout),
                window=f"{first.isoformat()}..{day.isoformat()}",
                inputs=inputs,
                code_version=code_version,
                commit=commit,
                seed=settings.seed,
                run_url=mlflow_tracking.run_url(run),
            )
            metadata.update(
                {
                    "parent_checkpoint": dg.MetadataValue.text(parent.record.partition if parent else "fresh"),
                    "parent_sha256": dg.MetadataValue.text(parent.record.sha256 if parent else ""),
                    "skipped_partitions": dg.MetadataValue.json(list(parent.skipped) if parent else []),
                    "resumed_from_step": dg.MetadataValue.int(training.resumed_from_step),
                    "steps_run": dg.MetadataValue.int(training.steps_run),
                    "steps": dg.MetadataValue.int(settings.epochs),
                    "states_saved": dg.MetadataValue.json(training.states_saved),
                    "days_trained": dg.MetadataValue.int(record.days_trained),
                    "training_fingerprint": dg.MetadataValue.text(fingerprint),
                }
            )
            yield dg.Output(record, metadata=metadata, data_version=dg.DataVersion(digest[:20]))
            states.discard()

    return checkpoint


def _partitions(rows: pd.DataFrame) -> tuple[str, ...]:
    return tuple(sorted({value.isoformat() for value in rows[PARTITION_COLUMN].unique()}))


def new_rows(
    gold: pd.DataFrame, spec: DatasetSpec, window: tuple[dt.date, dt.date], parent: ModelRecord | None
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
        rows = rows[rows[spec.timestamp_column] >= pd.Timestamp(parent.holdout_start)]
    train = rows.sort_values([spec.timestamp_column, spec.entity_column], kind="stable").reset_index(drop=True)
    if train.empty:
        raise NotEnoughData(
            f"no rows became available for training between the parent's hold-out ({parent.holdout_start}) and "
            f"{split.holdout_start}"
        )
    return train, split.holdout, split.holdout_start


def _parent(
    spec: DatasetSpec, day: dt.date, earlier: Mapping[str, ModelRecord], mlflow_tracking: MlflowTracking
) -> Parent | None:
    """The checkpoint ``day`` continues from: the latest of the ``earlier`` ones, with its model
    loaded from MLflow; None for the first of a chain."""
    if not earlier:
        return None
    record = earlier[max(earlier)]
    start = dt.date.fromisoformat(record.partition)
    skipped = tuple(value.isoformat() for value in spec.grain.between(spec.grain.shift(start, 1), day)[:-1])
    return Parent(record=record, model=mlflow_tracking.load_model(record), skipped=skipped)


def _fingerprint(
    parent: Parent | None, train: pd.DataFrame, day: dt.date, code_version: str, settings: CheckpointSpec
) -> str:
    """What determines a partition's training (parent model, the training rows themselves, code
    and settings), so that a retry resumes only the very same training."""
    text = json.dumps(
        {
            "parent": {"partition": parent.record.partition, "sha256": parent.record.sha256} if parent else None,
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
