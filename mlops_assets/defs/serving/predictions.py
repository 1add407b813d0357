"""Predictions: each partition's gold rows scored in batch by the champion that served it.

The champion that serves partition D is the champion of the latest decision before D (the
one D's own candidate is judged against): the model chosen before D's data arrived, so D's
predictions are true forecasts, the same whatever order files arrived in, and made even
when D's own candidate could not be trained. Each row names the model that scored it.
"""

from collections.abc import Iterator, Mapping

import dagster as dg
import numpy as np

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update, used_version_tag
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.models.training import forecast_metrics
from mlops_assets.defs.registry.decisions import Decision
from mlops_assets.partitions import partition_start, partitions_def
from mlops_assets.resources.delta_lake import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.records import MANY_PARTITIONS

PREDICTIONS_CODE_VERSION = "predictions-4"


def build_predictions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    decision_key = keys.decision(keys.forecaster)
    noun = spec.grain.noun

    @dg.asset(
        key=keys.predictions,
        # The decisions of the window's partitions before this one: the latest of them chose the
        # champion that scores it.
        ins={
            "earlier": dg.AssetIn(
                decision_key,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-spec.model.window_partitions,
                    end_offset=-1,
                    allow_nonexistent_upstream_partitions=True,
                ),
                metadata={MANY_PARTITIONS: True},
            )
        },
        deps=[keys.gold],
        partitions_def=partitions_def(spec),
        group_name="serving",
        kinds={"delta", "mlflow"},
        code_version=PREDICTIONS_CODE_VERSION,
        output_required=False,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Forecast {spec.target_column} for every gold row of the {noun} with the champion for the "
            f"{noun} before it (the one {decision_key.to_user_string()} judges the {noun}'s candidate against), "
            "beside the actual value; each row names the model that scored it. `in_training` marks rows "
            f"that model was fitted on, which the error metrics leave out. A {noun} before the first "
            "champion is not scored."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext,
        earlier: Mapping[str, Decision],
        lake: DeltaLake,
        mlflow_tracking: MlflowTracking,
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_start(context)
        before = earlier[max(earlier)] if earlier else None
        champion = before.champion if before is not None else None
        if champion is None:
            context.log.warning(f"No champion for a {noun} before {day} yet: {day} is not scored.")
            return
        registered = before.registered_version
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [day]).require(keys.gold)
        rows = gold.rows
        model = mlflow_tracking.load_model(champion)
        predicted = np.asarray(model.predict(rows) if len(rows) else np.array([]), dtype=float)
        in_training = champion.seen(rows, spec).to_numpy(dtype=bool)
        scored = rows[[PARTITION_COLUMN, spec.entity_column, spec.timestamp_column, spec.target_column]].assign(
            prediction=predicted,
            in_training=in_training,
            model=champion.label,
            model_uri=champion.model_uri,
            model_version=registered or "",
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
                "model_version": dg.MetadataValue.text(registered or ""),
                "mlflow_run_id": dg.MetadataValue.text(champion.run_id),
                "scored_by": dg.MetadataValue.json(champion.to_json()),
                "out_of_sample_rows": dg.MetadataValue.int(int(unseen.sum())),
                **{f"day_{metric}": dg.MetadataValue.float(value) for metric, value in metrics.items()},
            },
            tags={used_version_tag(decision_key): before.data_version},
        )

    return predictions
