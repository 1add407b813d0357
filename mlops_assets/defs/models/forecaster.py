"""The forecaster: a model trained for each partition on the window of gold partitions ending on it.

The window is a declared dependency: a late partition marks every model whose window
holds it stale, and automation retrains them. The materialization metadata is the
experiment record: hyper-parameters, hold-out metrics (numeric, so the Dagster UI plots
them across partitions), the gold table version read and how many rows each partition of
the window held, code version and git commit, seed, the stored model's URI and sha256,
and the MLflow run that holds the same record. Whether the model may serve is decided
by its decision asset in the registry group.
"""

from collections.abc import Iterator
from typing import Any

import dagster as dg
import mlflow

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import PARTITION_COLUMN, DatasetSpec
from mlops_assets.defs.models.experiment import experiment_metadata, window_input
from mlops_assets.defs.models.training import NotEnoughData, train_forecaster
from mlops_assets.defs.models.tuning import TuningResult
from mlops_assets.partitions import partition_start, partitions_back, partitions_def
from mlops_assets.provenance import git_commit
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking, log_sklearn_model, log_table_input
from mlops_assets.resources.records import ALLOW_MISSING, ModelRecord

FORECASTER_CODE_VERSION = "forecaster-4"


def build_forecaster_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(FORECASTER_CODE_VERSION, "frequency", "partitions", "features", "model")
    window = spec.model.window_partitions
    noun = spec.grain.noun
    # The hyper-parameter search, when the spec has one: never run yet, the spec's parameters hold.
    tuning = {"tuning": dg.AssetIn(keys.tuning, metadata={ALLOW_MISSING: True})} if spec.tuning is not None else {}

    @dg.asset(
        key=keys.forecaster,
        ins=tuning,
        deps=[dg.AssetDep(keys.gold, partition_mapping=partitions_back(window - 1))],
        partitions_def=partitions_def(spec),
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="records",
        output_required=False,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"A {spec.model.family} model forecasting {spec.target_column} per {spec.entity_column}, "
            f"trained on the {window} gold {noun}(s) ending on the partition's {noun}; the latest "
            f"{spec.model.holdout_fraction:.0%} of their {spec.frequency} periods are held out for its "
            "metrics and the gate. The model is logged to MLflow; the asset's value is its record. "
            "Hyper-parameters are the spec's, or the tuning search's when they beat them."
        ),
    )
    def forecaster(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking, **inputs: Any
    ) -> Iterator[dg.Output[ModelRecord]]:
        day = partition_start(context)
        first = max(spec.start_date, spec.grain.shift(day, -(window - 1)))
        partitions = spec.grain.between(first, day)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), partitions).require(keys.gold)
        search: TuningResult | None = inputs.get("tuning")
        tuned = search.better_params if search is not None else None
        params = {**spec.model.params, **(tuned or {})}
        try:
            outcome = train_forecaster(gold.rows, spec, window=(first, day), params=params)
        except NotEnoughData as error:
            # Too little history yet (the first partitions of a series): nothing to train, and
            # nothing a retry could change. A later partition's window will hold enough.
            context.log.warning(f"No model for {day}: {error}")
            return
        model = outcome.forecaster
        rows = {key.isoformat(): count for key, count in gold.rows[PARTITION_COLUMN].value_counts().items()}
        inputs_read = [window_input(gold.uri, gold.version, [key.isoformat() for key in partitions], rows)]
        missing = inputs_read[0]["missing"]
        if missing:
            context.log.info(
                f"Trained on {len(partitions) - len(missing)} of the {len(partitions)} {noun}s of "
                f"its window; no data yet for {', '.join(missing)}. A late {noun} retrains it."
            )
        commit = git_commit()

        with mlflow_tracking.start_run(
            context,
            experiment=spec.name,
            tags={"mlops.code_version": code_version, "mlops.git_commit": commit, "mlops.sha256": model.sha256},
        ) as run:
            mlflow.log_params(
                {"family": spec.model.family, **params, "seed": spec.model.seed, "training_window": window}
            )
            mlflow.log_metrics(
                {**outcome.metrics, "train_rows": outcome.train_rows, "holdout_rows": outcome.holdout_rows}
            )
            log_table_input(
                outcome.train_frame, gold, keys.gold.to_user_string(), spec.target_column, context="training"
            )
            logged = log_sklearn_model(model.serving_pipeline(outcome.train_frame))
        record = ModelRecord(
            asset=keys.forecaster.to_user_string(),
            partition=context.partition_key,
            family=spec.model.family,
            model_uri=logged.uri,
            run_id=run.info.run_id,
            sha256=model.sha256,
            artifact_sha256=logged.sha256,
            gold_uri=gold.uri,
            gold_version=gold.version,
            features=tuple(model.features),
            trained_partitions=model.trained_partitions,
            holdout_partitions=model.holdout_partitions,
            holdout_start=outcome.holdout_start.isoformat(),
            metrics=dict(outcome.metrics),
        )
        metadata = experiment_metadata(
            record=record,
            params={"family": spec.model.family, **params},
            train_rows=outcome.train_rows,
            holdout_rows=outcome.holdout_rows,
            window=f"{first.isoformat()}..{day.isoformat()}",
            inputs=inputs_read,
            code_version=code_version,
            commit=commit,
            seed=spec.model.seed,
            run_url=mlflow_tracking.run_url(run),
        )
        metadata["window_partitions_with_data"] = dg.MetadataValue.int(len(partitions) - len(missing))
        metadata["tuned"] = dg.MetadataValue.bool(tuned is not None)
        # The fitted model's own digest: retraining on the same rows gives the same version,
        # so nothing downstream treats an identical model as new.
        yield dg.Output(record, metadata=metadata, data_version=dg.DataVersion(model.sha256[:20]))

    return forecaster
