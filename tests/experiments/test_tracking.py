"""MLflow tracking helpers against a real local SQLite store (read back with MlflowClient)."""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient

from rllib_proxmo.experiments.tracking import (
    RunTracker,
    default_tracking_uri,
    directory_size,
    flatten_metrics,
    flatten_params,
    git_commit,
)

UNREACHABLE = "http://127.0.0.1:9"


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


def test_run_round_trips_through_a_sqlite_store(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    (tmp_path / "store").mkdir()
    tracker = RunTracker(uri, "exp", "run-1", {"estimator": "proxmo", "env": "ALFWorld-v0"})
    assert tracker.active and tracker.run_id
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

    client = MlflowClient(uri)
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
