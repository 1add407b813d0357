"""Gold: model-ready feature rows of a day."""

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import dagster as dg

from mlops_assets.automation import TRANSIENT_FAILURES, on_upstream_update
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.defs.lakehouse.features import (
    build_features_for_days,
    feature_columns,
    lookback_partitions,
)
from mlops_assets.partitions import partition_starts, partitions_back, partitions_def
from mlops_assets.resources.delta_lake import (
    PARTITION_COLUMN,
    DeltaLake,
    commit_metadata,
    day_span,
    rows_by_day,
    written_table_metadata,
)

GOLD_CODE_VERSION = "gold-1"


@dataclass(frozen=True)
class Featurization:
    """What building the features of some event days did to the gold table.

    ``written_days`` are the days replaced in one commit (``version``): those with silver
    rows, and those that had gold rows but no longer have silver rows (left empty). A
    day with neither is not written; when no day is, ``version`` is None. ``rows_by_day``
    counts the rows written for every day asked for.
    """

    uri: str
    version: int | None
    silver_version: int
    written_days: list[dt.date]
    rows_by_day: dict[dt.date, int]
    rows_with_all_features: int

    @property
    def rows(self) -> int:
        return sum(self.rows_by_day.values())


def featurize_days(
    lake: DeltaLake, spec: DatasetSpec, days: Sequence[dt.date], commit: Mapping[str, str]
) -> Featurization:
    """Replace the gold rows of ``days`` with their features, built from the silver rows of
    those days and of the lookback days before the first, in one Delta commit carrying
    ``commit`` and the silver version read as its metadata."""
    keys = DatasetKeys(spec)
    days = sorted(set(days))
    reach = lookback_partitions(spec)
    looked_at = sorted({spec.grain.shift(day, -back) for day in days for back in range(reach + 1)})
    silver = lake.read_days(lake.table_uri(*keys.table(keys.silver)), looked_at).require(keys.silver)
    features = build_features_for_days(silver.rows, days, spec)
    uri = lake.table_uri(*keys.table(keys.gold))
    with_rows = set(features[PARTITION_COLUMN].unique())
    # A day asked for because a day it looks back on changed, with no data of its own yet,
    # is not written; a day that has gold rows but no silver rows any more is emptied.
    without_rows = [day for day in days if day not in with_rows]
    emptied = set()
    if without_rows:
        emptied = set(lake.read_days(uri, without_rows, columns=[PARTITION_COLUMN]).rows[PARTITION_COLUMN].unique())
    written = sorted(with_rows | emptied)
    version = None
    if written:
        version = lake.replace_days(uri, written, features, {**commit, "silver_version": str(silver.version)})
    return Featurization(
        uri=uri,
        version=version,
        silver_version=silver.version,
        written_days=written,
        rows_by_day=rows_by_day(features, days),
        rows_with_all_features=int(features.notna().all(axis=1).sum()),
    )


def build_gold_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(
        GOLD_CODE_VERSION, "frequency", "columns", "timestamp_column", "entity_column", "target_column", "features"
    )
    reach = lookback_partitions(spec)

    @dg.asset(
        key=keys.gold,
        # A partition's lags reach into the ones before it: late data for those rebuilds it.
        deps=[dg.AssetDep(keys.silver, partition_mapping=partitions_back(reach))],
        partitions_def=partitions_def(spec),
        group_name="gold",
        kinds={"delta", "pandas"},
        code_version=code_version,
        output_required=False,
        automation_condition=on_upstream_update(keys.reads, spec.schedules),
        retry_policy=TRANSIENT_FAILURES,
        # A backfill of many days reads silver once and writes the days in one commit.
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            f"Features for forecasting {spec.target_column} per {spec.entity_column} every {spec.frequency}: "
            f"{', '.join(feature_columns(spec))}. Lags and trailing means reach {reach} {spec.grain.noun}(s) "
            "back into silver; a missing earlier reading leaves its feature empty."
        ),
    )
    def gold(context: dg.AssetExecutionContext, lake: DeltaLake) -> Iterator[dg.MaterializeResult]:
        days = partition_starts(context)
        built = featurize_days(lake, spec, days, commit_metadata(context))
        if built.version is None:
            context.log.info(f"No silver rows for {day_span(days)}: nothing to build.")
            return
        if len(built.written_days) < len(days):
            context.log.info(
                f"Wrote {len(built.written_days)} of the {len(days)} days of {day_span(days)}; "
                "the others have no silver rows."
            )
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(built.uri, built.version, built.rows, built.rows_by_day),
                "silver_version": dg.MetadataValue.int(built.silver_version),
                "features": dg.MetadataValue.json(feature_columns(spec)),
                "rows_with_all_features": dg.MetadataValue.int(built.rows_with_all_features),
            }
        )

    return gold
