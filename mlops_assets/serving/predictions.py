"""Predictions: each day's gold rows scored in batch by that day's forecaster."""

import dagster as dg
import numpy as np

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.ml.trainer import Forecaster, forecast_metrics
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

PREDICTIONS_CODE_VERSION = "predictions-1"


def build_predictions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)

    @dg.asset(
        key=keys.predictions,
        ins={"forecaster": dg.AssetIn(keys.forecaster)},
        deps=[keys.gold],
        partitions_def=daily_partitions(spec),
        group_name="serving",
        kinds={"delta", "scikit-learn"},
        code_version=PREDICTIONS_CODE_VERSION,
        automation_condition=on_upstream_update(),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Forecast {spec.target_column} for every gold row of the day, beside the actual value, "
            "with the model (asset partition and MLflow run) that made it; `in_training` marks "
            "hours the model was fitted on, which the day's error leaves out."
        ),
    )
    def predictions(context: dg.AssetExecutionContext, forecaster: Forecaster, lake: DeltaLake) -> dg.MaterializeResult:
        day = partition_day(context)
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [day]).require(keys.gold)
        rows = gold.rows
        predicted = forecaster.predict(rows) if len(rows) else np.array([], dtype=float)
        model = f"{keys.forecaster.to_user_string()}@{context.partition_key}"
        # Hours the model was fitted on score better than a forecast can; they are flagged
        # and left out of the day's error.
        in_training = (rows[spec.timestamp_column] < forecaster.holdout_start).to_numpy()
        scored = rows[[PARTITION_COLUMN, spec.entity_column, spec.timestamp_column, spec.target_column]].assign(
            prediction=predicted, in_training=in_training, model=model, mlflow_run_id=forecaster.mlflow_run_id
        )
        uri = lake.table_uri(*keys.table(keys.predictions))
        version = lake.replace_day(uri, day, scored, commit_metadata(context, gold_version=gold.version, model=model))
        unseen = ~in_training
        metrics = forecast_metrics(rows[unseen], predicted[unseen], spec) if unseen.any() else {}
        return dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(scored)),
                "gold_version": dg.MetadataValue.int(gold.version),
                "model": dg.MetadataValue.text(model),
                "mlflow_run_id": dg.MetadataValue.text(forecaster.mlflow_run_id or ""),
                "out_of_sample_rows": dg.MetadataValue.int(int(unseen.sum())),
                **{f"day_{name}": dg.MetadataValue.float(value) for name, value in metrics.items()},
            }
        )

    return predictions
