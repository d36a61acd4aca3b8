"""Does RL improve the warm-started SmolLM2-135M on generated ALFWorld games, and which estimator more?

One shared warm start (the main job's: expert demonstrations, top-4-layer fine-tuning), then,
for every estimator and seed, the main job's RL configuration for a fixed number of iterations
from that model, and a greedy evaluation on the unseen split. Prints the training success of
every iteration and the final unseen success as mean ± std over seeds, next to the warm start's
own unseen success; writes a JSON and a PNG (success bands over seeds).

    python benchmarks/learning_llm.py --estimators proxmo grpo --seeds 0 1 --stop-iters 6 \\
        --out benchmarks/results/learning_llm_cpu

Every flag the main job takes can follow ``--`` (e.g. ``-- --tasks 4 --group-size 8``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimators", nargs="+", default=["proxmo", "grpo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--stop-iters", type=int, default=6, help="RL iterations per estimator and seed")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_llm_cpu"))
    args, rest = parser.parse_known_args(argv)
    return args, [arg for arg in rest if arg != "--"]


def _mean_std(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def run_one(job_args: argparse.Namespace) -> dict:
    """Train the main job's RL configuration for ``--stop-iters`` iterations; evaluate on the unseen split."""
    from rllib_proxmo.experiments.main_job import build_config, draw_from_listed_tasks
    from rllib_proxmo.experiments.tables import history_row

    algo = draw_from_listed_tasks(build_config(job_args)).build_algo()
    try:
        history = [history_row(i, algo.train()) for i in range(1, job_args.stop_iters + 1)]
        evaluation = algo.evaluate()["env_runners"]
    finally:
        algo.stop()
    return {"history": history, "unseen_success": float(evaluation["success_rate"]), "evaluation": evaluation}


def main(argv: list[str] | None = None) -> dict:
    args, job_flags = parse_args(argv)
    # Arguments first: importing the ALFWorld stack rewrites sys.argv (docs/design.md).
    import ray

    from rllib_proxmo.experiments import main_job
    from rllib_proxmo.experiments.plots import plot_success_bands
    from rllib_proxmo.experiments.runtime import quiet_framework_output, start_ray

    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    quiet_framework_output()
    common = [*job_flags, "--no-mlflow", "--stop-iters", str(args.stop_iters)]
    warm_args = main_job.parse_args([*common, "--output", str(out / "warm_start_run")])
    start = time.perf_counter()
    warm_dir = main_job.warm_start_model(warm_args, main_job.build_config(warm_args), out, None)
    warm_s = time.perf_counter() - start
    start_ray(num_cpus=2)
    runs: dict[str, dict[int, dict]] = {}
    try:
        start_args = main_job.parse_args([*common, "--model", str(warm_dir), "--sft-episodes", "0"])
        algo = main_job.build_config(start_args).build_algo()
        try:
            warm_unseen = float(algo.evaluate()["env_runners"]["success_rate"])
        finally:
            algo.stop()
        print(f"warm start ({warm_s:.0f} s): unseen success {warm_unseen:.2f}", flush=True)
        for estimator in args.estimators:
            for seed in args.seeds:
                job = main_job.parse_args(
                    [*common, "--model", str(warm_dir), "--sft-episodes", "0", "--estimator", estimator]
                    + ["--seed", str(seed), "--output", str(out / f"{estimator}-seed{seed}")]
                )
                began = time.perf_counter()
                run = run_one(job)
                run["seconds"] = time.perf_counter() - began
                runs.setdefault(estimator, {})[seed] = run
                curve = " ".join(f"{row['success_rate']:.2f}" for row in run["history"])
                print(
                    f"{estimator} seed {seed}: training success per iteration {curve} | "
                    f"unseen {run['unseen_success']:.2f} | {run['seconds']:.0f} s",
                    flush=True,
                )
    finally:
        ray.shutdown()
    summary = {"warm_start_unseen_success": warm_unseen, "warm_start_s": warm_s, "estimators": {}}
    print(f"\n| estimator | training success, iteration 1 → {args.stop_iters} | unseen success |\n|---|---|---|")
    print(f"| warm start | - | {warm_unseen:.2f} |")
    for estimator, by_seed in runs.items():
        first = _mean_std([r["history"][0]["success_rate"] for r in by_seed.values()])
        last = _mean_std([r["history"][-1]["success_rate"] for r in by_seed.values()])
        unseen = _mean_std([r["unseen_success"] for r in by_seed.values()])
        summary["estimators"][estimator] = {
            "first_iteration_success": first,
            "last_iteration_success": last,
            "unseen_success": unseen,
            "runs": {str(seed): run for seed, run in by_seed.items()},
        }
        print(
            f"| {estimator} (n={len(by_seed)}) | {first[0]:.2f} ± {first[1]:.2f} → {last[0]:.2f} ± {last[1]:.2f} "
            f"| {unseen[0]:.2f} ± {unseen[1]:.2f} |"
        )
    (out / "learning_llm.json").write_text(json.dumps({"args": vars(args) | {"out": str(out)}, **summary}, indent=2))
    curves = {
        estimator: [
            [(int(row["iteration"]), row["success_rate"]) for row in run["history"]] for run in by_seed.values()
        ]
        for estimator, by_seed in runs.items()
    }
    plot_success_bands(curves, out / "learning_llm.png", "training success of the warm-started SmolLM2-135M")
    return summary


if __name__ == "__main__":
    main()
