"""Delta tables of the lakehouse, through deltalake (delta-rs), on any storage it reaches.

Every table is partitioned by ``event_date`` (a ``date`` column): the Dagster daily
partition a row belongs to. Writers either append (bronze, one commit per run) or
replace whole days (silver, gold, serving), so re-running a day never duplicates rows.
A run over a range of days (a single-run backfill) writes the range in one commit.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import CommitProperties, DeltaTable, write_deltalake
from pydantic import Field

from mlops_assets.datasets.spec import PARTITION_COLUMN
from mlops_assets.resources.storage import StorageLocation


@dataclass(frozen=True)
class TableRead:
    """Rows read from a Delta table, with the table version they were read at."""

    uri: str
    version: int | None
    rows: pd.DataFrame

    def require(self, asset: dg.AssetKey) -> TableRead:
        """This read, or a clear failure if the table behind ``asset`` does not exist yet."""
        if self.version is None:
            raise dg.Failure(f"{self.uri} does not exist yet: materialize {asset.to_user_string()} first.")
        return self


class DeltaLake(dg.ConfigurableResource):
    """The lakehouse: one Delta table per layer and dataset under a root URI."""

    location: StorageLocation = Field(
        description="Root of the lakehouse: a local folder, or az://<container>/<path> on the storage account."
    )

    @property
    def storage_options(self) -> dict[str, str]:
        """deltalake storage options for the lakehouse."""
        return self.location.delta_options

    def table_uri(self, layer: str, table: str) -> str:
        return self.location.child_uri(layer, table)

    def _table(self, uri: str, version: int | None = None) -> DeltaTable | None:
        if not DeltaTable.is_deltatable(uri, storage_options=self.storage_options):
            return None
        return DeltaTable(uri, version=version, storage_options=self.storage_options)

    def version(self, uri: str) -> int | None:
        """The table's current version, or None if it does not exist yet."""
        table = self._table(uri)
        return None if table is None else table.version()

    def read_days(
        self, uri: str, days: Sequence[dt.date], columns: Sequence[str] | None = None, version: int | None = None
    ) -> TableRead:
        """The rows of ``days`` at ``version`` (default: the latest); empty if the table does not exist."""
        table = self._table(uri, version)
        if table is None:
            return TableRead(uri=uri, version=None, rows=pd.DataFrame(columns=list(columns or [])))
        dataset = table.to_pyarrow_dataset()
        wanted = pa.array(sorted(set(days)), type=pa.date32())
        arrow = dataset.to_table(
            columns=list(columns) if columns else None, filter=pc.field(PARTITION_COLUMN).isin(wanted)
        )
        return TableRead(uri=uri, version=table.version(), rows=arrow.to_pandas())

    def days(self, uri: str) -> list[dt.date]:
        """The event days present in the table."""
        table = self._table(uri)
        if table is None:
            return []
        values = table.to_pyarrow_dataset().to_table(columns=[PARTITION_COLUMN]).column(0)
        return sorted(pc.unique(values).to_pylist())

    def count_rows(self, uri: str) -> int:
        table = self._table(uri)
        return 0 if table is None else table.to_pyarrow_dataset().count_rows()

    def insert_new(
        self,
        uri: str,
        days: Sequence[dt.date],
        rows: pd.DataFrame,
        match_columns: Sequence[str],
        commit_metadata: Mapping[str, str],
    ) -> tuple[int, int]:
        """Append the rows of ``days`` whose ``match_columns`` values are not in those days yet,
        merging new columns into the schema; returns (table version, rows inserted).

        This is a Delta MERGE, not a blind append: two runs inserting the same rows at
        once conflict, one commit fails and its retry finds the rows already there. The
        MERGE reads only the partitions of ``days``.
        """
        _check_days(uri, days, rows)
        arrow = to_arrow(rows)
        properties = CommitProperties(custom_metadata=dict(commit_metadata))
        table = self._table(uri)
        if table is None:
            # A blind append that creates the table. Should another run create it first,
            # deltalake would retry this commit as an append on top, duplicating the rows:
            # with no commit retry it fails instead, and the run's retry MERGEs.
            write_deltalake(
                uri,
                arrow,
                mode="append",
                partition_by=[PARTITION_COLUMN],
                storage_options=self.storage_options,
                commit_properties=CommitProperties(custom_metadata=dict(commit_metadata), max_commit_retries=0),
            )
            return self._committed_version(uri), len(rows)
        matches = " AND ".join(f"t.{column} = s.{column}" for column in match_columns)
        result = (
            table.merge(
                arrow,
                predicate=f"{matches} AND {days_predicate(days, f't.{PARTITION_COLUMN}')}",
                source_alias="s",
                target_alias="t",
                merge_schema=True,
                commit_properties=properties,
            )
            .when_not_matched_insert_all()
            .execute()
        )
        return table.version(), int(result["num_target_rows_inserted"])

    def replace_day(self, uri: str, day: dt.date, rows: pd.DataFrame, commit_metadata: Mapping[str, str]) -> int:
        """Replace the rows of one event day in one commit; returns the version of that commit."""
        return self.replace_days(uri, [day], rows, commit_metadata)

    def replace_days(
        self, uri: str, days: Sequence[dt.date], rows: pd.DataFrame, commit_metadata: Mapping[str, str]
    ) -> int:
        """Replace the rows of ``days`` in one commit; returns the version of that commit.

        A day of ``days`` without rows in ``rows`` ends up empty. New columns are merged
        into the schema, so a richer feature recipe does not need the table to be rebuilt.
        """
        _check_days(uri, days, rows)
        table = self._table(uri)
        write_deltalake(
            uri if table is None else table,
            to_arrow(rows),
            mode="overwrite",
            predicate=days_predicate(days, PARTITION_COLUMN),
            partition_by=[PARTITION_COLUMN],
            schema_mode="merge",
            storage_options=self.storage_options if table is None else None,
            commit_properties=CommitProperties(custom_metadata=dict(commit_metadata)),
        )
        return self._committed_version(uri) if table is None else table.version()

    def _committed_version(self, uri: str) -> int:
        """The version after the commit that created the table (version 0 unless another
        writer committed in between)."""
        table = self._table(uri)
        if table is None:
            raise RuntimeError(f"{uri} is not a Delta table after a successful write")
        return table.version()


def days_predicate(days: Sequence[dt.date], column: str) -> str:
    """A Delta (SQL) predicate true for the rows of ``days``: ``column = 'day'`` for one day,
    an ``IN`` list for several, so writers touch only those partitions."""
    unique = sorted(set(days))
    if not unique:
        raise ValueError("a predicate over event days needs at least one day")
    if len(unique) == 1:
        return f"{column} = '{unique[0].isoformat()}'"
    literals = ", ".join(f"'{day.isoformat()}'" for day in unique)
    return f"{column} IN ({literals})"


def _check_days(uri: str, days: Sequence[dt.date], rows: pd.DataFrame) -> None:
    """Refuse rows filed under a day the write does not cover."""
    if rows.empty:
        return
    outside = set(rows[PARTITION_COLUMN].unique()) - set(days)
    if outside:
        raise ValueError(
            f"rows written to {uri} for {day_span(days)} have {PARTITION_COLUMN} outside those days: "
            f"{', '.join(sorted(str(day) for day in outside))}"
        )


def day_span(days: Sequence[dt.date]) -> str:
    """``days`` for a message: the day, or ``first...last``."""
    first, last = min(days), max(days)
    return str(first) if first == last else f"{first}...{last}"


def to_arrow(rows: pd.DataFrame) -> pa.Table:
    """An Arrow table with the types Delta stores: UTC microsecond timestamps, plain strings, dates."""
    table = pa.Table.from_pandas(rows, preserve_index=False)
    fields: list[pa.Field] = []
    for arrow_field in table.schema:
        kind = arrow_field.type
        if arrow_field.name == PARTITION_COLUMN:
            kind = pa.date32()
        elif pa.types.is_timestamp(kind):
            kind = pa.timestamp("us", tz="UTC")
        elif pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_null(kind):
            kind = pa.string()
        fields.append(pa.field(arrow_field.name, kind))
    return table.cast(pa.schema(fields))


def written_table_metadata(
    uri: str, version: int, rows: int, rows_by_day: Mapping[dt.date, int] | None = None
) -> dict[str, dg.MetadataValue]:
    """Where a run wrote: table URI, the Delta version of its commit, and its rows: the day's,
    or, for a run over several days, the whole range's with each day's count beside it."""
    metadata = {
        "table_uri": dg.MetadataValue.path(uri),
        "delta_version": dg.MetadataValue.int(version),
        "dagster/row_count": dg.MetadataValue.int(rows),
    }
    if rows_by_day is not None and len(rows_by_day) > 1:
        metadata["rows_by_day"] = dg.MetadataValue.json(
            {day.isoformat(): int(count) for day, count in sorted(rows_by_day.items())}
        )
    return metadata


def rows_by_day(rows: pd.DataFrame, days: Sequence[dt.date]) -> dict[dt.date, int]:
    """How many of ``rows`` each of ``days`` holds, zero for a day without rows."""
    counts = rows[PARTITION_COLUMN].value_counts() if len(rows) else pd.Series(dtype="int64")
    return {day: int(counts.get(day, 0)) for day in sorted(set(days))}


def commit_metadata(context: dg.AssetExecutionContext, **extra: Any) -> dict[str, str]:
    """What a Delta commit records of the Dagster run that made it: the run, the asset, and
    the partition, or the first and last partition of a run over a range."""
    metadata = {"dagster_run_id": context.run.run_id, "dagster_asset_key": context.asset_key.to_user_string()}
    if context.has_partition_key:
        metadata["dagster_partition"] = context.partition_key
    elif context.has_partition_key_range:
        key_range = context.partition_key_range
        metadata["dagster_partition_range"] = f"{key_range.start}...{key_range.end}"
    return {**metadata, **{key: str(value) for key, value in extra.items()}}
