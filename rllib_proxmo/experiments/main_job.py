"""The main job (``make train``): train ProxMO, evaluate on unseen tasks, save and track it all.

Defaults (the transfer setting) take about 30 minutes on an idle 2-core CPU: SmolLM2-135M-Instruct
(embedded weights, top 4 of 30 layers trained) on 48 generated ALFWorld games per split, every
answer held to the admissible commands and the compact prompt without the action list
(``envs.prompts.ALFWORLD_UNLISTED``, answered with the command) sent with an empty system message.
First a supervised warm start on ``--sft-episodes`` episodes of the searching expert
(:mod:`rllib_proxmo.sft`, ALFWorld's ``expert="search"``; 0 skips it), then the starting policy
plays 48 unseen episodes (at the release's validation temperature 0.4), then RL: 3 training games
drawn per iteration x 4 rollouts, 10 turns of at most 24 new tokens, ``--stop-iters`` iterations (10
by default: the same curve for a seed on any machine, only the time differs). After every
``--eval-every``-th iteration (default: the CPU scale's ``evaluation_interval``; 0: none) the policy
plays the same unseen tasks with the same seeds again. Each iteration prints one line::

    iter 5/10 | success 0.58 | unseen 0.25 (0.09-0.53) | format-valid 0.97 | prompt tok/s 410 |
        gen tok/s 21.3 | turns/s 1.2 | iter 81.0 s | ETA 6m30s

training success, the unseen success with its 95 % Wilson interval (iterations that evaluated
only), format-valid rate, prompt tokens and turns per second of sampling, generated tokens per
second of generation, the iteration's time and the ETA from the iterations so far (and the
sampler gap where the learner compared its log-probs with the sampler's). ``--time-budget-min``
(off by default) also stops training once the next iteration would overrun that many minutes
(estimated from the mean iteration time so far). Then the policy plays the unseen tasks
once more (unless the last iteration just did: its evaluation is the final one), and the job
writes to ``--output`` (default ``results/<run-name>``):

- ``checkpoint/``: the algorithm after training (``Algorithm.from_checkpoint`` restores it;
  ``python -m rllib_proxmo.export`` turns it into a Hugging Face model directory);
- ``checkpoints/iteration_<k>/``: every ``--checkpoint-every`` iterations and when
  interrupted (the newest two kept), each written to a temporary directory and renamed
  when complete (:mod:`rllib_proxmo.experiments.checkpoints`); ``--resume <output>``
  continues the run from the newest one, in the same MLflow run and iteration count;
- ``learning_curve.png``: success / format-valid rate, score and tokens/s per iteration, with
  the unseen success of every evaluation (the starting policy's at iteration 0) as a line over
  its 95 % Wilson band;
- ``rollouts/``: every iteration's steps as Parquet (``rllib_proxmo.analysis.rollout_files``), e.g. for
  ``tuned_examples/psa_similarity_search.py --rollouts``;
- ``evaluation.csv`` / ``evaluation.md``: success per task type (paper Table 1
  columns for ALFWorld; score and success for WebShop) of the starting policy and of
  the trained one;
- ``warm_start/``: the warm-started policy as a Hugging Face model directory, with
  ``warm_start.json`` (its settings and per-epoch loss);

and, unless ``--no-mlflow``, one MLflow run recorded like every Tune trial's
(:mod:`rllib_proxmo.experiments.tracking`: the flattened algorithm config as params,
every numeric result at step ``training_iteration``, every evaluation after an iteration as
``evaluation/env_runners/...`` metrics at that iteration (the final one at the last) and the
starting policy's as ``evaluation_start/env_runners/...`` at step 0, tags estimator / env / model / seed / scale /
git commit, the files above as artifacts; the checkpoint itself when at most
``--checkpoint-artifact-max-mb``, else its path as a tag). An unreachable tracking
store gives one warning and training goes on.

    python -m rllib_proxmo.train                                  # the defaults above
    python -m rllib_proxmo.train --stop-iters 50 --time-budget-min 600 \\
        --num-env-runners 4 --num-learners 2 --num-gpus-per-learner 1 --address auto
    python -m rllib_proxmo.train --env WebShop-v0 --no-mlflow
    python -m rllib_proxmo.train --engine vllm --num-env-runners 1          # vLLM's CPU build (make install)
    python -m rllib_proxmo.train --engine vllm --num-env-runners 1 --num-gpus-per-env-runner 1 \\
        --num-gpus-per-learner 1 --model /models/qwen2.5-1.5b-instruct   # vLLM on GPUs (not yet run)
    python -m rllib_proxmo.train --resume results/<run-name> --stop-iters 80

SIGINT or SIGTERM (:mod:`rllib_proxmo.experiments.interrupt`) lets the running iteration
finish, saves a checkpoint, marks the MLflow run KILLED and exits with 128 + the signal
number; a second signal, or one during start-up or the final evaluation, stops at once
(the newest checkpoint saved is the resume point). Before each save the job checks that
the disk has room for it and fails with a clear error if not.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from envs import ALFWORLD
from rllib_proxmo.algorithm.sharding import DEFAULT_SHARDING
from rllib_proxmo.algorithm.task_sampling import DEFAULT_TASK_SAMPLING, TASK_SAMPLINGS
from rllib_proxmo.experiments.cli import (
    add_advantage_arguments,
    add_engine_argument,
    add_sharding_argument,
    add_tracking_arguments,
    advantage_settings,
    json_object,
    non_negative_int,
    positive_float,
    positive_int,
)
from rllib_proxmo.experiments.interrupt import Interrupted, StopOnSignal
from rllib_proxmo.experiments.preflight import validate_args
from rllib_proxmo.experiments.runtime import quiet_framework_output, start_ray
from rllib_proxmo.experiments.scale import CPU, EXPERT_ENV_CONFIGS, PAPER, env_configs
from rllib_proxmo.experiments.tables import EVAL_HIGH, EVAL_LOW, EVAL_SUCCESS, held_out_figures, history_row

#: RL iterations of the main job: a fixed count, so that a seed gives one curve on every machine
#: (about 100 s each on 2 cores with the CPU defaults, plus 4-5 minutes per unseen evaluation).
RL_ITERATIONS = 10
#: CPUs (and so torch threads) of the held-out evaluation's env runner. The local Ray start adds
#: them to the env runners' and learners': the evaluation runs while those wait, so on a 2-core
#: machine it uses both cores instead of Ray's one thread per single-CPU actor.
EVALUATION_CPUS = 2


def add_environment_arguments(task: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--env``, ``--env-config``, ``--llm-env-config``, ``--[no-]constrain-to-admissible``, ``--num-games``,
    ``--model``, ``--trainable-layers``.

    The flags of the main job that pick the env, its prompt and the model; ``python -m
    rllib_proxmo.sft`` takes the same ones.
    """
    task.add_argument("--env", default=ALFWORLD, help="registered env id (ALFWorld-v0, WebShop-v0, module:Id)")
    task.add_argument(
        "--env-config", type=json_object, default={}, help="JSON object merged into the env config of both splits"
    )
    task.add_argument(
        "--llm-env-config",
        type=json_object,
        default={},
        help="JSON keywords of envs.llm_wrappers.make_llm_env merged into the CPU defaults (ALFWorld: compact "
        'prompt, 1 history step, no think block), e.g. \'{"template": "alfworld", "require_think": true}\'',
    )
    task.add_argument(
        "--constrain-to-admissible",
        action=argparse.BooleanOptionalAction,
        help="hold every answer to one of the admissible commands (model_config constrain_to_admissible; HF "
        "engine, no think block). Default: on for ALFWorld with the HF engine, whose prompt then lists no "
        f"actions ({CPU.held_answer_templates[ALFWORLD]!r}); off otherwise, and the prompt lists them",
    )
    task.add_argument(
        "--num-games", type=positive_int, default=CPU.num_games, help="generated ALFWorld games per split"
    )
    task.add_argument("--model", default=CPU.model, help="model alias, local directory or hub id")
    task.add_argument(
        "--trainable-layers",
        type=non_negative_int,
        default=CPU.trainable_layers,
        help=f"train only the top N decoder layers, 0 = every weight (default {CPU.trainable_layers})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m rllib_proxmo.train`` (RLlib's example-script flag names)."""
    parser = argparse.ArgumentParser(
        prog="python -m rllib_proxmo.train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--stop-iters",
        type=positive_int,
        default=RL_ITERATIONS,
        help=f"RL training iterations (default {RL_ITERATIONS}: about 20 minutes on 2 cores with the evaluations)",
    )
    run.add_argument(
        "--time-budget-min",
        type=positive_float,
        help="also stop RL training before the next iteration would overrun this many minutes, the warm start "
        "and the evaluations before and after RL not counted (default: no budget; the run then does not depend on "
        "the machine's speed)",
    )
    run.add_argument("--run-name", help="default <estimator>-<env>-<UTC time>")
    run.add_argument("--output", type=Path, help="output directory (default results/<run-name>)")
    run.add_argument("--seed", type=non_negative_int, default=0, help="seed of the run, >= 0 (default 0)")
    run.add_argument(
        "--checkpoint-every",
        type=non_negative_int,
        default=CPU.checkpoint_every,
        help=f"save a checkpoint every N iterations (default {CPU.checkpoint_every}; the paper size uses "
        f"{PAPER.checkpoint_every}; 0: only at the end and when interrupted)",
    )
    run.add_argument(
        "--resume",
        type=Path,
        metavar="OUTPUT",
        help="continue the interrupted run written to OUTPUT from its newest checkpoint, with its settings "
        f"(only {', '.join(RESUME_OVERRIDES)} may be given again)",
    )
    add_environment_arguments(parser.add_argument_group("environment and model"))
    warm = parser.add_argument_group("supervised warm start (rllib_proxmo.sft)")
    warm.add_argument(
        "--sft-episodes",
        type=non_negative_int,
        default=CPU.warm_up_episodes,
        help=f"expert episodes to fine-tune on before RL, 0 = no warm start (default {CPU.warm_up_episodes})",
    )
    warm.add_argument("--sft-epochs", type=positive_int, default=CPU.warm_up_epochs, help="passes over them")
    warm.add_argument("--sft-lr", type=positive_float, default=CPU.warm_up_lr, help="warm-start learning rate")
    warm.add_argument(
        "--sft-max-turns",
        type=positive_int,
        default=CPU.warm_up_max_turns,
        help=f"turn limit of a demonstration episode (default {CPU.warm_up_max_turns}); above --max-turns, "
        "demonstrations reach the end of tasks that an RL episode would cut off",
    )
    warm.add_argument(
        "--sft-relabel-rounds",
        type=non_negative_int,
        default=CPU.warm_up_relabel_rounds,
        help="rounds of on-policy relabelling (DAgger): the fine-tuned policy plays --sft-episodes training "
        f"episodes, the expert labels the states it reached, fine-tuning resumes on all turns (default "
        f"{CPU.warm_up_relabel_rounds})",
    )
    warm.add_argument(
        "--sft-relabel-epochs",
        type=positive_int,
        default=CPU.warm_up_relabel_epochs,
        help=f"passes over all turns after each relabelling round (default {CPU.warm_up_relabel_epochs})",
    )
    algo = parser.add_argument_group("algorithm")
    add_advantage_arguments(algo)
    algo.add_argument("--tasks", type=positive_int, default=CPU.tasks_per_iteration, help="task groups per iteration")
    algo.add_argument("--group-size", type=positive_int, default=CPU.group_size, help="rollouts per task")
    algo.add_argument(
        "--task-sampling",
        choices=TASK_SAMPLINGS,
        default=DEFAULT_TASK_SAMPLING,
        help=f"how an iteration draws its training games (default {DEFAULT_TASK_SAMPLING}; informative: weighted "
        "by each game's chance of a group with a win and a loss, from its outcomes so far)",
    )
    algo.add_argument(
        "--max-turns", type=positive_int, default=CPU.max_turns, help="turns per episode before truncation"
    )
    algo.add_argument(
        "--max-new-tokens", type=positive_int, default=CPU.max_new_tokens, help="tokens generated per turn"
    )
    algo.add_argument(
        "--minibatch-size", type=positive_int, default=CPU.minibatch_size, help="turns per optimizer step"
    )
    algo.add_argument(
        "--micro-batch-size", type=positive_int, default=CPU.micro_batch_size, help="turns per gradient micro-batch"
    )
    algo.add_argument(
        "--lr", type=positive_float, default=CPU.lr, help=f"RL learning rate (default {CPU.lr}; the paper's 1e-6)"
    )
    algo.add_argument(
        "--eval-tasks", type=positive_int, default=CPU.evaluation_num_tasks, help="held-out tasks per evaluation"
    )
    algo.add_argument(
        "--eval-every",
        type=non_negative_int,
        default=CPU.evaluation_interval,
        help=f"also evaluate on the held-out split after every N-th iteration (default {CPU.evaluation_interval}; "
        "0: only before and after RL)",
    )
    scale = parser.add_argument_group("scale")
    scale.add_argument("--num-env-runners", type=non_negative_int, default=0, help="0 = sample on the driver")
    scale.add_argument("--num-learners", type=non_negative_int, default=0, help="0 = learn on the driver")
    scale.add_argument(
        "--num-gpus-per-env-runner", type=float, default=0.0, help="GPUs per remote env runner (default 0)"
    )
    add_engine_argument(scale)
    add_sharding_argument(scale, DEFAULT_SHARDING)
    scale.add_argument(
        "--num-gpus-per-learner",
        type=non_negative_int,
        default=0,
        help=f"GPUs per learner (0 or 1); with GPUs the compute dtype is the paper's {PAPER.dtype}",
    )
    scale.add_argument(
        "--address",
        default=os.environ.get("RAY_ADDRESS"),
        help="Ray cluster address (default $RAY_ADDRESS; none = start a local Ray)",
    )
    add_tracking_arguments(parser.add_argument_group("tracking"), experiment_name="rllib-proxmo")
    return parser


#: Flags that may be given with ``--resume`` (to extend or move a run); every other setting is the run's own.
RESUME_OVERRIDES = ("--stop-iters", "--time-budget-min", "--checkpoint-every", "--address")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse and check the command line; fills ``run_name`` and ``output`` defaults.

    What the flags refer to (env, model, GPUs, cluster) is checked by :func:`main`.

    With ``--resume OUTPUT`` the settings are those saved in OUTPUT's newest checkpoint
    (``resume_from`` is set to it), except the flags of :data:`RESUME_OVERRIDES` given again.
    """
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.resume_from = None
    if args.resume is not None:
        return _resumed_args(parser, args, argv)
    if args.num_gpus_per_learner > 1:
        parser.error(
            f"--num-gpus-per-learner must be 0 or 1 (one GPU per DDP learner), got {args.num_gpus_per_learner}"
        )
    if args.tasks < max(args.num_learners, 1):
        parser.error(f"--tasks ({args.tasks}) must be >= --num-learners ({args.num_learners})")
    if args.run_name is None:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        args.run_name = f"{args.estimator}-{args.env.split(':')[-1]}-{stamp}"
    if args.output is None:
        args.output = Path("results") / args.run_name
    return args


def _resumed_args(parser: argparse.ArgumentParser, given: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    from rllib_proxmo.experiments.checkpoints import latest_checkpoint, read_job_state

    output = given.resume.resolve()
    checkpoint = latest_checkpoint(output)
    if checkpoint is None:
        parser.error(f"--resume {given.resume}: no checkpoint in {output / 'checkpoints'} to resume from")
    others = [a.split("=")[0] for a in argv if a.startswith("--") and a.split("=")[0] not in RESUME_OVERRIDES]
    if set(others) - {"--resume"}:
        parser.error(
            f"--resume continues a run with its own settings; only {', '.join(RESUME_OVERRIDES)} may be given, "
            f"got {sorted(set(others) - {'--resume'})}"
        )
    # Flags added since the run started take their defaults.
    args = argparse.Namespace(**{**vars(parser.parse_args([])), **read_job_state(checkpoint)["args"]})
    for flag in RESUME_OVERRIDES:
        if any(a == flag or a.startswith(flag + "=") for a in argv):
            name = flag[2:].replace("-", "_")
            setattr(args, name, getattr(given, name))
    args.output, args.resume, args.resume_from = Path(args.output), given.resume, checkpoint
    return args


def _args_state(args: argparse.Namespace) -> dict[str, Any]:
    """The job's settings as JSON values (what ``--resume`` reads back)."""
    skip = {"resume", "resume_from"}
    return {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k not in skip}


def split_configs(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """Env configs of the training and the evaluation split (:func:`~rllib_proxmo.experiments.scale.env_configs`)."""
    return env_configs(args.env, replace(CPU, num_games=args.num_games), args.env_config)


def holds_answers(args: argparse.Namespace) -> bool:
    """Whether answers are held to the admissible commands: ``--[no-]constrain-to-admissible``, else
    the CPU default (the envs of ``CPU.held_answer_templates``, with the HF engine)."""
    if args.constrain_to_admissible is not None:
        return args.constrain_to_admissible
    return args.env in CPU.held_answer_templates and args.engine == "hf"


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`ProxMOConfig` that ``args`` describe."""
    from rllib_proxmo.algorithm.proxmo import ProxMOConfig

    train_env, eval_env = split_configs(args)
    model_config = CPU.model_config(args.env, args.model)
    model_config["max_new_tokens"] = args.max_new_tokens
    model_config["engine"] = args.engine
    held_answers = holds_answers(args)
    if held_answers:
        model_config["constrain_to_admissible"] = True
    if args.trainable_layers:
        model_config["trainable_layers"] = args.trainable_layers
    else:
        model_config.pop("trainable_layers", None)
    if args.num_gpus_per_learner:
        model_config["dtype"] = PAPER.dtype
    # The sampler's trunk output is reused where sampler and learner compute alike, both in fp32 on CPUs,
    # and where the sampler keeps it: the HF engine (vLLM keeps no hidden states).
    if not args.trainable_layers or args.engine != "hf" or args.num_gpus_per_learner:
        model_config.pop("reuse_sampler_trunk", None)
    training: dict[str, Any] = dict(
        **advantage_settings(args),
        group_size=args.group_size,
        tasks_per_iteration=args.tasks,
        task_sampling=args.task_sampling,
        max_turns=args.max_turns,
        minibatch_size=args.minibatch_size,
        micro_batch_size=args.micro_batch_size,
        old_logp_source=CPU.old_logp_source,
        lr=args.lr,
        llm_env_config={**CPU.llm_env_config(args.env, held_answers=held_answers), **args.llm_env_config},
        rollouts_dir=str(Path(args.output).resolve() / "rollouts"),
    )
    return (
        ProxMOConfig()
        .environment(args.env, env_config=train_env)
        .env_runners(num_env_runners=args.num_env_runners, num_gpus_per_env_runner=args.num_gpus_per_env_runner)
        .learners(
            num_learners=args.num_learners, num_gpus_per_learner=args.num_gpus_per_learner, sharding=args.sharding
        )
        .rl_module(model_config=model_config)
        .training(**training)
        .evaluation(
            evaluation_interval=args.eval_every,
            evaluation_num_env_runners=1,
            evaluation_num_tasks=args.eval_tasks,
            evaluation_group_size=1,
            evaluation_config={"env_config": eval_env, "num_cpus_per_env_runner": EVALUATION_CPUS},
        )
        .debugging(seed=args.seed)
    )


def draw_from_listed_tasks(config: Any) -> Any:
    """``config`` set to train on the tasks its env lists (``task_ids``): an iteration's groups play distinct tasks.

    An env that lists none (a custom env without ``task_ids``) keeps picking its task from each
    group's seed. Returns ``config``.
    """
    from rllib_proxmo.rollout.env_factory import make_text_env

    if config.task_ids is None:
        env = make_text_env(config, worker_index=0, index=0)
        try:
            listed = getattr(env.unwrapped, "task_ids", None)
        finally:
            env.close()
        if listed:
            config.training(task_ids=list(listed))
            # The evaluation split has its own tasks: its envs keep picking them from each group's seed.
            config.evaluation(evaluation_config={**(config.evaluation_config or {}), "task_ids": None})
    return config


def iterations_to_plan(done: int, elapsed_s: float, budget_s: float | None, cap: int) -> int:
    """Total iterations expected: ``done`` plus as many mean-length ones as fit the budget, at most ``cap``.

    Without a budget (None), and before the first iteration (``done == 0``: the length is
    unknown), ``cap``.
    """
    if budget_s is None or done == 0:
        return cap
    mean_s = elapsed_s / done
    return min(cap, done + max(0, math.floor((budget_s - elapsed_s) / mean_s)))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s"


def progress_line(iteration: int, planned: int, row: Mapping[str, float], *, eta_s: float, split: str) -> str:
    """``iter k/K | success .. | <split> .. (low-high) | format-valid .. | prompt tok/s .. | gen tok/s .. |
    turns/s .. | iter .. s | ETA ..``.

    The held-out success with its 95 % interval only where the iteration evaluated, ``| sampler gap ..``
    only where the learner compared its log-probs with the sampler's.
    """
    parts = [f"iter {iteration}/{planned}", f"success {row['success_rate']:.2f}"]
    if EVAL_SUCCESS in row:
        parts.append(f"{split} {row[EVAL_SUCCESS]:.2f} ({row[EVAL_LOW]:.2f}-{row[EVAL_HIGH]:.2f})")
    parts += [
        f"format-valid {row['format_valid_rate']:.2f}",
        f"prompt tok/s {row['prompt_tokens_per_s']:.0f}",
        f"gen tok/s {row['generated_tokens_per_s']:.1f}",
        f"turns/s {row['turns_per_s']:.1f}",
        f"iter {row['time_iteration_s']:.1f} s",
        f"ETA {_duration(eta_s)}",
    ]
    gap = row.get("sampler_logp_gap_max")
    if gap is not None:
        parts.append(f"sampler gap {gap:.1e}")
    return " | ".join(parts)


def _start_tracker(args: argparse.Namespace, config: Any, run_id: str | None = None) -> Any:
    """An MLflow :class:`RunTracker` logging the config as params, or continuing ``run_id``; None: ``--no-mlflow``."""
    if args.no_mlflow:
        return None
    from rllib_proxmo.experiments.tracking import RunTracker, default_tracking_uri, flatten_params, run_tags

    settings = config.to_dict()
    tracker = RunTracker(
        args.tracking_uri or default_tracking_uri(),
        args.experiment_name,
        args.run_name,
        run_tags(settings, CPU.name),
        run_id=run_id,
    )
    if run_id is None:
        tracker.log_params(flatten_params(settings))
    return tracker


def warm_start_model(
    args: argparse.Namespace, config: Any, output: Path, tracker: Any, *, directory: Path | None = None
) -> Path:
    """Fine-tune the policy on expert episodes (:mod:`rllib_proxmo.sft`); return the model directory.

    The model goes to ``directory`` (default ``output / "warm_start"``); ``tracker`` (or None)
    receives the per-epoch loss and answer probability and the directory as a tag.
    """
    from rllib_proxmo.sft import FineTuneSettings, warm_start

    passes = itertools.count(1)

    def track(stats: Any) -> None:
        # One step per pass, numbered across the relabelling rounds (each restarts its epochs at 1).
        step = next(passes)
        if tracker is not None:
            tracker.log_metrics({"warm_start/loss": stats.loss, "warm_start/answer_prob": stats.answer_prob}, step)

    print(f"warm start: fine-tuning on {args.sft_episodes} expert episodes ...", flush=True)
    result = warm_start(
        config,
        directory or output / "warm_start",
        num_episodes=args.sft_episodes,
        settings=FineTuneSettings(lr=args.sft_lr, epochs=args.sft_epochs, seed=args.seed),
        demonstration_max_turns=args.sft_max_turns,
        relabel_rounds=args.sft_relabel_rounds,
        relabel_epochs=args.sft_relabel_epochs,
        expert_env_config=EXPERT_ENV_CONFIGS.get(args.env),
        on_epoch=track,
    )
    if tracker is not None:
        tracker.set_tags({"warm_start_dir": str(result.model_dir)})
    print(f"warm start done in {result.seconds:.0f} s: {result.model_dir}", flush=True)
    return result.model_dir


def _decoding(config: Any) -> str:
    temperature = config.model_config.get("eval_temperature", 0.0)
    return "greedy" if temperature == 0 else f"temperature {temperature}"


def _evaluation_line(label: str, metrics: Mapping[str, float]) -> str:
    return (
        f"{label}: success {metrics['success_rate']:.2f} | format-valid {metrics['format_valid_rate']:.2f} | "
        f"admissible {metrics['admissible_action_rate']:.2f} over {metrics['num_episodes']:.0f} episodes"
    )


class JobProgress:
    """What the job has done: the history rows, the training time and the start evaluation, saved with each
    checkpoint."""

    def __init__(
        self,
        history: list[dict[str, float]] | None = None,
        train_s: float = 0.0,
        start_evaluation: dict[str, float] | None = None,
    ) -> None:
        self.history = history or []
        self.train_s = train_s
        #: The evaluation of the policy RL started from (None until it ran).
        self.start_evaluation = start_evaluation


def _checkpoint_bytes(algo: Any, output: Path) -> int:
    """Room the next checkpoint needs: the last one's size, or before any the fp32 policy plus AdamW."""
    from rllib_proxmo.experiments.checkpoints import CHECKPOINT_BYTES_PER_PARAMETER, latest_checkpoint
    from rllib_proxmo.experiments.tracking import directory_size

    latest = latest_checkpoint(output)
    if latest is not None:
        return int(1.1 * directory_size(latest))
    from ray.rllib.core import DEFAULT_MODULE_ID

    results = algo.learner_group.foreach_learner(
        lambda learner: sum(p.numel() for p in learner.module[DEFAULT_MODULE_ID].parameters())
    )
    return CHECKPOINT_BYTES_PER_PARAMETER * results.result_or_errors[0].get()


def _save_periodic(args: argparse.Namespace, algo: Any, tracker: Any, progress: JobProgress) -> Path:
    """Save ``checkpoints/iteration_<k>`` with the job's state; keep the newest few."""
    from rllib_proxmo.experiments.checkpoints import periodic_checkpoint_dir, prune_periodic, save_atomically

    output = Path(args.output).resolve()
    state = {
        "args": _args_state(args),
        "mlflow_run_id": tracker.run_id if tracker is not None else None,
        "history": progress.history,
        "train_s": progress.train_s,
        "start_evaluation": progress.start_evaluation,
    }
    target = periodic_checkpoint_dir(output, algo.training_iteration)
    save_atomically(algo, target, _checkpoint_bytes(algo, output), state)
    prune_periodic(output)
    print(f"checkpoint of iteration {algo.training_iteration}: {target}", flush=True)
    return target


def train(args: argparse.Namespace) -> dict[str, Any]:
    """Run the job ``args`` describe; return the written paths and the final figures.

    Keys: ``checkpoint``, ``plot``, ``evaluation_csv``, ``evaluation_md`` (paths),
    ``history`` (one :func:`history_row` per iteration, the last one with the final evaluation's
    held-out figures), ``evaluation`` and
    ``start_evaluation`` (metrics after RL and of the policy RL started from),
    ``mlflow_run_id`` and ``tracking_uri`` (None when not tracked, or when tracking stopped mid-run).
    """
    from rllib_proxmo.experiments.checkpoints import FINAL_DIR, read_job_state, save_atomically
    from rllib_proxmo.experiments.tracking import flatten_metrics, write_run_files
    from rllib_proxmo.rollout.env_runner import SamplerSettings
    from rllib_proxmo.sft.warm_start import check_framing

    job_start = time.perf_counter()
    output = Path(args.output).resolve()
    print(f"{args.run_name}: {args.estimator} on {args.env} with {args.model}, writing to {output}", flush=True)
    output.mkdir(parents=True, exist_ok=True)
    quiet_framework_output()
    config = draw_from_listed_tasks(build_config(args))
    config.validate()
    check_framing(args.model, SamplerSettings.from_model_config(config.model_config).system_prompt)
    saved = read_job_state(args.resume_from) if args.resume_from is not None else None
    progress = (
        JobProgress(saved["history"], saved["train_s"], saved.get("start_evaluation")) if saved else JobProgress()
    )
    # The MLflow run starts with the warm start, or once the algorithm is built (a resumed job goes on with
    # its own run): a job that never started has none.
    tracker = None
    start_label = "warm start" if args.sft_episodes else "start"
    status = "FAILED"
    stop = StopOnSignal()
    try:
        if args.sft_episodes and saved is None:
            tracker = _start_tracker(args, config)
            warm_dir = warm_start_model(args, config, output, tracker)
            config.rl_module(model_config={**config.model_config, "model_name_or_path": str(warm_dir)})
        with stop:
            owns_ray = start_ray(
                address=args.address,
                num_cpus=args.num_env_runners + args.num_learners + EVALUATION_CPUS,
                num_gpus=max(args.num_learners, 1) * args.num_gpus_per_learner,
            )
            stop.install()
            algo = None
            try:
                algo = _build_or_restore(config, args.resume_from)
                print(f"ready after {time.perf_counter() - job_start:.1f} s", flush=True)
                if tracker is None:
                    tracker = _start_tracker(args, config, run_id=saved["mlflow_run_id"] if saved else None)
                split = split_configs(args)[1].get("split", "training")
                if progress.start_evaluation is None:
                    print(
                        f"evaluating the {start_label} policy on {args.eval_tasks} {split} tasks "
                        f"({_decoding(config)}) ...",
                        flush=True,
                    )
                    progress.start_evaluation = algo.evaluate()["env_runners"]
                    print(_evaluation_line(start_label, progress.start_evaluation), flush=True)
                    if tracker is not None:
                        start_metrics = {"evaluation_start": {"env_runners": progress.start_evaluation}}
                        tracker.log_metrics(flatten_metrics(start_metrics), 0)
                start_evaluation = progress.start_evaluation
                last_evaluation = _train_loop(args, algo, tracker, progress, stop, split)
                if stop.signal is not None:
                    raise SystemExit(stop.exit_code)
                history = progress.history
                evaluation = _final_evaluation(args, algo, tracker, split, last_evaluation)
                # The last iteration's row holds the final evaluation, whether that iteration ran it or not.
                history[-1].update(held_out_figures(evaluation))
                checkpoint = save_atomically(algo, output / FINAL_DIR, _checkpoint_bytes(algo, output))
            finally:
                shut_down(stop, algo, owns_ray)
        title = f"{args.estimator} on {args.env} ({args.model})"
        plot, csv_path, md_path = write_run_files(
            output,
            history,
            evaluation,
            env=args.env,
            estimator=args.estimator,
            title=title,
            start_evaluation=start_evaluation,
            start_label=start_label,
            split=split,
        )
        print(f"\nevaluation ({evaluation['num_episodes']:.0f} episodes of the {split} split, %):")
        print(md_path.read_text())
        if tracker is not None:
            for path in (plot, csv_path, md_path):
                tracker.log_artifact(path)
            tracker.log_checkpoint(checkpoint, max_bytes=int(args.checkpoint_artifact_max_mb * 2**20))
        status = "FINISHED"
    except (KeyboardInterrupt, SystemExit):
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
    tracked = tracker is not None and tracker.complete
    summary = {
        "checkpoint": checkpoint,
        "plot": plot,
        "evaluation_csv": csv_path,
        "evaluation_md": md_path,
        "history": history,
        "evaluation": evaluation,
        "start_evaluation": start_evaluation,
        "mlflow_run_id": tracker.run_id if tracked else None,
        "tracking_uri": tracker.tracking_uri if tracked else None,
    }
    print(f"done in {_duration(time.perf_counter() - job_start)}")
    print(f"checkpoint:      {checkpoint}")
    print(f"learning curve:  {plot}")
    print(f"rollouts:        {output / 'rollouts'}")
    print(f"evaluation:      {csv_path}\n                 {md_path}")
    if tracked:
        print(f"MLflow run:      {tracker.run_id} in experiment {args.experiment_name!r} at {tracker.tracking_uri}")
        print(f"                 (mlflow ui --backend-store-uri {tracker.tracking_uri})")
    elif tracker is not None and tracker.run_id is not None:
        print(f"MLflow run:      {tracker.run_id} is incomplete, ended FAILED ({tracker.error})")
    else:
        print("MLflow run:      none (tracking off)")
    return summary


def shut_down(stop: StopOnSignal, algo: Any | None, owns_ray: bool) -> None:
    """Stop ``algo`` (when it was built), then Ray (when this job started it) even if that failed.

    Signals wait until both are done (:meth:`StopOnSignal.deferred`): a second Ctrl-C that cut
    ``ray.shutdown()`` short made the job exit with status 1.
    """
    import ray

    with stop.deferred():
        try:
            if algo is not None:
                algo.stop()
        finally:
            if owns_ray:
                ray.shutdown()


def _build_or_restore(config: Any, checkpoint: Path | None) -> Any:
    """A new algorithm for ``config``, or the one saved in ``checkpoint``."""
    if checkpoint is None:
        print("building the algorithm ...", flush=True)
        return config.build_algo()
    from ray.rllib.algorithms.algorithm import Algorithm

    print(f"restoring the algorithm from {checkpoint} ...", flush=True)
    return Algorithm.from_checkpoint(str(checkpoint))


def _train_loop(
    args: argparse.Namespace, algo: Any, tracker: Any, progress: JobProgress, stop: StopOnSignal, split: str
) -> dict[str, float] | None:
    """Train until ``--stop-iters``, the time budget or a signal; print progress, log results, save checkpoints.

    A signal (``stop``, :class:`StopOnSignal`) ends the loop after the running iteration, with a checkpoint of it.
    Every ``--eval-every``-th iteration's result holds an evaluation on the ``split`` split (RLlib's
    ``evaluation_interval``). Returns the last iteration's evaluation metrics, or None where it ran none.
    """
    budget_s = None if args.time_budget_min is None else 60 * args.time_budget_min
    history = progress.history
    start = time.perf_counter() - progress.train_s
    evaluation = None
    with stop.finishing():
        while len(history) < iterations_to_plan(len(history), time.perf_counter() - start, budget_s, args.stop_iters):
            result = algo.train()
            evaluation = result.get("evaluation", {}).get("env_runners")
            iteration = len(history) + 1
            row = history_row(iteration, result)
            history.append(row)
            elapsed = time.perf_counter() - start
            progress.train_s = elapsed
            planned = iterations_to_plan(iteration, elapsed, budget_s, args.stop_iters)
            eta_s = (planned - iteration) * elapsed / iteration
            print(progress_line(iteration, planned, row, eta_s=eta_s, split=split), flush=True)
            if tracker is not None:
                tracker.log_result(result)
            if stop.signal is not None or (args.checkpoint_every and iteration % args.checkpoint_every == 0):
                _save_periodic(args, algo, tracker, progress)
            if stop.signal is not None:
                break
    return evaluation


def _final_evaluation(
    args: argparse.Namespace, algo: Any, tracker: Any, split: str, last_evaluation: dict[str, float] | None
) -> dict[str, float]:
    """The evaluation of the trained policy: ``last_evaluation`` (the last iteration's, in its result and logged
    with it) when there is one, else a new one, logged at the last iteration."""
    if last_evaluation is not None:
        print(f"the evaluation of iteration {algo.training_iteration} is the final one", flush=True)
        return last_evaluation
    from rllib_proxmo.experiments.tracking import flatten_metrics

    print(f"evaluating on the same {args.eval_tasks} tasks of the {split} split ...", flush=True)
    evaluation = algo.evaluate()["env_runners"]
    if tracker is not None:
        tracker.log_metrics(flatten_metrics({"evaluation": {"env_runners": evaluation}}), algo.training_iteration)
    return evaluation


def main(argv: Sequence[str] | None = None) -> None:
    # Arguments first: something in the ALFWorld stack rewrites sys.argv (docs/design.md §5).
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # Before Ray, MLflow or the model start: a bad flag fails in about a second (exit status 2).
    try:
        validate_args(args, split_configs(args))
    except ValueError as error:
        build_parser().error(str(error))
    try:
        train(args)
    except Interrupted as interrupted:
        print(f"\nstopped by {interrupted}; resume with --resume {args.output}", file=sys.stderr)
        raise SystemExit(128 + interrupted.signum) from None
    except SystemExit as done:
        if done.code:
            print(f"stopped by a signal; resume with --resume {args.output}", file=sys.stderr)
        raise


if __name__ == "__main__":
    main()
