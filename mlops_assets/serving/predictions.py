"""Predictions: each day's gold rows scored in batch by the registry's champion."""

from collections.abc import Iterator

import dagster as dg
import numpy as np

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.ml.registry import CHAMPION
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.ml.trainer import forecast_metrics
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

PREDICTIONS_CODE_VERSION = "predictions-2"


def build_predictions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    name = spec.gate.model_name

    @dg.asset(
        key=keys.predictions,
        deps=[keys.gold],
        partitions_def=daily_partitions(spec),
        group_name="serving",
        kinds={"delta", "mlflow"},
        code_version=PREDICTIONS_CODE_VERSION,
        output_required=False,
        automation_condition=on_upstream_update(),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Forecast {spec.target_column} for every gold row of the day with models:/{name}@{CHAMPION} "
            "as it is when the day is scored, beside the actual value; each row names the registered "
            "version that scored it. `in_training` marks hours the model was fitted on, which the "
            "day's error leaves out. Nothing is scored before a first champion is registered."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_day(context)
        registry = mlflow_tracking.registry()
        champion = registry.champion(name)
        if champion is None:
            context.log.warning(f"No {name}@{CHAMPION} in the registry yet: {day} is not scored.")
            return
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [day]).require(keys.gold)
        rows = gold.rows
        predicted = registry.load(champion).predict(rows) if len(rows) else np.array([], dtype=float)
        predicted = np.asarray(predicted, dtype=float)
        trained_until = champion.trained_until
        # Hours the model was fitted on score better than a forecast can; they are flagged
        # and left out of the day's error.
        in_training = (
            (rows[spec.timestamp_column] < trained_until).to_numpy()
            if trained_until is not None
            else np.ones(len(rows), dtype=bool)
        )
        scored = rows[[PARTITION_COLUMN, spec.entity_column, spec.timestamp_column, spec.target_column]].assign(
            prediction=predicted,
            in_training=in_training,
            model=name,
            model_version=champion.version,
            mlflow_run_id=champion.run_id,
        )
        uri = lake.table_uri(*keys.table(keys.predictions))
        version = lake.replace_day(
            uri,
            day,
            scored,
            commit_metadata(context, gold_version=gold.version, model=f"{name}/{champion.version}"),
        )
        unseen = ~in_training
        metrics = forecast_metrics(rows[unseen], predicted[unseen], spec) if unseen.any() else {}
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(scored)),
                "gold_version": dg.MetadataValue.int(gold.version),
                "model": dg.MetadataValue.text(f"models:/{name}/{champion.version}"),
                "model_version": dg.MetadataValue.text(champion.version),
                "mlflow_run_id": dg.MetadataValue.text(champion.run_id or ""),
                "out_of_sample_rows": dg.MetadataValue.int(int(unseen.sum())),
                **{f"day_{metric}": dg.MetadataValue.float(value) for metric, value in metrics.items()},
            }
        )

    return predictions
