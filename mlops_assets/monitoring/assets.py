"""The drift asset: each scored partition compared with the hold-out of the model that scored it."""

import math
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.gate import holdout_rows
from mlops_assets.ml.record import ModelRecord
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.monitoring.drift import drift_report, monitored_columns
from mlops_assets.partitions import partition_start, partitions_def
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

DRIFT_CODE_VERSION = "drift-2"


def build_drift_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    settings = spec.monitoring
    noun = spec.grain.noun

    @dg.asset(
        key=keys.drift,
        deps=[keys.gold, keys.predictions],
        partitions_def=partitions_def(spec),
        group_name="monitoring",
        kinds={"pandas", "mlflow"},
        code_version=spec.code_version(DRIFT_CODE_VERSION, "features", "monitoring"),
        output_required=False,
        automation_condition=on_upstream_update(keys.primary_upstream),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"PSI and KS of the {noun}'s {', '.join(monitored_columns(spec))} and predictions against the "
            "hold-out of the model that scored it, and its error against that model's hold-out error. "
            f"The {noun} drifted when {settings.drifted_share:.0%} of those features (or the predictions) "
            f"pass PSI {settings.psi_threshold:g} and KS {settings.ks_threshold:g}, or its error is "
            f"{settings.error_ratio:g} times the hold-out error; {noun}s with fewer than {settings.min_rows} "
            f"rows are not judged. The drift sensor requests retraining when {settings.retrain_after_drifted} of "
            f"the last {settings.retrain_window} judged {noun}s drifted."
        ),
    )
    def drift(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_start(context)
        scored = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [day]).rows
        if scored.empty:
            context.log.warning(f"{day} has no predictions: nothing to compare.")
            return
        model = _scoring_model(context.instance, keys.predictions, context.partition_key)
        if model is None or model.model_uri != scored["model_uri"].iloc[0]:
            raise dg.Failure(f"the predictions of {day} do not record the model that scored them; score {day} again")
        reference = holdout_rows(lake, spec, model)
        current = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [day]).require(keys.gold).rows
        current = current.merge(
            scored[[spec.entity_column, spec.timestamp_column, "prediction", "in_training"]],
            on=[spec.entity_column, spec.timestamp_column],
            how="inner",
            validate="one_to_one",
        )
        current = current[~current["in_training"]].reset_index(drop=True)
        predict = mlflow_tracking.registry().load(model.model_uri).predict
        report = drift_report(
            spec,
            day,
            reference,
            current,
            np.asarray(predict(reference), dtype=float) if len(reference) else np.array([]),
            current["prediction"].to_numpy(dtype=float),
        )
        if not report.judged:
            context.log.info(
                f"{day}: {report.current_rows} scored row(s) against {report.reference_rows} reference rows; "
                f"drift is judged from {settings.min_rows} rows on each side."
            )
        yield dg.MaterializeResult(
            metadata={
                "judged": dg.MetadataValue.bool(report.judged),
                "drifted": dg.MetadataValue.bool(report.drifted),
                "drifted_columns": dg.MetadataValue.json(report.drifted_columns),
                "reason": dg.MetadataValue.text(report.reason() if report.drifted else ""),
                "max_psi": dg.MetadataValue.float(report.max_psi),
                "prediction_psi": dg.MetadataValue.float(report.psi["prediction"]),
                "prediction_ks": dg.MetadataValue.float(report.ks["prediction"]),
                "error_ratio": dg.MetadataValue.float(report.error_ratio),
                "psi": dg.MetadataValue.json(_rounded(report.psi)),
                "ks": dg.MetadataValue.json(_rounded(report.ks)),
                "model": dg.MetadataValue.text(model.label),
                "reference": dg.MetadataValue.text(
                    f"hold-out of {model.label}: {', '.join(model.holdout_partitions)} from "
                    f"{pd.Timestamp(model.holdout_start).isoformat()}, gold version {model.gold_version}"
                ),
                "reference_rows": dg.MetadataValue.int(report.reference_rows),
                "current_rows": dg.MetadataValue.int(report.current_rows),
            }
        )

    return drift


def _scoring_model(instance: dg.DagsterInstance, predictions: dg.AssetKey, partition: str) -> ModelRecord | None:
    """The model that scored the latest predictions of ``partition``, as they recorded it."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=predictions, asset_partitions=[partition]), limit=1
    ).records
    if not records:
        return None
    scored_by = records[0].asset_materialization.metadata.get("scored_by")
    return ModelRecord.from_json(scored_by.value) if scored_by is not None else None


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe values: NaN (a column empty on one side) becomes null."""
    return {name: None if math.isnan(value) else round(value, 4) for name, value in values.items()}
