"""The ``mlops`` command: simulate arrivals, run the demo, and move registry aliases on the
active profile."""

from __future__ import annotations

import datetime as dt
import getpass
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import click
import dagster as dg

from mlops_assets.datasets.spec import (
    DatasetSpec,
    SpecError,
    bundled_spec_paths,
    load_spec,
    load_specs,
    spec_files,
)
from mlops_assets.definitions import location_specs
from mlops_assets.history import landed_range, load_history
from mlops_assets.listener import QueueListener, Webserver
from mlops_assets.resources.mlflow_tracking import MlflowTracking
from mlops_assets.resources.model_registry import CHAMPION, PREVIOUS, AliasMove, Registry, RegistryError
from mlops_assets.resources.profiles import build_profile, build_resources, extra_spec_locations, mlops_home
from mlops_dev.demo import Stopwatch, reset_state, run_arrivals, summarize
from mlops_dev.services import run_azurite, run_mlflow_server
from mlops_dev.simulate import SimulationReport, blob_created_message, simulate


def _spec(dataset: str, spec_file: str | None) -> DatasetSpec:
    if spec_file:
        try:
            return load_spec(spec_file)
        except SpecError as error:
            raise click.ClickException(str(error)) from error
    try:
        specs = {spec.name: spec for spec in load_specs(extra_spec_locations())}
    except SpecError as error:
        raise click.ClickException(str(error)) from error
    if dataset not in specs:
        raise click.BadParameter(
            f"unknown dataset {dataset!r}; known: {', '.join(sorted(specs))}", param_hint="--dataset"
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


def _simulate(spec: DatasetSpec, resources, start, **options) -> SimulationReport:
    first = start.date() if start else spec.start_date
    if options["bad_files"] > options["days"]:
        raise click.BadParameter(
            f"at most one bad file a day: {options['bad_files']} for {options['days']} day(s)", param_hint="--bad-files"
        )
    report = simulate(resources.landing, spec, first, **options)
    last = first + dt.timedelta(days=options["days"] - 1)
    bad = ", ".join(f"{file.path} [{file.kind}]" for file in report.bad_files) or "none"
    click.echo(
        f"simulate: {len(report.files)} files, {report.records:,} records for {first}..{last} "
        f"({len(report.bad_files)} bad: {bad})"
    )
    return report


@click.group()
def main() -> None:
    """mlops_assets: event-driven MLOps with Dagster assets."""


@main.command("simulate")
@dataset_option
@spec_option
@_with_simulation_options
def simulate_command(dataset: str, spec_file: str | None, start, **options) -> None:
    """Write realistic landing files for a range of days.

    With queue arrivals (MLOPS_ARRIVALS=queue or listen) it also puts on the landing queue the
    BlobCreated event Azure Event Grid would deliver for each file.
    """
    spec = _spec(dataset, spec_file)
    with _landing_resources() as ready:
        _publish_arrivals(spec, ready, _simulate(spec, ready, start, **options))


def _publish_arrivals(spec: DatasetSpec, ready, report: SimulationReport) -> None:
    _announce(spec, ready, [file.path for file in report.files], "simulate")


def _announce(spec: DatasetSpec, ready, paths: list[str], command: str) -> None:
    """With queue arrivals, put on the queue the BlobCreated event Azure Event Grid would deliver
    for each landing file written (an emulator has no Event Grid)."""
    if "event_queue" not in ready.original_resource_dict:
        return
    landing, events = ready.landing, ready.event_queue
    for path in paths:
        current = landing.stat(spec, path)
        if current is None:
            raise click.ClickException(f"{path} was written but is not in the landing zone")
        events.publish(blob_created_message(landing, current))
    click.echo(f"{command}: published {len(paths)} BlobCreated event(s) on {events.queue}")


def _landing_resources():
    """The active profile's landing zone (and, with queue arrivals, its event queue), ready to use."""
    profile = build_profile()
    names = ["landing", *(["event_queue"] if profile.arrivals in ("queue", "listen") else [])]
    # Resources used outside a run: build_resources resolves their EnvVar settings.
    return dg.build_resources({name: profile.resources[name] for name in names})


@main.command("demo")
@dataset_option
@spec_option
@click.option("--reset/--no-reset", default=False, help="Start from empty local state and run history.")
@_with_simulation_options
def demo_command(dataset: str, spec_file: str | None, reset: bool, start, **options) -> None:
    """Simulate arrivals, push them through the whole graph, print a summary."""
    stopwatch = Stopwatch()
    spec = _spec(dataset, spec_file)
    instance = _instance()
    if reset:
        with stopwatch.phase("reset"):
            reset_state(mlops_home(), instance)
        click.echo(f"reset: emptied {mlops_home()} and the run history")
    resources = build_resources()
    with stopwatch.phase("simulate"), dg.build_resources({"landing": resources["landing"]}) as ready:
        _simulate(spec, ready, start, **options)
    failed = run_arrivals(spec, resources, instance, progress=click.echo, stopwatch=stopwatch)
    click.echo("")
    with (
        stopwatch.phase("summary"),
        dg.build_resources({name: resources[name] for name in ("landing", "lake")}) as ready,
    ):
        summary = summarize(
            spec,
            {"landing": ready.landing, "lake": ready.lake, "mlflow_tracking": resources["mlflow_tracking"]},
            instance,
        )
    click.echo(summary.render())
    click.echo(f"\n{stopwatch.render()}")
    if failed:
        click.echo(f"\n{len(failed)} day(s) failed: {', '.join(failed)}; see their runs in the Dagster UI.", err=True)
        sys.exit(1)


def _registry() -> Registry:
    tracking: MlflowTracking = build_resources()["mlflow_tracking"]
    return tracking.registry()


def _actor() -> str:
    return f"{getpass.getuser()} via mlops"


def _show_move(spec: DatasetSpec, move: AliasMove) -> None:
    name = spec.gate.model_name
    replaced = f" (was v{move.replaced.version}, now @{PREVIOUS})" if move.replaced else ""
    click.echo(f"{name}@{CHAMPION} -> v{move.holder.version}{replaced}")
    source = move.holder.tag("asset_key"), move.holder.tag("partition")
    if all(source):
        click.echo(f"  trained by {source[0]}@{source[1]}, MLflow run {move.holder.run_id}")


reason_option = click.option("--reason", required=True, help="Why the alias moves; recorded on the versions.")


@main.command("promote")
@dataset_option
@spec_option
@click.argument("version")
@reason_option
def promote_command(dataset: str, spec_file: str | None, version: str, reason: str) -> None:
    """Make VERSION of the dataset's registered model the champion, by hand (no gate).

    The champion it replaces gets the alias previous."""
    spec = _spec(dataset, spec_file)
    try:
        move = _registry().promote(spec.gate.model_name, version, reason=reason, actor=_actor())
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    _show_move(spec, move)


@main.command("rollback")
@dataset_option
@spec_option
@reason_option
def rollback_command(dataset: str, spec_file: str | None, reason: str) -> None:
    """Give the champion alias back to the previous champion."""
    spec = _spec(dataset, spec_file)
    try:
        move = _registry().rollback(spec.gate.model_name, reason=reason, actor=_actor())
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    _show_move(spec, move)


@main.group("registry")
def registry_group() -> None:
    """Read the model registry."""


@registry_group.command("history")
@click.argument("model")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line instead of text.")
def registry_history_command(model: str, as_json: bool) -> None:
    """Every alias move of registered MODEL, oldest first: by the pipeline's decisions and by hand."""
    try:
        entries = _registry().history(model)
    except RegistryError as error:
        raise click.ClickException(str(error)) from error
    if as_json:
        for entry in entries:
            click.echo(json.dumps(entry))
        return
    click.echo(f"{'at':32} {'action':9} {'move':28} {'by':44} reason")
    for entry in entries:
        move = f"{entry['alias']} -> v{entry['version']}" if entry["version"] else entry["alias"]
        if entry.get("replaced"):
            move += f" (was v{entry['replaced']})"
        click.echo(f"{entry['at']:32} {entry['action']:9} {move:28} {entry['actor']:44} {entry['reason']}")


@main.command("check")
@click.argument("files", nargs=-1, type=click.Path(exists=True))
def check_command(files: tuple[str, ...]) -> None:
    """Validate dataset specs: the bundled ones, those MLOPS_SPECS names and SPEC_FILES. Prints one
    line per problem and exits non-zero when there is any."""
    problems = 0
    try:
        paths = [*bundled_spec_paths(), *spec_files([*extra_spec_locations(), *files])]
    except SpecError as error:
        raise click.ClickException(str(error)) from error
    for path in paths:
        try:
            spec = load_spec(path)
        except SpecError as error:
            problems += len(error.problems)
            for line in error.problems:
                click.echo(line)
            continue
        click.echo(f"{spec.source}: ok ({spec.name}, every {spec.frequency}, {spec.grain.name} partitions)")
    if problems:
        raise click.ClickException(f"{problems} problem(s) in {len(paths)} spec(s)")


@main.group("quarantine")
def quarantine_group() -> None:
    """See and replay the landing files that were quarantined."""


@quarantine_group.command("list")
@dataset_option
@spec_option
def quarantine_list_command(dataset: str, spec_file: str | None) -> None:
    """Every quarantined file version of the dataset, with its reason."""
    spec = _spec(dataset, spec_file)
    with _landing_resources() as ready:
        entries = ready.landing.quarantined(spec)
    click.echo(f"{len(entries)} quarantined file version(s) of {spec.name}")
    for entry in sorted(entries, key=lambda entry: (entry["path"], entry["quarantined_at"])):
        click.echo(f"  {entry['path']}  [{entry['quarantined_at']}, {entry['records']} records]  {entry['reason']}")


@quarantine_group.command("replay")
@click.argument("dataset")
@spec_option
@click.option("--day", type=click.DateTime(formats=["%Y-%m-%d"]), help="Only the files of this partition.")
def quarantine_replay_command(dataset: str, spec_file: str | None, day) -> None:
    """Put DATASET's quarantined files back in the landing zone (after fixing the spec, say), where
    the arrival sensor ingests them again. Of several rejected versions of one path the latest
    goes back; the older ones stay in quarantine."""
    spec = _spec(dataset, spec_file)
    partition = spec.grain.floor(day.date()).isoformat() if day else None
    with _landing_resources() as ready:
        entries = [
            entry for entry in ready.landing.quarantined(spec) if partition is None or entry["event_date"] == partition
        ]
        latest: dict[str, dict] = {}
        for entry in sorted(entries, key=lambda entry: entry["quarantined_at"]):
            latest[entry["path"]] = entry
        replayed = []
        for path, entry in sorted(latest.items()):
            if ready.landing.replay(entry):
                replayed.append(path)
                click.echo(f"replayed {path} (quarantined {entry['quarantined_at']}: {entry['reason'][:120]})")
            else:
                click.echo(f"kept {path} in quarantine: a newer file lands under that path")
        _announce(spec, ready, replayed, "quarantine replay")
    older = len(entries) - len(latest)
    click.echo(
        f"{len(replayed)} file(s) back in the landing zone"
        + (f"; {older} older rejected version(s) stay in quarantine" if older else "")
    )


@main.group("history")
def history_group() -> None:
    """Load a dataset's history."""


@history_group.command("load")
@dataset_option
@spec_option
@click.option(
    "--start", type=click.DateTime(formats=["%Y-%m-%d"]), help="First partition (default: the first with files)."
)
@click.option("--end", type=click.DateTime(formats=["%Y-%m-%d"]), help="Last partition (default: the last with files).")
@click.option(
    "--models/--no-models", default=True, show_default=True, help="Train, decide, score and monitor each partition."
)
def history_load_command(dataset: str, spec_file: str | None, start, end, models: bool) -> None:
    """Ingest every landing file of a range in one run (bronze, silver and gold each over the whole
    range), then run the models partition by partition, oldest first."""
    spec = _spec(dataset, spec_file)
    instance = _instance()
    resources = build_resources()
    with dg.build_resources({"landing": resources["landing"]}) as ready:
        found = landed_range(ready.landing, spec)
    if found is None and (start is None or end is None):
        raise click.ClickException(f"no landing files of {spec.name} under {spec.landing.prefix}/: nothing to load")
    first = start.date() if start else found[0]
    last = end.date() if end else found[1]
    if last < first:
        raise click.BadParameter(f"--end {last} is before --start {first}", param_hint="--end")
    if first < spec.start_date:
        raise click.BadParameter(f"{first} is before the spec's start_date {spec.start_date}", param_hint="--start")
    load = load_history(spec, resources, instance, first, last, models=models, progress=click.echo)
    if load.failed:
        raise click.ClickException(f"{len(load.failed)} part(s) failed: {', '.join(load.failed[:10])}")
    click.echo(f"history: {spec.name} {load.first}..{load.last} loaded ({load.model_partitions} model partition(s))")


def supervise(commands: list[list[str]], env: dict[str, str]) -> int:
    """Run ``commands`` as children until the first of them ends, then stop the others; SIGTERM
    and SIGHUP are passed on to every child, so none outlives the services this process
    started for them (Ctrl-C reaches the whole process group by itself). Returns the exit
    code of the child that ended first."""
    children: list[subprocess.Popen[bytes]] = []

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            child.send_signal(signum)

    previous = {number: signal.signal(number, forward) for number in (signal.SIGTERM, signal.SIGHUP)}
    try:
        children.extend(subprocess.Popen(command, env=env) for command in commands)
        while (ended := next((child for child in children if child.poll() is not None), None)) is None:
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                continue
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            while True:
                try:
                    child.wait()
                    break
                except KeyboardInterrupt:
                    continue
        return ended.returncode
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


LOOPBACK = "127.0.0.1"


def dev_command_line(port: int, host: str = LOOPBACK) -> list[str]:
    """The ``dagster dev`` command ``mlops dev`` runs: the UI on ``host``:``port``."""
    return [sys.executable, "-m", "dagster", "dev", "-w", "workspace.yaml", "--host", host, "-p", str(port)]


def listen_command_line(port: int) -> list[str]:
    """The ``mlops listen`` command ``mlops dev`` runs beside the UI on ``port``."""
    return [sys.executable, "-c", "from mlops_assets.console import run; run()", "listen", "--port", str(port)]


@main.command("listen")
@click.option("--host", default=LOOPBACK, show_default=True, help="Host of the Dagster webserver to launch runs on.")
@click.option("--port", type=int, default=3000, show_default=True, help="Port of the Dagster webserver.")
def listen_command(host: str, port: int) -> None:
    """Take landing events from the queue as they arrive and launch a bronze run for each new
    file version through the Dagster webserver (MLOPS_ARRIVALS=listen). Runs until stopped."""
    profile = build_profile()
    if profile.arrivals != "listen":
        raise click.UsageError(f"MLOPS_ARRIVALS is {profile.arrivals!r}: the listener serves MLOPS_ARRIVALS=listen")
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda _signum, _frame: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    resources = {name: profile.resources[name] for name in ("landing", "event_queue")}
    if not os.environ.get("DAGSTER_HOME"):
        raise click.UsageError("DAGSTER_HOME is not set: the listener needs the instance the webserver uses")
    with dg.build_resources(resources) as ready, dg.DagsterInstance.get() as instance:
        listener = QueueListener(location_specs(), ready.landing, ready.event_queue, instance, Webserver(host, port))
        click.echo(f"Listening on {ready.event_queue.queue}; runs go to the webserver at {host}:{port}.")
        listener.serve(stop)


@main.command("dev")
@click.option("--profile", type=click.Choice(["local", "azurite"]), default="local", show_default=True)
@click.option(
    "--arrivals",
    envvar="MLOPS_ARRIVALS",
    type=click.Choice(["poll", "queue", "listen"]),
    help="How arrivals are noticed: the flag, else MLOPS_ARRIVALS, else listen on azurite (local polls only).",
)
@click.option("--port", type=int, default=3000, show_default=True, help="Port of the Dagster UI.")
@click.option(
    "--host",
    default=LOOPBACK,
    show_default=True,
    help=(
        "Address the Dagster UI listens on. The default answers this machine only; the UI has no "
        "login and can launch runs, so open it to others (--host 0.0.0.0) only on a network you trust."
    ),
)
def dev_command(profile: str, arrivals: str | None, port: int, host: str) -> None:
    """Run the Dagster UI and daemon; with --profile azurite, start Azurite and an MLflow
    server first (state under MLOPS_HOME) and stop them afterwards.

    Everything listens on 127.0.0.1 unless --host says otherwise for the UI; Azurite and the
    MLflow server always stay on loopback."""
    command = dev_command_line(port, host)
    if profile == "local":
        if arrivals not in (None, "poll"):
            raise click.UsageError(
                f"the local profile notices arrivals by polling only: use --profile azurite for {arrivals}"
            )
        supervise([command], env={**os.environ, "MLOPS_PROFILE": "local"})
        return
    home = mlops_home()
    with run_azurite(home / "azurite") as azurite, run_mlflow_server(home / "mlflow-server", azurite) as tracking:
        environment = {
            **os.environ,
            **azurite.environment(),
            "MLOPS_PROFILE": "azurite",
            "MLOPS_ARRIVALS": arrivals or "listen",
            "MLFLOW_TRACKING_URI": tracking,
        }
        click.echo(f"Azurite blob {azurite.blob_url}, queue {azurite.queue_url}; MLflow {tracking}")
        click.echo("In another shell, with the same variables, simulate arrivals:")
        for name in ("MLOPS_PROFILE", "MLOPS_ARRIVALS", "MLFLOW_TRACKING_URI", *azurite.environment()):
            click.echo(f"  export {name}='{environment[name]}'")
        click.echo("  .venv/bin/mlops simulate --start $(date -u +%F) --days 1")
        listener = [listen_command_line(port)] if environment["MLOPS_ARRIVALS"] == "listen" else []
        supervise([command, *listener], env=environment)
