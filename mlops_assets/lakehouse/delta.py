"""Delta tables of the lakehouse, through deltalake (delta-rs), on any storage it reaches.

Every table is partitioned by ``event_date`` (a ``date`` column): the Dagster daily
partition a row belongs to. Writers either append (bronze, one commit per run) or
replace one day (silver, gold, serving), so re-running a day never duplicates rows.
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
from mlops_assets.storage.account import StorageAccount


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

    root: str = Field(description="Root of the lakehouse: a local folder, or az://<container>/<path> on Azure Blob.")
    account: StorageAccount | None = Field(
        default=None, description="The storage account of an az:// root; None for a local folder."
    )

    @property
    def storage_options(self) -> dict[str, str]:
        """deltalake storage options for the root."""
        return self.account.delta_options() if self.account else {}

    def table_uri(self, layer: str, table: str) -> str:
        return f"{self.root.rstrip('/')}/{layer}/{table}"

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
        day: dt.date,
        rows: pd.DataFrame,
        match_columns: Sequence[str],
        commit_metadata: Mapping[str, str],
    ) -> tuple[int, int]:
        """Append the rows of ``day`` whose ``match_columns`` values are not in the day yet,
        merging new columns into the schema; returns (table version, rows inserted).

        This is a Delta MERGE, not a blind append: two runs inserting the same rows at
        once conflict, one commit fails and its retry finds the rows already there.
        """
        arrow = to_arrow(rows)
        properties = CommitProperties(custom_metadata=dict(commit_metadata))
        table = self._table(uri)
        if table is None:
            write_deltalake(
                uri,
                arrow,
                mode="append",
                partition_by=[PARTITION_COLUMN],
                storage_options=self.storage_options,
                commit_properties=properties,
            )
            return self._committed_version(uri), len(rows)
        matches = " AND ".join(f"t.{column} = s.{column}" for column in match_columns)
        result = (
            table.merge(
                arrow,
                predicate=f"{matches} AND t.{PARTITION_COLUMN} = '{day.isoformat()}'",
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
        """Replace the rows of one event day in one commit; returns the version of that commit.

        New columns are merged into the schema, so a richer feature recipe does not need
        the table to be rebuilt.
        """
        if not rows.empty and set(rows[PARTITION_COLUMN].unique()) != {day}:
            raise ValueError(f"rows written to the {day} partition of {uri} must all have {PARTITION_COLUMN}={day}")
        table = self._table(uri)
        write_deltalake(
            uri if table is None else table,
            to_arrow(rows),
            mode="overwrite",
            predicate=f"{PARTITION_COLUMN} = '{day.isoformat()}'",
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


def written_table_metadata(uri: str, version: int, rows: int) -> dict[str, dg.MetadataValue]:
    """Where a day was written: table URI, the Delta version of the commit, the day's rows."""
    return {
        "table_uri": dg.MetadataValue.path(uri),
        "delta_version": dg.MetadataValue.int(version),
        "dagster/row_count": dg.MetadataValue.int(rows),
    }


def commit_metadata(context: dg.AssetExecutionContext, **extra: Any) -> dict[str, str]:
    """What a Delta commit records of the Dagster run that made it."""
    metadata = {"dagster_run_id": context.run.run_id, "dagster_asset_key": context.asset_key.to_user_string()}
    if context.has_partition_key:
        metadata["dagster_partition"] = context.partition_key
    return {**metadata, **{key: str(value) for key, value in extra.items()}}
