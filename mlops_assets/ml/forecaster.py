"""The forecaster: a model trained for each partition on the window of gold partitions ending on it.

The window is a declared dependency: a late partition marks every model whose window
holds it stale, and automation retrains them. The materialization metadata is the
experiment record: hyper-parameters, hold-out metrics (numeric, so the Dagster UI plots
them across partitions), the gold table version read and how many rows each partition of
the window held, code version and git commit, seed, the stored model's URI and sha256,
and the MLflow run that holds the same record. Whether the model may serve is decided
by its release asset in the registry group.
"""

from collections.abc import Iterator

import dagster as dg
import mlflow

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import PARTITION_COLUMN, DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.record import experiment_metadata, window_input
from mlops_assets.ml.tracking import MlflowTracking, log_sklearn_model, log_table_input
from mlops_assets.ml.trainer import NotEnoughData, train_forecaster
from mlops_assets.ml.tuning import tuned_params
from mlops_assets.partitions import partition_start, partitions_back, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update
from mlops_assets.provenance import git_commit

FORECASTER_CODE_VERSION = "forecaster-3"


def build_forecaster_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(FORECASTER_CODE_VERSION, "frequency", "partitions", "features", "model")
    window = spec.model.window_partitions
    noun = spec.grain.noun

    @dg.asset(
        key=keys.forecaster,
        deps=[dg.AssetDep(keys.gold, partition_mapping=partitions_back(window - 1))],
        partitions_def=partitions_def(spec),
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="object_store",
        output_required=False,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"A {spec.model.family} model forecasting {spec.target_column} per {spec.entity_column}, "
            f"trained on the {window} gold {noun}(s) ending on the partition's {noun}; the latest "
            f"{spec.model.holdout_fraction:.0%} of their {spec.frequency} periods are held out for its "
            "metrics and the gate. Hyper-parameters are the spec's, updated by the latest tuning run "
            "if there is one."
        ),
    )
    def forecaster(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.Output]:
        day = partition_start(context)
        first = max(spec.start_date, spec.grain.shift(day, -(window - 1)))
        partitions = spec.grain.between(first, day)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), partitions).require(keys.gold)
        tuned = tuned_params(context.instance, spec)
        params = {**spec.model.params, **(tuned or {})}
        try:
            outcome = train_forecaster(gold.rows, spec, window=(first, day), params=params)
        except NotEnoughData as error:
            # Too little history yet (the first partitions of a series): nothing to train, and
            # nothing a retry could change. A later partition's window will hold enough.
            context.log.warning(f"No model for {day}: {error}")
            return
        model = outcome.forecaster
        model.gold_uri, model.gold_version = gold.uri, gold.version
        rows = {key.isoformat(): count for key, count in gold.rows[PARTITION_COLUMN].value_counts().items()}
        inputs = [window_input(gold.uri, gold.version, [key.isoformat() for key in partitions], rows)]
        if inputs[0]["missing"]:
            context.log.info(
                f"Trained on {len(partitions) - len(inputs[0]['missing'])} of the {len(partitions)} {noun}s of "
                f"its window; no data yet for {', '.join(inputs[0]['missing'])}. A late {noun} retrains it."
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
            model_info = log_sklearn_model(model.serving_pipeline(outcome.train_frame))
        model.mlflow_run_id, model.model_uri = run.info.run_id, model_info.model_uri

        metadata = experiment_metadata(
            params={"family": spec.model.family, **params},
            metrics=outcome.metrics,
            train_rows=outcome.train_rows,
            holdout_rows=outcome.holdout_rows,
            holdout_start=outcome.holdout_start,
            window=f"{first.isoformat()}..{day.isoformat()}",
            inputs=inputs,
            code_version=code_version,
            commit=commit,
            seed=spec.model.seed,
            model_uri=model_info.model_uri,
            run_id=run.info.run_id,
            run_url=mlflow_tracking.run_url(run),
        )
        metadata["gold_version"] = dg.MetadataValue.int(gold.version)
        metadata["window_partitions_with_data"] = dg.MetadataValue.int(len(partitions) - len(inputs[0]["missing"]))
        metadata["model_sha256"] = dg.MetadataValue.text(model.sha256)
        metadata["tuned"] = dg.MetadataValue.bool(tuned is not None)
        # The fitted model's own digest: retraining on the same rows gives the same version,
        # so nothing downstream treats an identical model as new.
        yield dg.Output(model, metadata=metadata, data_version=dg.DataVersion(model.sha256[:20]))

    return forecaster
