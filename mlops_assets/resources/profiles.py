"""Profiles: the one place that decides where everything lives.

``MLOPS_PROFILE`` picks the profile; nothing else in the code branches on it.

- ``local`` keeps everything in folders under ``MLOPS_HOME`` (default ``.mlops`` in the
  working directory): landing zone, quarantine, Delta lake, training states, and an
  MLflow store in SQLite that holds the models. No server, no credentials.
- ``azurite`` keeps it all in Azurite, the Azure Storage emulator (Blob containers
  ``landing``, ``quarantine``, ``lake``, ``models`` (training states); queue ``landing-events``), with an
  MLflow server whose artifacts are on Blob. It reads ``AZURE_STORAGE_ACCOUNT_URL``,
  ``AZURE_STORAGE_QUEUE_URL``, ``AZURE_STORAGE_KEY`` and ``MLFLOW_TRACKING_URI``, which
  ``mlops dev --profile azurite`` sets.
- ``azure`` is the same layout on an Azure Storage account, authenticated with
  ``DefaultAzureCredential`` (managed or workload identity); no key anywhere.

``MLOPS_ARRIVALS`` picks how new landing files are noticed: ``poll`` (a sensor lists the
landing zone), ``queue`` (a sensor drains Event Grid ``BlobCreated`` events from a Storage
Queue) or ``listen`` (the same events, taken by the long-lived queue listener of
``mlops listen`` within a second instead of at the next sensor tick). Not ``poll`` only on
Blob.

``MLOPS_SPECS`` adds datasets to the bundled ones: spec files or folders of them,
separated by ``:``. ``MLOPS_NIGHTLY=off`` leaves the nightly retraining schedules stopped
when the daemon starts (for a replay, or a staging deployment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster_azure.blob import (
    AzureBlobStorageDefaultCredential,
    AzureBlobStorageKeyCredential,
    AzureBlobStorageResource,
)

from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.event_queue import EventQueue
from mlops_assets.resources.landing_zone import LandingZone
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.records import RecordIOManager
from mlops_assets.resources.storage import StorageAccount, StorageLocation
from mlops_assets.resources.training_states import TrainingStateStore

PROFILES = ("local", "azurite", "azure")
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
# On Blob the polling sensor lists only the most recent days' prefixes; older days that
# receive files late are the queue sensor's to notice.
POLL_DAYS_ON_BLOB = 2

Arrivals = Literal["poll", "queue", "listen"]


@dataclass(frozen=True)
class Profile:
    """The resources of a profile and how it notices arrivals."""

    name: str
    resources: dict[str, Any]
    arrivals: Arrivals = "poll"


def extra_spec_locations() -> list[str]:
    """The spec files and folders ``MLOPS_SPECS`` names, beside the bundled specs."""
    return [location for location in os.environ.get("MLOPS_SPECS", "").split(os.pathsep) if location]


def nightly_jobs_running() -> bool:
    """Whether the nightly retraining schedules start running with the daemon (``MLOPS_NIGHTLY``)."""
    value = os.environ.get("MLOPS_NIGHTLY", "on")
    if value not in ("on", "off"):
        raise ValueError(f"MLOPS_NIGHTLY={value!r}: choose on or off")
    return value == "on"


def mlops_home() -> Path:
    """Root folder of the local profile's state."""
    return Path(os.environ.get("MLOPS_HOME", ".mlops")).resolve()


def local_resources(home: Path) -> dict[str, Any]:
    """Resources of the embedded profile, all under ``home``."""
    return {
        "landing": LandingZone(
            location=StorageLocation(uri=(home / "landing").as_uri()),
            quarantine_uri=(home / "quarantine").as_uri(),
        ),
        "lake": DeltaLake(location=StorageLocation(uri=str(home / "lake"))),
        "records": RecordIOManager(),
        "training_states": TrainingStateStore(location=StorageLocation(uri=(home / "training-states").as_uri())),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_root=(home / "mlartifacts").as_uri(),
            ui_url=os.environ.get("MLFLOW_UI_URL", DEFAULT_MLFLOW_UI),
        ),
    }


def blob_resources(account: StorageAccount, mlflow_tracking_uri: str, poll_days: int | None) -> dict[str, Any]:
    """Resources on an Azure Storage account (real or emulated), one container a purpose."""

    def on_blob(uri: str) -> StorageLocation:
        return StorageLocation(uri=uri, account=account)

    return {
        "landing": LandingZone(location=on_blob("az://landing"), quarantine_uri="az://quarantine", poll_days=poll_days),
        "lake": DeltaLake(location=on_blob("az://lake")),
        "records": RecordIOManager(),
        "training_states": TrainingStateStore(location=on_blob("az://models/training-states")),
        "mlflow_tracking": MlflowTracking(tracking_uri=mlflow_tracking_uri, ui_url=mlflow_tracking_uri),
        "event_queue": EventQueue(account=account, queue="landing-events", poison_queue="landing-events-poison"),
    }


def build_profile(name: str | None = None) -> Profile:
    """The profile ``name`` (default: ``MLOPS_PROFILE``, else ``local``)."""
    name = name or os.environ.get("MLOPS_PROFILE", "local")
    arrivals = os.environ.get("MLOPS_ARRIVALS", "poll")
    if arrivals not in ("poll", "queue", "listen"):
        raise ValueError(f"MLOPS_ARRIVALS={arrivals!r}: choose poll, queue or listen")
    if name == "local":
        if arrivals != "poll":
            raise ValueError("the local profile notices arrivals by polling only (MLOPS_ARRIVALS=poll)")
        return Profile(name, local_resources(mlops_home()))
    if name == "azurite":
        account = StorageAccount(
            blob=AzureBlobStorageResource(
                account_url=dg.EnvVar("AZURE_STORAGE_ACCOUNT_URL"),
                credential=AzureBlobStorageKeyCredential(key=dg.EnvVar("AZURE_STORAGE_KEY")),
            ),
            queue_url=dg.EnvVar("AZURE_STORAGE_QUEUE_URL"),
        )
    elif name == "azure":
        account = StorageAccount(
            blob=AzureBlobStorageResource(
                account_url=dg.EnvVar("AZURE_STORAGE_ACCOUNT_URL"), credential=AzureBlobStorageDefaultCredential()
            ),
            queue_url=dg.EnvVar("AZURE_STORAGE_QUEUE_URL"),
        )
    else:
        raise ValueError(f"MLOPS_PROFILE={name!r} is not a profile; choose one of: {', '.join(PROFILES)}")
    tracking = os.environ.get("MLFLOW_TRACKING_URI")
    if not tracking:
        raise ValueError(f"the {name} profile needs MLFLOW_TRACKING_URI (the MLflow tracking server)")
    return Profile(name, blob_resources(account, tracking, POLL_DAYS_ON_BLOB), arrivals)  # type: ignore[arg-type]


def build_resources(profile: str | None = None) -> dict[str, Any]:
    """The resources of ``profile`` (default: ``MLOPS_PROFILE``, else ``local``)."""
    return build_profile(profile).resources
