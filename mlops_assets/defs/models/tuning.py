"""The opt-in hyper-parameter search for the forecaster.

A user materializes ``models/<dataset>_tuning`` by hand when they want the forecaster's
hyper-parameters revisited. It runs the spec's Optuna trials over its search space on
the latest gold days, each trial trained and scored exactly as the daily forecaster is
(the same time split and hold-out), and records the best parameters found, with the
spec's own parameters' hold-out error on the same split for comparison. The forecaster
declares the search's result as an input, and uses its parameters when they beat the spec's.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dagster as dg
import mlflow
import optuna

from mlops_assets.datasets.keys import DatasetKeys
from mlops_assets.datasets.spec import DatasetSpec, SearchRange
from mlops_assets.defs.models.training import train_forecaster
from mlops_assets.digests import short_digest
from mlops_assets.provenance import git_commit
from mlops_assets.resources.delta_lake import DeltaLake
from mlops_assets.resources.mlflow_tracking import DAGSTER_TAGS, MlflowTracking, log_table_input

TUNING_CODE_VERSION = "tuning-1"


@dataclass(frozen=True)
class TuningResult:
    """The best hyper-parameters a search found, with the hold-out MAE of the forecaster trained
    with them and with the spec's own parameters, on the same split."""

    best_params: dict[str, Any]
    best_mae: float
    baseline_mae: float

    @property
    def better_params(self) -> dict[str, Any] | None:
        """The parameters found, if they beat the spec's own; else None."""
        return dict(self.best_params) if self.best_mae < self.baseline_mae else None

    def to_json(self) -> dict[str, Any]:
        return {"best_params": self.best_params, "best_mae": self.best_mae, "baseline_mae": self.baseline_mae}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> "TuningResult":
        return cls(
            best_params=dict(value["best_params"]),
            best_mae=float(value["best_mae"]),
            baseline_mae=float(value["baseline_mae"]),
        )


def suggest(trial: optuna.Trial, space: Mapping[str, SearchRange]) -> dict[str, Any]:
    """One point of the search space, as Optuna's sampler proposes it for ``trial``."""
    params: dict[str, Any] = {}
    for name, param in space.items():
        if param.kind == "categorical":
            params[name] = trial.suggest_categorical(name, list(param.choices))
        elif param.kind == "int":
            params[name] = trial.suggest_int(name, int(param.low), int(param.high), log=param.log)
        elif param.kind == "float":
            params[name] = trial.suggest_float(name, float(param.low), float(param.high), log=param.log)
        else:
            raise ValueError(f"unknown kind {param.kind!r} of search parameter {name!r}")
    return params


def with_params(spec: DatasetSpec, params: Mapping[str, Any]) -> DatasetSpec:
    """``spec`` whose forecaster uses ``params`` on top of the spec's own hyper-parameters."""
    return spec.model_copy(update={"model": spec.model.model_copy(update={"params": {**spec.model.params, **params}})})


def build_tuning_asset(spec: DatasetSpec) -> dg.AssetsDefinition:
    """The hyper-parameter search of ``spec``'s forecaster; ``spec`` must declare a ``tuning`` section."""
    if spec.tuning is None:
        raise ValueError(f"{spec.source}: the {spec.name} spec declares no tuning section")
    tuning = spec.tuning
    keys = DatasetKeys(spec)
    code_version = spec.code_version(TUNING_CODE_VERSION, "features", "model", "tuning")
    window_days = spec.model.window_partitions
    space = [{"name": name, "kind": param.kind, **param.model_dump()} for name, param in tuning.space.items()]

    @dg.asset(
        key=keys.tuning,
        deps=[dg.AssetDep(keys.gold, partition_mapping=dg.AllPartitionMapping())],
        group_name="models",
        kinds={"optuna", "mlflow", "scikit-learn"},
        code_version=code_version,
        io_manager_key="records",
        description=(
            f"The best hyper-parameters found for the {spec.model.family} forecaster of {spec.name} by "
            f"{tuning.trials} Optuna trials over {', '.join(tuning.space)}, each "
            f"trained on the latest {window_days} gold {spec.grain.noun}(s) and scored on the same held-out rows as "
            "the daily forecaster. Materialize it by hand; the next trainings use the parameters it found."
        ),
    )
    def tuning_asset(
        context: dg.AssetExecutionContext, lake: DeltaLake, mlflow_tracking: MlflowTracking
    ) -> dg.Output[TuningResult]:
        uri = lake.table_uri(*keys.table(keys.gold))
        days = lake.days(uri)[-window_days:]
        if not days:
            raise dg.Failure(f"{uri} holds no day yet: materialize {keys.gold.to_user_string()} first.")
        gold = lake.read_days(uri, days).require(keys.gold)
        window = (days[0], days[-1])
        baseline = train_forecaster(gold.rows, spec, window=window)
        inputs = [{"uri": gold.uri, "version": gold.version, "days": [day.isoformat() for day in days]}]
        commit = git_commit()

        with mlflow_tracking.start_run(
            context,
            experiment=spec.name,
            tags={"mlops.code_version": code_version, "mlops.git_commit": commit},
        ) as parent:
            mlflow.log_params(
                {
                    "family": spec.model.family,
                    "seed": spec.model.seed,
                    "training_window": window_days,
                    "trials": tuning.trials,
                    "sampler": "TPESampler",
                }
            )
            mlflow.log_metric("baseline_mae", baseline.metrics["mae"])
            log_table_input(gold.rows, gold, keys.gold.to_user_string(), spec.target_column, context="tuning")
            origin = {tag: parent.data.tags[tag] for tag in DAGSTER_TAGS}

            def objective(trial: optuna.Trial) -> float:
                params = suggest(trial, tuning.space)
                with mlflow.start_run(
                    experiment_id=parent.info.experiment_id,
                    run_name=f"trial-{trial.number}",
                    nested=True,
                    tags={**origin, "optuna.trial": str(trial.number)},
                ) as child:
                    outcome = train_forecaster(gold.rows, with_params(spec, params), window=window)
                    mlflow.log_params(params)
                    mlflow.log_metrics(outcome.metrics)
                trial.set_user_attr("mlflow_run_id", child.info.run_id)
                context.log.info(f"trial {trial.number}: mae {outcome.metrics['mae']:.5f} with {params}")
                return outcome.metrics["mae"]

            study = optuna.create_study(
                study_name=f"{spec.name}-{context.run.run_id}",
                direction="minimize",
                sampler=optuna.samplers.TPESampler(seed=spec.model.seed),
            )
            study.optimize(objective, n_trials=tuning.trials)
            best = study.best_trial
            mlflow.log_params({f"best_{name}": value for name, value in best.params.items()})
            mlflow.log_metric("best_mae", best.value)
            mlflow.set_tag("mlops.best_trial_run_id", best.user_attrs["mlflow_run_id"])
            mlflow.log_dict(
                {"base_params": dict(spec.model.params), "search_space": space, "best_params": best.params},
                "tuning.json",
            )

        run_url = mlflow_tracking.run_url(parent)
        baseline_mae = baseline.metrics["mae"]
        metadata = {
            "best_params": dg.MetadataValue.json(best.params),
            "best_mae": dg.MetadataValue.float(best.value),
            "baseline_mae": dg.MetadataValue.float(baseline_mae),
            "mae_gain": dg.MetadataValue.float((baseline_mae - best.value) / baseline_mae if baseline_mae else 0.0),
            "trials": dg.MetadataValue.int(len(study.trials)),
            "best_trial": dg.MetadataValue.int(best.number),
            "search_space": dg.MetadataValue.json(space),
            "base_params": dg.MetadataValue.json({"family": spec.model.family, **spec.model.params}),
            "training_window": dg.MetadataValue.text(f"{days[0].isoformat()}..{days[-1].isoformat()}"),
            "input_tables": dg.MetadataValue.json(inputs),
            "gold_version": dg.MetadataValue.int(gold.version),
            "holdout_rows": dg.MetadataValue.int(baseline.holdout_rows),
            "holdout_start": dg.MetadataValue.timestamp(baseline.holdout_start.to_pydatetime()),
            "code_version": dg.MetadataValue.text(code_version),
            "git_commit": dg.MetadataValue.text(commit),
            "seed": dg.MetadataValue.int(spec.model.seed),
            "mlflow_run_id": dg.MetadataValue.text(parent.info.run_id),
            **({"mlflow_run": dg.MetadataValue.url(run_url)} if run_url else {}),
        }
        found = json.dumps(best.params, sort_keys=True, default=str)
        result = TuningResult(best_params=dict(best.params), best_mae=float(best.value), baseline_mae=baseline_mae)
        return dg.Output(result, metadata=metadata, data_version=dg.DataVersion(short_digest(found, 20)))

    return tuning_asset
