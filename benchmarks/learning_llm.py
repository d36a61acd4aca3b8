"""Does RL improve the warm-started SmolLM2-135M on generated ALFWorld games, and which estimator more?

One shared warm start: the model directory ``--warm-start`` names (the main job's
``results/<run>/warm_start``), or else the main job's own (searching-expert demonstrations, top-4-layer
fine-tuning) written to ``<out>/warm_start``. Then, for every estimator and seed, the main job's RL
configuration from that model for ``--stop-iters`` iterations, the same iterations and settings for
every estimator; the runs go seed by seed, every estimator within a seed. Every run plays the unseen
split (the main job's evaluation: temperature 0.4, the same tasks and seeds every time) after every
``--eval-every``-th iteration and after the last one (once, when the last iteration evaluated
anyway); the warm start's own evaluation is iteration 0.

Prints two Markdown tables: per estimator the training success of the first and the last iteration
and the unseen success of the warm start and at the end (mean ± std over seeds), the mean fraction of
task groups whose returns were all equal (no episode-level signal) and the seconds per run; and the
unseen success of every evaluated iteration. Writes ``learning_llm.json`` (per iteration and
estimator: training success and zero-std group fraction over seeds; per evaluated iteration: unseen
success over seeds and each seed's 95 % Wilson interval; every run's history; the warm start, where
it came from and its seconds; the wall time of every run and in total) and ``learning_llm.png``
(training success and unseen success per iteration, a mean ± std band per estimator), both
rewritten after every run.

The main job's defaults are the transfer setting (48 generated games per split, a warm start on 64
searching-expert episodes, held answers and the unlisted prompt, 3 tasks x 4 rollouts per iteration,
10 turns, 10 iterations, 48 unseen episodes per evaluation, every 5 iterations). On an idle 2-core
Intel Xeon (session 13) a run of the 10 iterations and its two evaluations took 16-18 minutes
(iterations of about 60 s), the warm start's evaluation 3-4 minutes: the defaults (proxmo, grpo and gigpo,
seeds 0 and 1) took 108 minutes reusing the main job's warm start (``benchmarks/results/cpu_default.md``)::

    python benchmarks/learning_llm.py --warm-start results/<run>/warm_start \\
        --out benchmarks/results/learning_llm_held

Every flag the main job takes can follow ``--`` (e.g. ``-- --tasks 4 --group-size 8``); with
``--warm-start``, give those of the main job that wrote it (the env, the games, the model's layers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rllib_proxmo.experiments.plots import Curve, curve_band, plot_success_bands
from rllib_proxmo.experiments.tables import (
    EVAL_HIGH,
    EVAL_LOW,
    EVAL_SUCCESS,
    held_out_figures,
    held_out_points,
    markdown_table,
)

#: Key of a training result's ``proxmo/advantages`` (and of a history row here): the fraction of task
#: groups whose episode returns were all equal.
ZERO_STD_GROUPS = "zero_std_group_fraction"


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--estimators", nargs="+", default=["proxmo", "grpo", "gigpo"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--stop-iters", type=int, help="RL iterations per estimator and seed (default: the main job's)")
    parser.add_argument(
        "--eval-every", type=int, help="evaluate on the unseen split every N iterations (default: the main job's)"
    )
    parser.add_argument(
        "--warm-start",
        type=Path,
        metavar="DIR",
        help="start every run from this warm-started model directory (with warm_start.json, e.g. the main "
        "job's results/<run>/warm_start) instead of fine-tuning one",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learning_llm_cpu"))
    args, rest = parser.parse_known_args(argv)
    return args, [arg for arg in rest if arg != "--"]


def reused_warm_start(directory: Path) -> dict[str, Any]:
    """The warm start saved in ``directory``: ``source`` "reused", ``dir`` and ``seconds`` (from its summary file).

    Raises:
        FileNotFoundError: when ``directory`` holds no ``warm_start.json``.
    """
    from rllib_proxmo.sft.warm_start import SUMMARY_FILE

    summary = directory / SUMMARY_FILE
    if not summary.is_file():
        raise FileNotFoundError(
            f"--warm-start {directory}: no {SUMMARY_FILE}; expected a warm start the main job wrote "
            "(results/<run>/warm_start)"
        )
    return {"source": "reused", "dir": str(directory), "seconds": float(json.loads(summary.read_text())["seconds"])}


def own_warm_start(job_flags: list[str], out: Path) -> dict[str, Any]:
    """Fine-tune the main job's warm start into ``out / "warm_start"``: ``source`` "fine-tuned", ``dir``,
    ``seconds``."""
    from rllib_proxmo.experiments import main_job

    warm_args = main_job.parse_args([*job_flags, "--output", str(out / "warm_start_run")])
    start = time.perf_counter()
    warm_dir = main_job.warm_start_model(warm_args, main_job.build_config(warm_args), out, None)
    return {"source": "fine-tuned", "dir": str(warm_dir), "seconds": time.perf_counter() - start}


def train_and_evaluate(algo: Any, iterations: int, label: str) -> tuple[list[dict[str, float]], dict[str, float]]:
    """Train ``algo`` for ``iterations`` iterations; return the history rows and the final unseen evaluation.

    Each row is the main job's (:func:`~rllib_proxmo.experiments.tables.history_row`: held-out
    figures where the iteration evaluated) with the iteration's :data:`ZERO_STD_GROUPS` and, when the
    run draws its tasks by their outcomes (``-- --task-sampling informative``), the drawn tasks'
    expected fraction of mixed groups and the number of tasks played so far. The final
    evaluation is the last iteration's when it ran one, else one :meth:`evaluate` call whose
    held-out figures the last row then gets. Prints the main job's progress line per iteration and
    the success of the evaluation it ran after the last iteration, after ``label``.
    """
    from rllib_proxmo.algorithm.proxmo import ADVANTAGE_RESULTS, EXPECTED_MIXED_GROUPS, PROXMO_RESULTS, TASKS_PLAYED
    from rllib_proxmo.experiments.main_job import progress_line
    from rllib_proxmo.experiments.tables import history_row

    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for iteration in range(1, iterations + 1):
        result = algo.train()
        row = history_row(iteration, result)
        row[ZERO_STD_GROUPS] = float(result[PROXMO_RESULTS][ADVANTAGE_RESULTS][ZERO_STD_GROUPS])
        row.update(
            {
                key: float(result[PROXMO_RESULTS][key])
                for key in (EXPECTED_MIXED_GROUPS, TASKS_PLAYED)
                if key in result[PROXMO_RESULTS]
            }
        )
        history.append(row)
        eta_s = (iterations - iteration) * (time.perf_counter() - start) / iteration
        print(f"{label}: {progress_line(iteration, iterations, row, eta_s=eta_s, split='unseen')}", flush=True)
    evaluation = result.get("evaluation", {}).get("env_runners")
    if evaluation is None:
        evaluation = algo.evaluate()["env_runners"]
        history[-1].update(held_out_figures(evaluation))
        print(f"{label}: unseen {history[-1][EVAL_SUCCESS]:.2f} after iteration {iterations}", flush=True)
    return history, evaluation


def run_one(job_args: argparse.Namespace, label: str) -> dict[str, Any]:
    """Build the main job's RL configuration and :func:`train_and_evaluate` it for ``--stop-iters`` iterations.

    Returns the ``history``, the final ``evaluation`` and the run's wall time in ``seconds``.
    """
    from rllib_proxmo.experiments.main_job import build_config, draw_from_listed_tasks

    start = time.perf_counter()
    algo = draw_from_listed_tasks(build_config(job_args)).build_algo()
    try:
        history, evaluation = train_and_evaluate(algo, job_args.stop_iters, label)
    finally:
        algo.stop()
    return {"history": history, "evaluation": evaluation, "seconds": time.perf_counter() - start}


def training_curves(runs: Mapping[int, Mapping[str, Any]], key: str) -> list[Curve]:
    """Each run's (iteration, ``key``) history."""
    return [[(int(row["iteration"]), row[key]) for row in run["history"]] for run in runs.values()]


def unseen_curves(runs: Mapping[int, Mapping[str, Any]], warm_start: Mapping[str, float]) -> list[Curve]:
    """Each run's (iteration, unseen success) of its evaluations, the warm start's (``warm_start``) at 0."""
    return [
        [(i, figures[EVAL_SUCCESS]) for i, figures in held_out_points(run["history"], warm_start)]
        for run in runs.values()
    ]


def summarize(runs: Mapping[int, Mapping[str, Any]], warm_start: Mapping[str, float]) -> dict[str, Any]:
    """One estimator's figures over its runs (seed -> :func:`run_one`'s run).

    Keys: ``seeds``; ``training``, per iteration: ``success`` [mean, std] and the mean
    ``zero_std_group_fraction``; ``unseen``, per evaluated iteration (0: the warm start, whose
    held-out figures ``warm_start`` are, shared by every seed): ``success`` [mean, std] and
    ``by_seed`` (seed -> success, 95 % Wilson interval, episodes); ``seconds_per_run`` (mean).
    Standard deviations are over seeds (sample std; 0 for one seed).
    """
    iterations, success, success_std = curve_band(training_curves(runs, "success_rate"))
    _, zero_std, _ = curve_band(training_curves(runs, ZERO_STD_GROUPS))
    evaluated, unseen, unseen_std = curve_band(unseen_curves(runs, warm_start))
    by_seed = {seed: dict(held_out_points(run["history"], warm_start)) for seed, run in runs.items()}
    return {
        "seeds": list(runs),
        "training": [
            {"iteration": int(i), "success": [float(m), float(s)], ZERO_STD_GROUPS: float(z)}
            for i, m, s, z in zip(iterations, success, success_std, zero_std)
        ],
        "unseen": [
            {
                "iteration": int(i),
                "success": [float(m), float(s)],
                "by_seed": {str(seed): points[i] for seed, points in by_seed.items() if i in points},
            }
            for i, m, s in zip(evaluated.tolist(), unseen, unseen_std)
        ],
        "seconds_per_run": float(np.mean([run["seconds"] for run in runs.values()])),
    }


def _mean_std(pair: Sequence[float]) -> str:
    return f"{pair[0]:.2f} ± {pair[1]:.2f}"


def summary_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One Markdown row per estimator (:func:`summarize`'s figures): training success of the first → the last
    iteration, unseen success of the warm start → the end, mean zero-std group fraction, seconds per run."""
    some = next(iter(summaries.values()))
    first, last = some["training"][0]["iteration"], some["training"][-1]["iteration"]
    columns = [
        "estimator",
        f"training success, iteration {first} → {last}",
        "unseen success, warm start → end",
        "zero-std groups",
        "s per run",
    ]
    rows = [
        [
            f"{estimator} (n={len(summary['seeds'])})",
            f"{_mean_std(summary['training'][0]['success'])} → {_mean_std(summary['training'][-1]['success'])}",
            f"{summary['unseen'][0]['success'][0]:.2f} → {_mean_std(summary['unseen'][-1]['success'])}",
            f"{np.mean([row[ZERO_STD_GROUPS] for row in summary['training']]):.2f}",
            f"{summary['seconds_per_run']:.0f}",
        ]
        for estimator, summary in summaries.items()
    ]
    return markdown_table(columns, rows)


def unseen_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """Unseen success (mean ± std over seeds) per estimator and evaluated iteration (0: the warm start)."""
    evaluated = sorted({point["iteration"] for summary in summaries.values() for point in summary["unseen"]})
    columns = ["estimator", *(f"iteration {i}" for i in evaluated)]
    rows = []
    for estimator, summary in summaries.items():
        by_iteration = {point["iteration"]: _mean_std(point["success"]) for point in summary["unseen"]}
        rows.append([estimator, *(by_iteration.get(i, "-") for i in evaluated)])
    return markdown_table(columns, rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args, job_flags = parse_args(argv)
    began = time.perf_counter()
    # Arguments first: importing the ALFWorld stack rewrites sys.argv (docs/design.md).
    import ray

    from rllib_proxmo.experiments import main_job
    from rllib_proxmo.experiments.runtime import quiet_framework_output, start_ray

    out = args.out.resolve()
    common = [*job_flags, "--no-mlflow"]
    for flag, value in (("--stop-iters", args.stop_iters), ("--eval-every", args.eval_every)):
        if value is not None:
            common += [flag, str(value)]
    warm = reused_warm_start(args.warm_start.resolve()) if args.warm_start else None
    out.mkdir(parents=True, exist_ok=True)
    quiet_framework_output()
    if warm is None:
        warm = own_warm_start(common, out)
    start_ray(num_cpus=2)
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    try:
        start_args = main_job.parse_args([*common, "--model", warm["dir"], "--sft-episodes", "0"])
        algo = main_job.draw_from_listed_tasks(main_job.build_config(start_args)).build_algo()
        try:
            warm["evaluation"] = algo.evaluate()["env_runners"]
        finally:
            algo.stop()
        warm["unseen"] = held_out_figures(warm["evaluation"])
        print(
            f"warm start ({warm['source']}, {warm['seconds']:.0f} s): unseen success "
            f"{warm['unseen'][EVAL_SUCCESS]:.2f} ({warm['unseen'][EVAL_LOW]:.2f}-{warm['unseen'][EVAL_HIGH]:.2f})",
            flush=True,
        )
        # Seed-major: a benchmark stopped early still compares every estimator on its first seeds.
        for seed in args.seeds:
            for estimator in args.estimators:
                job = main_job.parse_args(
                    [*common, "--model", warm["dir"], "--sft-episodes", "0", "--estimator", estimator]
                    + ["--seed", str(seed), "--output", str(out / f"{estimator}-seed{seed}")]
                )
                run = run_one(job, f"{estimator} seed {seed}")
                runs.setdefault(estimator, {})[seed] = run
                print(f"{estimator} seed {seed}: done in {run['seconds']:.0f} s", flush=True)
                report = write_report(
                    out,
                    runs,
                    warm,
                    time.perf_counter() - began,
                    {"args": vars(args) | {"out": out}, "job_flags": common, "eval_every": start_args.eval_every},
                )
    finally:
        ray.shutdown()
    summaries = report["estimators"]
    print(f"\n{summary_table(summaries)}\n\nunseen success per evaluated iteration (0: warm start):\n")
    print(f"{unseen_table(summaries)}\n\ntotal {report['total_s']:.0f} s")
    return report


def write_report(
    out: Path,
    runs: Mapping[str, Mapping[int, Mapping[str, Any]]],
    warm: Mapping[str, Any],
    total_s: float,
    settings: Mapping[str, Any],
) -> dict[str, Any]:
    """Write ``learning_llm.json`` and ``learning_llm.png`` of the runs so far (estimator -> seed -> run)
    and return the report; called after every run, so that a benchmark stopped early keeps its figures."""
    report = {
        **settings,
        "warm_start": warm,
        "total_s": total_s,
        "estimators": {
            estimator: {**summarize(by_seed, warm["unseen"]), "runs": {str(seed): run for seed, run in by_seed.items()}}
            for estimator, by_seed in runs.items()
        },
    }
    (out / "learning_llm.json").write_text(json.dumps(report, indent=2, default=str))
    plot_success_bands(
        {estimator: training_curves(by_seed, "success_rate") for estimator, by_seed in runs.items()},
        out / "learning_llm.png",
        "RL from one warm start: success per iteration",
        {estimator: unseen_curves(by_seed, warm["unseen"]) for estimator, by_seed in runs.items()},
        split="unseen",
    )
    return report


if __name__ == "__main__":
    main()
