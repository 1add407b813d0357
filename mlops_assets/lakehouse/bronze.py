"""Bronze: the raw rows of every landing file of a day, appended to Delta as they arrived."""

import datetime as dt
from collections.abc import Iterator

import dagster as dg
import pandas as pd

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.readers import (
    FORMAT_BY_EXTENSION,
    RejectedFile,
    count_records,
    parse_file,
)
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.lakehouse.delta import PARTITION_COLUMN, DeltaLake, commit_metadata, written_table_metadata
from mlops_assets.partitions import daily_partitions, partition_day
from mlops_assets.policies import TRANSIENT_FAILURES
from mlops_assets.storage.landing_zone import LandingFile, LandingZone

SOURCE_FILE, SOURCE_ETAG, INGESTED_AT = "_source_file", "_source_etag", "_ingested_at"
BRONZE_CODE_VERSION = "bronze-1"


def build_bronze_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    keys = DatasetKeys(spec)
    code_version = spec.code_version(
        BRONZE_CODE_VERSION, "landing", "columns", "timestamp_column", "entity_column", "target_column"
    )

    @dg.asset(
        key=keys.bronze,
        deps=[keys.landing],
        partitions_def=daily_partitions(spec),
        group_name="bronze",
        kinds={"delta", "pandas"},
        code_version=code_version,
        output_required=False,
        retry_policy=TRANSIENT_FAILURES,
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
        day = partition_day(context)
        uri = lake.table_uri(*keys.table(keys.bronze))
        already = lake.read_days(uri, [day], columns=[SOURCE_FILE, SOURCE_ETAG]).rows
        ingested = set(already.drop_duplicates().itertuples(index=False, name=None))
        files = [file for file in landing.list_day(spec, day) if (file.path, file.etag) not in ingested]
        if not files:
            context.log.info(f"No new {spec.name} files for {day}: every landing file was already ingested.")
            return
        ingested_at = pd.Timestamp.now(tz="UTC")
        accepted: list[tuple[LandingFile, pd.DataFrame, int]] = []
        quarantined: list[dict] = []
        for file in files:
            data = landing.read_bytes(file)
            records = count_records(data, FORMAT_BY_EXTENSION.get(file.extension, "csv"))
            try:
                parsed = parse_file(data, file.extension, spec)
            except RejectedFile as reason:
                quarantined.append(
                    {
                        "path": file.path,
                        "etag": file.etag,
                        "reason": str(reason),
                        "records": records,
                        "event_date": day.isoformat(),
                        "dagster_run_id": context.run.run_id,
                        "quarantined_at": dt.datetime.now(dt.UTC).isoformat(),
                        "_file": file,
                        "_data": data,
                    }
                )
                continue
            rows = parsed.rows.assign(
                **{SOURCE_FILE: file.path, SOURCE_ETAG: file.etag, INGESTED_AT: ingested_at, PARTITION_COLUMN: day}
            )
            accepted.append((file, rows, parsed.rescued_rows))

        version, inserted = None, 0
        if accepted:
            version, inserted = lake.insert_new(
                uri,
                day,
                pd.concat([rows for _, rows, _ in accepted], ignore_index=True),
                match_columns=[SOURCE_FILE, SOURCE_ETAG],
                commit_metadata=commit_metadata(context),
            )
        for entry in quarantined:
            file, data = entry.pop("_file"), entry.pop("_data")
            entry["quarantined_to"] = landing.quarantine(file, data, entry)
            context.log.warning(f"Quarantined {entry['path']}: {entry['reason']}")
        if inserted == 0:
            # Nothing changed in the table; record what happened without a new materialization,
            # so downstream days are not rebuilt for nothing.
            context.log_event(
                dg.AssetObservation(
                    asset_key=keys.bronze, partition=context.partition_key, metadata=_quarantine_metadata(quarantined)
                )
            )
            return
        yield dg.MaterializeResult(
            metadata={
                **written_table_metadata(uri, version, len(already) + inserted),
                "rows_added": dg.MetadataValue.int(inserted),
                "rows_rescued": dg.MetadataValue.int(sum(rescued for _, _, rescued in accepted)),
                "files_ingested": dg.MetadataValue.int(len(accepted)),
                "ingested": dg.MetadataValue.json(
                    [
                        {"path": file.path, "etag": file.etag, "rows": len(rows), "rescued": rescued}
                        for file, rows, rescued in accepted
                    ]
                ),
                **_quarantine_metadata(quarantined),
            }
        )

    return bronze


def _quarantine_metadata(quarantined: list[dict]) -> dict[str, dg.MetadataValue]:
    return {
        "files_quarantined": dg.MetadataValue.int(len(quarantined)),
        "rows_quarantined": dg.MetadataValue.int(sum(entry["records"] for entry in quarantined)),
        "quarantined": dg.MetadataValue.json(quarantined),
    }
