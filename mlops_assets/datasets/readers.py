"""Reading landing files into typed bronze rows.

A landing file is either ingested whole or quarantined whole. It is quarantined when
it cannot be parsed in its format or lacks a required column. Within a readable file,
a value that does not parse as its declared type becomes null and its raw text is
kept in ``_rescued`` (a JSON object of column to raw value), as Databricks Auto
Loader's rescued-data column does; undeclared columns are kept as text.
"""

from __future__ import annotations

import codecs
import io
import json
import zlib
from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from mlops_assets.datasets.spec import DatasetSpec

RESCUED = "_rescued"
FORMAT_BY_EXTENSION = {"csv": "csv", "jsonl": "jsonl", "json": "jsonl", "parquet": "parquet"}


GZIP_MAGIC = b"\x1f\x8b"
MAX_DECOMPRESSED_BYTES = 2**30
MAX_REASON_CHARS = 500
MAX_UNDECLARED_COLUMNS = 100
# Delta cuts a column name at a NUL (two names can become one) and its MERGE cannot quote a backtick.
UNWRITABLE_IN_COLUMN_NAMES = ("\x00", "`")


class RejectedFile(ValueError):
    """A landing file that must be quarantined; the message is the reason, cut to
    ``MAX_REASON_CHARS`` so that a hostile file cannot make it large. ``records`` are the rows
    of a file that could be read before it was refused (None when it could not be read)."""

    def __init__(self, reason: str, records: int | None = None) -> None:
        if len(reason) > MAX_REASON_CHARS:
            reason = f"{reason[:MAX_REASON_CHARS]}... ({len(reason):,} characters)"
        super().__init__(reason)
        self.records = records


def decompressed(data: bytes, *, strict: bool = True) -> bytes:
    """The payload of a gzip file (recognised by its magic bytes, whatever its name), or
    ``data`` unchanged. A payload over ``MAX_DECOMPRESSED_BYTES`` or a corrupt stream is
    rejected; with ``strict=False`` whatever decompresses is returned instead."""
    if not data.startswith(GZIP_MAGIC):
        return data
    stream = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        payload = stream.decompress(data, MAX_DECOMPRESSED_BYTES + 1)
    except zlib.error as error:
        if strict:
            raise RejectedFile(f"corrupt gzip data: {error}") from error
        return b""
    if len(payload) > MAX_DECOMPRESSED_BYTES:
        if strict:
            raise RejectedFile(f"decompresses to more than {MAX_DECOMPRESSED_BYTES:,} bytes")
        return payload[:MAX_DECOMPRESSED_BYTES]
    if strict and not stream.eof:
        raise RejectedFile("truncated gzip data")
    return payload


@dataclass(frozen=True)
class ParsedFile:
    """The rows of one readable landing file, typed as the spec declares."""

    rows: pd.DataFrame
    rescued_rows: int
    extra_columns: tuple[str, ...]


def count_records(data: bytes, fmt: str) -> int:
    """Records in a file, counted without parsing it, for the files that cannot be parsed (a
    readable file's records are its rows, which a quoted line break makes fewer than its lines).

    A record is a non-empty line after the header (CSV), a non-empty line (JSON
    lines), or a row of a readable Parquet file (0 for an unreadable one); a gzip file's
    records are those of what it decompresses to. A UTF-8 byte order mark is not content, even
    on a line of its own.
    """
    data = decompressed(data, strict=False).removeprefix(codecs.BOM_UTF8)
    if fmt == "parquet":
        try:
            return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows
        except (pa.ArrowInvalid, OSError):
            return 0
    lines = sum(1 for line in data.splitlines() if line.strip())
    return max(lines - 1, 0) if fmt == "csv" else lines


def parse_file(data: bytes, extension: str, spec: DatasetSpec, reserved: Collection[str] = ()) -> ParsedFile:
    """Parse and type one landing file; raise :class:`RejectedFile` to quarantine it.

    ``reserved`` are the column names the table adds to every row (any case), which a
    file may not bring."""
    fmt = FORMAT_BY_EXTENSION.get(extension)
    if fmt is None or fmt not in spec.landing.formats:
        raise RejectedFile(
            f"unsupported file type {extension!r}; this dataset accepts {', '.join(spec.landing.formats)}"
        )
    raw = _read_raw(decompressed(data), fmt)
    problem = _column_problem(raw, spec, reserved)
    if problem:
        raise RejectedFile(problem, records=len(raw))
    return _typed(_as_text(raw), spec)


def _column_problem(raw: pd.DataFrame, spec: DatasetSpec, reserved: Collection[str]) -> str | None:
    """Why a readable file cannot go to bronze as it is, or None."""
    if raw.columns.duplicated().any():
        return f"duplicate column names {sorted(raw.columns[raw.columns.duplicated()])}"
    folded = raw.columns.str.lower()
    if folded.duplicated().any():
        twins = sorted(column for column in raw.columns if (folded == column.lower()).sum() > 1)
        return f"column names that differ only in case {twins}: Delta column names ignore case"
    if raw.empty:
        return "the file holds no records"
    missing = [column for column in spec.required_columns if column not in raw.columns]
    if missing:
        return f"missing required column(s) {missing}; found {sorted(map(str, raw.columns))}"
    declared = {column.lower(): column for column in spec.columns}
    clashes = sorted(
        f"{column} (declared: {declared[column.lower()]})"
        for column in raw.columns
        if column not in spec.columns and column.lower() in declared
    )
    if clashes:
        return f"column names that differ from the spec's only in case: {clashes}"
    undeclared = [column for column in raw.columns if column not in spec.columns]
    if len(undeclared) > MAX_UNDECLARED_COLUMNS:
        return (
            f"{len(undeclared):,} columns the spec does not declare (at most {MAX_UNDECLARED_COLUMNS} are kept "
            f"in bronze): {undeclared}"
        )
    taken = {name.lower() for name in (*reserved, RESCUED)}
    brought = sorted(column for column in raw.columns if column.lower() in taken)
    if brought:
        return f"column name(s) {brought} are reserved for the table's own columns"
    unwritable = sorted(
        column for column in raw.columns if any(character in column for character in UNWRITABLE_IN_COLUMN_NAMES)
    )
    if unwritable:
        return f"column name(s) {unwritable} hold a NUL or a backtick, which a Delta column name cannot"
    return None


def _as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """Every value as text (or None), so that typing is done once, the same way, for all formats."""
    return frame.astype(object).where(frame.notna(), None).map(lambda value: None if value is None else str(value))


def _read_raw(data: bytes, fmt: str) -> pd.DataFrame:
    """The file as a frame with string column names."""
    try:
        if fmt == "csv":
            frame = pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""], encoding="utf-8")
        elif fmt == "jsonl":
            frame = pd.read_json(io.BytesIO(data), lines=True, dtype=False)
        else:
            table = pq.read_table(io.BytesIO(data))
            table.validate(full=True)  # reading Parquet does not check that its text is UTF-8
            frame = table.to_pandas()
    except (
        # pandas raises TypeError on a JSON line that is not an object, after one that is.
        TypeError,
        UnicodeDecodeError,
        pd.errors.ParserError,
        pd.errors.EmptyDataError,
        ValueError,
        pa.ArrowInvalid,
        OSError,
    ) as error:
        raise RejectedFile(f"unreadable {fmt} file: {type(error).__name__}: {str(error)[:300]}") from error
    frame.columns = [str(column) for column in frame.columns]
    return frame


def _typed(raw: pd.DataFrame, spec: DatasetSpec) -> ParsedFile:
    typed = pd.DataFrame(index=raw.index)
    rescued: list[dict[str, str]] = [{} for _ in range(len(raw))]
    for column, kind in spec.columns.items():
        text = raw[column] if column in raw.columns else pd.Series([None] * len(raw), index=raw.index, dtype=object)
        values = _cast(text, kind)
        failed = text.notna() & values.isna()
        for position in failed.to_numpy().nonzero()[0]:
            rescued[position][column] = text.iloc[position]
        typed[column] = values
    extra = tuple(column for column in raw.columns if column not in spec.columns)
    for column in extra:
        typed[column] = raw[column].astype("string")
    typed[RESCUED] = pd.Series(
        [json.dumps(entry) if entry else None for entry in rescued], index=raw.index, dtype="string"
    )
    return ParsedFile(
        rows=typed.reset_index(drop=True), rescued_rows=sum(1 for entry in rescued if entry), extra_columns=extra
    )


def _cast(text: pd.Series, kind: str) -> pd.Series:
    if kind == "string":
        return text.astype("string")
    if kind == "float":
        return pd.to_numeric(text, errors="coerce").astype("float64")
    if kind == "int":
        numbers = pd.to_numeric(text, errors="coerce")
        return numbers.where(numbers == numbers.round()).astype("Int64")
    if kind == "bool":
        lowered = text.str.strip().str.lower()
        return lowered.map({"true": True, "1": True, "false": False, "0": False}).astype("boolean")
    if kind == "timestamp":
        return pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601").astype("datetime64[us, UTC]")
    if kind == "date":
        return pd.to_datetime(text, errors="coerce", format="ISO8601").dt.date
    raise ValueError(f"unknown column type {kind!r}")
