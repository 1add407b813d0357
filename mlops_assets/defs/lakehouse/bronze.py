"""Bronze: the raw rows of every landing file of a day, appended to Delta as they arrived."""

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import dagster as dg
import pandas as pd

from mlops_assets.automation import TRANSIENT_FAILURES, retried_at_backfill_tick
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.readers import (
    FORMAT_BY_EXTENSION,
    RejectedFile,
    count_records,
    parse_file,
)
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.partitions import partition_starts, partitions_def
from mlops_assets.resources.delta_lake import (
    PARTITION_COLUMN,
    DeltaLake,
    commit_metadata,
    day_span,
    rows_by_day,
    written_table_metadata,
)
from mlops_assets.resources.landing_zone import LandingFile, LandingZone

SOURCE_FILE, SOURCE_ETAG, INGESTED_AT = "_source_file", "_source_etag", "_ingested_at"
SOURCE_MODIFIED = "_source_modified"
BRONZE_COLUMNS = (SOURCE_FILE, SOURCE_ETAG, SOURCE_MODIFIED, INGESTED_AT, PARTITION_COLUMN)
BRONZE_CODE_VERSION = "bronze-2"


@dataclass(frozen=True)
class IngestedFile:
    """A landing file version whose rows went into bronze, with how many of them had a
    value that did not parse (kept in ``_rescued``) and the columns it holds that the spec
    does not declare (kept in bronze as text, not carried to silver)."""

    file: LandingFile
    rows: int
    rescued: int
    undeclared: tuple[str, ...] = ()


@dataclass
class Ingestion:
    """What ingesting the landing files of some event days did to the bronze table.

    ``inserted`` rows went in with one commit (``version``; None when nothing was
    written); ``rows_by_day`` is what each day holds afterwards. Rejected files are in
    ``quarantined``, each with its reason and where it was moved.
    """

    uri: str
    days: list[dt.date]
    rows_by_day: dict[dt.date, int]
    read_version: int | None = None
    version: int | None = None
    inserted: int = 0
    ingested: list[IngestedFile] = field(default_factory=list)
    quarantined: list[dict] = field(default_factory=list)

    @property
    def new_files(self) -> int:
        return len(self.ingested) + len(self.quarantined)


def ingest_days(
    lake: DeltaLake,
    landing: LandingZone,
    spec: DatasetSpec,
    days: Sequence[dt.date],
    run_id: str,
    commit: Mapping[str, str],
) -> Ingestion:
    """Ingest the landing files of ``days`` that bronze does not hold yet (by path and etag),
    in one Delta commit carrying ``commit`` as its metadata; move files that cannot be
    read, or lack a required column, to quarantine with their reason and ``run_id``."""
    keys = DatasetKeys(spec)
    days = sorted(set(days))
    uri = lake.table_uri(*keys.table(keys.bronze))
    already = lake.read_days(uri, days, columns=[SOURCE_FILE, SOURCE_ETAG, PARTITION_COLUMN])
    ingestion = Ingestion(uri=uri, days=days, rows_by_day=rows_by_day(already.rows, days), read_version=already.version)
    seen = set(already.rows[[SOURCE_FILE, SOURCE_ETAG]].drop_duplicates().itertuples(index=False, name=None))
    files = [file for day in days for file in landing.list_partition(spec, day) if (file.path, file.etag) not in seen]
    if not files:
        return ingestion
    ingested_at = pd.Timestamp.now(tz="UTC")
    accepted: list[pd.DataFrame] = []
    rejected: list[tuple[LandingFile, bytes, dict]] = []
    for file in files:
        data = landing.read_bytes(file)
        try:
            if file.subfolder:
                raise RejectedFile(
                    f"in the sub-folder {file.subfolder!r} of its partition's folder; the path pattern "
                    f"{spec.landing.path_pattern.pattern!r} puts files directly in it"
                )
            parsed = parse_file(data, file.extension, spec, reserved=BRONZE_COLUMNS)
        except RejectedFile as reason:
            records = reason.records
            if records is None:
                records = count_records(data, FORMAT_BY_EXTENSION.get(file.extension, "csv"))
            entry = {
                "path": file.path,
                "etag": file.etag,
                "reason": str(reason),
                "records": records,
                "event_date": file.partition.isoformat(),
                "dagster_run_id": run_id,
                "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
            }
            rejected.append((file, data, entry))
            continue
        accepted.append(
            parsed.rows.assign(
                **{
                    SOURCE_FILE: file.path,
                    SOURCE_ETAG: file.etag,
                    SOURCE_MODIFIED: pd.Timestamp(file.modified).tz_convert("UTC"),
                    INGESTED_AT: ingested_at,
                    PARTITION_COLUMN: file.partition,
                }
            )
        )
        ingestion.ingested.append(
            IngestedFile(file=file, rows=len(parsed.rows), rescued=parsed.rescued_rows, undeclared=parsed.extra_columns)
        )

    if accepted:
        rows = pd.concat(accepted, ignore_index=True)
        ingestion.version, ingestion.inserted = lake.insert_new(
            uri, days, rows, match_columns=[SOURCE_FILE, SOURCE_ETAG], commit_metadata=commit
        )
        if ingestion.inserted == len(rows):
            added = rows_by_day(rows, days)
            ingestion.rows_by_day = {day: count + added[day] for day, count in ingestion.rows_by_day.items()}
        else:
            # Another run inserted some of these files first: count what the days hold now.
            after = lake.read_days(uri, days, columns=[PARTITION_COLUMN], version=ingestion.version).rows
            ingestion.rows_by_day = rows_by_day(after, days)
    for file, data, entry in rejected:
        entry["quarantined_to"] = landing.quarantine(file, data, entry)
        ingestion.quarantined.append(entry)
    return ingestion


def build_bronze_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(
        BRONZE_CODE_VERSION, "landing", "columns", "timestamp_column", "entity_column", "target_column"
    )

    @dg.asset(
        key=keys.bronze,
        deps=[keys.landing],
        partitions_def=partitions_def(spec),
        group_name="bronze",
        kinds={"delta", "pandas"},
        code_version=code_version,
        output_required=False,
        retry_policy=TRANSIENT_FAILURES,
        # New files are requested by the landing sensors; a failed ingestion is retried nightly.
        automation_condition=retried_at_backfill_tick(spec.schedules) & ~dg.AutomationCondition.in_progress(),
        # A backfill of many days lists, reads and commits them in one run.
        backfill_policy=dg.BackfillPolicy.single_run(),
        description=(
            f"Raw rows of every {spec.name} landing file, one append per run, with the file "
            f"({SOURCE_FILE}, {SOURCE_ETAG}) each row came from, when it was ingested, and "
            "values that did not parse in _rescued. A file version (path, etag) is ingested "
            "once; an unreadable or schema-violating file is moved to quarantine with its reason."
        ),
    )
    def bronze(
        context: dg.AssetExecutionContext, landing: LandingZone, lake: DeltaLake
    ) -> Iterator[dg.MaterializeResult]:
        days = partition_starts(context)
        ingestion = ingest_days(lake, landing, spec, days, context.run.run_id, commit_metadata(context))
        if ingestion.new_files == 0:
            unrecorded = _unrecorded_days(context.instance, keys.bronze, ingestion.rows_by_day)
            if not unrecorded:
                context.log.info(
                    f"No new {spec.name} files for {day_span(days)}: every landing file was already ingested."
                )
                return
            # A run stopped between its Delta commit and Dagster's record of it: record it now,
            # so that what reads bronze learns of the rows.
            context.log.warning(
                f"bronze holds rows for {[day.isoformat() for day in unrecorded]} that Dagster never recorded "
                "(a run stopped after its commit); recording them now."
            )
            yield dg.MaterializeResult(
                metadata={
                    **written_table_metadata(
                        ingestion.uri,
                        ingestion.read_version,
                        sum(ingestion.rows_by_day.values()),
                        ingestion.rows_by_day,
                    ),
                    "rows_added": dg.MetadataValue.int(0),
                    "recovered_days": dg.MetadataValue.json([day.isoformat() for day in unrecorded]),
                }
            )
            return
        for entry in ingestion.quarantined:
            context.log.warning(f"Quarantined {entry['path']}: {entry['reason']}")
        for entry in ingestion.ingested:
            if entry.undeclared:
                context.log.warning(
                    f"{entry.file.path} has column(s) {list(entry.undeclared)} that the {spec.name} spec does not "
                    "declare: kept in bronze as text, left out of silver. Declare them in the spec to use them."
                )
        if ingestion.inserted == 0:
            # Nothing changed in the table; record what happened without a new materialization,
            # so downstream days are not rebuilt for nothing.
            for day in days:
                context.log_event(
                    dg.AssetObservation(
                        asset_key=keys.bronze,
                        partition=day.isoformat(),
                        metadata=_quarantine_metadata(
                            [entry for entry in ingestion.quarantined if entry["event_date"] == day.isoformat()]
                        ),
                    )
                )
            return
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(
                    ingestion.uri, ingestion.version, sum(ingestion.rows_by_day.values()), ingestion.rows_by_day
                ),
                "rows_added": dg.MetadataValue.int(ingestion.inserted),
                "rows_rescued": dg.MetadataValue.int(sum(entry.rescued for entry in ingestion.ingested)),
                "files_ingested": dg.MetadataValue.int(len(ingestion.ingested)),
                "ingested": dg.MetadataValue.json(
                    [
                        {
                            "path": entry.file.path,
                            "etag": entry.file.etag,
                            "rows": entry.rows,
                            "rescued": entry.rescued,
                            **({"undeclared_columns": list(entry.undeclared)} if entry.undeclared else {}),
                        }
                        for entry in ingestion.ingested
                    ]
                ),
                "undeclared_columns": dg.MetadataValue.json(
                    sorted({column for entry in ingestion.ingested for column in entry.undeclared})
                ),
                **_quarantine_metadata(ingestion.quarantined),
            }
        )

    return bronze


def _unrecorded_days(instance: dg.DagsterInstance, key: dg.AssetKey, rows: Mapping[dt.date, int]) -> list[dt.date]:
    """The days whose rows in bronze differ from what Dagster's latest materialization of
    their partition recorded (none recorded counts as no rows)."""
    unrecorded = []
    for day, count in rows.items():
        latest = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key, asset_partitions=[day.isoformat()]), limit=1
        ).records
        recorded = 0
        if latest:
            metadata = latest[0].asset_materialization.metadata
            by_day = metadata.get("rows_by_day")
            recorded = by_day.value.get(day.isoformat(), 0) if by_day else metadata["dagster/row_count"].value
        if count != recorded:
            unrecorded.append(day)
    return unrecorded


def _quarantine_metadata(quarantined: list[dict]) -> dict[str, dg.MetadataValue]:
    return {
        "files_quarantined": dg.MetadataValue.int(len(quarantined)),
        "rows_quarantined": dg.MetadataValue.int(sum(entry["records"] for entry in quarantined)),
        "quarantined": dg.MetadataValue.json(quarantined),
    }
