"""The azurite profile against real Azurite (Blob and Queue) and a real MLflow server.

Azurite has no Event Grid: the tests put on the queue the message Event Grid would
write for each upload (`blob_created_event`), which is the one stand-in here.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import pickle
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import mlflow
import pytest
from azure.core.exceptions import ServiceRequestError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource

from mlops_assets import clock
from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.landing.event_grid import blob_created_event
from mlops_assets.defs.landing.queue import EVENT_SENSOR_NAME
from mlops_assets.listener import QueueListener, Webserver
from mlops_assets.resources.event_queue import EventQueue
from mlops_assets.resources.profiles import blob_resources, local_resources
from mlops_assets.resources.records import latest_record
from mlops_assets.resources.storage import StorageAccount, StorageLocation
from mlops_assets.resources.training_states import TrainingStateStore
from mlops_assets_tests.conftest import TODAY, materialize_day, run_lifecycle
from mlops_dev.services import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    REPOSITORY,
    AzuriteEndpoints,
    free_port,
    run_azurite,
    run_mlflow_server,
)
from mlops_dev.simulate import simulate

YESTERDAY = TODAY - dt.timedelta(days=1)


def account_for(azurite: AzuriteEndpoints) -> StorageAccount:
    return StorageAccount(
        blob=AzureBlobStorageResource(
            account_url=azurite.blob_url, credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY)
        ),
        queue_url=azurite.queue_url,
    )


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[AzuriteEndpoints]:
    with run_azurite(tmp_path / "azurite", debug_log=tmp_path / "azurite-requests.log") as endpoints:
        yield endpoints


@pytest.fixture
def blob_profile(azurite, mlflow_tracking) -> dict[str, Any]:
    """The azurite profile's resources, with the session's MLflow store for the tests that do
    not look at MLflow itself."""
    return blob_resources(account_for(azurite), mlflow_tracking.tracking_uri, poll_days=2)


def upload_simulated(tmp_path: Path, azurite: AzuriteEndpoints, spec, start: dt.date, days: int, **options):
    """Simulate files locally and upload each with azure-storage-blob, as a source system would.
    Returns the simulation report and the uploaded blobs' etags by path."""
    staging = local_resources(tmp_path / "staging")["landing"]
    report = simulate(staging, spec, start, days=days, **options)
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")
    etags = {}
    for file in report.files:
        data = (Path(staging.location.uri.removeprefix("file://")) / file.path).read_bytes()
        etags[file.path] = container.upload_blob(file.path, data, overwrite=True).get_blob_properties().etag.strip('"')
    return report, etags


def publish(azurite: AzuriteEndpoints, path: str, etag: str, size: int, times: int = 1) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    message = blob_created_event(AZURITE_ACCOUNT, "landing", path, etag, size)
    for _ in range(times):
        queue.send_message(message)


def tick(defs: dg.Definitions, name: str, instance, resources, cursor=None):
    sensor = defs.resolve_sensor_def(name)
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return sensor(context)


def test_whole_graph_on_azurite_with_an_mlflow_server(tmp_path, azurite, instance, spec, monkeypatch) -> None:
    # A fixed day rather than today: the models, and whether the gate lets yesterday's through,
    # depend on the simulated days' weather and calendar.
    today, yesterday = dt.date(2026, 3, 10), dt.date(2026, 3, 9)
    monkeypatch.setattr(clock, "utc_now", lambda: dt.datetime.combine(today, dt.time(12), dt.UTC))
    with run_mlflow_server(tmp_path / "mlflow", azurite) as tracking_uri:
        resources = blob_resources(account_for(azurite), tracking_uri, poll_days=2)
        defs = build_definitions([spec], resources, arrivals="poll")
        before = yesterday - dt.timedelta(days=1)
        report, _ = upload_simulated(tmp_path, azurite, spec, before, 3, meters=30, meters_per_file=15)

        # The polling sensor lists the last two days' prefixes only; the day before is run by hand.
        result = tick(defs, "smart_meter_landing_sensor", instance, resources)
        requested = [request.partition_key for request in result.run_requests]
        assert requested == [yesterday.isoformat(), today.isoformat()]
        for partition in [before.isoformat(), *requested]:
            assert run_lifecycle(defs, spec, instance, dt.date.fromisoformat(partition)).success

        keys = DatasetKeys(spec)
        lake = resources["lake"]
        assert lake.table_uri(*keys.table(keys.predictions)).startswith("az://lake/")
        bronze_rows = lake.count_rows(lake.table_uri(*keys.table(keys.bronze)))
        assert bronze_rows == report.records
        predictions = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [today]).rows
        assert len(predictions) > 0 and predictions["prediction"].notna().all()
        # The registry lives on the MLflow server: yesterday's model, registered, scored today.
        registry = resources["mlflow_tracking"].registry()
        registered = {version.version: version for version in registry.versions(spec.gate.model_name)}
        (scoring,) = set(predictions["model_version"])
        assert registered[scoring].tag("partition") == yesterday.isoformat()
        assert set(predictions["model_uri"]) == {registered[scoring].record.model_uri}
        assert registry.champion(spec.gate.model_name) is not None

        run_id = (
            instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=keys.forecaster, asset_partitions=[today.isoformat()]), limit=1
            )
            .records[0]
            .asset_materialization.metadata["mlflow_run_id"]
            .value
        )
        client = mlflow.MlflowClient(tracking_uri)
        assert client.get_run(run_id).data.tags["dagster.partition"] == today.isoformat()
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("mlflow")
        stored = [blob.name for blob in blobs.list_blobs()]
        assert any("MLmodel" in name for name in stored), stored
        # MLflow, on Blob, is the one store of the model: its file is the one the record names by its
        # sha256, and no other copy is kept.
        record = latest_record(instance, keys.forecaster, today.isoformat())
        files = {
            hashlib.sha256(blobs.download_blob(name).readall()).hexdigest()
            for name in stored
            if name.endswith(".skops")
        }
        assert record.artifact_sha256 in files
        models = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("models")
        assert list(models.list_blob_names()) == []


def test_polling_lists_only_the_candidate_prefixes(tmp_path, azurite, blob_profile, instance, spec) -> None:
    upload_simulated(tmp_path, azurite, spec, TODAY - dt.timedelta(days=9), 10, meters=2, meters_per_file=2)
    defs = build_definitions([spec], blob_profile, arrivals="poll")
    log = tmp_path / "azurite-requests.log"
    before = log.stat().st_size
    result = tick(defs, "smart_meter_landing_sensor", instance, blob_profile)
    # Azurite writes its request log asynchronously but in order: once a listing made after
    # the tick is in the log, every request of the tick is too.
    sentinel = "sentinel-after-tick/"
    landing = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")
    list(landing.list_blobs(name_starts_with=sentinel))
    deadline = time.monotonic() + 10
    while sentinel not in log.read_text()[before:] and time.monotonic() < deadline:
        time.sleep(0.05)

    with log.open() as handle:
        handle.seek(before)
        listed = {
            urllib.parse.parse_qs(urllib.parse.urlparse(line.split("RequestURL=")[1].split()[0]).query)["prefix"][0]
            for line in handle
            if "RequestURL=" in line and "comp=list" in line
        }
    assert sentinel in listed, "the request log never caught up"
    listed -= {sentinel}
    days = [YESTERDAY, TODAY]
    assert listed == {f"smart_meter/{day:%Y/%m/%d}/" for day in days}
    assert [request.partition_key for request in result.run_requests] == [day.isoformat() for day in days]


def test_each_duplicated_event_leads_to_one_ingestion(tmp_path, azurite, blob_profile, instance, spec) -> None:
    report, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=4, meters_per_file=2)
    for file in report.files:
        publish(azurite, file.path, etags[file.path], size=1, times=3)
    defs = build_definitions([spec], blob_profile, arrivals="queue")

    first = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    assert len(first.run_requests) == len(etags) == 2
    assert {request.partition_key for request in first.run_requests} == {TODAY.isoformat()}
    (observation,) = first.asset_events
    assert sorted(file["path"] for file in observation.metadata["files"].value) == sorted(etags)
    for _ in range(3):
        materialize_day(defs, blob_profile, instance, [DatasetKeys(spec).bronze], TODAY)
    lake = blob_profile["lake"]
    keys = DatasetKeys(spec)
    assert lake.count_rows(lake.table_uri(*keys.table(keys.bronze))) == report.records

    second = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile, cursor=first.cursor)
    assert second.run_requests == []
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    assert queue.get_queue_properties().approximate_message_count == 0


def test_unusable_messages_go_to_the_poison_queue(azurite, blob_profile, instance, spec) -> None:
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    queue.send_message("this is not an event")
    queue.send_message(json.dumps({"eventType": "Microsoft.Storage.BlobDeleted", "subject": "x", "data": {}}))
    publish(azurite, "elsewhere/file.csv", "0x1", 1)
    publish(azurite, "smart_meter/2026/01/01/../../../../etc/passwd", "0x1", 1)
    defs = build_definitions([spec], blob_profile, arrivals="queue")

    result = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    assert result.run_requests == []
    poison = QueueClient.from_connection_string(azurite.connection_string, "landing-events-poison")
    reasons = [json.loads(message.content)["reason"] for message in poison.receive_messages(max_messages=32)]
    assert len(reasons) == 4
    assert any("neither JSON nor Base64" in reason for reason in reasons)
    assert any("Microsoft.Storage.BlobDeleted" in reason for reason in reasons)
    assert sum("not a landing file of any dataset" in reason for reason in reasons) == 2
    assert queue.get_queue_properties().approximate_message_count == 0


def poisoned_reasons(azurite: AzuriteEndpoints) -> list[str]:
    poison = QueueClient.from_connection_string(azurite.connection_string, "landing-events-poison")
    return [json.loads(message.content)["reason"] for message in poison.receive_messages(max_messages=32)]


def test_malformed_event_fields_are_poisoned_and_the_good_event_still_runs(
    tmp_path, azurite, blob_profile, instance, spec
) -> None:
    _, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=2, meters_per_file=2)
    (path,) = etags
    good = json.loads(base64.b64decode(blob_created_event(AZURITE_ACCOUNT, "landing", path, etags[path], 36)))
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    bad_fields = [
        ("data", "contentLength", None),
        ("data", "contentLength", [1, 2]),
        ("data", "contentLength", True),
        ("data", "contentLength", -5),
        ("data", "eTag", {"value": "0x1"}),
        (None, "eventTime", 1767225600),
        (None, "eventTime", "yesterday"),
    ]
    for section, field, value in bad_fields:
        event = json.loads(json.dumps(good))
        (event[section] if section else event)[field] = value
        queue.send_message(json.dumps(event))
    queue.send_message("[" * 30_000 + "]" * 30_000)
    queue.send_message(base64.b64encode(b'{"a":' * 6_000 + b"1" + b"}" * 6_000).decode())
    queue.send_message(json.dumps(good))
    defs = build_definitions([spec], blob_profile, arrivals="queue")

    result = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    assert [request.partition_key for request in result.run_requests] == [TODAY.isoformat()]
    reasons = poisoned_reasons(azurite)
    assert len(reasons) == len(bad_fields) + 2
    assert sum("contentLength" in reason for reason in reasons) == 4
    assert sum("nested too deeply" in reason for reason in reasons) == 2
    assert all(len(reason) < 400 for reason in reasons)
    tick(defs, EVENT_SENSOR_NAME, instance, blob_profile, cursor=result.cursor)
    assert queue.get_queue_properties().approximate_message_count == 0


def test_a_message_that_keeps_coming_back_goes_to_the_poison_queue(azurite, blob_profile, instance, spec) -> None:
    """A message that earlier ticks received and never deleted (each of those ticks failed on
    it) is poisoned once it has been received ``max_deliveries`` times."""
    publish(azurite, f"smart_meter/{TODAY:%Y/%m/%d}/readings.csv", "0x8D0", 100)
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    for _ in range(EventQueue(account=account_for(azurite)).max_deliveries):
        deadline = time.monotonic() + 10
        while not list(queue.receive_messages(max_messages=1, visibility_timeout=1)):
            assert time.monotonic() < deadline, "the message did not come back after its visibility timeout"
            time.sleep(0.2)
    wait_until_visible(queue)
    defs = build_definitions([spec], blob_profile, arrivals="queue")
    result = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    assert result.run_requests == []
    (reason,) = poisoned_reasons(azurite)
    assert "received 6 times without being handled" in reason


def test_an_event_for_a_partition_not_started_waits_hidden_until_it_starts(
    azurite, blob_profile, instance, spec
) -> None:
    tomorrow = TODAY + dt.timedelta(days=1)
    path = f"smart_meter/{tomorrow:%Y/%m/%d}/early.csv"
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")
    etag = container.upload_blob(path, b"meter_id,timestamp,kwh,temperature\n").get_blob_properties().etag
    publish(azurite, path, etag.strip('"'), 36)
    quick = {**blob_profile, "event_queue": EventQueue(account=account_for(azurite), visibility_timeout=1)}
    defs = build_definitions([spec], quick, arrivals="queue")
    result = tick(defs, EVENT_SENSOR_NAME, instance, quick)
    assert result.run_requests == [] and poisoned_reasons(azurite) == []
    time.sleep(1.5)  # past the visibility timeout of a received message
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    assert queue.get_queue_properties().approximate_message_count == 1
    assert list(queue.peek_messages()) == []  # hidden until the partition starts


def test_an_event_for_a_blob_that_is_gone_is_acknowledged(azurite, blob_profile, instance, spec) -> None:
    publish(azurite, f"smart_meter/{TODAY:%Y/%m/%d}/deleted-already.csv", "0x8D0", 100)
    defs = build_definitions([spec], blob_profile, arrivals="queue")
    result = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    assert result.run_requests == []
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    assert queue.get_queue_properties().approximate_message_count == 0


def test_training_states_changed_on_blob_are_skipped_for_the_newest_intact_one(azurite) -> None:
    """A state overwritten by another client has no recorded sha256 (its metadata is gone); one
    whose bytes changed under its metadata no longer matches it. Both give way to an older one."""
    store = TrainingStateStore(
        location=StorageLocation(uri="az://models/training-states", account=account_for(azurite))
    )
    with store.training(dg.AssetKey(["models", "toy"]), "2026-01-02", "abc") as states:
        saved = {step: {"weights": [step] * 100} for step in (5, 10, 15)}
        for step, state in saved.items():
            states.save(step, state)
        states.flush()
        blobs = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("models")
        folder = "training-states/models/toy/2026-01-02/abc"
        blobs.upload_blob(f"{folder}/step-00000015.state", pickle.dumps({"weights": [1]}), overwrite=True)
        recorded = blobs.get_blob_client(f"{folder}/step-00000010.state").get_blob_properties().metadata
        assert recorded == {
            "sha256": hashlib.sha256(pickle.dumps(saved[10], protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
        }
        blobs.upload_blob(
            f"{folder}/step-00000010.state", pickle.dumps({"weights": [2]}), overwrite=True, metadata=recorded
        )
        skipped: list[str] = []
        found = states.newest_intact(skipped)
    assert found is not None and found.step == 5 and found.state == saved[5]
    assert found.sha256 == hashlib.sha256(pickle.dumps(saved[5], protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    assert len(skipped) == 2
    assert "step-00000015.state has no recorded sha256" in skipped[0]
    assert "step-00000010.state was changed after it was written" in skipped[1]


def test_azurite_down_fails_the_tick_and_the_next_tick_catches_up(tmp_path, instance, spec, mlflow_tracking) -> None:
    data = tmp_path / "azurite-restartable"
    with run_azurite(data) as first:
        resources = blob_resources(account_for(first), mlflow_tracking.tracking_uri, poll_days=2)
        defs = build_definitions([spec], resources, arrivals="poll")
        upload_simulated(tmp_path, first, spec, TODAY, 1, meters=2, meters_per_file=2)
    with pytest.raises((ServiceRequestError, OSError)):
        tick(defs, "smart_meter_landing_sensor", instance, resources)
    with run_azurite(data, ports=(first.blob_port, first.queue_port)):
        result = tick(defs, "smart_meter_landing_sensor", instance, resources)
        assert [request.partition_key for request in result.run_requests] == [TODAY.isoformat()]
        (observation,) = result.asset_events
        assert observation.metadata["new_files"].value == 1


def test_a_duplicate_in_a_later_tick_gets_the_same_run_key(tmp_path, azurite, blob_profile, instance, spec) -> None:
    _, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=2, meters_per_file=2)
    (path,) = etags
    publish(azurite, path, etags[path], 1)
    defs = build_definitions([spec], blob_profile, arrivals="queue")
    first = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    publish(azurite, path, etags[path], 1)
    second = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile, cursor=first.cursor)
    assert [request.run_key for request in second.run_requests] == [request.run_key for request in first.run_requests]


def test_a_duplicate_beside_a_new_file_in_a_later_tick_starts_no_extra_run(
    tmp_path, azurite, blob_profile, instance, spec
) -> None:
    """Dagster launches a sensor's run key once: every file version must keep its own key."""
    _, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=4, meters_per_file=2)
    first_path, second_path = sorted(etags)
    publish(azurite, first_path, etags[first_path], 1)
    defs = build_definitions([spec], blob_profile, arrivals="queue")
    first = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile)
    (first_key,) = [request.run_key for request in first.run_requests]
    publish(azurite, first_path, etags[first_path], 1)
    publish(azurite, second_path, etags[second_path], 1)
    second = tick(defs, EVENT_SENSOR_NAME, instance, blob_profile, cursor=first.cursor)
    keys = [request.run_key for request in second.run_requests]
    assert len(keys) == 2 and first_key in keys
    assert all(request.tags["mlops/new_files"] == "1" for request in second.run_requests)


def test_a_message_received_again_after_its_timeout_does_not_stop_the_sensor(
    tmp_path, azurite, blob_profile, instance, spec
) -> None:
    _, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=2, meters_per_file=2)
    (path,) = etags
    publish(azurite, path, etags[path], 1)
    quick = {**blob_profile, "event_queue": EventQueue(account=account_for(azurite), visibility_timeout=1)}
    defs = build_definitions([spec], quick, arrivals="queue")
    first = tick(defs, EVENT_SENSOR_NAME, instance, quick)
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    wait_until_visible(queue)
    other_reader = tick(defs, EVENT_SENSOR_NAME, instance, quick)
    assert len(other_reader.run_requests) == 1
    # The first tick's receipt is stale now; the message comes back once more (a tick listens
    # longer than the message stays hidden), and asks for the very same run.
    after = tick(defs, EVENT_SENSOR_NAME, instance, quick, cursor=first.cursor)
    assert [request.run_key for request in after.run_requests] == [first.run_requests[0].run_key]


def wait_until_visible(queue: QueueClient, seconds: float = 30) -> None:
    """Wait until a message of ``queue`` can be received again (its visibility timeout ended)."""
    deadline = time.monotonic() + seconds
    while not list(queue.peek_messages(max_messages=1)):
        assert time.monotonic() < deadline, "no message of the queue became visible again"
        time.sleep(0.05)


def test_a_bad_file_on_blob_is_quarantined_and_leaves_the_landing_zone(
    tmp_path, azurite, blob_profile, instance, spec
) -> None:
    report, _ = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=2, meters_per_file=2, bad_files=1)
    defs = build_definitions([spec], blob_profile, arrivals="poll")
    materialize_day(defs, blob_profile, instance, [DatasetKeys(spec).bronze], TODAY)
    (bad,) = report.bad_files
    container = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("landing")
    assert bad.path not in set(container.list_blob_names())
    quarantine = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("quarantine")
    kept = [name for name in quarantine.list_blob_names() if name.endswith(Path(bad.path).name)]
    assert len(kept) == 1 and kept[0].startswith(str(Path(bad.path).parent))


def test_a_large_object_round_trips_through_blocks_and_ranges(azurite) -> None:
    """Over 8 MiB: several blocks on write, several ranges on read, hashed as they arrive."""
    location = StorageLocation(uri="az://models", account=account_for(azurite))
    payload = os.urandom(20 * 1024 * 1024 + 123)
    path = location.path("models", "large", "2026-01-02.bin")
    assert location.write_recorded(path, payload) == hashlib.sha256(payload).hexdigest()
    data, sha256 = location.read_verified(path)
    assert data == payload and sha256 == hashlib.sha256(payload).hexdigest()
    blob = BlobServiceClient.from_connection_string(azurite.connection_string).get_blob_client(
        "models", "models/large/2026-01-02.bin"
    )
    assert len(blob.get_block_list("committed")[0]) == 3


LISTENER_INSTANCE_YAML = """
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
telemetry:
  enabled: false
"""


@pytest.fixture
def webserver(tmp_path, azurite, mlflow_tracking) -> Iterator[tuple[Webserver, Path]]:
    """A real Dagster webserver for the code location on the azurite profile with listener
    arrivals, and the folder of its instance (no daemon: launched runs stay queued)."""
    home = tmp_path / "dagster"
    home.mkdir()
    (home / "dagster.yaml").write_text(LISTENER_INSTANCE_YAML)
    port = free_port()
    environment = {
        **os.environ,
        **azurite.environment(),
        "DAGSTER_HOME": str(home),
        "MLOPS_PROFILE": "azurite",
        "MLOPS_ARRIVALS": "listen",
        "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
    }
    command = [str(Path(sys.executable).with_name("dagster-webserver")), "-w", "workspace.yaml"]
    command += ["-h", "127.0.0.1", "-p", str(port)]
    log = tmp_path / "webserver.log"
    with log.open("wb") as output:
        process = subprocess.Popen(command, cwd=REPOSITORY, env=environment, stdout=output, stderr=subprocess.STDOUT)
    server = Webserver(port=port)
    try:
        deadline = time.monotonic() + 120
        while not server.answers():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        yield server, home
    finally:
        process.terminate()
        process.wait(timeout=60)


def test_the_listener_launches_one_run_per_new_file_version_once(tmp_path, azurite, blob_profile, spec, webserver):
    """Events delivered twice, a garbage message, and the same events again after their runs
    exist: one queued bronze run per file version for today's partition, launched through the
    webserver, the garbage in the poison queue, the landing queue empty."""
    server, home = webserver
    report, etags = upload_simulated(tmp_path, azurite, spec, TODAY, 1, meters=4, meters_per_file=2)
    assert len(etags) == 2
    for path, etag in etags.items():
        publish(azurite, path, etag, 100, times=2)
    queue = QueueClient.from_connection_string(azurite.connection_string, "landing-events")
    queue.send_message("not an event")
    keys = DatasetKeys(spec)
    names = ("landing", "event_queue")
    with (
        dg.build_resources({name: blob_profile[name] for name in names}) as ready,
        dg.DagsterInstance.from_config(str(home)) as instance,
    ):
        listener = QueueListener([spec], ready.landing, ready.event_queue, instance, server)
        launched = listener.step()
        runs = [instance.get_run_by_id(run_id) for run_id in launched]
        assert len(runs) == 2 and all(run is not None for run in runs)
        assert {run.status for run in runs} == {dg.DagsterRunStatus.QUEUED}
        assert {run.tags["dagster/partition"] for run in runs} == {TODAY.isoformat()}
        assert all(run.asset_selection == {keys.bronze} for run in runs)
        assert len({run.tags["dagster/run_key"] for run in runs}) == 2

        for path, etag in etags.items():
            publish(azurite, path, etag, 100)
        assert listener.step() == []
        assert len(instance.get_run_records()) == 2

        observed = instance.fetch_observations(dg.AssetRecordsFilter(asset_key=keys.landing), limit=10).records
        assert {record.partition_key for record in observed} == {TODAY.isoformat()}
    assert queue.get_queue_properties().approximate_message_count == 0
    poison = QueueClient.from_connection_string(azurite.connection_string, "landing-events-poison")
    (poisoned,) = poison.peek_messages(max_messages=5)
    assert json.loads(poisoned.content)["content"] == "not an event"
