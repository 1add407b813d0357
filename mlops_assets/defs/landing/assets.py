"""The landing zone as an external asset: files Dagster does not make but watches arrive."""

from __future__ import annotations

import dagster as dg

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec
from mlops_assets.partitions import partitions_def

KIND_BY_FORMAT = {"csv": "csv", "jsonl": "json", "parquet": "parquet"}


def build_landing_asset(spec: DatasetSpec) -> dg.AssetSpec:
    return dg.AssetSpec(
        key=DatasetKeys(spec).landing,
        partitions_def=partitions_def(spec),
        group_name="landing",
        kinds={KIND_BY_FORMAT[fmt] for fmt in spec.landing.formats},
        description=(
            f"{spec.description} Files under the landing prefix {spec.landing.prefix}/ laid out as "
            f"{spec.landing.path_pattern.pattern}; the landing sensor records each arrival as an observation."
        ),
    )
