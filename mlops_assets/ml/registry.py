"""The MLflow model registry: registered versions of a dataset's model and the aliases
that say which one serves.

``champion`` is the version batch scoring uses; ``previous`` is the champion it
replaced, where a rollback goes back to. Every alias move is recorded on the version
that gets it: who moved it, when, why, and which version it replaced, so the
history of a registered model can be read from its versions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import mlflow
import pandas as pd
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

CHAMPION, PREVIOUS = "champion", "previous"
TAG_PREFIX = "mlops."


class RegistryError(RuntimeError):
    """An alias cannot be moved as asked (no such version, nothing to roll back to)."""


@dataclass(frozen=True)
class RegisteredModel:
    """One registered version, with the record of where it came from."""

    name: str
    version: str
    run_id: str | None
    tags: Mapping[str, str]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"

    def tag(self, name: str) -> str | None:
        return self.tags.get(TAG_PREFIX + name)

    @property
    def trained_until(self) -> pd.Timestamp | None:
        """The first hour the model was not fitted on (its hold-out start)."""
        value = self.tag("holdout_start")
        return pd.Timestamp(value) if value else None

    @property
    def window(self) -> tuple[dt.date, dt.date] | None:
        """The gold days the model was trained and held out on."""
        start, end = self.tag("window_start"), self.tag("window_end")
        return (dt.date.fromisoformat(start), dt.date.fromisoformat(end)) if start and end else None

    @property
    def gold_version(self) -> int | None:
        value = self.tag("gold_version")
        return int(value) if value else None


@dataclass(frozen=True)
class AliasMove:
    """An alias change: the version that is champion now, and the one it replaced."""

    champion: RegisteredModel
    replaced: RegisteredModel | None


class Registry:
    """The aliases and versions of registered models on one MLflow tracking server."""

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _model(self, version: ModelVersion) -> RegisteredModel:
        return RegisteredModel(
            name=version.name, version=str(version.version), run_id=version.run_id, tags=version.tags
        )

    def get(self, name: str, version: str) -> RegisteredModel:
        try:
            return self._model(self.client.get_model_version(name, str(version)))
        except MlflowException as error:
            if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                raise RegistryError(f"{name} has no version {version}") from error
            raise

    def alias(self, name: str, alias: str) -> RegisteredModel | None:
        """The version holding ``alias``, or None (also when the model is not registered yet)."""
        try:
            registered = self.client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise
        version = registered.aliases.get(alias)
        return None if version is None else self.get(name, str(version))

    def champion(self, name: str) -> RegisteredModel | None:
        return self.alias(name, CHAMPION)

    def versions(self, name: str) -> list[RegisteredModel]:
        """Every version of ``name``, oldest first."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._model(version) for version in found), key=lambda model: int(model.version))

    def register(self, name: str, model_uri: str, run_id: str, tags: Mapping[str, Any]) -> RegisteredModel:
        """A new version of ``name`` from a logged model, tagged with its record."""
        try:
            self.client.create_registered_model(
                name, description="Forecasters that passed the quality gate; alias champion serves."
            )
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise
        # A model logged with MLflow 3 is addressed as models:/<model id>; the server wants the id too.
        logged = model_uri.removeprefix("models:/") if model_uri.startswith("models:/") else None
        version = self.client.create_model_version(
            name,
            source=model_uri,
            run_id=run_id,
            tags={TAG_PREFIX + key: str(value) for key, value in tags.items()},
            model_id=logged if logged and "/" not in logged else None,
        )
        return self._model(version)

    def promote(self, name: str, version: str, reason: str, actor: str) -> AliasMove:
        """Make ``version`` the champion; the champion it replaces becomes ``previous``."""
        target = self.get(name, version)
        current = self.champion(name)
        if current is not None and current.version == target.version:
            raise RegistryError(f"{name} version {version} is already the champion")
        if current is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, current.version)
            self._record(current, "demoted", reason, actor)
        self.client.set_registered_model_alias(name, CHAMPION, target.version)
        self._record(target, "promoted", reason, actor)
        self.client.set_model_version_tag(
            name, target.version, TAG_PREFIX + "replaced_version", current.version if current else ""
        )
        return AliasMove(champion=self.get(name, target.version), replaced=current)

    def rollback(self, name: str, reason: str, actor: str) -> AliasMove:
        """Give ``champion`` back to the ``previous`` version; ``previous`` moves one step further
        back, to the version that version had replaced (removed if there is none)."""
        current, previous = self.champion(name), self.alias(name, PREVIOUS)
        if previous is None or current is None:
            raise RegistryError(f"{name} has no previous champion to roll back to")
        self.client.set_registered_model_alias(name, CHAMPION, previous.version)
        self._record(previous, "restored", reason, actor)
        self._record(current, "rolled_back", reason, actor)
        earlier = previous.tag("replaced_version")
        if earlier:
            self.client.set_registered_model_alias(name, PREVIOUS, earlier)
        else:
            self.client.delete_registered_model_alias(name, PREVIOUS)
        return AliasMove(champion=self.get(name, previous.version), replaced=current)

    def _record(self, model: RegisteredModel, event: str, reason: str, actor: str) -> None:
        when = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        for key, value in ((f"{event}_at", when), (f"{event}_by", actor), (f"{event}_reason", reason)):
            self.client.set_model_version_tag(model.name, model.version, TAG_PREFIX + key, value)

    def load(self, model: RegisteredModel) -> Any:
        """The model as an MLflow pyfunc: ``predict`` takes gold rows."""
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        return mlflow.pyfunc.load_model(model.uri)
