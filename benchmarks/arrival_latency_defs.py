"""Code location of the arrival_latency benchmark: the azurite profile with both arrival
sensors running side by side, so that one daemon measures them in the same run."""

import dagster as dg

from mlops_assets.datasets.spec import load_bundled_specs
from mlops_assets.definitions import build_definitions
from mlops_assets.defs.landing.queue import build_event_sensor
from mlops_assets.resources.profiles import build_profile

specs = load_bundled_specs()
defs = dg.Definitions.merge(
    build_definitions(specs, build_profile("azurite").resources, arrivals="poll"),
    dg.Definitions(sensors=[build_event_sensor(specs)]),
)
