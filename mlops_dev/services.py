"""Local stand-ins for the Azure services, for the azurite profile and the tests.

Azurite (the Azure Storage emulator, from npm) serves the Blob and Queue APIs; an MLflow
tracking server keeps its artifacts in Azurite's Blob service. Each starts on free
ports with its data in a folder of the caller's choosing and stops when the context
ends.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from azure.core.exceptions import ResourceExistsError
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueServiceClient

REPOSITORY = Path(__file__).resolve().parents[1]
AZURITE_ACCOUNT = "devstoreaccount1"
# Azurite's published development key: the same on every machine, not a secret.
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CONTAINERS = ("landing", "quarantine", "lake", "models", "mlflow")
QUEUES = ("landing-events", "landing-events-poison")
STARTUP_SECONDS = 60


@dataclass(frozen=True)
class AzuriteEndpoints:
    """Where a running Azurite answers, and the account and key it serves."""

    blob_port: int
    queue_port: int
    account: str = AZURITE_ACCOUNT
    key: str = field(default=AZURITE_KEY, repr=False)

    @property
    def blob_url(self) -> str:
        return f"http://127.0.0.1:{self.blob_port}/{self.account}"

    @property
    def queue_url(self) -> str:
        return f"http://127.0.0.1:{self.queue_port}/{self.account}"

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
            f"BlobEndpoint={self.blob_url};QueueEndpoint={self.queue_url};"
        )

    def environment(self) -> dict[str, str]:
        """The variables the azurite profile reads."""
        return {
            "AZURE_STORAGE_ACCOUNT_URL": self.blob_url,
            "AZURE_STORAGE_QUEUE_URL": self.queue_url,
            "AZURE_STORAGE_KEY": self.key,
            "AZURE_STORAGE_CONNECTION_STRING": self.connection_string,
        }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def azurite_command() -> Path:
    """The Azurite executable the project's set-up installed."""
    local = REPOSITORY / "node_modules" / ".bin" / "azurite"
    if local.exists():
        return local
    found = shutil.which("azurite")
    if found is None:
        raise FileNotFoundError("Azurite is not installed: run `make install` (it runs `npm ci`).")
    return Path(found)


@contextmanager
def run_azurite(
    data_dir: Path,
    debug_log: Path | None = None,
    ports: tuple[int, int] | None = None,
    account: tuple[str, str] | None = None,
) -> Iterator[AzuriteEndpoints]:
    """Azurite with its data in ``data_dir``, on the given (blob, queue) ports or free ones,
    provisioned with the project's containers and queues. It listens on loopback only.

    ``account`` is an (account name, base64 key) pair to serve instead of Azurite's
    well-known development account (through Azurite's ``AZURITE_ACCOUNTS`` variable)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    blob_port, queue_port = ports or (free_port(), free_port())
    endpoints = AzuriteEndpoints(blob_port=blob_port, queue_port=queue_port)
    environment = None
    if account is not None:
        endpoints = AzuriteEndpoints(blob_port=blob_port, queue_port=queue_port, account=account[0], key=account[1])
        environment = {**os.environ, "AZURITE_ACCOUNTS": f"{account[0]}:{account[1]}"}
    command = [
        str(azurite_command()),
        "--silent",
        "--disableTelemetry",
        "--skipApiVersionCheck",
        "--location",
        str(data_dir),
        "--blobHost",
        "127.0.0.1",
        "--queueHost",
        "127.0.0.1",
        "--tableHost",
        "127.0.0.1",
        "--blobPort",
        str(endpoints.blob_port),
        "--queuePort",
        str(endpoints.queue_port),
        "--tablePort",
        str(free_port()),
        *(["--debug", str(debug_log)] if debug_log else []),
    ]
    with running_process(command, data_dir / "azurite.log", environment) as process:
        _wait_for_port(endpoints.blob_port, process, "Azurite")
        _wait_for_port(endpoints.queue_port, process, "Azurite")
        provision(endpoints.connection_string)
        yield endpoints


def provision(connection_string: str) -> None:
    """Create the containers and queues the profiles expect, if they are missing."""
    blobs = BlobServiceClient.from_connection_string(connection_string)
    for container in CONTAINERS:
        try:
            blobs.create_container(container)
        except ResourceExistsError:
            pass
    queues = QueueServiceClient.from_connection_string(connection_string)
    for queue in QUEUES:
        try:
            queues.create_queue(queue)
        except ResourceExistsError:
            pass


@contextmanager
def run_mlflow_server(data_dir: Path, azurite: AzuriteEndpoints) -> Iterator[str]:
    """An MLflow tracking server (SQLite store in ``data_dir``) that serves artifacts it keeps
    in Azurite's ``mlflow`` container; yields its tracking URI."""
    data_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{data_dir / 'mlflow.db'}",
        "--artifacts-destination",
        f"wasbs://mlflow@{azurite.account}.blob.core.windows.net/artifacts",
        "--serve-artifacts",
    ]
    environment = {**os.environ, "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string}
    with running_process(command, data_dir / "mlflow-server.log", environment) as process:
        uri = f"http://127.0.0.1:{port}"
        _wait_for_http(f"{uri}/health", process, "MLflow server")
        yield uri


@contextmanager
def running_process(
    command: list[str],
    log: Path,
    environment: dict[str, str] | None = None,
    cwd: Path | None = None,
    stop_seconds: float = 20,
) -> Iterator[subprocess.Popen]:
    """``command`` running with its output in ``log``, stopped (SIGTERM, then SIGKILL after
    ``stop_seconds``) when the context ends."""
    with log.open("ab") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment, cwd=cwd)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(timeout=stop_seconds)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_port(port: int, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before listening on port {port}")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"{name} did not listen on port {port} within {STARTUP_SECONDS} s")


def _wait_for_http(url: str, process: subprocess.Popen, name: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise TimeoutError(f"{name} did not answer {url} within {STARTUP_SECONDS} s")
