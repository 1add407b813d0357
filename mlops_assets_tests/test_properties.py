"""Property-based tests: hypothesis writes the hostile queue messages and landing files.

Three levels, each a promise of docs/RELIABILITY.md checked on inputs nobody wrote by hand:

- the Event Grid parser the queue sensor calls, on arbitrary message bodies: it returns an event
  whose fields have their types, or raises the one rejection the sensor poisons with, with a
  short reason; never another exception;
- bronze, on a landing day of malformed CSV, JSON lines and Parquet files mixed with good ones,
  through a real Dagster run and Delta table: the run succeeds, each file is in bronze or in
  quarantine (never both), each good file lands, and rows in = rows in bronze + rows
  quarantined, the rows in being counted by this module as it writes the files;
- the queue sensor on Azurite, on BlobCreated events (some duplicated) for real blobs mixed with
  garbage: no tick fails, the queue ends empty, every garbage message is in the poison queue with
  a reason, and each file version is requested once.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import random
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.readers import MAX_REASON_CHARS
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.lakehouse.bronze import SOURCE_FILE
from mlops_assets.defs.landing.event_grid import (
    BLOB_CREATED,
    NotABlobCreatedEvent,
    blob_created_event,
    parse_blob_created,
)
from mlops_assets.defs.landing.polling import file_run_key
from mlops_assets.defs.landing.queue import build_event_sensor
from mlops_assets.resources.event_queue import EventQueue
from mlops_assets.resources.landing_zone import LandingZone
from mlops_assets.resources.profiles import local_resources
from mlops_assets.resources.storage import StorageLocation
from mlops_assets_tests.conftest import TODAY, materialize_day
from mlops_assets_tests.test_azurite import account_for
from mlops_dev.services import AZURITE_ACCOUNT, AzuriteEndpoints, run_azurite

# A reason the poison queue keeps must stay short ("at most a few hundred characters").
MAX_POISON_REASON_CHARS = 400
SUBJECT_PREFIX = "/blobServices/default/containers/"

# ---------------------------------------------------------------------------------------------
# Level 1: the Event Grid parser, on arbitrary message bodies.
# ---------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=12,
)
not_strings = json_values.filter(lambda value: not isinstance(value, str))
containers = st.from_regex(r"[a-z0-9][a-z0-9-]{1,20}[a-z0-9]", fullmatch=True)
blob_names = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40)
etags = st.from_regex(r"0x[0-9A-F]{15}", fullmatch=True)
event_times = st.datetimes(timezones=st.just(dt.UTC)).map(lambda moment: moment.isoformat().replace("+00:00", "Z"))


def _deep(depth: int, opener: str) -> str:
    """JSON nested ``depth`` levels, as text (a Python value that deep could not be dumped)."""
    closer = {"[": "]", '{"a":': "}"}[opener]
    return opener * depth + ("1" if opener != "[" else "") + closer * depth


# From two levels: a value nested once ([]) is empty, which some fields accept.
deep_json = st.builds(_deep, st.integers(2, 5_000), st.sampled_from(["[", '{"a":']))
deep_lists = st.builds(_deep, st.integers(2, 5_000), st.just("["))
# Python refuses integers of more than 4,300 digits (int_max_str_digits).
huge_integers = st.integers(4_301, 6_000).map(lambda digits: "9" * digits)
# Placeholders for values that only exist as text: replaced after json.dumps.
DEEP, HUGE = "\x00deep\x00", "\x00huge\x00"
_MISSING = object()


@dataclass(frozen=True)
class EventLike:
    """An Event Grid-like event, each field good, missing or broken; ``broken`` names the fields
    broken by construction (empty when the event is a good BlobCreated event)."""

    event: dict[str, Any]
    broken: tuple[str, ...]
    container: str
    blob: str
    etag: str
    size: int
    texts: dict[str, str]

    def message(self, base64_encoded: bool, ascii_only: bool) -> str:
        text = json.dumps(self.event, ensure_ascii=ascii_only)
        for placeholder, replacement in self.texts.items():
            text = text.replace(json.dumps(placeholder), replacement)
        return base64.b64encode(text.encode()).decode() if base64_encoded else text


@st.composite
def event_like(draw: st.DrawFn) -> EventLike:
    container = draw(containers)
    blob = draw(blob_names)
    etag = draw(etags)
    size = draw(st.integers(0, 2**63))
    texts: dict[str, str] = {}
    broken: list[str] = []

    def pick(
        name: str,
        good: Any,
        wrong: st.SearchStrategy[Any],
        missing_is_broken: bool,
        deep: st.SearchStrategy[str] = deep_json,
    ) -> Any:
        choice = draw(st.sampled_from(["good", "good", "missing", "wrong", "deep"]))
        if choice == "good":
            return good
        if choice == "missing":
            if missing_is_broken:
                broken.append(name)
            return _MISSING
        broken.append(name)
        if choice == "deep":
            texts[DEEP] = draw(deep)
            return DEEP
        return draw(wrong)

    url = f"https://{AZURITE_ACCOUNT}.blob.core.windows.net/{container}/{quote(blob)}"
    wrong_urls = st.sampled_from(["https://x/other/file.csv", "http://[::1/", "not a url", "/" + container]) | (
        st.integers(min_value=1) | st.lists(st.integers(), min_size=1, max_size=2)
    )
    wrong_lengths = (
        st.none()
        | st.booleans()
        | st.integers(max_value=-1)
        | st.floats()
        | st.text(max_size=8)
        | st.lists(st.integers(), max_size=2)
        | st.just(HUGE)
    )
    data_fields = {
        "contentLength": pick("data.contentLength", size, wrong_lengths, missing_is_broken=False),
        "eTag": pick("data.eTag", f'"{etag}"' if draw(st.booleans()) else etag, not_strings, False),
        "url": pick("data.url", url, wrong_urls, False),
        **draw(st.dictionaries(st.sampled_from(["api", "blobType", "sequencer", "extra"]), json_values, max_size=2)),
    }
    if data_fields["contentLength"] == HUGE:
        texts[HUGE] = draw(huge_integers)
    data = {key: value for key, value in data_fields.items() if value is not _MISSING}
    good_subject = f"{SUBJECT_PREFIX}{container}/blobs/{blob}"
    wrong_subjects = not_strings | st.sampled_from(
        [
            SUBJECT_PREFIX,
            f"{SUBJECT_PREFIX}{container}",
            f"{SUBJECT_PREFIX}{container}/blobs/",
            f"{SUBJECT_PREFIX}/blobs/x",
        ]
    )
    wrong_times = not_strings | st.sampled_from(
        ["", "yesterday", "2026-13-01T00:00:00Z", "2026-01-05T25:00:00Z", "05/01/2026", "2026-01-05T00:00:00ZZ"]
    )
    fields = {
        "eventType": pick("eventType", BLOB_CREATED, json_values.filter(lambda value: value != BLOB_CREATED), True),
        "subject": pick("subject", good_subject, wrong_subjects, True),
        "eventTime": pick("eventTime", draw(event_times), wrong_times, True),
        "id": draw(st.none() | st.text(max_size=40) | json_values),
        "data": pick("data", data, json_values.filter(lambda value: not isinstance(value, dict)), True, deep_lists),
        **draw(st.dictionaries(st.sampled_from(["topic", "dataVersion", "metadataVersion"]), json_values, max_size=2)),
    }
    if "data" in broken:
        broken = [name for name in broken if not name.startswith("data.")] + ["data"]
    event = {key: value for key, value in fields.items() if value is not _MISSING}
    return EventLike(event, tuple(broken), container, blob, etag, size, texts)


messages = st.one_of(
    st.text(),
    st.binary().map(lambda data: data.decode("latin-1")),
    st.binary().map(lambda data: base64.b64encode(data).decode()),
    json_values.map(json.dumps),
    json_values.map(lambda value: base64.b64encode(json.dumps(value).encode()).decode()),
    deep_json,
    deep_json.map(lambda text: base64.b64encode(text.encode()).decode()),
    huge_integers,
    huge_integers.map(lambda text: base64.b64encode(text.encode()).decode()),
    event_like().flatmap(lambda event: st.builds(event.message, st.booleans(), st.booleans())),
)


def _assert_short_rejection(rejection: NotABlobCreatedEvent) -> None:
    reason = str(rejection)
    assert 0 < len(reason) <= MAX_POISON_REASON_CHARS, reason


@settings(max_examples=300, deadline=None)
@given(message=messages)
@example(message="événement")  # not JSON and not ASCII: base64 decoding raised a bare ValueError
@example(message="1" * 5_000)  # an integer Python refuses to parse raised a bare ValueError
@example(message=base64.b64encode(b"7" * 5_000).decode())
def test_the_event_parser_returns_an_event_or_a_short_rejection(message: str) -> None:
    try:
        event = parse_blob_created(message)
    except NotABlobCreatedEvent as rejection:
        _assert_short_rejection(rejection)
        return
    assert event.container and event.blob and isinstance(event.etag, str)
    assert isinstance(event.size, int) and not isinstance(event.size, bool) and event.size >= 0
    assert isinstance(event.event_time, dt.datetime) and len(event.event_id) <= 200


@settings(max_examples=300, deadline=None)
@given(event=event_like(), base64_encoded=st.booleans(), ascii_only=st.booleans())
def test_an_event_is_accepted_exactly_when_no_field_is_broken(
    event: EventLike, base64_encoded: bool, ascii_only: bool
) -> None:
    message = event.message(base64_encoded, ascii_only)
    if event.broken:
        with pytest.raises(NotABlobCreatedEvent) as rejected:
            parse_blob_created(message)
        _assert_short_rejection(rejected.value)
        return
    parsed = parse_blob_created(message)
    data = event.event["data"]
    assert (parsed.container, parsed.blob) == (event.container, event.blob)
    assert (parsed.etag, parsed.size) == (data.get("eTag", "").strip('"'), data.get("contentLength", 0))


@settings(max_examples=200, deadline=None)
@given(container=containers, blob=blob_names, etag=etags, size=st.integers(0, 2**63))
@example(container="landing", blob="smart_meter/2026/01/05/readings #2.csv", etag="0x8D0", size=10)
@example(container="landing", blob="smart_meter/2026/01/05/a%41?.csv", etag="0x8D0", size=10)
def test_the_simulated_event_of_any_blob_parses_back_to_that_blob(container, blob, etag, size) -> None:
    """The message the simulator writes for a blob, as Event Grid would, names that blob (a URL
    carries a name percent-encoded, so '#', '?' and '%' in a name survive)."""
    parsed = parse_blob_created(blob_created_event(AZURITE_ACCOUNT, container, blob, etag, size))
    assert (parsed.container, parsed.blob, parsed.etag, parsed.size) == (container, blob, etag, size)


# ---------------------------------------------------------------------------------------------
# Level 2: bronze, on a landing day of hostile files.
# ---------------------------------------------------------------------------------------------

DAY = dt.date(2026, 1, 5)
DECLARED = ("meter_id", "timestamp", "kwh", "temperature")
# Undeclared columns a good file may bring: lower case, no underscore, none of the declared names.
SAFE_EXTRAS = st.from_regex(r"[a-z][a-z0-9]{0,9}", fullmatch=True).filter(lambda name: name not in DECLARED)
HOSTILE_NAMES = st.sampled_from(
    ["KWH", "Meter_ID", "STATUS", "status", "_source_file", "_SOURCE_ETAG", "_rescued", "event_date", "Event_Date"]
    + ["a`b", "`", "x\x00y", "kwh\x00", "", " ", "a b", "a,b", "é", "Unnamed: 0", "kwh.1", "meter_id "]
) | st.text(max_size=12)
HUGE_FIELD = "x" * 200_000
# Up to six records a file, as often none as any other number.
RECORD_COUNTS = st.sampled_from(range(7))
junk_text = st.text(max_size=16) | st.sampled_from(
    ["", "n/a", "NaN", "-inf", "1e999", "\x00", '"', '""', ",", ";", "\n", "\r\n", " ", "é", "\ufeff"]
)


@dataclass(frozen=True)
class Drop:
    """A generated landing file: its bytes, how many records its writer put in it (the rows in,
    counted here as the file is written), and whether it is a well-formed file of the spec's
    schema, which must land in bronze."""

    extension: str
    data: bytes
    records: int
    good: bool


def _good_value(column: str) -> st.SearchStrategy[Any]:
    return {
        "meter_id": st.from_regex(r"MTR-[0-9]{5}", fullmatch=True),
        "timestamp": st.integers(0, 23).map(lambda hour: f"{DAY.isoformat()}T{hour:02d}:00:00Z"),
        "kwh": st.floats(0, 50),
        "temperature": st.floats(-30, 40),
    }[column]


def rarely(one_in: int) -> st.SearchStrategy[bool]:
    """True about once in ``one_in`` draws (hypothesis favours the ends of an integer range), and
    False when shrinking."""
    return st.sampled_from([False] * (one_in - 1) + [True])


@st.composite
def columns(draw: st.DrawFn) -> tuple[list[str], bool]:
    """Column names of a file, and whether they are good: every declared column, and undeclared
    ones a Delta table can take. Otherwise it has hostile names beside the declared ones, or lacks
    some of these."""
    declared = list(draw(st.permutations(DECLARED)))
    mode = draw(st.sampled_from(["good", "hostile", "missing"]))
    if mode == "good":
        return [*declared, *draw(st.lists(SAFE_EXTRAS, max_size=3, unique=True))], True
    if mode == "missing":
        declared = [name for name in declared if draw(st.booleans())]
    names = [*declared]
    for extra in draw(st.lists(HOSTILE_NAMES | SAFE_EXTRAS, min_size=mode == "hostile", max_size=3, unique=True)):
        names.insert(draw(st.integers(0, len(names))), extra)
    if names and draw(rarely(4)):
        names.append(draw(st.sampled_from(names)))  # a name twice
    good = set(DECLARED) <= set(names) and len(names) == len(set(names)) and all(map(_safe_name, names))
    return names or ["only"], good


def _safe_name(name: str) -> bool:
    return name in DECLARED or (name.isascii() and name.isalnum() and name.islower() and name[:1].isalpha())


def _csv_line(fields: list[str], delimiter: str, quote_all: bool) -> str:
    def cell(value: str) -> str:
        if quote_all or any(character in value for character in (delimiter, '"', "\r", "\n")):
            return '"' + value.replace('"', '""') + '"'
        return value

    return delimiter.join(cell(value) for value in fields)


def _visible(values: list[str]) -> list[str]:
    """A record's values, made to show on its line: a line of only white space is no record."""
    return values if any(value.strip() for value in values) else ["x", *values[1:]]


@st.composite
def csv_files(draw: st.DrawFn) -> Drop:
    """A CSV file. Well-formed ones are written by the CSV rules (quoted fields may hold line
    breaks); the others keep each record on one line of its own, with no quotes, and then have
    their delimiter, field counts, quoting or bytes broken."""
    names, good_names = draw(columns())
    well_formed = draw(st.booleans())
    rows = []
    for _ in range(draw(RECORD_COUNTS)):
        rows.append(
            [str(draw(_good_value(name) | junk_text if name in DECLARED else junk_text.map(str))) for name in names]
        )
    if rows and draw(rarely(10)):
        rows[0][0] = HUGE_FIELD
    delimiter, mutations = ",", set()
    if not well_formed:
        mutations = set(draw(st.lists(st.sampled_from(["delimiter", "ragged", "stray_quote", "bad_bytes"]))))
        if "delimiter" in mutations:
            delimiter = draw(st.sampled_from([";", "\t", "|"]))
        drop = str.maketrans("", "", f'"\r\n{delimiter}')
        names = [name.translate(drop) for name in names]
        rows = [[value.translate(drop) for value in row] for row in rows]
        if "ragged" in mutations and rows:
            for row in rows:
                change = draw(st.integers(-len(row) + 1, 2))
                row[:] = row[: len(row) + change] if change < 0 else row + ["extra"] * change
    names, rows = _visible(names), [_visible(row) for row in rows]
    quote_all = well_formed and draw(st.booleans())
    lines = [_csv_line(names, delimiter, quote_all), *(_csv_line(row, delimiter, quote_all) for row in rows)]
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), "")
    encoded = [line.encode() for line in lines]
    content = [index for index, line in enumerate(lines) if line]
    if "stray_quote" in mutations:
        # The only quote of the file, opening a field that never closes.
        at = draw(st.sampled_from(content))
        encoded[at] = b'"' + encoded[at]
    if "bad_bytes" in mutations:
        at = draw(st.sampled_from(content))
        cut = draw(st.integers(0, len(encoded[at])))
        encoded[at] = (
            encoded[at][:cut] + draw(st.sampled_from([b"\xff", b"\xc3(", b"\xed\xa0\x80"])) + encoded[at][cut:]
        )
    terminator = draw(st.sampled_from(["\n", "\r\n", "\r"])).encode()
    data = terminator.join(encoded) + draw(st.sampled_from([b"", terminator]))
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    good = good_names and well_formed and bool(rows)
    return Drop("csv", data, len(rows), good)


json_scalars = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats() | st.text(max_size=12)
json_nested = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
broken_json_lines = st.sampled_from(['{"meter_id": "MTR-1"', "not json", "{'kwh': 1}", "{}{}", '{"a":1,}', "[1,"]) | (
    st.text(st.characters(exclude_characters="\r\n", exclude_categories=("Cs",)), min_size=1, max_size=20).filter(
        lambda text: text.strip()
    )
)


@st.composite
def jsonl_files(draw: st.DrawFn) -> Drop:
    """A JSON lines file: one record a line, each an object with the spec's fields (values of any
    JSON type) or, in malformed files, a non-object or a broken line."""
    names, good_names = draw(columns())
    well_formed = draw(st.booleans())
    texts: dict[str, str] = {}
    lines = []
    for _ in range(draw(RECORD_COUNTS)):
        kind = "object" if well_formed else draw(st.sampled_from(["object", "object", "non_object", "broken"]))
        if kind == "object":
            record = {
                name: draw(_good_value(name) | json_nested if name in DECLARED else json_nested) for name in names
            }
            if not well_formed and record and draw(rarely(5)):
                placeholder = draw(st.sampled_from([DEEP, HUGE]))
                texts[placeholder] = "[" * 1_100 + "]" * 1_100 if placeholder == DEEP else "1" + "0" * 20
                record[draw(st.sampled_from(sorted(record)))] = placeholder
            line = json.dumps(record, ensure_ascii=draw(st.booleans()))
        elif kind == "non_object":
            line = json.dumps(draw(json_scalars | st.lists(json_scalars, max_size=4)))
        else:
            line = draw(broken_json_lines)
        for placeholder, replacement in texts.items():
            line = line.replace(json.dumps(placeholder), replacement)
        lines.append(line)
    records = len(lines)
    for _ in range(draw(st.integers(0, 2))):
        lines.insert(draw(st.integers(0, len(lines))), draw(st.sampled_from(["", "  "])))
    encoded = [line.encode() for line in lines]
    mutated = False
    if not well_formed and any(line.strip() for line in lines) and draw(st.booleans()):
        mutated = True
        at = draw(st.sampled_from([index for index, line in enumerate(lines) if line.strip()]))
        encoded[at] = encoded[at] + draw(st.sampled_from([b"\xff", b"\xc3("]))
    terminator = draw(st.sampled_from(["\n", "\r\n"] if well_formed else ["\n", "\r\n", "\r"])).encode()
    data = terminator.join(encoded) + draw(st.sampled_from([b"", terminator]))
    if not well_formed and draw(st.booleans()):
        data, mutated = b"\xef\xbb\xbf" + data, True
    good = good_names and well_formed and records > 0 and not mutated
    return Drop(draw(st.sampled_from(["jsonl", "json"])), data, records, good)


ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "large_string": pa.large_string(),
    "dictionary": pa.string(),
    "float64": pa.float64(),
    "float32": pa.float32(),
    "int64": pa.int64(),
    "int8": pa.int8(),
    "bool": pa.bool_(),
    "timestamp_utc": pa.timestamp("us", tz="UTC"),
    "timestamp_naive": pa.timestamp("ns"),
    "date": pa.date32(),
    "binary": pa.binary(),
    "list": pa.list_(pa.int64()),
    "struct": pa.struct([("a", pa.int64())]),
    "null": pa.null(),
}
GOOD_TYPES = {
    "meter_id": ["string", "large_string", "dictionary"],
    "timestamp": ["timestamp_utc", "string"],
    "kwh": ["float64", "float32", "int64"],
    "temperature": ["float64", "float32", "int64"],
}
arrow_values: dict[str, st.SearchStrategy[Any]] = {
    "string": st.text(max_size=12),
    "large_string": st.text(max_size=12),
    "dictionary": st.text(max_size=12),
    "float64": st.floats(),
    "float32": st.floats(width=32),
    "int64": st.integers(-(2**63), 2**63 - 1),
    "int8": st.integers(-128, 127),
    "bool": st.booleans(),
    "timestamp_utc": st.datetimes(timezones=st.just(dt.UTC)),
    "timestamp_naive": st.datetimes(min_value=dt.datetime(1678, 1, 1), max_value=dt.datetime(2261, 12, 31)),
    "date": st.dates(),
    "binary": st.binary(max_size=8),
    "list": st.lists(st.integers(-(2**63), 2**63 - 1), max_size=3),
    "struct": st.fixed_dictionaries({"a": st.integers(-(2**63), 2**63 - 1)}),
    "null": st.none(),
}


def _good_arrow_value(column: str, kind: str) -> st.SearchStrategy[Any]:
    if column == "timestamp":
        moments = st.integers(0, 23).map(lambda hour: dt.datetime.combine(DAY, dt.time(hour), dt.UTC))
        return moments if kind == "timestamp_utc" else moments.map(lambda moment: moment.isoformat())
    if column == "meter_id":
        return _good_value(column)
    return st.integers(-30, 50) if kind == "int64" else st.floats(-30, 50, width=32 if kind == "float32" else 64)


@st.composite
def parquet_files(draw: st.DrawFn) -> Drop:
    """A Parquet file of columns of any Arrow type, or of the types the spec expects; malformed ones
    may hold text that is not UTF-8, or be cut short. A Parquet file's row count is in its footer:
    a file cut short holds no record anyone can count, so it counts none here."""
    names, good_names = draw(columns())
    rows = draw(RECORD_COUNTS)
    well_typed = draw(st.booleans())
    arrays = []
    for name in names:
        if well_typed and name in DECLARED:
            kind = draw(st.sampled_from(GOOD_TYPES[name]))
            values = st.none() | _good_arrow_value(name, kind)
        else:
            kind = draw(st.sampled_from(sorted(ARROW_TYPES)))
            values = st.none() | arrow_values[kind]
        column = pa.array([draw(values) for _ in range(rows)], type=ARROW_TYPES[kind])
        arrays.append(column.dictionary_encode() if kind == "dictionary" else column)
    not_utf8 = rows > 0 and draw(rarely(6))
    if not_utf8:
        texts = [draw(st.binary(min_size=1, max_size=6)) + b"\xff" for _ in range(rows)]
        arrays[draw(st.integers(0, len(arrays) - 1))] = pa.array(texts, pa.binary()).view(pa.string())
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_arrays(arrays, names=names), buffer, row_group_size=draw(st.integers(1, 4)))
    data = buffer.getvalue()
    cut = draw(rarely(8))
    if cut:
        data = data[: draw(st.integers(0, len(data) - 1))]
    good = good_names and well_typed and rows > 0 and not not_utf8 and not cut
    return Drop("parquet", data, 0 if cut else rows, good)


@pytest.fixture(scope="module")
def bronze_definitions(spec: DatasetSpec) -> Iterator[dg.Definitions]:
    """The project's definitions; each example brings its own resources, so none of these is used."""
    with tempfile.TemporaryDirectory() as home:
        yield build_definitions([spec], local_resources(Path(home)))


def _recorded_metadata(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> dict[str, Any]:
    """What the run recorded for the day: a materialization, or an observation when nothing landed."""
    events = [event.materialization for event in result.get_asset_materialization_events()] + [
        event.asset_observation_data.asset_observation for event in result.get_asset_observation_events()
    ]
    (recorded,) = [event for event in events if event.asset_key == key]
    return {name: value.value for name, value in recorded.metadata.items()}


REGRESSIONS = [
    # A JSON lines file with a line that is not an object: pandas raised TypeError, failing the day.
    [Drop("jsonl", b'{"meter_id":"MTR-1","timestamp":"2026-01-05T00:00:00Z","kwh":1,"temperature":2}\n0\n', 2, False)],
    # A column name with a NUL: Delta cut it at the NUL, making two columns "kwh", and the day failed.
    [Drop("csv", b"meter_id,timestamp,kwh,temperature,kwh\x00\nMTR-1,2026-01-05T00:00:00Z,1,2,3\n", 1, False)],
    # A column name with a backtick: the Delta MERGE into the day's table (second wave) failed.
    [
        Drop("csv", b"meter_id,timestamp,kwh,temperature\nMTR-1,2026-01-05T00:00:00Z,1,2\n", 1, True),
        Drop("csv", b"meter_id,timestamp,kwh,temperature,a`b\nMTR-1,2026-01-05T01:00:00Z,1,2,3\n", 1, False),
    ],
    # Parquet text that is not UTF-8: converting it raised UnicodeDecodeError, failing the day.
    [
        Drop(
            "parquet",
            (
                lambda buffer: (
                    pq.write_table(pa.table({"meter_id": pa.array([b"\xff"]).view(pa.string())}), buffer),
                    buffer.getvalue(),
                )[1]
            )(io.BytesIO()),
            1,
            False,
        )
    ],
    # A CSV quarantined for a missing column, with a quoted line break: counted as 2 records, holding 1.
    [Drop("csv", b'meter_id,timestamp,temperature\n"MTR\n1",2026-01-05T00:00:00Z,2\n', 1, False)],
    # An unreadable CSV whose byte order mark stands on a line of its own: the header counted as a record.
    [Drop("csv", b"\xef\xbb\xbf\n\n\xffmeter_id;timestamp;kwh;temperature", 0, False)],
]


@settings(
    max_examples=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
@given(
    files=st.lists(st.one_of(csv_files(), jsonl_files(), parquet_files()), min_size=1, max_size=4),
    first_wave=st.integers(1, 4),
)
@example(files=REGRESSIONS[0], first_wave=1)
@example(files=REGRESSIONS[1], first_wave=1)
@example(files=REGRESSIONS[2], first_wave=1)  # two waves
@example(files=REGRESSIONS[3], first_wave=1)
@example(files=REGRESSIONS[4], first_wave=1)
@example(files=REGRESSIONS[5], first_wave=1)
def test_every_record_of_a_hostile_landing_day_is_in_bronze_or_in_quarantine(
    spec: DatasetSpec, bronze_definitions: dg.Definitions, files: list[Drop], first_wave: int
) -> None:
    """The files land in two waves (the first ``first_wave`` of them, then the rest), each taken
    in by a bronze run: the first run creates the day's table, the second merges into it."""
    keys = DatasetKeys(spec)
    with tempfile.TemporaryDirectory() as home:
        resources = local_resources(Path(home))
        landing: LandingZone = resources["landing"]
        instance = dg.DagsterInstance.ephemeral()
        written: dict[str, Drop] = {}
        recorded: list[dict[str, Any]] = []
        for wave in (files[:first_wave], files[first_wave:]):
            if not wave:
                continue
            for file in wave:
                name = f"f{len(written)}.{file.extension}"
                path = f"{spec.landing.prefix}/{spec.landing.path_pattern.path_for(DAY, name)}"
                landing.write_bytes(path, file.data)
                written[path] = file
            result = materialize_day(bronze_definitions, resources, instance, [keys.bronze], DAY)
            assert result.success
            recorded.append(_recorded_metadata(result, keys.bronze))

        lake = resources["lake"]
        bronze = lake.read_days(lake.table_uri(*keys.table(keys.bronze)), [DAY]).rows
        in_bronze = bronze.groupby(SOURCE_FILE).size().to_dict() if len(bronze) else {}
        quarantine = landing.quarantined(spec)
        quarantined = {entry["path"]: entry for entry in quarantine}
        assert len(quarantined) == len(quarantine), "a file version quarantined twice"
        assert set(in_bronze) & set(quarantined) == set()
        assert set(in_bronze) | set(quarantined) == set(written)
        for path, file in written.items():
            if file.good:
                assert path in in_bronze, quarantined[path]["reason"]
            held = in_bronze[path] if path in in_bronze else quarantined[path]["records"]
            outcome = "bronze" if path in in_bronze else " ".join(quarantined[path]["reason"].split()[:3])
            event(f"{file.extension}, {'good' if file.good else 'malformed'}: {outcome}")
            assert held == file.records, (path, quarantined.get(path, {}).get("reason"))
        rows_quarantined = sum(entry["records"] for entry in quarantine)
        assert len(bronze) + rows_quarantined == sum(file.records for file in files)
        assert all(len(entry["reason"]) <= MAX_REASON_CHARS + 40 for entry in quarantine)
        assert {file.path for file in landing.list_partition(spec, DAY)} == set(in_bronze)
        assert sum(metadata["files_quarantined"] for metadata in recorded) == len(quarantine)
        assert sum(metadata["rows_quarantined"] for metadata in recorded) == rows_quarantined


# ---------------------------------------------------------------------------------------------
# Level 3: the queue sensor on Azurite.
# ---------------------------------------------------------------------------------------------

# What a Storage Queue carries: XML text (no control characters but tab and line feed).
queue_text = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"), include_characters="\t\n"), min_size=1
)
odd_names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zl", "Zp"), exclude_characters="/\\"), max_size=24
)


@st.composite
def garbage_messages(draw: st.DrawFn) -> str:
    """A message that is not a BlobCreated event of a landing file, so it must be poisoned."""
    day = f"{TODAY:%Y/%m/%d}"
    outside = st.sampled_from(
        [
            ("other", f"smart_meter/{day}/readings.csv"),
            ("landing", f"elsewhere/{day}/readings.csv"),
            ("landing", f"smart_meter/{day}/.hidden.csv"),
            ("landing", f"smart_meter/{day}/_staging/readings.csv"),
            ("landing", "smart_meter/2026/13/01/readings.csv"),
            ("landing", f"smart_meter/{day}/../../../../etc/passwd"),
            ("landing", "smart_meter/readings.csv"),
        ]
    ).map(lambda target: blob_created_event(AZURITE_ACCOUNT, target[0], target[1], "0x8D0", 10))
    broken_events = event_like().filter(lambda event: bool(event.broken))
    return draw(
        st.one_of(
            queue_text,
            json_values.map(json.dumps),
            deep_json,
            huge_integers,
            broken_events.map(lambda event: event.message(base64_encoded=False, ascii_only=True)),
            broken_events.map(lambda event: event.message(base64_encoded=True, ascii_only=True)),
            outside,
        ).filter(lambda text: len(text) <= 16_000)
    )


@pytest.fixture(scope="module")
def azurite_for_properties(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AzuriteEndpoints]:
    """One Azurite for the module; each example uses queues and blob names of its own."""
    with run_azurite(tmp_path_factory.mktemp("azurite-properties")) as endpoints:
        yield endpoints


def _drain(client: QueueClient) -> list[dict[str, Any]]:
    records = []
    while batch := list(client.receive_messages(max_messages=32, visibility_timeout=300)):
        records.extend(json.loads(message.content) for message in batch)
    return records


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    names=st.lists(odd_names, min_size=1, max_size=3),
    copies=st.lists(st.integers(1, 3), min_size=3, max_size=3),
    base64_encoded=st.lists(st.booleans(), min_size=3, max_size=3),
    garbage=st.lists(garbage_messages(), max_size=8),
    gone=st.lists(odd_names | st.text(st.sampled_from("ab "), min_size=1_000, max_size=1_100), max_size=2),
    order=st.randoms(use_true_random=False),
)
@example(
    names=["readings #2 (copy)"],
    copies=[2, 1, 1],
    base64_encoded=[True, True, True],
    garbage=["événement"],
    gone=[],
    order=random.Random(0),
)
def test_the_queue_sensor_poisons_garbage_and_requests_each_file_version_once(
    spec: DatasetSpec, azurite_for_properties: AzuriteEndpoints, names, copies, base64_encoded, garbage, gone, order
) -> None:
    azurite = azurite_for_properties
    account = account_for(azurite)
    queue_name = f"events-{uuid.uuid4().hex[:16]}"
    event_queue = EventQueue(account=account, queue=queue_name, poison_queue=f"{queue_name}-poison", listen_seconds=0.0)
    queue = QueueClient.from_connection_string(azurite.connection_string, queue_name)
    poison = QueueClient.from_connection_string(azurite.connection_string, f"{queue_name}-poison")
    queue.create_queue()
    poison.create_queue()
    landing = LandingZone(
        location=StorageLocation(uri="az://landing", account=account),
        quarantine_uri="az://quarantine",
    )
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")

    folder = f"{spec.landing.prefix}/{TODAY:%Y/%m/%d}"
    good_messages, uploaded = [], []
    for index, name in enumerate(names):
        path = f"{folder}/{uuid.uuid4().hex[:8]}-{name}.csv"
        data = f"meter_id,timestamp,kwh,temperature\nMTR-{index},{TODAY}T00:00:00Z,1.5,3.0\n".encode()
        etag = container.upload_blob(path, data, overwrite=True).get_blob_properties().etag.strip('"')
        message = blob_created_event(AZURITE_ACCOUNT, "landing", path, etag, len(data))
        if not base64_encoded[index]:
            message = base64.b64decode(message).decode()
        good_messages += [message] * copies[index]
        uploaded.append(path)
    for name in gone:  # files announced and deleted since: acknowledged, neither run nor poisoned
        good_messages.append(blob_created_event(AZURITE_ACCOUNT, "landing", f"{folder}/gone-{name}.csv", "0x1", 1))
    sent = good_messages + garbage
    order.shuffle(sent)
    for message in sent:
        queue.send_message(message)

    sensor = build_event_sensor([spec])
    resources = {"landing": landing, "event_queue": event_queue}
    instance = dg.DagsterInstance.ephemeral()
    cursor, run_keys, partitions = None, [], set()
    for _ in range(4):
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            result = sensor(context)
        run_keys += [request.run_key for request in result.run_requests]
        partitions |= {request.partition_key for request in result.run_requests}
        cursor = result.cursor
        if queue.get_queue_properties().approximate_message_count == 0:
            break
    assert queue.get_queue_properties().approximate_message_count == 0  # hidden messages included

    poisoned = _drain(poison)
    assert Counter((record["content"], record["content_chars"]) for record in poisoned) == Counter(
        (message[:8_000], len(message)) for message in garbage
    )
    assert all(0 < len(record["reason"]) <= MAX_POISON_REASON_CHARS for record in poisoned)
    versions = [landing.stat(spec, path) for path in uploaded]
    assert None not in versions
    assert Counter(run_keys) == Counter(file_run_key(spec, file) for file in versions)  # each once
    assert partitions == {TODAY.isoformat()}
