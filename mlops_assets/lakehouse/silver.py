"""Silver: the typed, de-duplicated and validated rows of a day."""

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.bronze import INGESTED_AT, SOURCE_FILE
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.lakehouse.quality import (
    apply_rules,
    rule_check_results,
    rule_check_specs,
)
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import TRANSIENT_FAILURES, on_upstream_update

SILVER_CODE_VERSION = "silver-1"


def build_silver_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(SILVER_CODE_VERSION, "columns", "timestamp_column", "entity_column", "quality")
    key_columns = [spec.entity_column, spec.timestamp_column]

    @dg.asset(
        key=keys.silver,
        deps=[keys.bronze],
        partitions_def=daily_partitions(spec),
        group_name="silver",
        kinds={"delta", "pandas"},
        code_version=code_version,
        check_specs=rule_check_specs(spec, keys.silver),
        automation_condition=on_upstream_update(),
        retry_policy=TRANSIENT_FAILURES,
        description=(
            f"One row per {spec.entity_column} and {spec.timestamp_column}, typed as the "
            f"{spec.name} spec declares. Of duplicate readings the one ingested last wins; "
            "rows failing a `drop` rule are removed. Each quality rule is an asset check; "
            "`fail` rules are blocking."
        ),
    )
    def silver(context: dg.AssetExecutionContext, lake: DeltaLake) -> dg.MaterializeResult:
        day = partition_day(context)
        columns = [*spec.columns, SOURCE_FILE, INGESTED_AT]
        bronze = lake.read_days(lake.table_uri(*keys.table(keys.bronze)), [day], columns=columns).require(keys.bronze)
        rows = bronze.rows.sort_values(INGESTED_AT, kind="stable")
        unique = rows.drop_duplicates(subset=key_columns, keep="last")
        ordered = unique.sort_values(key_columns).reset_index(drop=True).assign(**{PARTITION_COLUMN: day})
        kept, outcomes = apply_rules(ordered, spec.quality)
        uri = lake.table_uri(*keys.table(keys.silver))
        version = lake.replace_day(uri, day, kept, commit_metadata(context, bronze_version=bronze.version))
        return dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(kept)),
                "bronze_version": dg.MetadataValue.int(bronze.version),
                "rows_in": dg.MetadataValue.int(len(rows)),
                "duplicates_removed": dg.MetadataValue.int(len(rows) - len(unique)),
                "rows_dropped": dg.MetadataValue.int(len(unique) - len(kept)),
            },
            check_results=rule_check_results(outcomes),
        )

    return silver
