"""Command line of the paper's experiment scripts in ``tuned_examples/``.

Every script describes one :class:`Experiment` (environment, estimators, an optional
hyperparameter grid) and calls :func:`main`, which parses the command line before
anything heavy exists: this module imports neither Ray nor torch nor MLflow and builds
no env or model, so ``--help`` answers in a second and the ALFWorld stack (which
rewrites ``sys.argv``) is only imported after parsing. :func:`main` then hands the
parsed arguments to :func:`rllib_proxmo.experiments.tune_runner.run`.

Flags:

- RLlib's example-script flags that apply to these experiments, with the names and
  defaults of :func:`ray.rllib.examples.utils.add_rllib_example_script_args`
  (:data:`RLLIB_FLAGS`): ``--stop-iters`` (default: the scale's iterations),
  ``--stop-reward`` (the success rate ``--as-test`` must reach), ``--as-test``,
  ``--no-tune``, ``--num-env-runners``, ``--num-learners``, ``--num-gpus-per-learner``,
  ``--num-cpus``, ``--max-concurrent-trials``, ``--checkpoint-freq``,
  ``--checkpoint-at-end`` and ``--verbose``. RLlib's other example flags (``--algo``,
  ``--env``, ``--framework``, ``--num-agents``, ``--evaluation-*``, ``--wandb-*``, ...)
  do not apply (the algorithm, env and evaluation are the experiment's) and are
  refused; :func:`rllib_namespace` gives RLlib's example runner its defaults for them.
- ``--cpu``: the CPU-sized variant (embedded SmolLM2-135M, generated games or
  catalogue, 2 tasks x 4 rollouts, 3 turns of at most 32 new tokens, 2 iterations)
  instead of the paper's GPU settings (``docs/design.md`` §6: 16 tasks x 8 rollouts,
  150 iterations, at most 50 / 15 steps, responses of at most 512 tokens);
- ``--model`` (Hugging Face id, local directory or embedded alias), ``--data-dir``,
  ``--seeds`` (every grid point runs with each), ``--estimators``, ``--baselines`` (``paper``:
  the estimators as named; ``shipped``: ``grpo``, ``gigpo`` and ``proxmo`` replaced by the
  ``*_official`` estimators that run their authors' code, :data:`SHIPPED_VERSION`), ``--stop-success``,
  ``--num-gpus-per-env-runner``, ``--micro-batch-size``, ``--engine`` (``hf`` or ``vllm``: ``model_config["engine"]``),
  ``--sharding`` (``ddp`` or ``fsdp``: ``ProxMOConfig.learners(sharding=...)``; an experiment's
  :attr:`Experiment.paper_defaults` may set it and the other unset flags at paper scale);
- ``--tracking-uri`` / ``--experiment-name`` / ``--checkpoint-artifact-max-mb`` /
  ``--no-mlflow``: the MLflow store every Tune trial is recorded in
  (:func:`rllib_proxmo.experiments.cli.add_tracking_arguments`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from envs import WEBSHOP
from rllib_proxmo.advantages import ADVANTAGE_HYPERPARAMETERS, SHIPPED_VERSION
from rllib_proxmo.algorithm.sharding import DEFAULT_SHARDING
from rllib_proxmo.experiments.cli import (
    add_engine_argument,
    add_sharding_argument,
    add_tracking_arguments,
    positive_int,
)
from rllib_proxmo.experiments.preflight import validate_tune_args
from rllib_proxmo.experiments.scale import CPU, EVALUATION_SPLITS, PAPER

__all__ = ["RLLIB_FLAGS", "SWEEPABLE", "Experiment", "main", "make_parser", "parse_args", "rllib_namespace"]

#: Training settings a grid may sweep: the credit-assignment hyperparameters (MLflow tags of every run).
SWEEPABLE = ADVANTAGE_HYPERPARAMETERS

#: RLlib's example-script flags accepted here: (flag, argparse keywords), RLlib's names and defaults
#: (``--stop-iters`` excepted: its default is the scale's number of iterations).
RLLIB_FLAGS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("--stop-iters", {"type": int, "default": None, "help": "training iterations per trial (default: the scale's)"}),
    (
        "--stop-reward",
        {"type": float, "default": 1.0, "help": "training success rate --as-test must reach (default 1.0)"},
    ),
    ("--as-test", {"action": "store_true", "help": "fail unless every trial reaches --stop-reward"}),
    ("--no-tune", {"action": "store_true", "help": "run the grid points one after the other, without Tune"}),
    ("--num-env-runners", {"type": int, "default": None, "help": "remote env runners (default: ProxMOConfig's)"}),
    ("--num-learners", {"type": int, "default": None, "help": "learners (DDP); default: ProxMOConfig's"}),
    (
        "--num-gpus-per-learner",
        {"type": float, "default": None, "help": "GPUs per learner (default: 1 when the cluster has them, else 0)"},
    ),
    ("--num-cpus", {"type": int, "default": 0, "help": "CPUs Ray may use (default 0: all)"}),
    ("--max-concurrent-trials", {"type": int, "default": None, "help": "Tune trials run at once (default: Tune's)"}),
    ("--checkpoint-freq", {"type": int, "default": 0, "help": "checkpoint every this many iterations (0: never)"}),
    ("--checkpoint-at-end", {"action": "store_true", "help": "checkpoint every trial when it ends"}),
    ("--verbose", {"type": int, "default": 2, "help": "Tune's verbosity (default 2)"}),
)


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
        paper_defaults: Values of flags the command line leaves unset (``--model``,
            ``--num-learners``, ``--sharding``, ...) at paper scale, e.g. a 7B run's model
            and sharded learners; not applied with ``--cpu``.
        description: What the script reproduces, its hardware and time (the
            script's docstring); shown by ``--help``.
    """

    name: str
    env: str
    estimators: tuple[str, ...]
    grid: Mapping[str, Sequence[float]] = field(default_factory=dict)
    seeds: tuple[int, ...] = (0, 1, 2)
    paper_defaults: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if self.env not in EVALUATION_SPLITS:
            raise ValueError(f"env must be one of {sorted(EVALUATION_SPLITS)}, got {self.env!r}")
        if not self.estimators:
            raise ValueError(f"experiment {self.name!r} names no estimator")
        unknown = sorted(set(self.grid) - set(SWEEPABLE))
        if unknown:
            raise ValueError(f"grid keys {unknown} are not sweepable; choose from {list(SWEEPABLE)}")


def make_parser(experiment: Experiment, parents: Sequence[argparse.ArgumentParser] = ()) -> argparse.ArgumentParser:
    """The experiment's parser (see the module docstring); ``parents`` add a script's own flags."""
    parser = argparse.ArgumentParser(
        description=experiment.description, formatter_class=argparse.RawDescriptionHelpFormatter, parents=parents
    )
    rllib = parser.add_argument_group("RLlib example-script flags")
    for flag, keywords in RLLIB_FLAGS:
        rllib.add_argument(flag, **keywords)
    parser.add_argument("--cpu", action="store_true", help="CPU-sized variant (SmolLM2-135M, generated data)")
    parser.add_argument("--model", help=f"model id, directory or alias (default {PAPER.model}; --cpu: {CPU.model})")
    parser.add_argument("--data-dir", help="ALFWorld / WebShop data folder of the paper-scale run")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(experiment.seeds))
    parser.add_argument("--estimators", nargs="+", default=list(experiment.estimators), help="estimators to compare")
    parser.add_argument(
        "--baselines",
        choices=("paper", "shipped"),
        default="paper",
        help="paper: the estimators' equations; shipped: grpo, gigpo, proxmo as their authors' code runs them "
        f"({', '.join(SHIPPED_VERSION.values())}) (default paper)",
    )
    parser.add_argument(
        "--stop-success", type=float, help="also stop a trial once its training success rate reaches this"
    )
    parser.add_argument("--num-gpus-per-env-runner", type=float, default=0.0)
    parser.add_argument(
        "--micro-batch-size",
        type=positive_int,
        help="turns per gradient micro-batch (default: the scale's); lower it to fit the GPU's memory",
    )
    add_engine_argument(parser)
    add_sharding_argument(parser, default=None)
    unsettable = sorted(name for name in experiment.paper_defaults if parser.get_default(name) is not None)
    if unsettable:
        raise ValueError(
            f"experiment {experiment.name!r}: paper_defaults can only fill flags left unset, not {unsettable}"
        )
    add_tracking_arguments(parser.add_argument_group("MLflow tracking of every Tune trial"), experiment.name)
    return parser


def parse_args(
    experiment: Experiment, argv: Sequence[str] | None = None, parents: Sequence[argparse.ArgumentParser] = ()
) -> argparse.Namespace:
    """Parse and check the command line; the scale-dependent defaults are filled in.

    Raises ``SystemExit`` (argparse's error) for a WebShop paper run without
    ``--data-dir`` (the real catalogue is not shipped), for ``--as-test`` with
    ``--no-tune``. What the flags refer to (model, GPUs, cluster) is checked by :func:`main`.
    """
    parser = make_parser(experiment, parents)
    args = parser.parse_args(argv)
    scale = CPU if args.cpu else PAPER
    args.scale = scale
    if not args.cpu:
        for name, value in experiment.paper_defaults.items():
            if getattr(args, name) is None:
                setattr(args, name, value)
    args.model = args.model or scale.model
    args.sharding = args.sharding or DEFAULT_SHARDING
    args.micro_batch_size = args.micro_batch_size or scale.micro_batch_size
    if args.baselines == "shipped":
        args.estimators = [SHIPPED_VERSION.get(name, name) for name in args.estimators]
    if args.stop_iters is None:
        args.stop_iters = scale.iterations
    if experiment.env == WEBSHOP and not args.cpu and args.data_dir is None:
        parser.error("the paper-scale WebShop run needs --data-dir (folder of the original WebShop JSON files)")
    if args.no_tune and args.as_test:
        parser.error("--as-test needs Tune (drop --no-tune)")
    return args


def rllib_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` over RLlib's example-script defaults: what its example runner reads.

    Imports RLlib; call it when the run starts, not while parsing.
    """
    from ray.rllib.examples.utils import add_rllib_example_script_args

    defaults = add_rllib_example_script_args(argparse.ArgumentParser()).parse_args([])
    return argparse.Namespace(**{**vars(defaults), **vars(args)})


def main(
    experiment: Experiment, argv: Sequence[str] | None = None, parents: Sequence[argparse.ArgumentParser] = ()
) -> Any:
    """Parse and check the command line, then import the Tune machinery and run the experiment.

    :func:`~rllib_proxmo.experiments.preflight.validate_tune_args` runs before anything
    starts: a bad flag fails in about a second (exit status 2).
    """
    args = parse_args(experiment, argv, parents)
    try:
        validate_tune_args(args)
    except ValueError as error:
        make_parser(experiment, parents).error(str(error))
    from rllib_proxmo.experiments.tune_runner import run

    return run(experiment, args)
