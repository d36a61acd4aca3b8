"""Shared machinery of the paper's experiment scripts in ``tuned_examples/``.

Every script describes one :class:`Experiment` (environment, estimators, an optional
hyperparameter grid) and calls :func:`main`. The command line is RLlib's example
convention (:func:`ray.rllib.examples.utils.add_rllib_example_script_args`:
``--stop-iters``, ``--num-env-runners``, ``--num-learners``, ``--no-tune``, ...) plus:

- ``--cpu``: the CPU-sized variant (embedded SmolLM2-135M, generated games or
  catalogue, 2 tasks x 4 rollouts, 3 turns of at most 32 new tokens, 2 iterations)
  instead of the paper's GPU settings (DESIGN.md §8: 16 tasks x 8 rollouts,
  150 iterations, at most 50 / 15 steps, responses of at most 512 tokens);
- ``--model``: Hugging Face id, local directory or embedded alias;
- ``--seeds``: the seeds every grid point is run with;
- ``--tracking-uri`` / ``--experiment-name``: the MLflow store every Tune trial logs
  its parameters, per-iteration metrics and tags (estimator, env, model, seed, git commit) to.

With Tune, estimators x grid values x seeds become one ``tune.grid_search`` each and
run through :func:`ray.rllib.examples.utils.run_rllib_example_script_experiment`
(stop criterion: ``--stop-iters`` iterations, or ``--stop-success`` training
success rate; ``--as-test`` checks it reached ``--stop-reward``). That helper fits
text LLM envs with two adjustments made here: Ray is started first with the
repository on the workers' ``PYTHONPATH`` (the helper's own ``ray.init`` is then a
no-op), and the stop criteria are passed explicitly (its default stops on
``episode_return_mean``, which ProxMO results do not carry). With ``--no-tune`` the
grid points run one after the other and nothing is logged to MLflow.

The paper's prompt limits (2048 / 4096 tokens) are not applied: the policy module
has no prompt-length setting; the history of 2 turns and the invalid-format penalty
0.1 are the LLM wrappers' defaults.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.rllib.examples.utils import add_rllib_example_script_args, run_rllib_example_script_experiment
from ray.tune.experiment import Trial

from envs import WEBSHOP
from rllib_proxmo.advantages import ADVANTAGE_HYPERPARAMETERS
from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.experiments.plots import plot_learning_curve
from rllib_proxmo.experiments.runtime import start_ray
from rllib_proxmo.experiments.scale import CPU, EVALUATION_SPLITS, PAPER, Scale, env_configs
from rllib_proxmo.experiments.tables import evaluation_table, history_row, write_evaluation_table
from rllib_proxmo.experiments.tracking import default_tracking_uri, git_commit

#: Training settings a grid may sweep: the credit-assignment hyperparameters.
SWEEPABLE = ADVANTAGE_HYPERPARAMETERS
#: Run settings written as MLflow tags on every trial (estimator, seed, swept settings).
TAGGED_SETTINGS = ("estimator", "seed", *SWEEPABLE)


@dataclass(frozen=True)
class Experiment:
    """One experiment of the paper: an environment, estimators and an optional grid.

    Attributes:
        name: Default MLflow experiment name.
        env: ``"ALFWorld-v0"`` or ``"WebShop-v0"``.
        estimators: Estimators compared (``ProxMOConfig.training(estimator=...)``).
        grid: Training settings swept (one ``tune.grid_search`` each), e.g.
            ``{"alpha": [1.0, 2.0, 4.0]}``.
        seeds: Default ``--seeds``.
        description: What the script reproduces, its hardware and time (the
            script's docstring); shown by ``--help``.
    """

    name: str
    env: str
    estimators: tuple[str, ...]
    grid: Mapping[str, Sequence[float]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""

    def __post_init__(self) -> None:
        if self.env not in EVALUATION_SPLITS:
            raise ValueError(f"env must be one of {sorted(EVALUATION_SPLITS)}, got {self.env!r}")
        if not self.estimators:
            raise ValueError(f"experiment {self.name!r} names no estimator")
        unknown = sorted(set(self.grid) - set(SWEEPABLE))
        if unknown:
            raise ValueError(f"grid keys {unknown} are not sweepable; choose from {list(SWEEPABLE)}")


def make_parser(experiment: Experiment) -> argparse.ArgumentParser:
    """RLlib's example-script arguments plus this project's (see the module docstring)."""
    parser = argparse.ArgumentParser(
        description=experiment.description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_rllib_example_script_args(parser, default_reward=1.0)
    parser.set_defaults(stop_iters=None)
    parser.add_argument("--cpu", action="store_true", help="CPU-sized variant (SmolLM2-135M, generated data)")
    parser.add_argument("--model", help=f"model id, directory or alias (default {PAPER.model}; --cpu: {CPU.model})")
    parser.add_argument("--data-dir", help="ALFWorld / WebShop data folder of the paper-scale run")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(experiment.seeds))
    parser.add_argument("--estimators", nargs="+", default=list(experiment.estimators), help="estimators to compare")
    parser.add_argument(
        "--stop-success", type=float, help="also stop a trial once its training success rate reaches this"
    )
    parser.add_argument("--num-gpus-per-env-runner", type=float, default=0.0)
    parser.add_argument(
        "--tracking-uri",
        default=default_tracking_uri(),
        help="MLflow store every Tune trial logs to (default: $MLFLOW_TRACKING_URI, else ./mlruns/mlflow.db)",
    )
    parser.add_argument("--experiment-name", default=experiment.name, help="MLflow experiment name")
    return parser


def parse_args(experiment: Experiment, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; the scale-dependent defaults are filled in.

    Raises ``SystemExit`` (argparse's error) for a WebShop paper run without
    ``--data-dir`` (the real catalogue is not shipped) and for ``--as-test`` with
    ``--no-tune``.
    """
    parser = make_parser(experiment)
    args = parser.parse_args(argv)
    scale = CPU if args.cpu else PAPER
    args.scale = scale
    args.model = args.model or scale.model
    if args.stop_iters is None:
        args.stop_iters = scale.iterations
    if experiment.env == WEBSHOP and not args.cpu and args.data_dir is None:
        parser.error("the paper-scale WebShop run needs --data-dir (folder of the original WebShop JSON files)")
    if args.no_tune and args.as_test:
        parser.error("--as-test needs Tune (drop --no-tune)")
    return args


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
                "eval_temperature": 0.4,
            }
        )
        .training(
            estimator=args.estimators[0],
            tasks_per_iteration=scale.tasks_per_iteration,
            group_size=scale.group_size,
            max_turns=scale.max_turns,
            micro_batch_size=scale.micro_batch_size,
            **{name: values[0] for name, values in experiment.grid.items()},
        )
        .debugging(seed=args.seeds[0])
    )
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


class TaggingMLflowLoggerCallback(MLflowLoggerCallback):
    """MLflow logger that also tags each trial's run and stores its artifacts.

    The fixed ``tags`` (env, model, scale, ...) go on every run; the trial's
    estimator, seed and swept hyperparameters are added from its resolved config so
    runs can be grouped by estimator without parsing parameters. When a trial ends,
    its learning-curve PNG and (if it was evaluated) its evaluation table (CSV and
    Markdown) are stored as artifacts, and its last checkpoint's path as the tag
    ``checkpoint_path`` (checkpoints stay in Tune's storage: they are GBs for LLMs).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._histories: dict[Trial, list[dict[str, float]]] = {}
        self._evaluations: dict[Trial, dict[str, float]] = {}

    def log_trial_start(self, trial: Trial) -> None:
        shared = self.tags
        trial_tags = {key: str(trial.config[key]) for key in TAGGED_SETTINGS if key in trial.config}
        self.tags = {**shared, **trial_tags}
        try:
            super().log_trial_start(trial)
        finally:
            self.tags = shared

    def log_trial_result(self, iteration: int, trial: Trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, result)
        self._histories.setdefault(trial, []).append(history_row(result["training_iteration"], result))
        evaluation = result.get("evaluation", {}).get("env_runners")
        if evaluation:
            self._evaluations[trial] = evaluation

    def log_trial_end(self, trial: Trial, failed: bool = False) -> None:
        """Before the run closes: its learning curve, evaluation table and checkpoint path."""
        run_id = self._trial_runs[trial]
        history = self._histories.pop(trial, [])
        evaluation = self._evaluations.pop(trial, None)
        with tempfile.TemporaryDirectory() as directory:
            if history:
                title = (
                    f"{trial.config.get('estimator', '')} on {self.tags.get('env', '')} ({self.tags.get('model', '')})"
                )
                plot_learning_curve(history, Path(directory) / "learning_curve.png", title, evaluation)
            if evaluation:
                row = evaluation_table(self.tags.get("env", ""), evaluation)
                write_evaluation_table(row, str(trial.config.get("estimator", "")), Path(directory))
            self.mlflow_util.save_artifacts(run_id=run_id, dir=directory)
        if trial.checkpoint is not None:
            self.mlflow_util._get_client().set_tag(run_id, "checkpoint_path", trial.checkpoint.path)
        super().log_trial_end(trial, failed)


def mlflow_callback(experiment: Experiment, args: argparse.Namespace) -> TaggingMLflowLoggerCallback:
    """The Tune callback logging params, per-iteration metrics and tags to ``--tracking-uri``."""
    if args.tracking_uri.startswith("sqlite:///"):
        Path(args.tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    tags = {
        "env": experiment.env,
        "model": args.model,
        "scale": args.scale.name,
        "git_commit": git_commit(),
    }
    return TaggingMLflowLoggerCallback(
        tracking_uri=args.tracking_uri, experiment_name=args.experiment_name, tags=tags, save_artifact=False
    )


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
    config = build_config(experiment, args)
    point_configs = [apply_point(config.copy(copy_frozen=False), point) for point in grid_points(experiment, args)]
    for point_config in point_configs:
        point_config.validate()
    start_ray(num_cpus=args.num_cpus or None)
    if args.no_tune:
        results = []
        for point, point_config in zip(grid_points(experiment, args), point_configs):
            print(f"--no-tune: {point}")
            results.append(
                run_rllib_example_script_experiment(point_config, args, stop=stop_criteria(args), keep_ray_up=True)
            )
        ray.shutdown()
        return results
    return run_rllib_example_script_experiment(
        search_space(experiment, args, config),
        args,
        stop=stop_criteria(args),
        success_metric={"env_runners/success_rate": args.stop_reward},
        tune_callbacks=[mlflow_callback(experiment, args)],
    )


def main(experiment: Experiment, argv: Sequence[str] | None = None) -> Any:
    """Parse the command line (before any env exists: the ALFWorld stack rewrites
    ``sys.argv``) and run the experiment."""
    return run(experiment, parse_args(experiment, argv))
