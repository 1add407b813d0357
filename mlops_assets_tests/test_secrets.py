"""Secrets: the storage account key never shows up where people and tools read, and the
services ``mlops dev`` starts listen on loopback unless told otherwise.

The secrets test runs the whole graph on the azurite profile (the profile's own resources,
reading the key through ``dg.EnvVar`` as a deployment does) against an Azurite serving a fresh
account with a key made for the test, and an MLflow server whose artifacts live in that
account. Then it scans, for the key in every form a leak could take (see ``secret_needles``):

- the Dagster instance: every event log record of every run, every run (config and tags),
  its job and execution plan snapshots (stored compressed, so they are read through the
  instance), and every file of the instance folder as raw bytes (the SQLite databases);
- the compute log files (the instance's ``LocalComputeLogManager``; in-process runs capture
  too: Dagster's plan executor opens the capture for the whole run);
- the metadata of every asset materialization and asset check evaluation;
- MLflow: params, tags, metric names and dataset inputs of every run, logged models, registered
  models and versions, every artifact downloaded through the server, and the server's log and
  its SQLite store;
- every blob of every container of the storage account, and every message left on its queues;
- what the test process printed (``capfd``) and what the ``mlops simulate`` command printed.

It then plants the key in each place it can reach cheaply and scans again, so a scan that
reads nothing would fail.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import mlflow
import psutil
import pytest
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient
from click.testing import CliRunner

from mlops_assets.cli import LOOPBACK, dev_command_line, main
from mlops_assets.components import ingest_job_name, lifecycle_job_name
from mlops_assets.definitions import build_definitions
from mlops_assets.resources.profiles import build_profile
from mlops_assets_tests.test_azurite import TODAY, YESTERDAY, tick
from mlops_dev.services import REPOSITORY, AzuriteEndpoints, free_port, run_azurite, run_mlflow_server

ACCOUNT = "mlopssecretprobe"
# Dagster's console logger at its most talkative, so that the printed logs hold all it can say.
VERBOSE = {"loggers": {"console": {"config": {"log_level": "DEBUG"}}}}


def secret_needles(key: str, connection_string: str) -> dict[str, re.Pattern[bytes]]:
    """What a leak of ``key`` looks like in text or bytes: the key itself, URL-encoded, a
    stretch of it (a truncated or wrapped copy), the raw bytes it encodes and their hex, the
    whole connection string, and any ``AccountKey=`` / ``account_key=`` assignment at all."""
    raw = base64.b64decode(key)
    literal = {
        "key": key.encode(),
        "key, URL-encoded": urllib.parse.quote(key, safe="").encode(),
        "24 characters of the key": key[32:56].encode(),
        "key bytes": raw,
        "key bytes as hex": raw.hex().encode(),
        "connection string": connection_string.encode(),
    }
    needles = {label: re.compile(re.escape(value)) for label, value in literal.items()}
    needles["AccountKey= assignment"] = re.compile(rb"accountkey\s*=", re.IGNORECASE)
    needles["account_key assignment"] = re.compile(rb"account_key['\"]?\s*[:=]", re.IGNORECASE)
    return needles


def find_secrets(data: bytes | str, needles: dict[str, re.Pattern[bytes]]) -> list[str]:
    """The labels of the needles found in ``data``."""
    content = data.encode() if isinstance(data, str) else data
    return [label for label, pattern in needles.items() if pattern.search(content)]


@dataclass
class Scan:
    """Items scanned per place, and each hit as (place, item, needle)."""

    needles: dict[str, re.Pattern[bytes]]
    counts: dict[str, int] = field(default_factory=dict)
    hits: list[tuple[str, str, str]] = field(default_factory=list)

    def read(self, place: str, items: Iterable[tuple[str, bytes | str]]) -> None:
        self.counts.setdefault(place, 0)
        for name, data in items:
            self.counts[place] += 1
            self.hits += [(place, name, label) for label in find_secrets(data, self.needles)]

    def places_hit(self) -> set[str]:
        return {place for place, _, _ in self.hits}

    def report(self) -> str:
        lines = [f"{place}: {count} scanned" for place, count in self.counts.items()]
        return "\n".join([*lines, *(f"HIT {place} / {name}: {label}" for place, name, label in self.hits)])


def files_under(root: Path) -> Iterator[tuple[str, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield str(path.relative_to(root)), path.read_bytes()


def dagster_records(instance: dg.DagsterInstance) -> Iterator[tuple[str, str]]:
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            yield f"{run.run_id}/{record.dagster_event_type or 'log'}", dg.serialize_value(record)


def dagster_runs(instance: dg.DagsterInstance) -> Iterator[tuple[str, str]]:
    for run in instance.get_runs():
        yield f"run {run.run_id}", dg.serialize_value(run)
        if run.job_snapshot_id:
            yield (
                f"job snapshot {run.job_snapshot_id}",
                dg.serialize_value(instance.get_job_snapshot(run.job_snapshot_id)),
            )
        if run.execution_plan_snapshot_id:
            plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
            yield f"plan snapshot {run.execution_plan_snapshot_id}", dg.serialize_value(plan)


def asset_metadata(instance: dg.DagsterInstance) -> Iterator[tuple[str, str]]:
    """Every metadata entry of every materialization and asset check evaluation, one item each."""
    for run in instance.get_runs():
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.is_step_materialization:
                materialization = event.step_materialization_data.materialization
                where = f"{materialization.asset_key.to_user_string()}@{materialization.partition}"
                metadata = materialization.metadata
            elif event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                evaluation = event.asset_check_evaluation_data
                where = f"check {evaluation.asset_key.to_user_string()}:{evaluation.check_name}"
                metadata = evaluation.metadata
            else:
                continue
            for name, value in metadata.items():
                yield f"{where} {name}", f"{name}={dg.serialize_value(value)}"


def mlflow_records(client: mlflow.MlflowClient) -> Iterator[tuple[str, str]]:
    """Params, tags, metric names, run names and dataset inputs of every run; logged models;
    registered models and their versions."""
    experiments = client.search_experiments()
    for experiment in experiments:
        yield f"experiment {experiment.name}", repr((experiment.name, experiment.tags, experiment.artifact_location))
        for run in client.search_runs([experiment.experiment_id], max_results=10_000):
            where = f"run {run.info.run_id}"
            yield f"{where} name", run.info.run_name or ""
            for name, value in run.data.params.items():
                yield f"{where} param {name}", f"{name}={value}"
            for name, value in run.data.tags.items():
                yield f"{where} tag {name}", f"{name}={value}"
            for name in run.data.metrics:
                yield f"{where} metric {name}", name
            for dataset_input in run.inputs.dataset_inputs:
                dataset = dataset_input.dataset
                yield f"{where} input {dataset.name}", repr((dataset, dataset_input.tags))
    for model in client.search_logged_models([experiment.experiment_id for experiment in experiments]):
        yield f"logged model {model.model_id}", repr((model.name, model.params, model.tags, model.artifact_location))
    for registered in client.search_registered_models():
        yield f"registered model {registered.name}", repr((registered.description, registered.tags, registered.aliases))
        for version in client.search_model_versions(f"name='{registered.name}'"):
            yield f"{registered.name} v{version.version}", repr((version.description, version.tags, version.source))


def mlflow_artifacts(client: mlflow.MlflowClient, destination: Path) -> Iterator[tuple[str, bytes]]:
    """Every artifact of every run and logged model, downloaded through the server."""
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    for run in client.search_runs(experiments, max_results=10_000):
        folder = destination / "runs" / run.info.run_id
        folder.mkdir(parents=True)
        if client.list_artifacts(run.info.run_id):
            client.download_artifacts(run.info.run_id, "", str(folder))
        yield from ((f"run {run.info.run_id}/{name}", data) for name, data in files_under(folder))
    for model in client.search_logged_models(experiments):
        folder = destination / "models" / model.model_id
        folder.mkdir(parents=True)
        mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location, dst_path=str(folder))
        yield from ((f"model {model.model_id}/{name}", data) for name, data in files_under(folder))


def storage_contents(azurite: AzuriteEndpoints) -> Iterator[tuple[str, bytes]]:
    """Every blob of every container, and every message still on a queue."""
    blobs = BlobServiceClient.from_connection_string(azurite.connection_string)
    for container in blobs.list_containers():
        client = blobs.get_container_client(container.name)
        for blob in client.list_blobs(include=["metadata"]):
            yield (
                f"{container.name}/{blob.name}",
                client.download_blob(blob.name).readall() + repr(blob.metadata).encode(),
            )
    queues = QueueServiceClient.from_connection_string(azurite.connection_string)
    for queue in queues.list_queues():
        for message in queues.get_queue_client(queue.name).peek_messages(max_messages=32):
            yield f"queue {queue.name}/{message.id}", message.content


class Vault(dg.ConfigurableResource):
    """A resource holding a key in plain config: what the profiles must never do."""

    key: str


@pytest.fixture
def fresh_account() -> tuple[str, str]:
    """A storage account name and a key made for this test alone, so any hit is a leak."""
    return ACCOUNT, base64.b64encode(secrets.token_bytes(64)).decode()


def test_the_scanner_finds_a_planted_key_in_every_form(fresh_account) -> None:
    name, key = fresh_account
    connection = f"DefaultEndpointsProtocol=http;AccountName={name};AccountKey={key};BlobEndpoint=http://x/{name};"
    needles = secret_needles(key, connection)
    raw = base64.b64decode(key)
    assert find_secrets(f"nothing here but {name} and AZURE_STORAGE_KEY", needles) == []
    assert "key" in find_secrets(f"options={{'credential': '{key}'}}", needles)
    assert "key, URL-encoded" in find_secrets(f"https://x/?sig={urllib.parse.quote(key, safe='')}", needles)
    assert "24 characters of the key" in find_secrets(f"...{key[20:70]}...", needles)
    assert "key bytes" in find_secrets(b"\x80\x04\x95" + raw + b".", needles)
    assert "key bytes as hex" in find_secrets(f"digest {raw.hex()}", needles)
    assert "connection string" in find_secrets(connection, needles)
    assert "AccountKey= assignment" in find_secrets("BlobEndpoint=...;accountkey = ***", needles)
    assert "account_key assignment" in find_secrets('{"account_key": "x"}', needles)


def test_no_secret_reaches_logs_metadata_mlflow_or_storage(tmp_path, monkeypatch, capfd, spec, fresh_account) -> None:
    name, key = fresh_account
    (tmp_path / "dagster").mkdir()
    with (
        run_azurite(tmp_path / "azurite", account=fresh_account) as azurite,
        run_mlflow_server(tmp_path / "mlflow-server", azurite) as tracking_uri,
        # A local instance keeps its compute logs, as a deployment does, under <folder>/storage.
        dg.DagsterInstance.local_temp(str(tmp_path / "dagster")) as instance,
    ):
        assert azurite.account == name and azurite.key == key
        environment = {
            **azurite.environment(),
            "MLOPS_PROFILE": "azurite",
            "MLOPS_ARRIVALS": "poll",
            "MLFLOW_TRACKING_URI": tracking_uri,
        }
        for variable, value in environment.items():
            monkeypatch.setenv(variable, value)
        before = YESTERDAY - dt.timedelta(days=1)
        simulated = CliRunner().invoke(
            main,
            ["simulate", "--start", before.isoformat(), "--days", "3", "--meters", "30", "--meters-per-file", "15"],
        )
        assert simulated.exit_code == 0, simulated.output

        resources = build_profile().resources
        defs = build_definitions([spec], resources, arrivals="poll")
        ticked = tick(defs, f"{spec.name}_landing_sensor", instance, resources)
        requested = [request.partition_key for request in ticked.run_requests]
        assert requested == [YESTERDAY.isoformat(), TODAY.isoformat()]
        jobs = [defs.resolve_job_def(name(spec)) for name in (ingest_job_name, lifecycle_job_name)]
        for partition in [before.isoformat(), *requested]:
            for job in jobs:
                assert job.execute_in_process(partition_key=partition, instance=instance, run_config=VERBOSE).success

        needles = secret_needles(key, azurite.connection_string)
        client = mlflow.MlflowClient(tracking_uri)

        def scan_everything(round_: str) -> Scan:
            scan = Scan(needles)
            scan.read("dagster event log records", dagster_records(instance))
            scan.read("dagster runs and snapshots", dagster_runs(instance))
            scan.read("dagster instance files", files_under(tmp_path / "dagster"))
            scan.read("compute log files", files_under(tmp_path / "dagster" / "storage"))
            scan.read("asset and check metadata entries", asset_metadata(instance))
            scan.read("mlflow params, tags, inputs, models", mlflow_records(client))
            scan.read("mlflow artifact files", mlflow_artifacts(client, tmp_path / f"artifacts-{round_}"))
            scan.read("mlflow server files and log", files_under(tmp_path / "mlflow-server"))
            scan.read("storage blobs and queue messages", storage_contents(azurite))
            printed = capfd.readouterr()
            sys.stdout.write(printed.out)
            sys.stderr.write(printed.err)
            scan.read(
                "printed output",
                [("stdout", printed.out), ("stderr", printed.err), ("mlops simulate", simulated.output)],
            )
            return scan

        clean = scan_everything("clean")
        print(clean.report())
        assert clean.hits == [], clean.report()
        assert all(clean.counts.values()), clean.report()
        assert clean.counts["compute log files"] >= 3 and clean.counts["mlflow artifact files"] > 0

        # The scan has to be able to fail: plant the key where each reader looks, and look again.
        @dg.asset
        def leaky(context, vault: Vault) -> dg.MaterializeResult:
            print(f"connecting with {vault.key}")
            context.log.info(f"key {vault.key}")
            return dg.MaterializeResult(metadata={"credential": dg.MetadataValue.text(vault.key)})

        assert dg.materialize([leaky], instance=instance, resources={"vault": Vault(key=key)}).success
        with mlflow.start_run(experiment_id=client.search_experiments()[0].experiment_id) as run:
            mlflow.set_tag("leaked", key)
            mlflow.log_text(azurite.connection_string, "leak.txt")
        BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client("models").upload_blob(
            "leak.bin", base64.b64decode(key)
        )
        assert run.info.run_id
        planted = scan_everything("planted")
        print(planted.report())
        missed = set(planted.counts) - planted.places_hit()
        assert missed == set(), planted.report()


def listening_addresses(pid: int) -> set[tuple[str, int]]:
    """The TCP addresses that process ``pid`` and its descendants listen on."""
    process = psutil.Process(pid)
    found = set()
    for member in [process, *process.children(recursive=True)]:
        try:
            connections = member.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def test_mlops_dev_serves_the_ui_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    """``mlops dev`` passes 127.0.0.1 to ``dagster dev`` unless ``--host`` names another address;
    started for real (local profile), nothing it runs listens beyond loopback."""
    default = dev_command_line(3000)
    assert default[default.index("--host") + 1] == LOOPBACK == "127.0.0.1"
    chosen = dev_command_line(3000, "0.0.0.0")
    assert chosen[chosen.index("--host") + 1] == "0.0.0.0"
    assert "--host TEXT" in CliRunner().invoke(main, ["dev", "--help"]).output

    port = free_port()
    environment = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "MLOPS_HOME": str(tmp_path / "mlops"),
        "MLOPS_NIGHTLY": "off",
    }
    (tmp_path / "dagster").mkdir()
    command = [sys.executable, "-c", "from mlops_assets.console import run; run()", "dev", "--port", str(port)]
    with (tmp_path / "dev.log").open("wb") as log:
        dev = subprocess.Popen(command, env=environment, cwd=REPOSITORY, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while (LOOPBACK, port) not in listening_addresses(dev.pid):
            assert dev.poll() is None, (tmp_path / "dev.log").read_text()
            assert time.monotonic() < deadline, (tmp_path / "dev.log").read_text()
            time.sleep(0.5)
        addresses = listening_addresses(dev.pid)
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(timeout=60)
    assert {ip for ip, _ in addresses} <= {"127.0.0.1", "::1"}, addresses
