"""MLflow tracking helpers against a real local SQLite store (read back with MlflowClient)."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from rllib_proxmo.experiments.tracking import (
    BUILD_COMMIT_FILE,
    RunTracker,
    default_tracking_uri,
    directory_size,
    flatten_metrics,
    flatten_params,
    git_commit,
    run_tags,
    write_run_files,
)

REPO = Path(__file__).resolve().parents[2]
UNREACHABLE = "http://127.0.0.1:9"
HISTORY_ROW = {
    "iteration": 1.0,
    "success_rate": 0.5,
    "format_valid_rate": 1.0,
    "score_mean": 0.5,
    "generated_tokens_per_s": 30.0,
}


def test_flatten_params_joins_nested_keys_and_cuts_long_values():
    params = flatten_params(
        {"lr": 1e-6, "model": {"name": "smol", "sizes": [1, 2]}, "empty": {}, "odd:key": "x", "long": "a" * 7000}
    )
    assert params["lr"] == "1e-06"
    assert params["model.name"] == "smol" and params["model.sizes"] == "[1, 2]"
    assert params["empty"] == "{}"
    assert params["odd_key"] == "x"
    assert len(params["long"]) == 6000 and params["long"].endswith("...[truncated]")


def test_flatten_metrics_keeps_finite_numbers_only():
    metrics = flatten_metrics(
        {
            "env_runners": {"success_rate": 0.5, "success_rate/pick": 1, "name": "x"},
            "done": True,
            "nan": math.nan,
            "inf": math.inf,
            "np": np.float32(0.25),
            "np_int": np.int64(3),
        },
        prefix="train/",
    )
    assert metrics == {
        "train/env_runners/success_rate": 0.5,
        "train/env_runners/success_rate/pick": 1.0,
        "train/np": 0.25,
        "train/np_int": 3.0,
    }


def test_default_tracking_uri_is_sqlite_under_mlruns_unless_the_env_says_otherwise(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = default_tracking_uri(tmp_path / "mlruns")
    assert uri == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns").is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert default_tracking_uri(tmp_path / "other") == "http://mlflow.example:5000"


def test_git_commit_of_this_repository_and_outside_one(tmp_path):
    assert re.fullmatch(r"[0-9a-f]{40}", git_commit(Path(__file__).parent))
    assert git_commit(tmp_path) == "unknown"
    # A checkout (or an editable install) has no recorded commit: the package's own is git's.
    assert not BUILD_COMMIT_FILE.exists()
    assert git_commit() == git_commit(REPO)


def test_a_built_package_outside_any_repository_knows_its_commit(tmp_path):
    """What a non-editable install gets: setup.py's build step records the commit in the package."""
    build = tmp_path / "build"
    subprocess.run(
        [sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(build)],
        cwd=REPO,
        check=True,
        capture_output=True,
    )
    commit = git_commit(REPO)
    assert (build / "rllib_proxmo" / "GIT_COMMIT").read_text().strip() == commit
    code = "from rllib_proxmo.experiments.tracking import git_commit; print(git_commit())"
    env = {**os.environ, "PYTHONPATH": str(build)}
    printed = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, check=True, capture_output=True, text=True
    ).stdout
    assert printed.strip() == commit


def test_run_tags_come_from_the_algorithm_config():
    from rllib_proxmo.algorithm.proxmo import ProxMOConfig

    config = (
        ProxMOConfig()
        .environment("ALFWorld-v0")
        .rl_module(model_config={"model_name_or_path": "smol"})
        .training(estimator="gigpo", alpha=2.0, psa_scope="group")
        .debugging(seed=7)
    )
    tags = run_tags(config.to_dict(), scale="cpu")
    commit = git_commit()
    assert tags == {
        "estimator": "gigpo",
        "env": "ALFWorld-v0",
        "model": "smol",
        "seed": "7",
        "scale": "cpu",
        "git_commit": commit,
        "mlflow.source.git.commit": commit,
        "alpha": "2.0",
        "beta": str(config.beta),
        "tau": str(config.tau),
        "gamma": str(config.gamma),
        "omega": str(config.omega),
        "psa_scope": "group",
        "gigpo_norm": config.gigpo_norm,
    }


def test_run_files_are_the_curve_and_the_evaluation_table(tmp_path):
    paths = write_run_files(
        tmp_path / "out", [HISTORY_ROW], {"success_rate": 0.25}, env="TextGuess-v0", estimator="grpo", title="t"
    )
    assert [path.name for path in paths] == ["learning_curve.png", "evaluation.csv", "evaluation.md"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_text().splitlines() == ["method,all", "grpo,25.0"]
    assert write_run_files(tmp_path / "none", [], None, env="TextGuess-v0", estimator="grpo", title="t") == []


def test_run_round_trips_through_a_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"  # the directory is created
    tracker = RunTracker(uri, "exp", "run-1", {"estimator": "proxmo", "env": "ALFWorld-v0"})
    assert tracker.active and tracker.run_id
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id).info.status == "RUNNING"
    params = {f"p{i}": str(i) for i in range(250)}  # more than one log_batch call holds
    tracker.log_params(params)
    for step in (1, 2, 3):
        tracker.log_metrics({"env_runners/success_rate": step / 10, "proxmo/tokens": 5.0}, step=step, timestamp_ms=1)
    tracker.set_tags({"git_commit": "abc"})
    table = tmp_path / "evaluation.csv"
    table.write_text("method,all\nproxmo,12.5\n")
    tracker.log_artifact(table)
    small, large = tmp_path / "small_ckpt", tmp_path / "large_ckpt"
    small.mkdir()
    (small / "state.bin").write_bytes(b"0" * 100)
    large.mkdir()
    (large / "state.bin").write_bytes(b"0" * 5000)
    assert directory_size(large) == 5000
    tracker.log_checkpoint(small, max_bytes=1000)
    tracker.finish()

    run = client.get_run(tracker.run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-1"
    assert run.data.params == params
    assert run.data.tags["estimator"] == "proxmo" and run.data.tags["git_commit"] == "abc"
    assert run.data.tags["checkpoint_path"] == str(small.resolve())
    history = client.get_metric_history(tracker.run_id, "env_runners/success_rate")
    assert [(m.step, m.value) for m in history] == [(1, 0.1), (2, 0.2), (3, 0.3)]
    artifacts = {a.path for a in client.list_artifacts(tracker.run_id)}
    assert artifacts == {"evaluation.csv", "checkpoint"}
    assert [a.path for a in client.list_artifacts(tracker.run_id, "checkpoint")] == ["checkpoint/state.bin"]
    # Artifacts sit next to the database, not in the current directory.
    assert run.info.artifact_uri.startswith((tmp_path / "store" / "artifacts").as_uri())

    second = RunTracker(uri, "exp", "run-2", {})
    second.log_checkpoint(large, max_bytes=1000)
    second.finish()
    assert client.list_artifacts(second.run_id) == []
    assert client.get_run(second.run_id).data.tags["checkpoint_path"] == str(large.resolve())
    assert client.get_run(second.run_id).info.experiment_id == run.info.experiment_id


def test_results_are_logged_at_their_training_iteration_and_runs_end_in_one_of_three_states(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    tracker = RunTracker(uri, "exp", "run", {})
    for iteration in (4, 5):  # e.g. a restored algorithm: steps are iterations, not call counts
        result = {
            "training_iteration": iteration,
            "env_runners": {"success_rate": iteration / 10},
            "evaluation": {"env_runners": {"success_rate": 1.0}},
            "config": {"lr": 1e-6},
            "trial_id": "abc",
        }
        tracker.log_result(result)
    history = client.get_metric_history(tracker.run_id, "env_runners/success_rate")
    assert [(m.step, m.value) for m in history] == [(4, 0.4), (5, 0.5)]
    assert [m.step for m in client.get_metric_history(tracker.run_id, "training_iteration")] == [4, 5]
    metrics = client.get_run(tracker.run_id).data.metrics
    assert set(metrics) == {"training_iteration", "env_runners/success_rate", "evaluation/env_runners/success_rate"}
    with pytest.raises(ValueError, match="status must be one of"):
        tracker.finish("DONE")
    for status in ("FAILED", "KILLED"):
        run = RunTracker(uri, "exp", status, {})
        run.finish(status)
        assert client.get_run(run.run_id).info.status == status


def test_unreachable_store_warns_once_and_skips_every_call(tmp_path):
    with pytest.warns(UserWarning, match="MLflow tracking is off") as caught:
        tracker = RunTracker(UNREACHABLE, "exp", "run", {"estimator": "proxmo"})
    assert len(caught) == 1 and "127.0.0.1:9" in str(caught[0].message)
    assert not tracker.active and tracker.run_id is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tracker.log_params({"a": "1"})
        tracker.log_metrics({"m": 1.0}, step=1, timestamp_ms=1)
        tracker.log_artifact(tmp_path)
        tracker.finish()
    assert tracker.skipped_calls == 4


def test_a_failing_call_turns_tracking_off_with_one_warning(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(uri, "exp", "run", {})
    with pytest.warns(UserWarning, match="logging artifact") as caught:
        tracker.log_artifact(tmp_path / "missing.png")
        tracker.log_metrics({"m": 1.0}, step=1, timestamp_ms=1)
    assert len(caught) == 1
    assert not tracker.active and tracker.skipped_calls == 2
    assert MlflowClient(uri).get_run(tracker.run_id).data.metrics == {}


def test_a_run_whose_tracking_failed_mid_run_ends_failed_and_is_not_complete(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = RunTracker(uri, "exp", "run", {})
    tracker.log_params({"lr": "0.1"})
    assert tracker.complete
    with pytest.warns(UserWarning, match="logging params"):
        tracker.log_params({"lr": "0.2"})  # the store refuses to change a logged param
    assert not tracker.complete and "logging params" in tracker.error
    tracker.finish("FINISHED")
    run = MlflowClient(uri).get_run(tracker.run_id)
    assert run.info.status == "FAILED"
    assert "logging params" in run.data.tags["tracking_incomplete"]
