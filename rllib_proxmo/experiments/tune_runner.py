"""Shared machinery of the paper's experiment scripts in ``tuned_examples/``: configs, Tune, MLflow.

A script's command line is parsed by :mod:`rllib_proxmo.experiments.tune_cli` (its
:class:`~rllib_proxmo.experiments.tune_cli.Experiment`, flags and ``main``), which
imports this module, and with it Ray, torch and MLflow, only once the arguments are
known; :func:`run` then executes them.

With Tune, estimators x grid values x seeds become one ``tune.grid_search`` each and
run through :func:`ray.rllib.examples.utils.run_rllib_example_script_experiment`
(stop criterion: ``--stop-iters`` iterations, or ``--stop-success`` training
success rate; ``--as-test`` checks it reached ``--stop-reward``), which reads the
parsed flags over RLlib's example-script defaults
(:func:`~rllib_proxmo.experiments.tune_cli.rllib_namespace`). That helper fits
text LLM envs with two adjustments made here: Ray is started first with the
repository on the workers' ``PYTHONPATH`` (the helper's own ``ray.init`` is then a
no-op), and the stop criteria are passed explicitly (its default stops on
``episode_return_mean``, which ProxMO results do not carry). With ``--no-tune`` the
grid points run one after the other and nothing is logged to MLflow. Every Tune
trial is recorded in MLflow as the main job records its run (:class:`MLflowTracking`,
:mod:`rllib_proxmo.experiments.tracking`).

The paper's prompt limits (2048 / 4096 tokens) apply at paper scale
(``Scale.prompt_limit``); the history of 2 turns and the invalid-format penalty
0.1 are the LLM wrappers' defaults.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections.abc import Mapping
from typing import Any

import ray
from ray import tune
from ray.rllib.examples.utils import run_rllib_example_script_experiment
from ray.tune.experiment import Trial

from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.experiments.runtime import quiet_framework_output, start_ray
from rllib_proxmo.experiments.scale import Scale, env_configs
from rllib_proxmo.experiments.tables import history_row
from rllib_proxmo.experiments.tracking import (
    RunTracker,
    default_tracking_uri,
    flatten_params,
    run_tags,
    write_run_files,
)
from rllib_proxmo.experiments.tune_cli import Experiment, parse_args, rllib_namespace

__all__ = [
    "Experiment",
    "MLflowTracking",
    "apply_point",
    "build_config",
    "grid_points",
    "parse_args",
    "run",
    "search_space",
    "stop_criteria",
    "tracking_callbacks",
]


def build_config(experiment: Experiment, args: argparse.Namespace) -> ProxMOConfig:
    """The :class:`ProxMOConfig` of the experiment's first grid point (no Tune search spaces)."""
    scale: Scale = args.scale
    env_config, evaluation_env_config = env_configs(
        experiment.env, scale, None if args.data_dir is None else {"data_dir": args.data_dir}
    )
    config = (
        ProxMOConfig()
        .environment(experiment.env, env_config=env_config)
        .env_runners(num_gpus_per_env_runner=args.num_gpus_per_env_runner)
        .rl_module(
            model_config={
                "model_name_or_path": args.model,
                "dtype": scale.dtype,
                "max_new_tokens": scale.max_new_tokens,
                "max_prompt_tokens": scale.prompt_limit(experiment.env),
                "temperature": 1.0,
                "eval_temperature": scale.eval_temperature,
                "system_prompt": scale.system_prompt,
                "engine": args.engine,
            }
        )
        .training(
            estimator=args.estimators[0],
            tasks_per_iteration=scale.tasks_per_iteration,
            group_size=scale.group_size,
            max_turns=scale.max_turns,
            minibatch_size=scale.minibatch_size,
            micro_batch_size=args.micro_batch_size,
            **{name: values[0] for name, values in experiment.grid.items()},
        )
        .debugging(seed=args.seeds[0])
    )
    # RLlib's runner applies the counts too, but only after validate() ran here.
    if args.num_env_runners is not None:
        config.env_runners(num_env_runners=args.num_env_runners)
    if args.num_learners is not None:
        config.learners(num_learners=args.num_learners)
    config.learners(sharding=args.sharding)
    if scale.evaluation_interval:
        config.evaluation(
            evaluation_interval=scale.evaluation_interval,
            evaluation_num_tasks=scale.evaluation_num_tasks,
            evaluation_config={"env_config": evaluation_env_config},
        )
    return config


def grid_points(experiment: Experiment, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every (estimator, grid values, seed) combination as ``{setting: value}``."""
    axes = {"estimator": args.estimators, **experiment.grid, "seed": args.seeds}
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def apply_point(config: ProxMOConfig, point: Mapping[str, Any]) -> ProxMOConfig:
    """``config`` with a grid point's settings (plain values or Tune search spaces)."""
    training = {key: value for key, value in point.items() if key != "seed"}
    config = config.training(**training)
    if "seed" in point:
        config = config.debugging(seed=point["seed"])
    return config


def search_space(experiment: Experiment, args: argparse.Namespace, config: ProxMOConfig) -> ProxMOConfig:
    """``config`` with one ``tune.grid_search`` per swept setting (estimators, grid, seeds)."""
    axes = {"estimator": args.estimators, **experiment.grid, "seed": args.seeds}
    return apply_point(config, {key: tune.grid_search(list(values)) for key, values in axes.items()})


class MLflowTracking(tune.Callback):
    """One MLflow run per Tune trial, recorded as the main job records its run.

    Every trial gets a :class:`~rllib_proxmo.experiments.tracking.RunTracker` named
    after the trial, with the trial's resolved config as params and
    :func:`~rllib_proxmo.experiments.tracking.run_tags` (estimator, seed and swept
    settings from that config). Each result is logged at step ``training_iteration``.
    When the trial ends, its learning curve and (if it was evaluated) its last
    evaluation table are stored as artifacts, and its last checkpoint like the main
    job's (copied when at most ``checkpoint_max_bytes``, else tagged
    ``checkpoint_path``); the run ends FINISHED or FAILED, or KILLED when the
    experiment stopped before the trial did (e.g. Ctrl-C).

    Args:
        tracking_uri: MLflow tracking URI.
        experiment_name: MLflow experiment of all trials.
        scale: ``Scale.name`` of the experiment (a tag).
        checkpoint_max_bytes: Largest checkpoint copied into the artifacts.
    """

    def __init__(self, tracking_uri: str, experiment_name: str, scale: str, checkpoint_max_bytes: int) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.scale = scale
        self.checkpoint_max_bytes = checkpoint_max_bytes
        self._trackers: dict[Trial, RunTracker] = {}
        self._histories: dict[Trial, list[dict[str, float]]] = {}
        self._evaluations: dict[Trial, dict[str, float]] = {}

    def on_trial_start(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        if trial in self._trackers:  # a trial restarted after a failure keeps its run
            return
        tracker = RunTracker(self.tracking_uri, self.experiment_name, str(trial), run_tags(trial.config, self.scale))
        tracker.log_params(flatten_params(trial.config))
        self._trackers[trial] = tracker
        self._histories[trial] = []

    def on_trial_result(self, iteration: int, trials: list[Trial], trial: Trial, result: dict, **info: Any) -> None:
        self._trackers[trial].log_result(result)
        self._histories[trial].append(history_row(result["training_iteration"], result))
        evaluation = result.get("evaluation", {}).get("env_runners")
        if evaluation:
            self._evaluations[trial] = evaluation

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial, **info: Any) -> None:
        self._end(trial, "FAILED")

    def on_experiment_end(self, trials: list[Trial], **info: Any) -> None:
        for trial in list(self._trackers):
            self._end(trial, "KILLED")

    def _end(self, trial: Trial, status: str) -> None:
        tracker = self._trackers.pop(trial, None)
        if tracker is None:
            return
        history = self._histories.pop(trial)
        evaluation = self._evaluations.pop(trial, None)
        estimator = str(trial.config["estimator"])
        env = str(trial.config["env"])
        title = f"{estimator} on {env} ({trial.config['_model_config']['model_name_or_path']})"
        with tempfile.TemporaryDirectory() as directory:
            for path in write_run_files(directory, history, evaluation, env=env, estimator=estimator, title=title):
                tracker.log_artifact(path)
        if trial.checkpoint is not None:
            tracker.log_checkpoint(trial.checkpoint.path, max_bytes=self.checkpoint_max_bytes)
        tracker.finish(status)


def tracking_callbacks(args: argparse.Namespace) -> list[MLflowTracking]:
    """The MLflow callback of ``--tracking-uri`` (default store when not given); none under ``--no-mlflow``."""
    if args.no_mlflow:
        return []
    return [
        MLflowTracking(
            args.tracking_uri or default_tracking_uri(),
            args.experiment_name,
            args.scale.name,
            checkpoint_max_bytes=int(args.checkpoint_artifact_max_mb * 2**20),
        )
    ]


def stop_criteria(args: argparse.Namespace) -> dict[str, float]:
    """``--stop-iters`` iterations, or ``--stop-success`` training success rate when given."""
    stop: dict[str, float] = {"training_iteration": args.stop_iters}
    if args.stop_success is not None:
        stop["env_runners/success_rate"] = args.stop_success
    return stop


def run(experiment: Experiment, args: argparse.Namespace) -> Any:
    """Run every grid point: one Tune search, or (``--no-tune``) one after the other.

    Every grid point's config is validated before Ray starts, so a bad estimator or
    setting fails at once with the config's ``ValueError`` instead of inside a trial.

    Returns Tune's ``ResultGrid``, or with ``--no-tune`` the last result dict of
    each grid point in :func:`grid_points` order.
    """
    quiet_framework_output()
    config = build_config(experiment, args)
    rllib_args = rllib_namespace(args)
    point_configs = [apply_point(config.copy(copy_frozen=False), point) for point in grid_points(experiment, args)]
    for point_config in point_configs:
        point_config.validate()
    start_ray(num_cpus=args.num_cpus or None)
    if args.no_tune:
        results = []
        for point, point_config in zip(grid_points(experiment, args), point_configs):
            print(f"--no-tune: {point}")
            results.append(
                run_rllib_example_script_experiment(
                    point_config, rllib_args, stop=stop_criteria(args), keep_ray_up=True
                )
            )
        ray.shutdown()
        return results
    return run_rllib_example_script_experiment(
        search_space(experiment, args, config),
        rllib_args,
        stop=stop_criteria(args),
        success_metric={"env_runners/success_rate": args.stop_reward},
        tune_callbacks=tracking_callbacks(args),
    )
