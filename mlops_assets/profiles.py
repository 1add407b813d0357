"""Profiles: the one place that decides where everything lives.

``MLOPS_PROFILE`` picks the profile; nothing else in the code branches on it.
``local`` keeps everything in folders under ``MLOPS_HOME`` (default ``.mlops`` in the
working directory): landing zone, quarantine, Delta lake, model objects, and an
MLflow store in SQLite. No server, no credentials.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlops_assets.lakehouse.delta import DeltaLake
from mlops_assets.ml.tracking import MlflowTracking
from mlops_assets.storage.landing_zone import LandingZone
from mlops_assets.storage.object_store import ObjectStore

PROFILES = ("local",)
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


def mlops_home() -> Path:
    """Root folder of the local profile's state."""
    return Path(os.environ.get("MLOPS_HOME", ".mlops")).resolve()


def local_resources(home: Path) -> dict[str, Any]:
    """Resources of the embedded profile, all under ``home``."""
    return {
        "landing": LandingZone(root=(home / "landing").as_uri(), quarantine_root=(home / "quarantine").as_uri()),
        "lake": DeltaLake(root=str(home / "lake")),
        "object_store": ObjectStore(root=(home / "objects").as_uri()),
        "mlflow_tracking": MlflowTracking(
            tracking_uri=f"sqlite:///{home / 'mlflow.db'}",
            artifact_root=(home / "mlartifacts").as_uri(),
            ui_url=os.environ.get("MLFLOW_UI_URL", DEFAULT_MLFLOW_UI),
        ),
    }


def build_resources(profile: str | None = None) -> dict[str, Any]:
    """The resources of ``profile`` (default: ``MLOPS_PROFILE``, else ``local``)."""
    profile = profile or os.environ.get("MLOPS_PROFILE", "local")
    if profile == "local":
        return local_resources(mlops_home())
    raise ValueError(
        f"MLOPS_PROFILE={profile!r} is not a profile of this version; choose one of: {', '.join(PROFILES)}"
    )
