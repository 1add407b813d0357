"""The forecaster: a model trained each day on a trailing window of gold days.

Its materialization metadata is the experiment record: hyper-parameters, hold-out
metrics (numeric, so the Dagster UI plots them across days), the gold table version
and days it read, code version and git commit, seed, the stored model's URI and
sha256, and the MLflow run that holds the same record.
"""

import datetime as dt
import hashlib
import json

import dagster as dg
import mlflow
import sklearn
import skops
from mlflow.data.delta_dataset_source import DeltaDatasetSource

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.ml.trainer import SKOPS_TRUSTED_TYPES, train_forecaster
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import on_upstream_update
from mlops_assets.provenance import git_commit

FORECASTER_CODE_VERSION = "forecaster-1"
MODEL_PIP_REQUIREMENTS = [f"scikit-learn=={sklearn.__version__}", f"skops=={skops.__version__}"]


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
        automation_condition=on_upstream_update(),
        description=(
            f"A {spec.model.family} model forecasting {spec.target_column} per {spec.entity_column}, "
            f"trained on the {window_days} gold day(s) ending on the partition's day; the latest "
            f"{spec.model.holdout_fraction:.0%} of those hours are held out for its metrics."
        ),
    )
    def forecaster(context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking) -> dg.Output:
        day = partition_day(context)
        first = max(spec.start_date, day - dt.timedelta(days=window_days - 1))
        days = [first + dt.timedelta(days=offset) for offset in range((day - first).days + 1)]
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), days).require(keys.gold)
        outcome = train_forecaster(gold.rows, spec, window=(first, day))
        params = {"family": spec.model.family, **spec.model.params}
        inputs = [{"uri": gold.uri, "version": gold.version, "days": [first.isoformat(), day.isoformat()]}]
        commit = git_commit()

        with mlflow_tracking.start_run(
            context,
            experiment=spec.name,
            tags={"mlops.code_version": code_version, "mlops.git_commit": commit},
        ) as run:
            mlflow.log_params({**params, "seed": spec.model.seed, "training_window_days": window_days})
            mlflow.log_metrics(
                {**outcome.metrics, "train_rows": outcome.train_rows, "holdout_rows": outcome.holdout_rows}
            )
            mlflow.log_input(
                mlflow.data.from_pandas(
                    outcome.train_frame,
                    source=DeltaDatasetSource(path=gold.uri, delta_table_version=gold.version),
                    name=keys.gold.to_user_string(),
                    targets=spec.target_column,
                ),
                context="training",
            )
            model_info = mlflow.sklearn.log_model(
                outcome.forecaster.estimator,
                name="model",
                pip_requirements=MODEL_PIP_REQUIREMENTS,
                skops_trusted_types=SKOPS_TRUSTED_TYPES[spec.model.family],
            )
        model = outcome.forecaster
        model.mlflow_run_id = run.info.run_id

        run_url = mlflow_tracking.run_url(run)
        metadata = {
            "params": dg.MetadataValue.json(params),
            **{name: dg.MetadataValue.float(value) for name, value in outcome.metrics.items()},
            "train_rows": dg.MetadataValue.int(outcome.train_rows),
            "holdout_rows": dg.MetadataValue.int(outcome.holdout_rows),
            "holdout_start": dg.MetadataValue.timestamp(outcome.holdout_start.to_pydatetime()),
            "training_window": dg.MetadataValue.text(f"{first.isoformat()}..{day.isoformat()}"),
            "input_tables": dg.MetadataValue.json(inputs),
            "gold_version": dg.MetadataValue.int(gold.version),
            "code_version": dg.MetadataValue.text(code_version),
            "git_commit": dg.MetadataValue.text(commit),
            "seed": dg.MetadataValue.int(spec.model.seed),
            "model_uri": dg.MetadataValue.text(model_info.model_uri),
            "mlflow_run_id": dg.MetadataValue.text(run.info.run_id),
            **({"mlflow_run": dg.MetadataValue.url(run_url)} if run_url else {}),
        }
        lineage = json.dumps({"inputs": inputs, "code": code_version, "seed": spec.model.seed}, sort_keys=True)
        return dg.Output(
            model, metadata=metadata, data_version=dg.DataVersion(hashlib.sha256(lineage.encode()).hexdigest()[:20])
        )

    return forecaster
