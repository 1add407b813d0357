"""Predictions: each partition's gold rows scored in batch by the champion that served it.

The champion that serves partition D is the champion for the partition before D, which
the registry's decision for D records as the champion it judged D's candidate against:
the model chosen before D's data arrived, so D's predictions are true forecasts, and the
same whatever order files arrived in. Each row names the model that scored it.
"""

from collections.abc import Iterator

import dagster as dg
import numpy as np

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.ml.release import decision_before, decision_for
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.ml.trainer import forecast_metrics
from mlops_assets.partitions import partition_start, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update, used_version_tag

PREDICTIONS_CODE_VERSION = "predictions-3"


def build_predictions_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    release = keys.release(keys.forecaster)
    noun = spec.grain.noun

    @dg.asset(
        key=keys.predictions,
        deps=[keys.gold, release],
        partitions_def=partitions_def(spec),
        group_name="serving",
        kinds={"delta", "mlflow"},
        code_version=PREDICTIONS_CODE_VERSION,
        output_required=False,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Forecast {spec.target_column} for every gold row of the {noun} with the champion for the "
            f"{noun} before it (the one {release.to_user_string()} judged the {noun}'s candidate against), "
            "beside the actual value; each row names the model that scored it. `in_training` marks rows "
            f"that model was fitted on, which the error metrics leave out. A {noun} before the first "
            "champion is not scored."
        ),
    )
    def predictions(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_start(context)
        decision = decision_for(context.instance, release, context.partition_key)
        if decision is not None:
            champion, registered = decision.champion_before, _registered_version(context.instance, release, day)
        else:
            # No candidate for this partition (too little history): the champion before still serves.
            before = decision_before(context.instance, release, context.partition_key)
            champion = before.champion if before is not None else None
            registered = before.registered_version if before is not None else None
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
            tags={used_version_tag(release): decision.data_version if decision is not None else "none"},
        )

    return predictions


def _registered_version(instance: dg.DagsterInstance, release: dg.AssetKey, day) -> str | None:
    """The registered version of the champion that scores ``day``, if the decision that chose it
    registered it."""
    before = decision_before(instance, release, day.isoformat())
    return before.registered_version if before is not None else None
