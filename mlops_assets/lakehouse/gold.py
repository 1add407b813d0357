"""Gold: model-ready feature rows of a day."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.lakehouse.features import (
    build_features,
    feature_columns,
    lookback_days,
)
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

GOLD_CODE_VERSION = "gold-1"


def build_gold_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(
        GOLD_CODE_VERSION, "columns", "timestamp_column", "entity_column", "target_column", "features"
    )
    reach = lookback_days(spec)

    @dg.asset(
        key=keys.gold,
        # A day's lags reach into the days before it: late data for those days rebuilds it.
        deps=[
            dg.AssetDep(
                keys.silver,
                partition_mapping=dg.TimeWindowPartitionMapping(
                    start_offset=-reach, allow_nonexistent_upstream_partitions=True
                ),
            )
        ],
        partitions_def=daily_partitions(spec),
        group_name="gold",
        kinds={"delta", "pandas"},
        code_version=code_version,
        output_required=False,
        automation_condition=on_upstream_update(),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"Features for forecasting {spec.target_column} per {spec.entity_column} and hour: "
            f"{', '.join(feature_columns(spec))}. Lags and trailing means reach {reach} day(s) "
            "back into silver; a missing earlier hour leaves its feature empty."
        ),
    )
    def gold(context: dg.AssetExecutionContext, lake: DeltaLake) -> Iterator[dg.MaterializeResult]:
        day = partition_day(context)
        days = [day - dt.timedelta(days=back) for back in range(reach, -1, -1)]
        silver = lake.read_days(lake.table_uri(*keys.table(keys.silver)), days).require(keys.silver)
        features = build_features(silver.rows, day, spec)
        uri = lake.table_uri(*keys.table(keys.gold))
        if features.empty and not lake.read_days(uri, [day], columns=[PARTITION_COLUMN]).rows.size:
            # Asked for because a day it looks back on changed, but no data of its own yet.
            context.log.info(f"No silver rows for {day}: nothing to build.")
            return
        version = lake.replace_day(uri, day, features, commit_metadata(context, silver_version=silver.version))
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(features)),
                "silver_version": dg.MetadataValue.int(silver.version),
                "features": dg.MetadataValue.json(feature_columns(spec)),
                "rows_with_all_features": dg.MetadataValue.int(int(features.notna().all(axis=1).sum())),
            }
        )

    return gold
