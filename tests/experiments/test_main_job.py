"""The main job: CLI, config building, time budget, tables, plot, and two tiny end-to-end runs.

The end-to-end runs use a tiny random chat model on ``TextGuess-v0`` (one iteration,
a few tokens) and a real SQLite MLflow store in ``tmp_path``, read back with
``MlflowClient``; the first runs ``python -m rllib_proxmo.train`` itself and checks its
start-up output.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from logging.handlers import BufferingHandler
from pathlib import Path

import pytest
import ray
from matplotlib.figure import Figure
from mlflow import MlflowClient
from ray.tune.registry import register_env

from envs import ALFWORLD, ALFWORLD_TASK_TYPES
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import SAMPLER_LOGP_GAP_MAX
from rllib_proxmo.experiments import plots
from rllib_proxmo.experiments.checkpoints import (
    JOB_STATE_FILE,
    InsufficientSpaceError,
    latest_checkpoint,
    periodic_checkpoint_dir,
    save_atomically,
)
from rllib_proxmo.experiments.main_job import (
    EVALUATION_CPUS,
    RL_ITERATIONS,
    build_config,
    draw_from_listed_tasks,
    iterations_to_plan,
    parse_args,
    progress_line,
    train,
)
from rllib_proxmo.experiments.plots import plot_learning_curve
from rllib_proxmo.experiments.runtime import PROGRESS_BARS_VARIABLE as PROGRESS_BARS
from rllib_proxmo.experiments.runtime import quiet_framework_output
from rllib_proxmo.experiments.scale import CPU, PAPER
from rllib_proxmo.experiments.tables import (
    EVAL_EPISODES,
    EVAL_HIGH,
    EVAL_LOW,
    EVAL_SUCCESS,
    evaluation_table,
    held_out_figures,
    history_row,
    wilson_interval,
    write_evaluation_table,
)
from rllib_proxmo.rollout.engines.vllm_engine import installed_build
from rllib_proxmo.testing import build_tiny_chat_model
from tests.experiments.test_tuned_examples import _result as training_result
from tests.text_env import DEFAULT_BUTTONS, TextGuessEnv

REPO = Path(__file__).resolve().parents[2]
#: History-row keys of an iteration's held-out evaluation.
HELD_OUT = (EVAL_SUCCESS, EVAL_LOW, EVAL_HIGH, EVAL_EPISODES)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_defaults_fit_the_cpu_budget(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    args = parse_args([])
    assert (args.env, args.model, args.estimator) == ("ALFWorld-v0", "smollm2-135m-instruct", "proxmo")
    assert (args.tasks, args.group_size, args.max_turns, args.max_new_tokens) == (3, 4, 10, 24)
    assert (args.num_games, args.eval_tasks, args.sft_episodes, args.sft_epochs) == (48, 48, 64, 4)
    assert (args.sft_episodes, args.trainable_layers, args.lr) == (CPU.warm_up_episodes, 4, CPU.lr)
    # Demonstrations play on past an RL episode's 10 turns, to the end of their task.
    assert args.sft_max_turns == CPU.warm_up_max_turns == 30
    config = build_config(args)
    # Answers held to the admissible commands, so the prompt lists none.
    assert config.llm_env_config == {"template": "alfworld-unlisted", "history_length": 1, "require_think": False}
    assert config.model_config["constrain_to_admissible"] is True
    config.validate()  # the CPU prompt has no think block
    assert config.model_config["trainable_layers"] == 4 and config.old_logp_source == "sampler"
    assert config.model_config["reuse_sampler_trunk"]
    # An empty system message, not SmolLM2's default one; the paper's scale keeps the model's own.
    assert config.model_config["system_prompt"] == "" and "system_prompt" not in PAPER.model_config(ALFWORLD)
    for argv in (["--trainable-layers", "0"], ["--engine", "vllm"], ["--num-gpus-per-learner", "1"]):
        assert "reuse_sampler_trunk" not in build_config(parse_args(argv)).model_config
    assert (args.stop_iters, args.time_budget_min) == (RL_ITERATIONS, None)
    assert args.eval_every == config.evaluation_interval == CPU.evaluation_interval
    assert build_config(parse_args(["--eval-every", "0"])).evaluation_interval == 0
    # Free answers (by choice, or with vLLM, which cannot hold them) read the actions from the prompt.
    for argv in (["--no-constrain-to-admissible"], ["--engine", "vllm"]):
        free = build_config(parse_args(argv))
        assert "constrain_to_admissible" not in free.model_config
        assert free.llm_env_config["template"] == "alfworld-compact"
    webshop = build_config(parse_args(["--env", "WebShop-v0", "--llm-env-config", '{"require_think": false}']))
    assert "constrain_to_admissible" not in webshop.model_config
    held = build_config(
        parse_args(["--env", "WebShop-v0", "--llm-env-config", '{"require_think": false}', "--constrain-to-admissible"])
    )
    assert held.model_config["constrain_to_admissible"] is True and held.llm_env_config == {"require_think": False}
    assert args.num_gpus_per_learner == 0 and args.address is None and not args.no_mlflow
    assert args.output == Path("results") / args.run_name and args.run_name.startswith("proxmo-ALFWorld-v0-")


class _UnlistedTextGuess(TextGuessEnv):
    """TextGuess without a task list, as a custom env may be."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        del self.task_ids


def test_training_draws_from_the_tasks_the_env_lists():
    listed = parse_args(["--env", "tests.text_env:TextGuess-v0", "--env-config", '{"code_length": 1}'])
    config = draw_from_listed_tasks(build_config(listed))
    assert config.task_ids == list(range(len(DEFAULT_BUTTONS)))
    assert config.get_evaluation_config_object().task_ids is None
    register_env("UnlistedTextGuess", lambda env_config: _UnlistedTextGuess(**env_config))
    unlisted = build_config(parse_args(["--env", "tests.text_env:TextGuess-v0"])).environment("UnlistedTextGuess")
    assert draw_from_listed_tasks(unlisted).task_ids is None
    # Weighted draws need the list: the env's own validates, an env without one is refused by name.
    informative = ["--env", "tests.text_env:TextGuess-v0", "--task-sampling", "informative"]
    listed = draw_from_listed_tasks(build_config(parse_args(informative)))
    listed.validate()
    listed.get_evaluation_config_object().validate()  # its own tasks, drawn uniformly by evaluate()
    assert listed.task_sampling == "informative"
    unlisted = draw_from_listed_tasks(build_config(parse_args(informative)).environment("UnlistedTextGuess"))
    with pytest.raises(ValueError, match="distinct, hashable task ids"):
        unlisted.validate()


def test_scale_options_and_the_cluster_address(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    args = parse_args(
        ["--num-learners", "2", "--num-gpus-per-learner", "1", "--num-env-runners", "4", "--stop-iters", "50"]
        + ["--run-name", "big"]
    )
    assert args.address == "ray://head:10001" and args.num_learners == 2 and args.output == Path("results/big")
    config = build_config(args)
    assert config.num_learners == 2 and config.num_gpus_per_learner == 1 and config.num_env_runners == 4
    assert config.model_config["dtype"] == "bfloat16" and config.sharding == "ddp"
    assert parse_args(["--address", "auto"]).address == "auto"
    sharded = build_config(parse_args(["--num-learners", "2", "--sharding", "fsdp", "--trainable-layers", "0"]))
    assert sharded.sharding == "fsdp" and "trainable_layers" not in sharded.model_config
    sharded.validate()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--stop-iters", "0"], "positive integer"),
        (["--time-budget-min", "-1"], "positive number"),
        (["--env-config", "{not json"], "not valid JSON"),
        (["--env-config", "[1]"], "JSON object"),
        (["--num-gpus-per-learner", "2"], "one GPU per DDP learner"),
        (["--tau", "x"], "invalid float value"),
        (["--num-learners", "4", "--tasks", "2"], "--tasks"),
    ],
)
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_alfworld_evaluates_on_unseen_games_and_webshop_on_test_goals():
    alfworld = build_config(parse_args(["--num-games", "6", "--env-config", '{"max_steps": 20}']))
    assert alfworld.env_config == {
        "data_source": "generated",
        "num_games": 6,
        "task_types": ["pick", "look"],
        "max_steps": 20,
    }
    assert alfworld.evaluation_config["env_config"] == {**alfworld.env_config, "split": "unseen"}
    assert alfworld.model_config["max_new_tokens"] == 24 and alfworld.model_config["dtype"] == "float32"
    assert alfworld.num_gpus_per_learner == 0 and (alfworld.tasks_per_iteration, alfworld.group_size) == (3, 4)
    assert alfworld.llm_env_config == CPU.llm_env_config("ALFWorld-v0", held_answers=True)
    webshop = build_config(
        parse_args(["--env", "WebShop-v0", "--lr", "1e-5", "--llm-env-config", '{"require_think": false}'])
    )
    assert webshop.llm_env_config == {"require_think": False}
    assert webshop.env_config == {"catalog": "generated", "num_products": 200, "max_steps": 15, "reward": "score"}
    assert webshop.evaluation_config["env_config"] == {**webshop.env_config, "split": "test"}
    assert webshop.lr == 1e-5


def test_iteration_plan_follows_the_mean_iteration_time():
    assert iterations_to_plan(0, 0.0, budget_s=900, cap=100) == 100
    assert iterations_to_plan(3, 3000.0, budget_s=None, cap=10) == 10  # no budget: the count alone
    # 2 iterations in 300 s: 150 s each, 600 s left -> 4 more.
    assert iterations_to_plan(2, 300.0, budget_s=900, cap=100) == 6
    assert iterations_to_plan(2, 300.0, budget_s=900, cap=3) == 3
    # Over budget: no more iterations.
    assert iterations_to_plan(5, 950.0, budget_s=900, cap=100) == 5


def test_progress_line_shows_iteration_rates_throughput_and_eta():
    row = {
        "success_rate": 0.25,
        "format_valid_rate": 0.875,
        "prompt_tokens_per_s": 409.6,
        "generated_tokens_per_s": 41.25,
        "turns_per_s": 1.24,
        "time_iteration_s": 160,
    }
    line = progress_line(3, 5, row, eta_s=320.4, split="unseen")
    assert line == (
        "iter 3/5 | success 0.25 | format-valid 0.88 | prompt tok/s 410 | gen tok/s 41.2 | turns/s 1.2 | "
        "iter 160.0 s | ETA 5m20s"
    )
    # An iteration that evaluated: the held-out success and its interval after the training success.
    row.update(held_out_figures({"success_rate": 0.25, "num_episodes": 12.0}))
    line = progress_line(3, 5, row, eta_s=320.4, split="unseen")
    assert line.startswith("iter 3/5 | success 0.25 | unseen 0.25 (0.09-0.53) | format-valid 0.88 | prompt tok/s")
    row["sampler_logp_gap_max"] = 3.14e-6
    assert progress_line(3, 5, row, eta_s=320.4, split="test").endswith("| ETA 5m20s | sampler gap 3.1e-06")


def test_history_rows_carry_the_held_out_success_of_evaluated_iterations_only():
    trained = history_row(1, training_result(1, 0.5))
    assert trained == {
        "iteration": 1.0,
        "success_rate": 0.5,
        "format_valid_rate": 1.0,
        "score_mean": 0.5,
        "generated_tokens_per_s": 10.0,
        "prompt_tokens_per_s": 250.0,  # per second of sampling, as turns_per_s
        "turns_per_s": 7.5,
        "time_iteration_s": 2.0,
    }
    evaluation = {"success_rate": 0.25, "num_episodes": 12.0, "format_valid_rate": 0.9}
    evaluated = history_row(2, training_result(2, 0.5, evaluation={"env_runners": evaluation}))
    low, high = wilson_interval(0.25, 12)
    assert evaluated == {
        **trained,
        "iteration": 2.0,
        EVAL_SUCCESS: 0.25,
        EVAL_LOW: low,
        EVAL_HIGH: high,
        EVAL_EPISODES: 12.0,
    }
    # An evaluation that lost every episode has no rate to show.
    lost = {"env_runners": {"num_episodes": 0.0, "num_turns": 0.0}}
    assert history_row(3, training_result(3, 0.5, evaluation=lost)) == {**trained, "iteration": 3.0}


def test_evaluation_tables_use_the_paper_columns(tmp_path):
    metrics = {"success_rate": 0.25, "success_rate/pick": 0.5, "success_rate/cool": 0.0, "score_mean": 0.3}
    alfworld = evaluation_table("ALFWorld-v0", metrics)
    assert list(alfworld) == [*ALFWORLD_TASK_TYPES, "all"]
    assert alfworld["pick"] == "50.0" and alfworld["cool"] == "0.0" and alfworld["look"] == "-"
    assert alfworld["all"] == "25.0"
    assert evaluation_table("WebShop-v0", metrics) == {"score": "30.0", "success": "25.0"}
    assert evaluation_table("TextGuess-v0", {"success_rate": 1.0}) == {"all": "100.0"}
    csv_path, md_path = write_evaluation_table({"proxmo": alfworld}, tmp_path)
    rows = list(csv.reader(csv_path.open()))
    assert rows == [["method", *ALFWORLD_TASK_TYPES, "all"], ["proxmo", "50.0", "-", "-", "-", "0.0", "-", "25.0"]]
    lines = md_path.read_text().splitlines()
    assert lines[0] == "| method | pick | look | clean | heat | cool | pick2 | all |"
    assert lines[1] == "|---|---|---|---|---|---|---|---|" and lines[2].startswith("| proxmo | 50.0 |")
    # With episode counts, every success rate carries its 95 % Wilson interval (3 of 12: 8.9 % to 53.2 %).
    counted = {**metrics, "num_episodes": 12.0, "num_episodes/pick": 4.0, "num_episodes/cool": 8.0}
    alfworld = evaluation_table("ALFWorld-v0", counted)
    assert (alfworld["all"], alfworld["pick"], alfworld["cool"]) == ("25.0 (9-53)", "50.0 (15-85)", "0.0 (0-32)")
    assert evaluation_table("WebShop-v0", counted)["success"] == "25.0 (9-53)"
    assert wilson_interval(0.0, 12) == pytest.approx((0.0, 0.2425), abs=1e-4)
    with pytest.raises(ValueError, match="at least one episode"):
        wilson_interval(0.5, 0)


#: One iteration's row as the learning curve needs it.
CURVE_ROW = {
    "iteration": 1.0,
    "success_rate": 0.5,
    "format_valid_rate": 1.0,
    "score_mean": 0.5,
    "generated_tokens_per_s": 30.0,
}


def test_learning_curve_is_a_png_and_rejects_bad_history(tmp_path):
    row = dict(CURVE_ROW)
    path = plot_learning_curve(
        [row, {**row, "iteration": 2.0}], tmp_path / "sub" / "curve.png", "t", {"success_rate": 1}
    )
    assert path.read_bytes()[:8] == PNG_MAGIC
    with pytest.raises(ValueError, match="at least one iteration"):
        plot_learning_curve([], tmp_path / "empty.png", "t")
    with pytest.raises(ValueError, match="score_mean"):
        plot_learning_curve([{k: v for k, v in row.items() if k != "score_mean"}], tmp_path / "bad.png", "t")


def _drawn_figures(monkeypatch) -> list[Figure]:
    """The figures :mod:`~rllib_proxmo.experiments.plots` saves from now on, in order."""
    figures, save = [], plots._save
    monkeypatch.setattr(plots, "_save", lambda figure, path: figures.append(figure) or save(figure, path))
    return figures


def test_learning_curve_joins_the_held_out_evaluations_over_their_wilson_band(tmp_path, monkeypatch):
    figures = _drawn_figures(monkeypatch)
    row = dict(CURVE_ROW)
    evaluated = {**row, **held_out_figures({"success_rate": 0.25, "num_episodes": 12.0})}
    history = [row, {**evaluated, "iteration": 2.0}, {**row, "iteration": 3.0}, {**evaluated, "iteration": 4.0}]
    start = {"success_rate": 0.0, "num_episodes": 12.0, "format_valid_rate": 0.5, "score_mean": 0.0}
    final = {**start, "success_rate": 0.25}
    plot_learning_curve(history, tmp_path / "curve.png", "t", final, start, start_label="warm start", split="unseen")
    success = figures[-1].axes[0]
    labels = [text.get_text() for text in success.get_legend().get_texts()]
    assert labels == [
        "success rate",
        "unseen success rate (evaluation)",
        "unseen success rate, 95 % Wilson interval",
        "unseen success rate (warm start)",
        "format-valid rate",
        "format-valid rate (warm start, evaluation)",
        "format-valid rate (evaluation)",
        "RL starts (warm start ended)",
    ]
    # The start evaluation and the evaluated iterations; the last one's evaluation is the final one.
    held_out = next(line for line in success.lines if line.get_label() == "unseen success rate (evaluation)")
    assert list(held_out.get_xdata()) == [0.0, 2.0, 4.0] and list(held_out.get_ydata()) == [0.0, 0.25, 0.25]
    # The band spans the Wilson intervals: from 0 of the start's 0/12 to the top of 3/12's.
    (band,) = success.collections
    heights = band.get_paths()[0].vertices[:, 1]
    assert (heights.min(), heights.max()) == pytest.approx((0.0, wilson_interval(0.25, 12)[1]))
    # The rows hold the held-out figures: a final evaluation outside them adds no point (only stars).
    plot_learning_curve(history[:1], tmp_path / "start.png", "t", final, start)
    held_out = next(
        line for line in figures[-1].axes[0].lines if line.get_label() == "held-out success rate (evaluation)"
    )
    assert list(held_out.get_xdata()) == [0.0] and len(figures[-1].axes[0].collections) == 1
    # Without any evaluation: the training curves alone.
    plot_learning_curve(history[:1], tmp_path / "none.png", "t")
    assert [line.get_label() for line in figures[-1].axes[0].lines] == ["success rate", "format-valid rate"]
    assert not figures[-1].axes[0].collections


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    words = ["press", "look", "help", "<action>", "</action>", *DEFAULT_BUTTONS]
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), words, seed=0))


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=3, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


TINY_RUN = [
    "--env",
    "tests.text_env:TextGuess-v0",
    "--stop-iters",
    "1",
    "--max-new-tokens",
    "6",
    "--eval-tasks",
    "3",
    "--run-name",
    "tiny-run",
    "--trainable-layers",
    "1",
    "--sft-episodes",
    "2",
    "--sft-epochs",
    "1",
]
#: Framework output a start-up of the job used to print (runtime.quiet_framework_output drops it).
FRAMEWORK_NOTICES = (
    "Token authentication is enabled",
    "RLModuleConfig",
    "on the new API stack",
    "evaluation workers, but your `evaluation_interval`",
    "Install gputil",
    "Trainable.setup took",
    "Loading weights",
)


def _tiny_run_args(model: str, output: Path, *extra: str):
    return parse_args([*TINY_RUN, "--model", model, "--output", str(output), *extra])


def test_a_warm_start_framed_with_another_system_message_is_refused_before_ray_starts(tiny_model, tmp_path):
    """``--model`` a warm start whose ``warm_start.json`` records another system message than the job's
    (here none: saved before the setting, with the template's default) fails at once, naming both."""
    warm = tmp_path / "old_warm_start"
    shutil.copytree(tiny_model, warm)
    (warm / "warm_start.json").write_text(json.dumps({"base_model": "x", "seconds": 1.0}))
    with pytest.raises(ValueError, match="the chat template's default .* system_prompt=''"):
        train(_tiny_run_args(str(warm), tmp_path / "run", "--sft-episodes", "0"))
    assert not ray.is_initialized()


def test_help_is_printed_without_importing_ray():
    code = (
        "import sys\n"
        "from rllib_proxmo.experiments import main_job\n"
        "try:\n"
        "    main_job.main(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "assert 'ray' not in sys.modules, 'ray was imported'\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True).stdout
    assert out.startswith("usage: python -m rllib_proxmo.train") and "--checkpoint-artifact-max-mb" in out


def test_framework_notices_are_dropped_by_logger_and_message_and_errors_always_pass():
    import transformers.utils.logging as hf_logging

    quiet_framework_output()
    quiet_framework_output()  # idempotent: one filter per logger
    assert os.environ[PROGRESS_BARS] == "1" and not hf_logging.is_progress_bar_enabled()
    logger = logging.getLogger("ray.tune.utils.util")
    assert len(logger.filters) == 1
    kept = BufferingHandler(capacity=100)
    logger.addHandler(kept)
    try:
        logger.warning("Install gputil for GPU system monitoring.")
        logger.error("Install gputil for GPU system monitoring.")
        logger.warning("Install gputil for GPU system monitoring. Or something new.")
    finally:
        logger.removeHandler(kept)
    assert [(r.levelname, r.getMessage()) for r in kept.buffer] == [
        ("ERROR", "Install gputil for GPU system monitoring."),
        ("WARNING", "Install gputil for GPU system monitoring. Or something new."),
    ]


@pytest.mark.slow
def test_tiny_run_writes_outputs_and_a_complete_mlflow_run(tiny_model, tmp_path):
    """The command line end to end: clean start-up output, files, and the MLflow run of the one tracking path."""
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    output = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "MLFLOW_TRACKING_URI", PROGRESS_BARS}}
    job = subprocess.run(
        [sys.executable, "-m", "rllib_proxmo.train", *TINY_RUN, "--model", tiny_model, "--output", str(output)]
        + ["--tracking-uri", uri, "--sft-relabel-rounds", "1", "--sft-relabel-epochs", "1", "--sft-max-turns", "7"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert job.returncode == 0, job.stderr
    printed, errors = job.stdout, job.stderr
    assert (
        printed.splitlines()[0]
        == f"tiny-run: proxmo on tests.text_env:TextGuess-v0 with {tiny_model}, writing to {output}"
    )
    for notice in FRAMEWORK_NOTICES:
        assert notice not in errors, notice
    assert "iter 1/1 | success " in printed and "ETA" in printed
    # The warm start ran first, RL started from its model, and both were evaluated on the same tasks.
    warm_dir = output / "warm_start"
    assert "warm-up epoch 1/1 | loss " in printed and (warm_dir / "model.safetensors").exists()
    assert json.loads((warm_dir / "warm_start.json").read_text())["demonstration_max_turns"] == 7
    assert printed.index("warm-up epoch 1/1") < printed.index("relabelling round 1/1: the policy won ")
    assert printed.index("warm start done") < printed.index("warm start: success") < printed.index("iter 1/1")
    checkpoint, plot = output / "checkpoint", output / "learning_curve.png"
    for path in (checkpoint, plot, output / "evaluation.csv", output / "evaluation.md"):
        assert str(path) in printed and path.exists()
    assert plot.read_bytes()[:8] == PNG_MAGIC
    assert (checkpoint / "rllib_checkpoint.json").exists()
    assert sorted(p.name for p in (output / "rollouts").iterdir()) == ["iteration_000000.parquet"]

    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rllib-proxmo").experiment_id])
    assert f"MLflow run:      {run.info.run_id}" in printed and run.info.status == "FINISHED"
    params = run.data.params
    assert params["estimator"] == "proxmo" and params["group_size"] == str(CPU.group_size)
    assert params["tasks_per_iteration"] == str(CPU.tasks_per_iteration)
    assert params["_model_config.model_name_or_path"] == tiny_model and params["_model_config.max_new_tokens"] == "6"
    assert len(params) > 100
    tags = run.data.tags
    assert (tags["estimator"], tags["env"], tags["model"]) == ("proxmo", "tests.text_env:TextGuess-v0", tiny_model)
    assert (tags["seed"], tags["scale"], tags["alpha"]) == ("0", "cpu", params["alpha"])
    assert len(tags["git_commit"]) == 40 and tags["mlflow.source.git.commit"] == tags["git_commit"]
    assert tags["checkpoint_path"] == str(checkpoint)
    for key in ("env_runners/success_rate", "env_runners/format_valid_rate", "proxmo/generated_tokens_per_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1], key
    assert any(key.startswith("learners/default_policy/") for key in run.data.metrics)
    # The final evaluation under the name periodic evaluation has in Tune trials, at the last iteration.
    evaluation = client.get_metric_history(run.info.run_id, "evaluation/env_runners/success_rate")
    table = list(csv.reader((output / "evaluation.csv").open()))
    assert [row[0] for row in table[1:]] == ["warm start", "proxmo"]
    # The table's cell: the rate, then its 95 % interval.
    assert [(m.step, f"{100 * m.value:.1f}") for m in evaluation] == [(1, table[2][-1].split(" ")[0])]
    start = client.get_metric_history(run.info.run_id, "evaluation_start/env_runners/success_rate")
    assert [(m.step, f"{100 * m.value:.1f}") for m in start] == [(0, table[1][-1].split(" ")[0])]
    # One point per pass: the expert episodes' epoch, then the relabelling round's.
    assert [m.step for m in client.get_metric_history(run.info.run_id, "warm_start/loss")] == [1, 2]
    assert tags["warm_start_dir"] == str(warm_dir) and params["_model_config.trainable_layers"] == "1"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "evaluation/env_runners/num_episodes")] == [3]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"learning_curve.png", "evaluation.csv", "evaluation.md", "checkpoint"} <= artifacts


@pytest.mark.slow
def test_tiny_run_goes_on_with_one_warning_when_the_store_is_unreachable(tiny_model, ray_session, tmp_path):
    args = _tiny_run_args(tiny_model, tmp_path / "out", "--tracking-uri", "http://127.0.0.1:9")
    with pytest.warns(UserWarning, match="MLflow tracking is off") as caught:
        summary = train(args)
    assert len([w for w in caught if "MLflow tracking is off" in str(w.message)]) == 1
    assert summary["mlflow_run_id"] is None and summary["tracking_uri"] is None
    assert summary["plot"].exists() and summary["evaluation_md"].exists() and Path(summary["checkpoint"]).exists()
    # The iteration ran no evaluation: the one after it, the final one, is its row's.
    [row] = summary["history"]
    assert {key: row[key] for key in HELD_OUT} == held_out_figures(summary["evaluation"])


def test_the_held_out_evaluation_runs_on_all_its_cpus(tiny_model, ray_session, tmp_path):
    # Ray gives a single-CPU actor one torch thread: the evaluation runner asks for EVALUATION_CPUS, so on
    # a 2-core machine it plays the held-out split on both cores while the driver's sampler and learner wait.
    import torch

    algo = build_config(_tiny_run_args(tiny_model, tmp_path / "out", "--no-mlflow")).build_algo()
    try:
        threads = algo.eval_env_runner_group.foreach_env_runner(
            lambda _: torch.get_num_threads(), local_env_runner=False
        )
    finally:
        algo.stop()
    assert threads == [EVALUATION_CPUS]


@pytest.mark.slow
@pytest.mark.skipif(installed_build() != "cpu", reason="needs vLLM's CPU build (make install adds it)")
def test_tiny_run_samples_with_vllm_on_cpu_env_runners(ray_session, tmp_path):
    # vLLM's CPU attention needs heads of 32 or more: 2 heads of 64.
    words = ["press", "look", "help", "<action>", "</action>", *DEFAULT_BUTTONS]
    model = str(build_tiny_chat_model(tmp_path / "tiny", words, hidden_size=128, num_heads=2))
    vllm_runners = ("--engine", "vllm", "--num-env-runners", "1", "--no-mlflow")
    summary = train(_tiny_run_args(model, tmp_path / "out", *vllm_runners))
    [row] = summary["history"]
    assert row[SAMPLER_LOGP_GAP_MAX] <= 1e-4
    assert summary["evaluation_md"].exists() and Path(summary["checkpoint"]).exists()


@pytest.mark.slow
def test_two_runs_with_one_seed_give_the_same_curve_and_tables(tiny_model, ray_session, tmp_path, capsys):
    # Every draw is seeded (warm-start demonstrations, RL tasks and samples, evaluation tasks and samples):
    # only the times may differ. Two iterations, so the second draws after a weight update; each
    # iteration also plays the held-out tasks (RLlib's evaluation_interval).
    flags = ("--no-mlflow", "--stop-iters", "2", "--seed", "3", "--eval-every", "1")
    runs = [train(_tiny_run_args(tiny_model, tmp_path / name, *flags)) for name in ("first", "second")]
    timing = ("generated_tokens_per_s", "prompt_tokens_per_s", "turns_per_s", "time_iteration_s")
    curves = [[{k: v for k, v in row.items() if k not in timing} for row in run["history"]] for run in runs]
    assert len(curves[0]) == 2 and curves[0] == curves[1]
    assert runs[0]["evaluation_md"].read_text() == runs[1]["evaluation_md"].read_text()
    assert runs[0]["start_evaluation"] == runs[1]["start_evaluation"]
    assert runs[0]["evaluation"] == runs[1]["evaluation"]
    # Both iterations evaluated, and the second one's evaluation is the final one: not played again.
    for run in runs:
        first, last = run["history"]
        assert set(HELD_OUT) <= set(first) and first[EVAL_EPISODES] == last[EVAL_EPISODES] == 3
        assert held_out_figures(run["evaluation"]) == {key: last[key] for key in HELD_OUT}
    printed = capsys.readouterr().out
    assert "evaluating on the same" not in printed
    assert printed.count("the evaluation of iteration 2 is the final one") == 2
    progress = [line for line in printed.splitlines() if line.startswith("iter ")]
    assert len(progress) == 4 and all(" | training 0." in line or " | training 1." in line for line in progress)


def test_checkpoint_every_defaults_to_the_cpu_size_and_resume_needs_a_checkpoint(tmp_path, capsys):
    assert parse_args([]).checkpoint_every == CPU.checkpoint_every and parse_args([]).resume_from is None
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--resume", str(tmp_path)])
    assert exit_info.value.code == 2 and "no checkpoint" in capsys.readouterr().err


def test_a_run_saved_before_a_flag_existed_resumes_with_the_flags_default(tmp_path):
    old = parse_args(["--run-name", "old", "--output", str(tmp_path), "--stop-iters", "7"])
    skip = {"eval_every", "resume", "resume_from"}
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(old).items() if k not in skip}
    saved = periodic_checkpoint_dir(tmp_path, 2)
    saved.mkdir(parents=True)
    (saved / JOB_STATE_FILE).write_text(json.dumps({"args": settings}))
    args = parse_args(["--resume", str(tmp_path)])
    assert (args.run_name, args.stop_iters, args.resume_from) == ("old", 7, saved)
    assert args.eval_every == CPU.evaluation_interval


def test_saves_are_atomic_and_check_the_free_space_first(tiny_model, ray_session, tmp_path):
    algo = build_config(_tiny_run_args(tiny_model, tmp_path / "out")).build_algo()
    try:
        first = save_atomically(algo, periodic_checkpoint_dir(tmp_path, 1), 0, {"iteration": 1})
        # A save that died half-way leaves only its hidden partial directory, never a latest checkpoint.
        partial = first.with_name(".iteration_000002.partial")
        partial.mkdir()
        (partial / "rllib_checkpoint.json").write_text("{")
        assert latest_checkpoint(tmp_path) == first and (first / JOB_STATE_FILE).is_file()
        again = save_atomically(algo, first, 0, {"iteration": 1})
        assert again == first and (first / "rllib_checkpoint.json").is_file()
        with pytest.raises(InsufficientSpaceError, match="MiB free"):
            save_atomically(algo, periodic_checkpoint_dir(tmp_path, 3), 2**60)
        assert not periodic_checkpoint_dir(tmp_path, 3).exists()
        assert not periodic_checkpoint_dir(tmp_path, 3).with_name(".iteration_000003.partial").exists()
    finally:
        algo.stop()


def _start_job(tiny_model: str, output: Path, uri: str, *extra: str) -> subprocess.Popen:
    at = TINY_RUN.index("--stop-iters")
    argv = TINY_RUN[:at] + TINY_RUN[at + 2 :]
    env = {k: v for k, v in os.environ.items() if k not in {"RAY_ADDRESS", "MLFLOW_TRACKING_URI"}}
    return subprocess.Popen(
        [sys.executable, "-m", "rllib_proxmo.train", *argv, "--model", tiny_model, "--output", str(output)]
        + ["--tracking-uri", uri, "--stop-iters", "4", *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _wait_for_line(job: subprocess.Popen, prefix: str, timeout_s: float = 300) -> list[str]:
    lines, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        line = job.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith(prefix):
            return lines
    job.kill()
    raise AssertionError(f"no line starting with {prefix!r}:\n{''.join(lines)}")


def _only_run(uri: str):
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rllib-proxmo").experiment_id])
    return client, run


@pytest.mark.slow
def test_sigterm_finishes_the_iteration_saves_and_a_resume_continues_the_run(tiny_model, ray_session, tmp_path):
    uri, output = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    job = _start_job(tiny_model, output, uri, "--checkpoint-every", "0")
    started = _wait_for_line(job, "iter 1/")
    job.send_signal(signal.SIGTERM)
    printed = "".join(started) + job.communicate(timeout=300)[0]
    assert job.returncode == 128 + signal.SIGTERM, printed
    assert "finishing this iteration" in printed and f"--resume {output}" in printed
    # The iteration running when the signal came (the first one's logging or the second) was
    # finished and saved, with the history of every iteration done; nothing partial is left.
    (saved,) = (output / "checkpoints").iterdir()
    done = len(json.loads((saved / JOB_STATE_FILE).read_text())["history"])
    assert done in (1, 2) and saved == latest_checkpoint(output) == periodic_checkpoint_dir(output, done)
    assert f"iter {done}/" in printed and f"iter {done + 1}/" not in printed
    client, run = _only_run(uri)
    assert run.info.status == "KILLED"

    summary = train(parse_args(["--resume", str(output), "--stop-iters", "3"]))
    assert [row["iteration"] for row in summary["history"]] == [1, 2, 3]
    client, resumed = _only_run(uri)
    assert resumed.info.run_id == run.info.run_id == summary["mlflow_run_id"] and resumed.info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "env_runners/success_rate")]
    assert steps == [1, 2, 3]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "training_iteration")] == [1, 2, 3]


@pytest.mark.slow
def test_a_second_sigint_abandons_the_iteration_and_keeps_the_last_checkpoint(tiny_model, tmp_path):
    uri, output = f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "out"
    job = _start_job(tiny_model, output, uri, "--checkpoint-every", "1")
    _wait_for_line(job, "checkpoint of iteration 1")
    job.send_signal(signal.SIGINT)
    time.sleep(0.2)
    job.send_signal(signal.SIGINT)
    printed = job.communicate(timeout=300)[0]
    # The first SIGINT may also come before the loop starts iteration 2: the job then stops there and the
    # second one lands in the clean-up, where it used to cut ray.shutdown() short and the job exited with 1
    # (test_interrupt.py has that case). Either way the job exits with 130 and keeps checkpoint 1.
    assert job.returncode == 128 + signal.SIGINT and f"resume with --resume {output}" in printed, printed
    assert latest_checkpoint(output) == periodic_checkpoint_dir(output, 1), printed
    assert not any(p.name.startswith(".") for p in (output / "checkpoints").iterdir())
    assert _only_run(uri)[1].info.status == "KILLED"
