"""The ``mlops`` command: simulate arrivals and run the demo on the active profile."""

from __future__ import annotations

import datetime as dt
import os
import sys
import warnings

import click
import dagster as dg

from mlops_assets.datasets.spec import DatasetSpec, SpecError, load_bundled_specs, load_spec
from mlops_assets.demo import reset_state, run_arrivals, summarize
from mlops_assets.landing.simulate import simulate
from mlops_assets.profiles import build_resources, mlops_home


def _spec(dataset: str, spec_file: str | None) -> DatasetSpec:
    if spec_file:
        return load_spec(spec_file)
    specs = {spec.name: spec for spec in load_bundled_specs()}
    if dataset not in specs:
        raise click.BadParameter(
            f"unknown dataset {dataset!r}; bundled: {', '.join(sorted(specs))}", param_hint="--dataset"
        )
    return specs[dataset]


def _instance() -> dg.DagsterInstance:
    if os.environ.get("DAGSTER_HOME"):
        return dg.DagsterInstance.get()
    click.echo("DAGSTER_HOME is not set: runs go to a temporary instance and will not show in the UI.", err=True)
    return dg.DagsterInstance.ephemeral()


dataset_option = click.option("--dataset", default="smart_meter", show_default=True, help="Bundled dataset spec.")
spec_option = click.option(
    "--spec", "spec_file", type=click.Path(exists=True, dir_okay=False), help="A spec file instead."
)
simulation_options = [
    click.option(
        "--start", type=click.DateTime(formats=["%Y-%m-%d"]), help="First day (default: the spec's start date)."
    ),
    click.option("--days", type=click.IntRange(1, 3660), default=14, show_default=True),
    click.option("--meters", type=click.IntRange(1, 1_000_000), default=50, show_default=True),
    click.option("--meters-per-file", type=click.IntRange(1), default=25, show_default=True),
    click.option(
        "--dirty-share",
        type=click.FloatRange(0, 1, max_open=True),
        default=0.02,
        show_default=True,
        help="Share of records made dirty (null, out of range, duplicated).",
    ),
    click.option(
        "--bad-files",
        type=click.IntRange(0),
        default=0,
        show_default=True,
        help="Whole files made unreadable or schema-violating, at most one a day.",
    ),
    click.option(
        "--format", "file_format", type=click.Choice(["csv", "jsonl", "parquet"]), default="csv", show_default=True
    ),
    click.option("--seed", type=int, default=7, show_default=True),
]


def _with_simulation_options(command):
    for option in reversed(simulation_options):
        command = option(command)
    return command


def _simulate(spec: DatasetSpec, resources, start, **options) -> None:
    first = start.date() if start else spec.start_date
    if options["bad_files"] > options["days"]:
        raise click.BadParameter(
            f"at most one bad file a day: {options['bad_files']} for {options['days']} day(s)", param_hint="--bad-files"
        )
    report = simulate(resources["landing"], spec, first, **options)
    last = first + dt.timedelta(days=options["days"] - 1)
    bad = ", ".join(f"{file.path} [{file.kind}]" for file in report.bad_files) or "none"
    click.echo(
        f"simulate: {len(report.files)} files, {report.records:,} records for {first}..{last} "
        f"({len(report.bad_files)} bad: {bad})"
    )


@click.group()
def main() -> None:
    """mlops_assets: event-driven MLOps with Dagster assets."""


@main.command("simulate")
@dataset_option
@spec_option
@_with_simulation_options
def simulate_command(dataset: str, spec_file: str | None, start, **options) -> None:
    """Write realistic landing files for a range of days."""
    spec = _spec(dataset, spec_file)
    _simulate(spec, build_resources(), start, **options)


@main.command("demo")
@dataset_option
@spec_option
@click.option("--reset/--no-reset", default=False, help="Start from empty local state and run history.")
@_with_simulation_options
def demo_command(dataset: str, spec_file: str | None, reset: bool, start, **options) -> None:
    """Simulate arrivals, push them through the whole graph, print a summary."""
    spec = _spec(dataset, spec_file)
    instance = _instance()
    if reset:
        reset_state(mlops_home(), instance)
        click.echo(f"reset: emptied {mlops_home()} and the run history")
    resources = build_resources()
    _simulate(spec, resources, start, **options)
    failed = run_arrivals(spec, resources, instance, progress=click.echo)
    click.echo("")
    click.echo(summarize(spec, resources, instance).render())
    if failed:
        click.echo(f"\n{len(failed)} day(s) failed: {', '.join(failed)}; see their runs in the Dagster UI.", err=True)
        sys.exit(1)


def run() -> None:
    # Known, harmless notices that would otherwise repeat once per model trained.
    warnings.filterwarnings("ignore", category=dg.BetaWarning)
    warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column", category=UserWarning)
    try:
        main()
    except SpecError as error:
        raise click.ClickException(str(error)) from error


if __name__ == "__main__":
    run()
