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
    def predictions(self) -> dg.AssetKey:
        return dg.AssetKey(["serving", f"{self.spec.name}_predictions"])

    def table(self, key: dg.AssetKey) -> tuple[str, str]:
        """The (layer, table) of the Delta table behind a data asset."""
        layer, table = key.path
        return layer, table
