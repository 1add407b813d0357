"""The asset keys of one dataset, in one place."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

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

    def release(self, candidate: dg.AssetKey) -> dg.AssetKey:
        """The registry asset recording which registered version a candidate's day became."""
        return dg.AssetKey(["registry", candidate.path[-1]])

    @property
    def predictions(self) -> dg.AssetKey:
        return dg.AssetKey(["serving", f"{self.spec.name}_predictions"])

    @property
    def drift(self) -> dg.AssetKey:
        return dg.AssetKey(["monitoring", f"{self.spec.name}_drift"])

    @property
    def primary_upstream(self) -> dict[dg.AssetKey, dg.AssetKey]:
        """For each automated asset, the upstream asset whose partition holds the partition's own
        data: the asset has something to build for a partition only once that one exists."""
        return {
            self.silver: self.bronze,
            self.gold: self.silver,
            self.forecaster: self.gold,
            self.checkpoint: self.gold,
            **{self.release(candidate): candidate for candidate in self.candidates},
            self.predictions: self.gold,
            self.drift: self.predictions,
        }

    def table(self, key: dg.AssetKey) -> tuple[str, str]:
        """The (layer, table) of the Delta table behind a data asset."""
        layer, table = key.path
        return layer, table
