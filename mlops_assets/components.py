"""A dataset as a Dagster Component: a YAML file under ``mlops_assets/defs/datasets/`` (or one
that ``MLOPS_SPECS`` names) declares it, and this component builds everything it needs, from
the landing asset to drift monitoring."""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import BaseModel

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, source_label
from mlops_assets.defs.lakehouse.bronze import build_bronze_asset
from mlops_assets.defs.lakehouse.gold import build_gold_asset
from mlops_assets.defs.lakehouse.silver import build_silver_asset
from mlops_assets.defs.landing.assets import build_landing_asset
from mlops_assets.defs.landing.polling import build_landing_sensor
from mlops_assets.defs.models.checkpoint import build_checkpoint_asset
from mlops_assets.defs.models.forecaster import build_forecaster_asset
from mlops_assets.defs.models.retraining import (
    build_drift_sensor,
    build_nightly_retrain_schedule,
    build_retrain_job,
)
from mlops_assets.defs.models.tuning import build_tuning_asset
from mlops_assets.defs.monitoring.drift import build_drift_asset
from mlops_assets.defs.registry.decisions import build_decision_asset, build_gate_check
from mlops_assets.defs.serving.predictions import build_predictions_asset
from mlops_assets.resources.profiles import Arrivals, build_profile, nightly_jobs_running


class Dataset(dg.Component, DatasetSpec):
    """One dataset, declared by the ``attributes`` of its YAML file (see :class:`DatasetSpec`
    for every field), with its assets, checks, sensors, jobs and schedule."""

    @classmethod
    def get_model_cls(cls) -> type[BaseModel]:
        # The YAML's attributes are validated by this class itself: one model of a spec.
        return cls

    @classmethod
    def load(cls, attributes: Any, context: dg.ComponentLoadContext) -> Dataset:
        dataset = attributes if isinstance(attributes, cls) else cls.model_validate(attributes or {})
        dataset._source = source_label(context.path / "defs.yaml")
        return dataset

    def build_defs(self, context: dg.ComponentLoadContext) -> dg.Definitions:
        return dataset_definitions(self, build_profile().arrivals, nightly_jobs_running())


def ingest_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_ingest"


def lifecycle_job_name(spec: DatasetSpec) -> str:
    return f"{spec.name}_lifecycle"


def dataset_definitions(spec: DatasetSpec, arrivals: Arrivals = "poll", nightly: bool = True) -> dg.Definitions:
    """Everything one dataset spec declares, from landing files to drift monitoring; ``nightly``
    says whether the nightly retraining starts running.

    Each job holds assets of one backfill policy, so a backfill of a job over a range runs as
    its assets say: the data layers read and commit a range in one run, the models run one
    partition at a time. An asset backfill of a selection across both (a rebuild after a
    change of rules, features or model) keeps each asset's policy too.
    """
    keys = DatasetKeys(spec)
    ingest = dg.define_asset_job(
        ingest_job_name(spec),
        selection=dg.AssetSelection.assets(keys.bronze, keys.silver, keys.gold),
        description=(
            f"Bronze, silver with its checks and gold for {spec.name}; a backfill over a range of "
            f"{spec.grain.noun}s reads and commits the whole range in one run."
        ),
    )
    lifecycle = dg.define_asset_job(
        lifecycle_job_name(spec),
        selection=dg.AssetSelection.assets(
            keys.forecaster, keys.decision(keys.forecaster), keys.predictions, keys.drift
        ),
        description=(
            f"One {spec.grain.noun} of {spec.name} after {ingest_job_name(spec)}: the forecaster and the "
            "registry's decision on it, predictions and drift. The checkpoint model, which continues from "
            f"the {spec.grain.noun}s before, runs in {spec.name}_retrain."
        ),
    )
    assets = [
        build_landing_asset(spec),
        build_bronze_asset(spec),
        build_silver_asset(spec),
        build_gold_asset(spec),
        build_forecaster_asset(spec),
        build_checkpoint_asset(spec),
        *(build_decision_asset(spec, candidate) for candidate in keys.candidates),
        build_predictions_asset(spec),
        build_drift_asset(spec),
        *([build_tuning_asset(spec)] if spec.tuning is not None else []),
    ]
    return dg.Definitions(
        assets=assets,
        asset_checks=[build_gate_check(spec, candidate) for candidate in keys.candidates],
        jobs=[ingest, lifecycle, build_retrain_job(spec)],
        schedules=[build_nightly_retrain_schedule(spec, running=nightly)],
        sensors=[
            *([build_landing_sensor(spec)] if arrivals == "poll" else []),
            build_drift_sensor(spec),
        ],
    )
