"""Silver: the typed, de-duplicated and validated rows of a day."""

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.lakehouse.bronze import INGESTED_AT, SOURCE_ETAG, SOURCE_FILE, SOURCE_MODIFIED
from mlops_assets.defs.lakehouse.quality import (
    RuleOutcome,
    apply_rules,
    rule_check_results,
    rule_check_specs,
)
from mlops_assets.partitions import partition_starts, partitions_def
from mlops_assets.resources.delta_lake import (
    PARTITION_COLUMN,
    DeltaLake,
    commit_metadata,
    rows_by_day,
    written_table_metadata,
)

SILVER_CODE_VERSION = "silver-1"


@dataclass(frozen=True)
class Refinement:
    """What refining some event days of bronze into silver did.

    Of ``rows_in`` bronze rows, ``superseded`` belong to a landing file's earlier version,
    ``duplicates_removed`` were earlier readings of the same entity and timestamp on the
    same day (the file modified last wins) and ``rows_dropped`` failed a ``drop`` rule; the
    rest were written to silver in one commit (``version``), ``rows_by_day`` of them per
    day. ``outcomes`` are the quality rules' results over all the days together.
    """

    uri: str
    version: int
    bronze_version: int
    rows_in: int
    superseded: int
    duplicates_removed: int
    rows_dropped: int
    rows_by_day: dict[dt.date, int]
    outcomes: list[RuleOutcome]

    @property
    def rows(self) -> int:
        return sum(self.rows_by_day.values())


def latest_file_versions(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows of each landing file's latest version: a file sent again with other content
    replaces the rows of its earlier versions (bronze keeps them all)."""
    if rows.empty:
        return rows
    versions = (
        rows[[SOURCE_FILE, SOURCE_ETAG, SOURCE_MODIFIED, INGESTED_AT]]
        .drop_duplicates([SOURCE_FILE, SOURCE_ETAG])
        .sort_values([SOURCE_MODIFIED, INGESTED_AT], kind="stable", na_position="first")
        .drop_duplicates(SOURCE_FILE, keep="last")
    )
    latest = pd.MultiIndex.from_frame(versions[[SOURCE_FILE, SOURCE_ETAG]])
    return rows[pd.MultiIndex.from_frame(rows[[SOURCE_FILE, SOURCE_ETAG]]).isin(latest)]


def refine_days(lake: DeltaLake, spec: DatasetSpec, days: Sequence[dt.date], commit: Mapping[str, str]) -> Refinement:
    """Replace the silver rows of ``days`` with their bronze rows, typed, de-duplicated per
    day (the reading ingested last wins) and filtered by the spec's quality rules, in one
    Delta commit carrying ``commit`` and the bronze version read as its metadata."""
    keys = DatasetKeys(spec)
    days = sorted(set(days))
    key_columns = [PARTITION_COLUMN, spec.entity_column, spec.timestamp_column]
    columns = [*spec.columns, SOURCE_FILE, SOURCE_ETAG, SOURCE_MODIFIED, INGESTED_AT, PARTITION_COLUMN]
    bronze = lake.read_days(lake.table_uri(*keys.table(keys.bronze)), days, columns=columns).require(keys.bronze)
    current = latest_file_versions(bronze.rows)
    rows = current.sort_values([SOURCE_MODIFIED, INGESTED_AT, SOURCE_FILE], kind="stable", na_position="first")
    unique = rows.drop_duplicates(subset=key_columns, keep="last")
    # Silver keeps the file each row came from; which version it was is bronze's to tell.
    ordered = unique.drop(columns=[SOURCE_ETAG, SOURCE_MODIFIED]).sort_values(key_columns).reset_index(drop=True)
    kept, outcomes = apply_rules(ordered, spec.quality)
    uri = lake.table_uri(*keys.table(keys.silver))
    version = lake.replace_days(uri, days, kept, {**commit, "bronze_version": str(bronze.version)})
    return Refinement(
        uri=uri,
        version=version,
        bronze_version=bronze.version,
        rows_in=len(bronze.rows),
        superseded=len(bronze.rows) - len(rows),
        duplicates_removed=len(rows) - len(unique),
        rows_dropped=len(unique) - len(kept),
        rows_by_day=rows_by_day(kept, days),
        outcomes=outcomes,
    )


def build_silver_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(SILVER_CODE_VERSION, "columns", "timestamp_column", "entity_column", "quality")

    @dg.asset(
        key=keys.silver,
        deps=[keys.bronze],
        partitions_def=partitions_def(spec),
        group_name="silver",
        kinds={"delta", "pandas"},
        code_version=code_version,
        check_specs=rule_check_specs(spec, keys.silver),
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        # A backfill of many days reads, checks and writes them in one run.
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            f"One row per {spec.entity_column} and {spec.timestamp_column}, typed as the "
            f"{spec.name} spec declares. Of duplicate readings the one ingested last wins; "
            "rows failing a `drop` rule are removed. Each quality rule is an asset check "
            "(over all the days of a run); `fail` rules are blocking."
        ),
    )
    def silver(context: dg.AssetExecutionContext, lake: DeltaLake) -> dg.MaterializeResult:
        refined = refine_days(lake, spec, partition_starts(context), commit_metadata(context))
        return dg.MaterializeResult(
            metadata={
                **written_table_metadata(refined.uri, refined.version, refined.rows, refined.rows_by_day),
                "bronze_version": dg.MetadataValue.int(refined.bronze_version),
                "rows_in": dg.MetadataValue.int(refined.rows_in),
                "rows_superseded": dg.MetadataValue.int(refined.superseded),
                "duplicates_removed": dg.MetadataValue.int(refined.duplicates_removed),
                "rows_dropped": dg.MetadataValue.int(refined.rows_dropped),
            },
            check_results=rule_check_results(refined.outcomes),
        )

    return silver
