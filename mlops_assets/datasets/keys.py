"""The asset keys of one dataset, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from mlops_assets.automation import Reads
from mlops_assets.datasets.spec import DatasetSpec


@dataclass(frozen=True)
class DatasetKeys:
    """Asset keys of every layer of a dataset: ``<layer>/<dataset>[_<role>]``."""

    spec: DatasetSpec

    @property
    def landing(self) -> dg.AssetKey:
        return dg.AssetKey(["landing", self.spec.name])

    @property
    def bronze(self) -> dg.AssetKey:
        return dg.AssetKey(["bronze", self.spec.name])

    @property
    def silver(self) -> dg.AssetKey:
        return dg.AssetKey(["silver", self.spec.name])

    @property
    def gold(self) -> dg.AssetKey:
        return dg.AssetKey(["gold", f"{self.spec.name}_features"])

    @property
    def forecaster(self) -> dg.AssetKey:
        return dg.AssetKey(["models", f"{self.spec.name}_forecaster"])

    @property
    def checkpoint(self) -> dg.AssetKey:
        return dg.AssetKey(["models", f"{self.spec.name}_checkpoint"])

    @property
    def tuning(self) -> dg.AssetKey:
        return dg.AssetKey(["models", f"{self.spec.name}_tuning"])

    @property
    def candidates(self) -> tuple[dg.AssetKey, ...]:
        """The model assets whose daily models compete for the registry's champion alias."""
        return (self.forecaster, self.checkpoint)

    def decision(self, candidate: dg.AssetKey) -> dg.AssetKey:
        """The registry's decisions on a candidate model's partitions: which model is the champion."""
        return dg.AssetKey(["registry", candidate.path[-1]])

    @property
    def predictions(self) -> dg.AssetKey:
        return dg.AssetKey(["serving", f"{self.spec.name}_predictions"])

    @property
    def drift(self) -> dg.AssetKey:
        return dg.AssetKey(["monitoring", f"{self.spec.name}_drift"])

    @property
    def reads(self) -> dict[dg.AssetKey, Reads]:
        """For each automated asset, what automation watches: the upstream asset whose partition
        holds the partition's own data, and the inputs that count as changed only when their
        data version does (models, registry decisions)."""
        decision = self.decision(self.forecaster)
        return {
            self.silver: Reads(own=self.bronze),
            self.gold: Reads(own=self.silver),
            self.forecaster: Reads(own=self.gold),
            self.checkpoint: Reads(own=self.gold),
            **{
                self.decision(candidate): Reads(own=candidate, versioned=(candidate, self.decision(candidate)))
                for candidate in self.candidates
            },
            # A partition is scored by the champion of the latest decision before it.
            self.predictions: Reads(own=self.gold, versioned=(decision,), earlier=(decision,)),
            self.drift: Reads(own=self.predictions),
        }

    def table(self, key: dg.AssetKey) -> tuple[str, str]:
        """The (layer, table) of the Delta table behind a data asset."""
        layer, table = key.path
        return layer, table
