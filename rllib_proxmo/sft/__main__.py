"""``python -m rllib_proxmo.sft``: warm-start a policy on expert episodes, save it as a model directory.

The run uses the main job's environment, prompt and model settings (the same flags,
:func:`~rllib_proxmo.experiments.main_job.add_environment_arguments`, handed to
:func:`~rllib_proxmo.experiments.main_job.build_config`), so the saved
model answers in the format an RL run's prompt asks for; start RL from it with
``python -m rllib_proxmo.train --model OUTPUT --sft-episodes 0``.

    python -m rllib_proxmo.sft --output results/sft-alfworld          # 12 expert episodes, ALFWorld
    python -m rllib_proxmo.sft --episodes 48 --epochs 3 --output results/sft-48
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from rllib_proxmo.experiments.cli import add_tracking_arguments, non_negative_int, positive_float, positive_int
from rllib_proxmo.experiments.main_job import add_environment_arguments
from rllib_proxmo.experiments.scale import CPU


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m rllib_proxmo.sft", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--output", type=Path, required=True, help="model directory to write")
    add_environment_arguments(parser)
    parser.add_argument("--episodes", type=positive_int, default=CPU.warm_up_episodes, help="expert episodes")
    parser.add_argument("--epochs", type=positive_int, default=CPU.warm_up_epochs)
    parser.add_argument("--lr", type=positive_float, default=CPU.warm_up_lr)
    parser.add_argument(
        "--relabel-rounds",
        type=non_negative_int,
        default=CPU.warm_up_relabel_rounds,
        help="rounds of on-policy relabelling (the policy plays, the expert labels its states)",
    )
    parser.add_argument("--relabel-epochs", type=positive_int, default=CPU.warm_up_relabel_epochs)
    parser.add_argument(
        "--max-turns",
        type=positive_int,
        default=CPU.warm_up_max_turns,
        help=f"turn limit of a demonstration episode (default {CPU.warm_up_max_turns}); relabelling rounds play "
        f"the RL episodes' {CPU.max_turns}",
    )
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the run, >= 0 (default 0)")
    add_tracking_arguments(parser, experiment_name="rllib-proxmo-sft")
    return parser


def main(argv: Sequence[str] | None = None) -> Path:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    from rllib_proxmo.experiments import main_job

    # The main job's settings, with the ones this command takes (same names) and its warm start.
    job = main_job.parse_args(["--output", str(args.output), "--run-name", f"sft-{args.output.name}"])
    for name in (
        "env",
        "env_config",
        "llm_env_config",
        "constrain_to_admissible",
        "num_games",
        "model",
        "trainable_layers",
        "seed",
    ):
        setattr(job, name, getattr(args, name))
    job.sft_episodes, job.sft_epochs, job.sft_lr = args.episodes, args.epochs, args.lr
    job.sft_max_turns = args.max_turns
    job.sft_relabel_rounds, job.sft_relabel_epochs = args.relabel_rounds, args.relabel_epochs
    config = main_job.build_config(job)
    tracker = None
    if not args.no_mlflow:
        from rllib_proxmo.experiments.tracking import RunTracker, default_tracking_uri

        tracker = RunTracker(
            args.tracking_uri or default_tracking_uri(),
            args.experiment_name,
            job.run_name,
            {"env": args.env, "model": args.model, "seed": str(args.seed), "stage": "warm start"},
        )
        tracker.log_params({k: str(v) for k, v in vars(args).items() if k not in {"no_mlflow", "tracking_uri"}})
    status = "FAILED"
    try:
        model_dir = main_job.warm_start_model(job, config, args.output.parent, tracker, directory=args.output)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        if tracker is not None:
            tracker.finish(status)
    print(f"model: {model_dir}\nstart RL from it: python -m rllib_proxmo.train --model {model_dir} --sft-episodes 0")
    return model_dir


if __name__ == "__main__":
    main()
