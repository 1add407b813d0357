"""Faults on the azurite profile: Azurite stopped and restarted while assets run, processes
killed with SIGKILL in the middle of a Delta commit or a model upload, two runs writing the
same table at once.

After each fault a re-run completes, nothing half-written is readable, and the rows match
the landing files. The faults are real: Azurite is stopped and started again on the same
ports and data folder, and runs are child processes killed with SIGKILL. To kill a run at a
chosen request (the commit of a MERGE, the block list of a model upload), the child reaches
Azurite through :class:`BlobGate`, a pass-through HTTP proxy that holds the requests a rule
names; nothing of the pipeline is replaced.
"""

from __future__ import annotations

import datetime as dt
import http.client
import http.server
import json
import os
import pickle
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from azure.storage.blob import BlobServiceClient
from deltalake import DeltaTable

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.lakehouse.bronze import SOURCE_FILE
from mlops_assets.defs.models import forecaster
from mlops_assets.defs.models.training import train_forecaster
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.profiles import blob_resources, local_resources
from mlops_assets.resources.records import read_record
from mlops_assets.resources.storage import BLOB_BLOCK_BYTES, StorageLocation
from mlops_assets_tests.conftest import materialize_day, run_lifecycle
from mlops_assets_tests.test_azurite import account_for
from mlops_dev.services import AzuriteEndpoints, run_azurite, run_mlflow_server
from mlops_dev.simulate import simulate

DAY = dt.date(2026, 2, 10)
CHILD_SECONDS = 180
# How long Azurite stays down in the middle of a step.
OUTAGE_SECONDS = 5

# A child run: materialize some assets for one partition on the azurite profile, with the Blob
# endpoint it is given (the gate's), on the test's Dagster instance.
RUN_CHILD = """
import json, sys
import dagster as dg
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource
from mlops_assets.datasets.spec import load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_dev.services import AZURITE_KEY
from mlops_assets.resources.profiles import blob_resources
from mlops_assets.resources.storage import StorageAccount

job = json.loads(sys.argv[1])
(spec,) = [spec for spec in load_bundled_specs() if spec.name == "smart_meter"]
blob = AzureBlobStorageResource(account_url=job["blob_url"], credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY))
resources = blob_resources(StorageAccount(blob=blob, queue_url=job["queue_url"]), job["tracking"], poll_days=2)
defs = build_definitions([spec], resources)
with dg.DagsterInstance.get() as instance:
    result = dg.materialize(list(defs.assets), selection=[dg.AssetKey(key) for key in job["keys"]],
                            partition_key=job["day"], instance=instance, resources=resources, raise_on_error=False)
sys.exit(0 if result.success else 1)
"""

# A child that stores one large object at a storage location on Blob, as a training state is.
WRITE_CHILD = """
import pickle, sys
import numpy as np
from dagster_azure.blob import AzureBlobStorageKeyCredential, AzureBlobStorageResource
from mlops_dev.services import AZURITE_KEY
from mlops_assets.resources.storage import StorageAccount, StorageLocation

blob_url, path, values = sys.argv[1:]
blob = AzureBlobStorageResource(account_url=blob_url, credential=AzureBlobStorageKeyCredential(key=AZURITE_KEY))
location = StorageLocation(uri="az://models", account=StorageAccount(blob=blob))
location.write_recorded(location.resolve(path), pickle.dumps(np.arange(int(values), dtype=float)))
"""


class BlobGate:
    """A pass-through HTTP proxy in front of Azurite's Blob endpoint that holds the requests a
    rule names (``METHOD /path?query``), before forwarding them or after, until released."""

    _HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection"}

    def __init__(self, upstream: AzuriteEndpoints) -> None:
        self.upstream = upstream
        self.held: list[str] = []
        self._rules: list[tuple[re.Pattern[str], str]] = []
        self._state = threading.Condition()
        self._released = False
        gate = self

        class Relay(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                request = f"{self.command} {self.path}"
                when = gate._hold_point(request)
                if when == "before":
                    gate._hold(request)
                upstream = http.client.HTTPConnection("127.0.0.1", gate.upstream.blob_port, timeout=120)
                headers = {key: value for key, value in self.headers.items() if key.lower() not in gate._HOP}
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if when == "after":
                    gate._hold(request)
                self.send_response_only(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() in gate._HOP or (key.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = do_PATCH = relay

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                # A client killed mid-request resets its connection: nothing to report.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._server = Server(("127.0.0.1", 0), Relay)
        self.endpoints = AzuriteEndpoints(blob_port=self._server.server_address[1], queue_port=upstream.queue_port)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def hold(self, pattern: str, when: str = "before") -> None:
        """Hold the requests matching ``pattern``: ``before`` Azurite sees them, or ``after``
        Azurite answered but before the client has the answer."""
        with self._state:
            self._rules.append((re.compile(pattern), when))

    def wait_held(self, count: int = 1, timeout: float = CHILD_SECONDS) -> list[str]:
        with self._state:
            if not self._state.wait_for(lambda: len(self.held) >= count, timeout):
                raise TimeoutError(f"{count} request(s) expected at the gate, held: {self.held}")
            return list(self.held)

    def release(self) -> None:
        """Let the held requests go on, and hold nothing more."""
        with self._state:
            self._rules.clear()
            self._released = True
            self._state.notify_all()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _hold_point(self, request: str) -> str | None:
        with self._state:
            return next((when for pattern, when in self._rules if pattern.search(request)), None)

    def _hold(self, request: str) -> None:
        with self._state:
            self.held.append(request)
            self._state.notify_all()
            self._state.wait_for(lambda: self._released)


class RestartableAzurite:
    """Azurite that can be stopped and started again on the same ports and data folder."""

    def __init__(self, data: Path) -> None:
        self._data = data
        self._running: ExitStack | None = None
        self._restarts: list[threading.Thread] = []
        self.endpoints: AzuriteEndpoints | None = None
        self.outages: list[float] = []
        self._failed: list[Exception] = []

    def start(self) -> None:
        ports = (self.endpoints.blob_port, self.endpoints.queue_port) if self.endpoints else None
        running = ExitStack()
        self.endpoints = running.enter_context(run_azurite(self._data, ports=ports))
        self._running = running

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None

    def outage(self, seconds: float) -> None:
        """Stop Azurite now and start it again ``seconds`` later, while the caller goes on."""
        self.stop()
        self.outages.append(seconds)
        restart = threading.Thread(target=self._restart_after, args=(seconds,), daemon=True)
        restart.start()
        self._restarts.append(restart)

    def _restart_after(self, seconds: float) -> None:
        time.sleep(seconds)
        try:
            self.start()
        except (OSError, RuntimeError, TimeoutError) as error:
            self._failed.append(error)

    def close(self) -> None:
        for restart in self._restarts:
            restart.join()
        self.stop()
        if self._failed:
            raise self._failed[0]


@pytest.fixture
def restartable(tmp_path: Path) -> Iterator[RestartableAzurite]:
    azurite = RestartableAzurite(tmp_path / "azurite")
    azurite.start()
    try:
        yield azurite
    finally:
        azurite.close()


@pytest.fixture
def gate(restartable: RestartableAzurite) -> Iterator[BlobGate]:
    proxy = BlobGate(restartable.endpoints)
    try:
        yield proxy
    finally:
        proxy.release()
        proxy.close()


@pytest.fixture
def shared_instance(tmp_path: Path) -> Iterator[tuple[dg.DagsterInstance, Path]]:
    """A Dagster instance on disk, which child processes open too."""
    folder = tmp_path / "dagster"
    folder.mkdir()
    with dg.DagsterInstance.local_temp(str(folder)) as instance:
        yield instance, folder


def _stage(tmp_path: Path, spec: DatasetSpec, start: dt.date, meters: int, meters_per_file: int, days: int = 1):
    """Simulate the files of ``days`` days locally; returns the simulated files and their folder."""
    staging = local_resources(tmp_path / "staging")["landing"]
    report = simulate(staging, spec, start, days=days, meters=meters, meters_per_file=meters_per_file, dirty_share=0.0)
    return report.files, Path(staging.location.uri.removeprefix("file://"))


def _upload(endpoints: AzuriteEndpoints, folder: Path, files) -> int:
    """Upload simulated files to the landing container, as a source system would; returns their records."""
    container = BlobServiceClient.from_connection_string(endpoints.connection_string).get_container_client("landing")
    for file in files:
        container.upload_blob(file.path, (folder / file.path).read_bytes(), overwrite=True)
    return sum(file.records for file in files)


def _spawn(tmp_path: Path, name: str, code: str, *args: str, instance_dir: Path | None = None) -> subprocess.Popen:
    log = (tmp_path / f"{name}.log").open("wb")
    env = {**os.environ, **({"DAGSTER_HOME": str(instance_dir)} if instance_dir else {})}
    return subprocess.Popen([sys.executable, "-c", code, *args], stdout=log, stderr=subprocess.STDOUT, env=env)


def _spawn_run(
    tmp_path: Path, name: str, endpoints: AzuriteEndpoints, instance_dir: Path, tracking: str, keys, day: dt.date
) -> subprocess.Popen:
    job = {
        "blob_url": endpoints.blob_url,
        "queue_url": endpoints.queue_url,
        "tracking": tracking,
        "keys": [key.path for key in keys],
        "day": day.isoformat(),
    }
    return _spawn(tmp_path, name, RUN_CHILD, json.dumps(job), instance_dir=instance_dir)


def _kill(child: subprocess.Popen) -> None:
    assert child.poll() is None, "the child ended before it could be killed"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL


class TableOnBlob:
    """A Delta table as Azurite holds it: its log and data blobs, and what deltalake reads."""

    def __init__(self, endpoints: AzuriteEndpoints, lake: DeltaLake, layer: str, table: str) -> None:
        self.uri = lake.table_uri(layer, table)
        self._lake = lake
        self._prefix = f"{layer}/{table}/"
        self._container = BlobServiceClient.from_connection_string(endpoints.connection_string).get_container_client(
            "lake"
        )

    def log_versions(self) -> list[int]:
        """The versions in ``_delta_log``, after checking every entry is whole JSON lines."""
        versions = []
        for blob in self._container.list_blobs(name_starts_with=f"{self._prefix}_delta_log/"):
            name = blob.name.rsplit("/", 1)[1]
            if not name.endswith(".json"):
                continue
            text = self._container.download_blob(blob.name).readall().decode()
            assert all(json.loads(line) for line in text.splitlines()), f"{blob.name} is not whole JSON lines"
            versions.append(int(name.removesuffix(".json")))
        return sorted(versions)

    def unreferenced_files(self) -> set[str]:
        """Data blobs the table's latest version does not reference: what a killed writer left."""
        listed = {
            blob.name[len(self._prefix) :]
            for blob in self._container.list_blobs(name_starts_with=self._prefix)
            if blob.name.endswith(".parquet")
        }
        referenced = pa.table(self.table().get_add_actions(flatten=True)).column("path").to_pylist()
        return listed - set(referenced)

    def table(self) -> DeltaTable:
        return DeltaTable(self.uri, storage_options=self._lake.storage_options)

    def rows(self) -> pd.DataFrame:
        return self.table().to_pyarrow_table().to_pandas()


def _duplicates(rows: pd.DataFrame, spec: DatasetSpec, *columns: str) -> int:
    return int(rows.duplicated([*columns, spec.entity_column, spec.timestamp_column]).sum())


def _materializations(result: dg.ExecuteInProcessResult, key: dg.AssetKey) -> list[dg.AssetMaterialization]:
    return [event.materialization for event in result.get_asset_materialization_events() if event.asset_key == key]


def _retries(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The steps of a run that Dagster's retry policy sent back for another attempt."""
    return [
        entry.step_key
        for entry in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        if entry.step_key
    ]


def test_a_large_write_killed_before_its_block_list_commits_leaves_the_old_object(tmp_path, restartable, gate):
    """A storage location on Blob uploads a large object as blocks staged in parallel and
    committed in one request (the storage SDK's own transfer): a writer killed with SIGKILL
    after staging them leaves the old object, whole."""
    account = account_for(restartable.endpoints)
    location = StorageLocation(uri="az://models", account=account)
    name = "training-states/models/smart_meter_checkpoint/2026-02-10/abc/step-00000010.state"
    path = location.path(name)
    old = np.arange(10, dtype=float)
    location.write_recorded(path, pickle.dumps(old))
    values = 5 * BLOB_BLOCK_BYTES // 16  # two and a half blocks of float64
    blocks = -(-len(pickle.dumps(np.arange(values, dtype=float))) // BLOB_BLOCK_BYTES)

    gate.hold(r"^PUT /\S+/models/training-states/\S+/step-00000010\.state\?comp=blocklist")
    child = _spawn(tmp_path, "writer", WRITE_CHILD, gate.endpoints.blob_url, str(path), str(values))
    gate.wait_held()
    _kill(child)

    blob = BlobServiceClient.from_connection_string(restartable.endpoints.connection_string).get_blob_client(
        "models", name
    )
    _, staged = blob.get_block_list("uncommitted")
    assert len(staged) == blocks == 3, "the writer was not killed between staging its blocks and committing them"
    np.testing.assert_array_equal(pickle.loads(location.read_verified(path)[0]), old)

    gate.release()
    rerun = _spawn(tmp_path, "rewriter", WRITE_CHILD, gate.endpoints.blob_url, str(path), str(values))
    assert rerun.wait(timeout=CHILD_SECONDS) == 0
    np.testing.assert_array_equal(pickle.loads(location.read_verified(path)[0]), np.arange(values, dtype=float))
    assert blob.get_block_list("uncommitted")[1] == []


@pytest.mark.slow
@pytest.mark.parametrize("when", ["before", "after"])
def test_a_bronze_merge_killed_at_its_commit_is_invisible_or_recovered(
    tmp_path, restartable, gate, shared_instance, spec, mlflow_tracking, when
):
    """SIGKILL while a bronze MERGE commits: ``before`` its log entry reaches Azurite (the data
    files are written, the commit is not), or ``after`` (committed, and Dagster never told)."""
    instance, instance_dir = shared_instance
    resources = blob_resources(account_for(restartable.endpoints), mlflow_tracking.tracking_uri, poll_days=2)
    defs = build_definitions([spec], resources)
    keys = DatasetKeys(spec)
    files, folder = _stage(tmp_path, spec, DAY, meters=8, meters_per_file=2)
    first = _upload(restartable.endpoints, folder, files[:2])
    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    bronze = TableOnBlob(restartable.endpoints, resources["lake"], *keys.table(keys.bronze))
    version = bronze.table().version()
    total = first + _upload(restartable.endpoints, folder, files[2:])

    gate.hold(r"^PUT /\S+/lake/bronze/smart_meter/_delta_log/\d+\.json", when)
    child = _spawn_run(
        tmp_path, "bronze", gate.endpoints, instance_dir, mlflow_tracking.tracking_uri, [keys.bronze], DAY
    )
    gate.wait_held()
    _kill(child)

    if when == "before":
        assert bronze.log_versions()[-1] == bronze.table().version() == version
        assert len(bronze.rows()) == first
        assert bronze.unreferenced_files(), "the MERGE was killed before it wrote its data files"
    else:
        assert bronze.log_versions()[-1] == bronze.table().version() == version + 1
        assert len(bronze.rows()) == total

    rerun = materialize_day(defs, resources, instance, [keys.bronze], DAY)
    (materialization,) = _materializations(rerun, keys.bronze)
    assert materialization.metadata["dagster/row_count"].value == total
    if when == "before":
        assert materialization.metadata["rows_added"].value == total - first
    else:
        assert materialization.metadata["recovered_days"].value == [DAY.isoformat()]
    rows = bronze.rows()
    assert len(rows) == total and _duplicates(rows, spec, SOURCE_FILE) == 0
    materialize_day(defs, resources, instance, [keys.silver], DAY)
    silver = TableOnBlob(restartable.endpoints, resources["lake"], *keys.table(keys.silver))
    assert len(silver.rows()) == total and _duplicates(silver.rows(), spec) == 0


@pytest.mark.slow
def test_a_silver_overwrite_killed_before_its_commit_leaves_the_day_as_it_was(
    tmp_path, restartable, gate, shared_instance, spec, mlflow_tracking
):
    instance, instance_dir = shared_instance
    resources = blob_resources(account_for(restartable.endpoints), mlflow_tracking.tracking_uri, poll_days=2)
    defs = build_definitions([spec], resources)
    keys = DatasetKeys(spec)
    files, folder = _stage(tmp_path, spec, DAY, meters=8, meters_per_file=2)
    first = _upload(restartable.endpoints, folder, files[:2])
    materialize_day(defs, resources, instance, [keys.bronze, keys.silver], DAY)
    total = first + _upload(restartable.endpoints, folder, files[2:])
    materialize_day(defs, resources, instance, [keys.bronze], DAY)
    silver = TableOnBlob(restartable.endpoints, resources["lake"], *keys.table(keys.silver))
    version = silver.table().version()

    gate.hold(r"^PUT /\S+/lake/silver/smart_meter/_delta_log/\d+\.json")
    child = _spawn_run(
        tmp_path, "silver", gate.endpoints, instance_dir, mlflow_tracking.tracking_uri, [keys.silver], DAY
    )
    gate.wait_held()
    _kill(child)

    assert silver.log_versions()[-1] == silver.table().version() == version
    assert len(silver.rows()) == first, "the day is not as it was before the killed overwrite"
    assert silver.unreferenced_files(), "the overwrite was killed before it wrote its data files"

    rerun = materialize_day(defs, resources, instance, [keys.silver], DAY)
    (materialization,) = _materializations(rerun, keys.silver)
    assert materialization.metadata["dagster/row_count"].value == total
    rows = silver.rows()
    assert len(rows) == total and _duplicates(rows, spec) == 0


@pytest.mark.slow
@pytest.mark.parametrize("table", ["new", "existing"])
def test_two_runs_ingesting_the_same_day_at_once_insert_its_rows_once(
    tmp_path, restartable, gate, shared_instance, spec, mlflow_tracking, table
):
    """Both runs' commits are held until both are ready, then sent together: one wins, the
    other's commit conflicts and Dagster's retry policy runs it again, finding the rows there.
    ``new``: the table does not exist yet and both runs create it."""
    instance, instance_dir = shared_instance
    resources = blob_resources(account_for(restartable.endpoints), mlflow_tracking.tracking_uri, poll_days=2)
    defs = build_definitions([spec], resources)
    keys = DatasetKeys(spec)
    before = 0
    if table == "existing":
        earlier, folder = _stage(tmp_path / "earlier", spec, DAY - dt.timedelta(days=1), meters=4, meters_per_file=2)
        before = _upload(restartable.endpoints, folder, earlier)
        materialize_day(defs, resources, instance, [keys.bronze], DAY - dt.timedelta(days=1))
    files, folder = _stage(tmp_path, spec, DAY, meters=8, meters_per_file=2)
    records = _upload(restartable.endpoints, folder, files)

    gate.hold(r"^PUT /\S+/lake/bronze/smart_meter/_delta_log/\d+\.json")
    children = [
        _spawn_run(
            tmp_path, f"bronze-{n}", gate.endpoints, instance_dir, mlflow_tracking.tracking_uri, [keys.bronze], DAY
        )
        for n in range(2)
    ]
    gate.wait_held(2)
    gate.release()
    assert [child.wait(timeout=CHILD_SECONDS) for child in children] == [0, 0]

    runs = instance.get_runs()
    assert len(runs) == 2 + (table == "existing")
    assert all(run.status == dg.DagsterRunStatus.SUCCESS for run in runs)
    bronze = TableOnBlob(restartable.endpoints, resources["lake"], *keys.table(keys.bronze))
    rows = bronze.rows()
    assert _duplicates(rows, spec, SOURCE_FILE) == 0 and len(rows) == before + records
    retried = [step for run in runs for step in _retries(instance, run.run_id)]
    assert retried == [keys.bronze.to_python_identifier()], "the losing commit was not retried once"
    assert materialize_day(defs, resources, instance, [keys.bronze], DAY).get_asset_materialization_events() == []


@pytest.mark.slow
def test_azurite_stopped_during_ingestion_training_and_model_loading_then_restarted(
    tmp_path, restartable, shared_instance, spec, monkeypatch
):
    """Azurite goes down for a few seconds in the middle of bronze's ingestion (between reading
    the files and the MERGE), of the forecaster (after fitting, before the model is logged) and
    of the first load of a model from MLflow (the registry's decision, before it judges the
    candidate). The storage clients' and Dagster's retry policies carry each step over the
    outage."""
    instance, _ = shared_instance
    days = [DAY - dt.timedelta(days=2), DAY - dt.timedelta(days=1), DAY]
    with run_mlflow_server(tmp_path / "mlflow", restartable.endpoints) as tracking_uri:
        resources = blob_resources(account_for(restartable.endpoints), tracking_uri, poll_days=2)
        defs = build_definitions([spec], resources)
        keys = DatasetKeys(spec)
        files, folder = _stage(tmp_path, spec, days[0], meters=12, meters_per_file=6, days=len(days))
        records = _upload(restartable.endpoints, folder, files)
        for day in days[:2]:
            assert run_lifecycle(defs, spec, instance, day).success

        faults: list[str] = []

        def outage(during: str) -> None:
            if during not in faults:
                faults.append(during)
                restartable.outage(OUTAGE_SECONDS)

        monkeypatch.setattr(DeltaLake, "insert_new", _before(lambda: outage("ingestion"), DeltaLake.insert_new))
        monkeypatch.setattr(forecaster, "train_forecaster", _after(lambda: outage("training"), train_forecaster))
        monkeypatch.setattr(
            MlflowTracking, "load_model", _before(lambda: outage("model loading"), MlflowTracking.load_model)
        )
        started = time.monotonic()
        result = run_lifecycle(defs, spec, instance, DAY, raise_on_error=False)
        took = time.monotonic() - started
        monkeypatch.undo()
        failures = [event.step_key for event in result.all_events if event.is_step_failure]
        assert result.success, f"the run did not heal ({took:.0f} s): {failures}"
        assert faults == ["ingestion", "training", "model loading"]

        lake = resources["lake"]
        bronze = TableOnBlob(restartable.endpoints, lake, *keys.table(keys.bronze)).rows()
        assert len(bronze) == records and _duplicates(bronze, spec, SOURCE_FILE) == 0
        silver = TableOnBlob(restartable.endpoints, lake, *keys.table(keys.silver)).rows()
        assert len(silver) == records and _duplicates(silver, spec) == 0
        predictions = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [DAY]).rows
        gold = lake.read_days(lake.table_uri(*keys.table(keys.gold)), [DAY]).rows
        assert len(predictions) == len(gold) > 0 and predictions["prediction"].notna().all()
        # The model in MLflow is whole: its file is what the run recorded (the load checks it).
        (recorded,) = _materializations(result, keys.forecaster)
        model = read_record(recorded.metadata)
        assert model.family == spec.model.family and model.artifact_sha256 == recorded.metadata["artifact_sha256"].value
        assert len(resources["mlflow_tracking"].load_model(model).predict(gold)) == len(gold)

        again = run_lifecycle(defs, spec, instance, DAY)
        assert again.success
        assert len(TableOnBlob(restartable.endpoints, lake, *keys.table(keys.bronze)).rows()) == records
        rescored = lake.read_days(lake.table_uri(*keys.table(keys.predictions)), [DAY]).rows
        assert len(rescored) == len(gold) and _duplicates(rescored, spec) == 0


def _before(hook: Callable[[], Any], step: Callable[..., Any]) -> Callable[..., Any]:
    """``hook``, then ``step``."""

    def first(*args: Any, **kwargs: Any) -> Any:
        hook()
        return step(*args, **kwargs)

    return first


def _after(hook: Callable[[], Any], step: Callable[..., Any]) -> Callable[..., Any]:
    """``step``, then ``hook``, returning what ``step`` returned."""

    def then(*args: Any, **kwargs: Any) -> Any:
        outcome = step(*args, **kwargs)
        hook()
        return outcome

    return then
