"""The held-out evaluation on one CPU and on :data:`~rllib_proxmo.experiments.main_job.EVALUATION_CPUS`, side by side.

The main job plays its held-out split on a remote evaluation env runner; Ray starts a
single-CPU actor with one torch thread. This benchmark builds the main job's algorithm (its
defaults, or the flags after ``--``) once per CPU count, each in a Ray of its own, times
``algo.evaluate()`` on the same ``--eval-tasks`` held-out tasks and seeds, and prints seconds,
turns per second and the success rate. Run it on an idle machine: Ray's workers run at a
lower priority than other processes.

    python benchmarks/evaluation_cpus.py --json benchmarks/results/evaluation_cpus.json -- --eval-tasks 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpus", type=int, nargs="+", help="CPU counts to compare (default 1 and EVALUATION_CPUS)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args, rest = parser.parse_known_args(argv)
    return args, [arg for arg in rest if arg != "--"]


def time_evaluation(job_argv: list[str], cpus: int) -> dict[str, Any]:
    """The main job's algorithm with a ``cpus``-CPU evaluation runner, in a Ray of its own: one timed evaluation."""
    import ray
    from ray.rllib.utils.metrics import ENV_RUNNER_RESULTS

    from rllib_proxmo.experiments import main_job
    from rllib_proxmo.experiments.runtime import start_ray

    config = main_job.build_config(main_job.parse_args([*job_argv, "--no-mlflow"]))
    config.evaluation(evaluation_config={**config.evaluation_config, "num_cpus_per_env_runner": cpus})
    start_ray(num_cpus=cpus)
    try:
        algo = config.build_algo()
        start = time.perf_counter()
        results = algo.evaluate()[ENV_RUNNER_RESULTS]
        seconds = time.perf_counter() - start
        algo.stop()
    finally:
        ray.shutdown()
    turns = float(results["num_turns"])
    return {
        "cpus": cpus,
        "seconds": seconds,
        "turns": turns,
        "turns_per_s": turns / seconds,
        "success_rate": float(results["success_rate"]),
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from rllib_proxmo.experiments import main_job

    args, job_argv = parse_args(argv)
    rows = [time_evaluation(job_argv, cpus) for cpus in args.cpus or [1, main_job.EVALUATION_CPUS]]
    for row in rows:
        print(
            f"evaluation runner with {row['cpus']} CPU(s): {row['seconds']:.1f} s, {row['turns']:.0f} turns, "
            f"{row['turns_per_s']:.2f} turns/s, success {row['success_rate']:.2f}"
        )
    print(f"speed-up {rows[0]['seconds'] / rows[-1]['seconds']:.2f}x ({rows[-1]['cpus']} vs {rows[0]['cpus']} CPUs)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"job_args": job_argv, "runs": rows}, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
