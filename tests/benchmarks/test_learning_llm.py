"""benchmarks/learning_llm.py: its figures over seeds on known runs, and end to end on a tiny model (one warm
start shared by every run, JSON and PNG)."""

from __future__ import annotations

import json

import pytest
from matplotlib.image import imread

from benchmarks import learning_llm
from benchmarks.learning_llm import ZERO_STD_GROUPS
from rllib_proxmo.algorithm.proxmo import EXPECTED_MIXED_GROUPS, TASKS_PLAYED
from rllib_proxmo.experiments.plots import plot_success_bands
from rllib_proxmo.experiments.tables import EVAL_EPISODES, EVAL_HIGH, EVAL_LOW, EVAL_SUCCESS, held_out_figures
from rllib_proxmo.testing import build_tiny_chat_model
from tests.experiments.test_tuned_examples import _result as training_result

WORDS = (
    "task open the chest by pressing red green blue in this order press look help <action> </action> 1 2 3 4".split()
)


@pytest.mark.slow
def test_learning_benchmark_trains_every_estimator_and_seed_from_one_warm_start(tmp_path, capsys):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    out = tmp_path / "bench"
    tiny_job = ["--env", "tests.text_env:TextGuess-v0", "--model", model, "--trainable-layers", "1"]
    tiny_job += ["--sft-episodes", "2", "--sft-epochs", "1", "--max-new-tokens", "6", "--eval-tasks", "2"]
    tiny_job += ["--tasks", "1", "--group-size", "2", "--max-turns", "2", "--task-sampling", "informative"]
    summary = learning_llm.main(
        ["--estimators", "proxmo", "grpo", "--seeds", "0", "--stop-iters", "1", "--out", str(out), "--", *tiny_job]
    )
    assert set(summary["estimators"]) == {"proxmo", "grpo"}
    saved = json.loads((out / "learning_llm.json").read_text())
    assert saved["warm_start"]["source"] == "fine-tuned" and saved["warm_start"]["seconds"] > 0
    grpo = saved["estimators"]["grpo"]
    (row,) = grpo["runs"]["0"]["history"]
    assert row["iteration"] == 1.0 and 0 < row[EXPECTED_MIXED_GROUPS] < 1 and row[TASKS_PLAYED] == 1
    # --eval-every is the main job's 5: the one iteration did not evaluate, the final evaluation did.
    assert [point["iteration"] for point in grpo["unseen"]] == [0, 1]
    assert EVAL_SUCCESS in grpo["runs"]["0"]["history"][-1]
    assert (out / "learning_llm.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "warm_start" / "warm_start.json").exists()
    printed = capsys.readouterr().out
    assert "warm start (" in printed and "| proxmo (n=1) |" in printed and "| grpo (n=1) |" in printed


class FakeAlgorithm:
    """Results shaped as ProxMO's ``train()`` gives them, an evaluation every ``eval_every``-th iteration."""

    def __init__(self, eval_every: int) -> None:
        self.eval_every = eval_every
        self.iteration = 0
        self.evaluations = 0

    def train(self) -> dict:
        self.iteration += 1
        evaluated = self.iteration % self.eval_every == 0
        extra = {"evaluation": {"env_runners": {"success_rate": 0.5, "num_episodes": 4.0}}} if evaluated else {}
        result = training_result(self.iteration, 0.1 * self.iteration, **extra)
        result["proxmo"]["advantages"] = {ZERO_STD_GROUPS: 0.25}
        return result

    def evaluate(self) -> dict:
        self.evaluations += 1
        return {"env_runners": {"success_rate": 0.75, "num_episodes": 4.0}}


def test_a_run_evaluates_once_after_its_last_iteration(capsys):
    algo = FakeAlgorithm(eval_every=2)
    history, evaluation = learning_llm.train_and_evaluate(algo, 3, "proxmo seed 0")
    assert algo.evaluations == 1 and evaluation["success_rate"] == 0.75
    assert [row.get(EVAL_SUCCESS) for row in history] == [None, 0.5, 0.75]
    assert all(row[ZERO_STD_GROUPS] == 0.25 and EXPECTED_MIXED_GROUPS not in row for row in history)
    printed = capsys.readouterr().out
    assert "proxmo seed 0: iter 2/3 | success 0.20 | unseen 0.50" in printed
    assert printed.endswith("proxmo seed 0: unseen 0.75 after iteration 3\n")
    # The last iteration evaluated: its evaluation is the final one.
    algo = FakeAlgorithm(eval_every=2)
    history, evaluation = learning_llm.train_and_evaluate(algo, 2, "grpo seed 1")
    assert algo.evaluations == 0 and evaluation["success_rate"] == 0.5 and history[-1][EVAL_SUCCESS] == 0.5


def _run(successes: list[float], zero_std: list[float], unseen: dict[int, float], seconds: float) -> dict:
    """A run as run_one returns it: training success and zero-std fraction per iteration, unseen success at some."""
    history = [
        {
            "iteration": float(i),
            "success_rate": s,
            ZERO_STD_GROUPS: z,
            **held_out_figures({"success_rate": unseen[i], "num_episodes": 8.0} if i in unseen else {}),
        }
        for i, (s, z) in enumerate(zip(successes, zero_std), start=1)
    ]
    return {"history": history, "seconds": seconds}


WARM = held_out_figures({"success_rate": 0.25, "num_episodes": 8.0})
RUNS = {
    "proxmo": {
        0: _run([0.2, 0.4], [0.5, 0.3], {2: 0.5}, 100.0),
        1: _run([0.4, 0.6], [0.7, 0.5], {2: 0.25}, 120.0),
    },
    "grpo": {0: _run([0.1, 0.3], [0.6, 0.6], {1: 0.25, 2: 0.375}, 90.0)},
}


def test_figures_over_seeds_per_iteration_with_each_seeds_interval():
    summary = learning_llm.summarize(RUNS["proxmo"], WARM)
    assert summary["seeds"] == [0, 1] and summary["seconds_per_run"] == 110.0
    first, last = summary["training"]
    assert first["iteration"] == 1 and first["success"] == pytest.approx([0.3, 0.1414], abs=1e-4)
    assert last["success"] == pytest.approx([0.5, 0.1414], abs=1e-4)
    assert [row[ZERO_STD_GROUPS] for row in summary["training"]] == pytest.approx([0.6, 0.4])
    start, end = summary["unseen"]
    # Iteration 0 is the warm start's evaluation, the same for every seed.
    assert (start["iteration"], start["success"]) == (0, [0.25, 0.0])
    assert start["by_seed"] == {"0": WARM, "1": WARM}
    assert end["iteration"] == 2 and end["success"] == pytest.approx([0.375, 0.1768], abs=1e-4)
    low, high = end["by_seed"]["1"][EVAL_LOW], end["by_seed"]["1"][EVAL_HIGH]
    assert end["by_seed"]["1"][EVAL_SUCCESS] == 0.25 and low < 0.25 < high and end["by_seed"]["1"][EVAL_EPISODES] == 8
    assert json.loads(json.dumps(summary)) == summary


def test_tables_show_one_row_per_estimator_and_every_evaluated_iteration():
    summaries = {estimator: learning_llm.summarize(runs, WARM) for estimator, runs in RUNS.items()}
    assert learning_llm.summary_table(summaries).splitlines() == [
        "| estimator | training success, iteration 1 → 2 | unseen success, warm start → end | zero-std groups "
        "| s per run |",
        "|---|---|---|---|---|",
        "| proxmo (n=2) | 0.30 ± 0.14 → 0.50 ± 0.14 | 0.25 → 0.38 ± 0.18 | 0.50 | 110 |",
        "| grpo (n=1) | 0.10 ± 0.00 → 0.30 ± 0.00 | 0.25 → 0.38 ± 0.00 | 0.60 | 90 |",
    ]
    assert learning_llm.unseen_table(summaries).splitlines()[2:] == [
        "| proxmo | 0.25 ± 0.00 | - | 0.38 ± 0.18 |",
        "| grpo | 0.25 ± 0.00 | 0.25 ± 0.00 | 0.38 ± 0.00 |",
    ]


def test_success_bands_take_a_held_out_panel(tmp_path):
    training = {e: learning_llm.training_curves(runs, "success_rate") for e, runs in RUNS.items()}
    unseen = {e: learning_llm.unseen_curves(runs, WARM) for e, runs in RUNS.items()}
    assert unseen["grpo"] == [[(0, 0.25), (1, 0.25), (2, 0.375)]]
    one = imread(plot_success_bands(training, tmp_path / "one.png", "t"))
    two = imread(plot_success_bands(training, tmp_path / "two.png", "t", unseen, split="unseen"))
    assert one.shape[0] == two.shape[0] and two.shape[1] == 2 * one.shape[1]
    with pytest.raises(ValueError, match="group 'grpo' has no success-rate point"):
        plot_success_bands(training, tmp_path / "x.png", "t", {"grpo": [[]]})


def test_a_reused_warm_start_brings_its_seconds(tmp_path):
    (tmp_path / "warm_start.json").write_text(json.dumps({"seconds": 812.5, "num_episodes": 64}))
    assert learning_llm.reused_warm_start(tmp_path) == {"source": "reused", "dir": str(tmp_path), "seconds": 812.5}
    with pytest.raises(FileNotFoundError, match="no warm_start.json"):
        learning_llm.reused_warm_start(tmp_path / "missing")


def test_the_defaults_compare_three_estimators_on_two_seeds_with_the_main_jobs_iterations():
    args, job_flags = learning_llm.parse_args(["--warm-start", "w", "--", "--tasks", "4"])
    assert (args.estimators, args.seeds, args.stop_iters, args.eval_every) == (
        ["proxmo", "grpo", "gigpo"],
        [0, 1],
        None,
        None,
    )
    assert str(args.warm_start) == "w" and job_flags == ["--tasks", "4"]
