"""The MLflow model registry: registered versions of a dataset's models and the aliases that
say which one serves.

MLflow's champion/challenger convention: ``champion`` is the version that serves,
``challenger`` the latest candidate under review, ``previous`` the champion that
``champion`` replaced (where a rollback goes back to). The registered model's tag
``mlops.champion_for`` names the partition whose decision set the champion, so a
decision about an earlier partition (late data, a backfill) never moves the alias away
from a champion chosen for a later one.

Every alias move, by the pipeline or by hand, is appended to the registered model's
audit trail (one tag per entry, ``mlops.audit.<time>.<id>``): when, who, what moved
where, and why. ``mlops registry history <model>`` prints it.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_ALREADY_EXISTS, RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

from mlops_assets.resources.records import ModelRecord

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
TAG_PREFIX = "mlops."
AUDIT_PREFIX = f"{TAG_PREFIX}audit."
CHAMPION_FOR = f"{TAG_PREFIX}champion_for"


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
    def record(self) -> ModelRecord | None:
        """The model as the pipeline recorded it when registering it (None for a version
        registered outside the pipeline)."""
        value = self.tag("record")
        return ModelRecord.from_json(json.loads(value)) if value else None


@dataclass(frozen=True)
class AliasMove:
    """An alias change: the version that holds the alias now, and the one that held it before."""

    alias: str
    holder: RegisteredModel
    replaced: RegisteredModel | None

    @property
    def champion(self) -> RegisteredModel:
        return self.holder


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

    def _registered(self, name: str) -> Any | None:
        try:
            return self.client.get_registered_model(name)
        except MlflowException as error:
            if error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST):
                return None
            raise

    def alias(self, name: str, alias: str) -> RegisteredModel | None:
        """The version holding ``alias``, or None (also when the model is not registered yet)."""
        registered = self._registered(name)
        version = registered.aliases.get(alias) if registered is not None else None
        return None if version is None else self.get(name, str(version))

    def champion(self, name: str) -> RegisteredModel | None:
        return self.alias(name, CHAMPION)

    def champion_for(self, name: str) -> str | None:
        """The partition whose decision set the current champion, if the pipeline set it."""
        registered = self._registered(name)
        return registered.tags.get(CHAMPION_FOR) if registered is not None else None

    def versions(self, name: str) -> list[RegisteredModel]:
        """Every version of ``name``, oldest first."""
        found = self.client.search_model_versions(f"name = '{name}'")
        return sorted((self._model(version) for version in found), key=lambda model: int(model.version))

    def find(self, name: str, sha256: str) -> RegisteredModel | None:
        """The version of ``name`` registered from a model with this fitted-model digest, if any."""
        found = self.client.search_model_versions(f"name = '{name}' and tags.`{TAG_PREFIX}sha256` = '{sha256}'")
        versions = sorted((self._model(version) for version in found), key=lambda model: int(model.version))
        return versions[0] if versions else None

    def register(self, name: str, record: ModelRecord, tags: Mapping[str, Any]) -> tuple[RegisteredModel, bool]:
        """The version of ``name`` holding ``record``'s model: the existing one if that very model
        (same fitted digest) was registered before, else a new version tagged with its record.
        Returns the version and whether it is new."""
        existing = self.find(name, record.sha256)
        if existing is not None:
            return existing, False
        self._ensure_registered(name)
        # A model logged with MLflow 3 is addressed as models:/<model id>; the server wants the id too.
        logged = record.model_uri.removeprefix("models:/") if record.model_uri.startswith("models:/") else None
        version = self.client.create_model_version(
            name,
            source=record.model_uri,
            run_id=record.run_id or None,
            tags={
                **{TAG_PREFIX + key: str(value) for key, value in tags.items()},
                f"{TAG_PREFIX}sha256": record.sha256,
                f"{TAG_PREFIX}asset_key": record.asset,
                f"{TAG_PREFIX}partition": record.partition,
                f"{TAG_PREFIX}record": json.dumps(record.to_json(), sort_keys=True),
            },
            model_id=logged if logged and "/" not in logged else None,
        )
        return self._model(version), True

    def _ensure_registered(self, name: str) -> None:
        try:
            self.client.create_registered_model(
                name, description="Models registered by the mlops_assets pipeline; alias champion serves."
            )
        except MlflowException as error:
            if error.error_code != ErrorCode.Name(RESOURCE_ALREADY_EXISTS):
                raise

    def set_challenger(self, name: str, version: str, reason: str, actor: str) -> AliasMove | None:
        """Mark ``version`` as the candidate under review; None if it already is."""
        return self._move(name, CHALLENGER, version, reason, actor)

    def set_champion(self, name: str, version: str, decided_for: str, reason: str, actor: str) -> AliasMove | None:
        """Make ``version`` the champion on the strength of the registry's decision for partition
        ``decided_for``; the champion it replaces becomes ``previous``.

        Nothing moves (None) when a decision for a later partition set the current
        champion, or when ``version`` already is the champion.
        """
        current_for = self.champion_for(name)
        if current_for is not None and current_for > decided_for:
            return None
        move = self._move(name, CHAMPION, version, reason, actor)
        self.client.set_registered_model_tag(name, CHAMPION_FOR, decided_for)
        if move is None:
            return None
        challenger = self.alias(name, CHALLENGER)
        if challenger is not None and challenger.version == move.holder.version:
            self.client.delete_registered_model_alias(name, CHALLENGER)
        return move

    def promote(self, name: str, version: str, reason: str, actor: str) -> AliasMove:
        """Make ``version`` the champion by hand; the champion it replaces becomes ``previous``."""
        self.get(name, version)
        move = self._move(name, CHAMPION, version, reason, actor)
        if move is None:
            raise RegistryError(f"{name} version {version} is already the champion")
        return move

    def rollback(self, name: str, reason: str, actor: str) -> AliasMove:
        """Give ``champion`` back to the ``previous`` version; ``previous`` moves one step further
        back, to the version that version had replaced (removed if there is none)."""
        current, previous = self.champion(name), self.alias(name, PREVIOUS)
        if previous is None or current is None:
            raise RegistryError(f"{name} has no previous champion to roll back to")
        earlier = previous.tag("replaced_version")
        self.client.set_registered_model_alias(name, CHAMPION, previous.version)
        if earlier:
            self.client.set_registered_model_alias(name, PREVIOUS, earlier)
        else:
            self.client.delete_registered_model_alias(name, PREVIOUS)
        self._audit(name, "rollback", CHAMPION, previous.version, current.version, reason, actor)
        return AliasMove(alias=CHAMPION, holder=self.get(name, previous.version), replaced=current)

    def _move(self, name: str, alias: str, version: str, reason: str, actor: str) -> AliasMove | None:
        current = self.alias(name, alias)
        if current is not None and current.version == str(version):
            return None
        if alias == CHAMPION and current is not None:
            self.client.set_registered_model_alias(name, PREVIOUS, current.version)
            self.client.set_model_version_tag(name, str(version), TAG_PREFIX + "replaced_version", current.version)
        self.client.set_registered_model_alias(name, alias, str(version))
        self._audit(name, "move", alias, str(version), current.version if current else None, reason, actor)
        return AliasMove(alias=alias, holder=self.get(name, str(version)), replaced=current)

    def record_decision(self, name: str, version: str | None, reason: str, actor: str) -> None:
        """Add a decision that moved no alias (a dry run) to the audit trail."""
        self._ensure_registered(name)
        self._audit(name, "dry_run", CHAMPION, version, None, reason, actor)

    def _audit(
        self, name: str, action: str, alias: str, version: str | None, replaced: str | None, reason: str, actor: str
    ) -> None:
        now = dt.datetime.now(dt.UTC)
        entry = {
            "at": now.isoformat(timespec="microseconds"),
            "action": action,
            "alias": alias,
            "version": version,
            "replaced": replaced,
            "actor": actor,
            "reason": reason,
        }
        key = f"{AUDIT_PREFIX}{now.strftime('%Y%m%dT%H%M%S%fZ')}.{uuid.uuid4().hex[:8]}"
        self.client.set_registered_model_tag(name, key, json.dumps(entry))

    def history(self, name: str) -> list[dict[str, Any]]:
        """Every alias move of ``name``, oldest first."""
        registered = self._registered(name)
        if registered is None:
            raise RegistryError(f"no registered model {name!r}")
        entries = sorted((key, value) for key, value in registered.tags.items() if key.startswith(AUDIT_PREFIX))
        return [json.loads(value) for _, value in entries]
