"""Predictions: each partition's gold rows scored in batch by the champion that served it.

The champion that serves partition D is the registry's decision for the partition before
D: the model chosen before D's data arrived, so D's predictions are true forecasts, and
the same whatever order files arrived in. Each row names the model that scored it.
"""

from collections.abc import Iterator

import dagster as dg
import numpy as np

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.ml.release import decision_before
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.ml.trainer import forecast_metrics
from mlops_assets.partitions import partition_before, partition_start, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

PREDICTIONS_CODE_VERSION = "predictions-3"


def build_predictions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    release = keys.release(keys.forecaster)
    noun = spec.grain.noun

    @dg.asset(
        key=keys.predictions,
        deps=[keys.gold, dg.AssetDep(release, partition_mapping=partition_before())],
        partitions_def=partitions_def(spec),
        group_name="serving",
        kinds={"delta", "mlflow"},
        code_version=PREDICTIONS_CODE_VERSION,
        output_required=False,
        automation_condition=on_upstream_update(keys.primary_upstream, versioned=[release]),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Forecast {spec.target_column} for every gold row of the {noun} with the champion for the "
            f"{noun} before it ({release.to_user_string()}), beside the actual value; each row names the "
            "model that scored it. `in_training` marks rows that model was fitted on, which the error "
            f"metrics leave out. A {noun} before the first champion is not scored."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_start(context)
        decision = decision_before(context.instance, release, context.partition_key)
        champion = decision.champion if decision is not None else None
        if champion is None:
            context.log.warning(f"No champion for a {noun} before {day} yet: {day} is not scored.")
            return
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [day]).require(keys.gold)
        rows = gold.rows
        model = mlflow_tracking.registry().load(champion.model_uri)
        predicted = np.asarray(model.predict(rows) if len(rows) else np.array([]), dtype=float)
        in_training = champion.seen(rows, spec).to_numpy(dtype=bool)
        scored = rows[[PARTITION_COLUMN, spec.entity_column, spec.timestamp_column, spec.target_column]].assign(
            prediction=predicted,
            in_training=in_training,
            model=champion.label,
            model_uri=champion.model_uri,
            model_version=decision.version or "",
            mlflow_run_id=champion.run_id,
        )
        uri = lake.table_uri(*keys.table(keys.predictions))
        version = lake.replace_day(
            uri, day, scored, commit_metadata(context, gold_version=gold.version, model=champion.model_uri)
        )
        unseen = ~in_training
        metrics = forecast_metrics(rows[unseen], predicted[unseen], spec) if unseen.any() else {}
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(scored)),
                "gold_version": dg.MetadataValue.int(gold.version),
                "model": dg.MetadataValue.text(champion.label),
                "model_uri": dg.MetadataValue.text(champion.model_uri),
                "model_version": dg.MetadataValue.text(decision.version or ""),
                "mlflow_run_id": dg.MetadataValue.text(champion.run_id),
                "scored_by": dg.MetadataValue.json(champion.to_json()),
                "out_of_sample_rows": dg.MetadataValue.int(int(unseen.sum())),
                **{f"day_{metric}": dg.MetadataValue.float(value) for metric, value in metrics.items()},
            }
        )

    return predictions
