"""The forecaster: a model trained each day on a trailing window of gold days.

Its materialization metadata is the experiment record: hyper-parameters, hold-out
metrics (numeric, so the Dagster UI plots them across days), the gold table version
and days it read, code version and git commit, seed, the stored model's URI and
sha256, and the MLflow run that holds the same record. Its blocking check is the
registry's quality gate.
"""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import mlflow

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml import gate
from mlops_assets.ml.record import experiment_metadata, lineage_version
from mlops_assets.ml.tracking import MlflowTracking, log_sklearn_model, log_table_input
from mlops_assets.ml.trainer import train_forecaster
from mlops_assets.ml.tuning import tuned_params
from mlops_assets.partitions import daily_partitions, days_between, partition_day
from mlops_assets.policies import on_upstream_update
from mlops_assets.provenance import git_commit

FORECASTER_CODE_VERSION = "forecaster-2"


def build_forecaster_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(FORECASTER_CODE_VERSION, "features", "model")
    window_days = spec.model.training_window_days

    @dg.asset(
        key=keys.forecaster,
        deps=[keys.gold],
        partitions_def=daily_partitions(spec),
        group_name="models",
        kinds={"scikit-learn", "mlflow"},
        code_version=code_version,
        io_manager_key="object_store",
        check_specs=[gate.gate_check_spec(spec, keys.forecaster)],
        automation_condition=on_upstream_update(),
        description=(
            f"A {spec.model.family} model forecasting {spec.target_column} per {spec.entity_column}, "
            f"trained on the {window_days} gold day(s) ending on the partition's day; the latest "
            f"{spec.model.holdout_fraction:.0%} of those hours are held out for its metrics. "
            "Hyper-parameters are the spec's, updated by the latest tuning run if there is one."
        ),
    )
    def forecaster(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.Output | dg.AssetCheckResult]:
        day = partition_day(context)
        first = max(spec.start_date, day - dt.timedelta(days=window_days - 1))
        days = days_between(first, day)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days).require(keys.gold)
        tuned = tuned_params(context.instance, spec)
        params = {**spec.model.params, **(tuned or {})}
        outcome = train_forecaster(gold.rows, spec, window=(first, day), params=params)
        model = outcome.forecaster
        model.gold_version = gold.version
        inputs = [{"uri": gold.uri, "version": gold.version, "days": [first.isoformat(), day.isoformat()]}]
        commit = git_commit()

        with mlflow_tracking.start_run(
            context,
            experiment=spec.name,
            tags={"mlops.code_version": code_version, "mlops.git_commit": commit},
        ) as run:
            mlflow.log_params(
                {"family": spec.model.family, **params, "seed": spec.model.seed, "training_window_days": window_days}
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
        metadata["tuned"] = dg.MetadataValue.bool(tuned is not None)
        decision = gate.evaluate(spec, lake, mlflow_tracking.registry(), model)
        yield dg.Output(
            model,
            metadata=metadata,
            data_version=lineage_version(inputs=inputs, code=code_version, seed=spec.model.seed, params=params),
        )
        yield decision.check_result(spec)

    return forecaster
