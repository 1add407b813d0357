"""The drift asset: each scored partition compared with the same partition a year before (or the
hold-out of the model that scored it), and its error with that model's hold-out error."""

import datetime as dt
import math
from collections.abc import Iterator

import dagster as dg
import numpy as np
import pandas as pd

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.monitoring.statistics import drift_report, monitored_columns
from mlops_assets.defs.registry.gate import holdout_rows
from mlops_assets.partitions import partition_start, partitions_def
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.records import ModelRecord

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
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"The {noun}'s error against the hold-out error of the model that scored it, and PSI and KS of its "
            f"{', '.join(monitored_columns(spec))} and predictions against the same {noun} a year before (the "
            "model's hold-out until there is a year of data). With actuals, the "
            f"{noun} drifted when its error is {settings.error_ratio:g} times the hold-out error; without, when "
            f"{settings.drifted_share:.0%} of those features (or the predictions) pass PSI "
            f"{settings.psi_threshold:g} and KS {settings.ks_threshold:g}. {noun.capitalize()}s with fewer than "
            f"{settings.min_rows} rows are not judged. The drift sensor requests retraining when "
            f"{settings.retrain_after_drifted} of the last {settings.retrain_window} judged {noun}s drifted."
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
        gold_uri = lake.table_uri(*keys.table(keys.gold))
        current = lake.read_days(gold_uri, [day]).require(keys.gold).rows
        current = current.merge(
            scored[[spec.entity_column, spec.timestamp_column, "prediction", "in_training"]],
            on=[spec.entity_column, spec.timestamp_column],
            how="inner",
            validate="one_to_one",
        )
        current = current[~current["in_training"]].reset_index(drop=True)
        # Same length and season: the partition a year before, when gold holds it; else the
        # model's own hold-out (the latest rows before the partition).
        a_year_before = year_before(spec, day)
        reference = lake.read_days(gold_uri, [a_year_before]).rows.dropna(subset=[spec.target_column])
        described = f"{a_year_before}, a year before"
        if len(reference) < settings.min_rows:
            reference = holdout_rows(lake, spec, model)
            described = (
                f"hold-out of {model.label}: {', '.join(model.holdout_partitions)} from "
                f"{pd.Timestamp(model.holdout_start).isoformat()}, gold version {model.gold_version}"
            )
        predict = mlflow_tracking.load_model(model).predict
        report = drift_report(
            spec,
            day,
            reference,
            current,
            np.asarray(predict(reference), dtype=float) if len(reference) else np.array([]),
            current["prediction"].to_numpy(dtype=float),
            expected_mae=model.metrics.get("mae", math.nan),
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
                "reference": dg.MetadataValue.text(described),
                "reference_rows": dg.MetadataValue.int(report.reference_rows),
                "current_rows": dg.MetadataValue.int(report.current_rows),
            }
        )

    return drift


def year_before(spec: DatasetSpec, day: dt.date) -> dt.date:
    """The partition a year before ``day``'s: 52 weeks for days (the same weekday), 12 months for months."""
    return day - dt.timedelta(weeks=52) if spec.grain.name == "daily" else spec.grain.shift(day, -12)


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
