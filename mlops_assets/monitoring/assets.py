"""The drift asset: each scored day compared with the training window of the model that scored it."""

import math
from collections.abc import Iterator

import dagster as dg
import numpy as np

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.monitoring.drift import drift_report, monitored_columns
from mlops_assets.partitions import daily_partitions, days_between, partition_day
from mlops_assets.policies import on_upstream_update

DRIFT_CODE_VERSION = "drift-1"


def build_drift_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    settings = spec.monitoring
    name = spec.gate.model_name

    @dg.asset(
        key=keys.drift,
        deps=[keys.gold, keys.predictions],
        partitions_def=daily_partitions(spec),
        group_name="monitoring",
        kinds={"pandas", "mlflow"},
        code_version=spec.code_version(DRIFT_CODE_VERSION, "features", "monitoring"),
        output_required=False,
        automation_condition=on_upstream_update(),
        description=(
            f"PSI and KS of the day's {', '.join(monitored_columns(spec))} and predictions against the "
            "training window of the registered version that scored the day. The day counts as drifted "
            f"when a column's PSI passes {settings.psi_threshold:g} and its KS passes "
            f"{settings.ks_threshold:g}; the drift sensor then requests retraining."
        ),
    )
    def drift(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> Iterator[dg.MaterializeResult]:
        day = partition_day(context)
        scored = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [day]).rows
        if scored.empty:
            context.log.warning(f"{day} has no predictions: nothing to compare.")
            return
        registry = mlflow_tracking.registry()
        version = registry.get(name, str(scored["model_version"].iloc[0]))
        window, trained_until = version.window, version.trained_until
        if window is None or trained_until is None:
            raise dg.Failure(f"{name} version {version.version} does not record its training window")
        gold_uri = lake.table_uri(*keys.table(keys.gold))
        days = days_between(*window)
        reference = lake.read_days(gold_uri, days, version=version.gold_version).rows
        reference = reference[reference[spec.timestamp_column] < trained_until].reset_index(drop=True)
        current = lake.read_days(gold_uri, [day]).require(keys.gold).rows
        model = registry.load(version)
        report = drift_report(
            spec,
            day,
            reference,
            current,
            np.asarray(model.predict(reference), dtype=float),
            scored["prediction"].to_numpy(dtype=float),
        )
        yield dg.MaterializeResult(
            metadata={
                "drifted": dg.MetadataValue.bool(bool(report.drifted)),
                "drifted_columns": dg.MetadataValue.json(report.drifted),
                "reason": dg.MetadataValue.text(report.reason(spec) if report.drifted else ""),
                "max_psi": dg.MetadataValue.float(report.max_psi),
                "prediction_psi": dg.MetadataValue.float(report.psi["prediction"]),
                "prediction_ks": dg.MetadataValue.float(report.ks["prediction"]),
                "psi": dg.MetadataValue.json(_rounded(report.psi)),
                "ks": dg.MetadataValue.json(_rounded(report.ks)),
                "model_version": dg.MetadataValue.text(version.version),
                "reference_window": dg.MetadataValue.text(f"{window[0]}..{window[1]} before {trained_until}"),
                "reference_rows": dg.MetadataValue.int(report.reference_rows),
                "current_rows": dg.MetadataValue.int(report.current_rows),
            }
        )

    return drift


def _rounded(values: dict[str, float]) -> dict[str, float | None]:
    """JSON-safe values: NaN (a column empty on one side) becomes null."""
    return {name: None if math.isnan(value) else round(value, 4) for name, value in values.items()}
