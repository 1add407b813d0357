"""The Dagster definitions: the datasets declared under ``defs/datasets/`` (Dataset components)
and those ``MLOPS_SPECS`` names, the sensors shared by all of them, and the resources of the
active profile."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg

from mlops_assets.components import Dataset, dataset_definitions
from mlops_assets.datasets.spec import DatasetSpec, check_unique_names, load_spec, spec_files
from mlops_assets.defs.landing.queue import build_event_sensor
from mlops_assets.defs.runs.failed_runs import build_dead_run_sensor, build_failed_run_sensor
from mlops_assets.resources.profiles import Arrivals, build_profile, extra_spec_locations, nightly_jobs_running


def shared_definitions(
    specs: Sequence[DatasetSpec], resources: Mapping[str, Any], arrivals: Arrivals
) -> dg.Definitions:
    """What every dataset shares: automation, the dead-run sensors, the queue sensor (one queue
    for all datasets), the resources and the executor."""
    automation = dg.AutomationConditionSensorDefinition(
        "lakehouse_automation",
        target=dg.AssetSelection.all(),
        default_status=dg.DefaultSensorStatus.RUNNING,
        # The daemon's own loop (5 s) is the floor: a chain of partitions advances a tick at a time.
        minimum_interval_seconds=5,
        # One run per partition holding silver through predictions, rather than a backfill that
        # launches each layer only after the one before it finished.
        emit_backfills=False,
        # The conditions know which partition holds a partition's own data
        # (policies.OwnPartitionReady), which only user code can evaluate.
        use_user_code_server=True,
        description=(
            "Pushes each updated bronze partition through silver, gold, the models, the registry's decisions, "
            "predictions and drift."
        ),
    )
    sensors = [
        automation,
        build_dead_run_sensor(),
        build_failed_run_sensor(),
        *([build_event_sensor(specs)] if arrivals == "queue" else []),
    ]
    # A partition's steps depend on each other and each is CPU-bound: in one process they
    # run as fast as in one process each, without paying a Python start-up per step.
    return dg.Definitions(sensors=sensors, resources=dict(resources), executor=dg.in_process_executor)


def build_definitions(
    specs: Sequence[DatasetSpec], resources: Mapping[str, Any], arrivals: Arrivals = "poll"
) -> dg.Definitions:
    """The definitions of ``specs`` on ``resources``, with polling sensors per dataset or one
    queue sensor for all: for tests, benchmarks and commands that pick their own datasets."""
    nightly = nightly_jobs_running()
    return dg.Definitions.merge(
        *(dataset_definitions(spec, arrivals, nightly) for spec in specs),
        shared_definitions(specs, resources, arrivals),
    )


def _datasets() -> tuple[dg.ComponentTree, list[Dataset], list[DatasetSpec]]:
    tree = dg.ComponentTree.for_project(Path(__file__).parent)
    declared = tree.get_all_components(of_type=Dataset)
    extra = [load_spec(path) for path in spec_files(extra_spec_locations())]
    check_unique_names([*declared, *extra])
    return tree, declared, extra


def location_specs() -> list[DatasetSpec]:
    """Every dataset of the code location: the Dataset components of ``defs/`` and the
    datasets ``MLOPS_SPECS`` names (for processes beside it, such as the queue listener)."""
    _, declared, extra = _datasets()
    return [*declared, *extra]


@dg.definitions
def defs() -> dg.Definitions:
    """The code location: the Dataset components of ``defs/``, the datasets ``MLOPS_SPECS``
    names, and the active profile's resources."""
    tree, declared, extra = _datasets()
    profile = build_profile()
    nightly = nightly_jobs_running()
    return dg.Definitions.merge(
        tree.build_defs(),
        *(dataset_definitions(spec, profile.arrivals, nightly) for spec in extra),
        shared_definitions([*declared, *extra], profile.resources, profile.arrivals),
    )
