"""benchmarks/learning_llm.py end to end on a tiny model: one warm start shared by every run, JSON and PNG."""

from __future__ import annotations

import json

import pytest

from benchmarks import learning_llm
from rllib_proxmo.testing import build_tiny_chat_model

WORDS = (
    "task open the chest by pressing red green blue in this order press look help <action> </action> 1 2 3 4".split()
)


@pytest.mark.slow
def test_learning_benchmark_trains_every_estimator_and_seed_from_one_warm_start(tmp_path, capsys):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    out = tmp_path / "bench"
    tiny_job = ["--env", "tests.text_env:TextGuess-v0", "--model", model, "--trainable-layers", "1"]
    tiny_job += ["--sft-episodes", "2", "--sft-epochs", "1", "--max-new-tokens", "6", "--eval-tasks", "2"]
    tiny_job += ["--tasks", "1", "--group-size", "2", "--max-turns", "2"]
    summary = learning_llm.main(
        ["--estimators", "proxmo", "grpo", "--seeds", "0", "--stop-iters", "1", "--out", str(out), "--", *tiny_job]
    )
    assert set(summary["estimators"]) == {"proxmo", "grpo"}
    saved = json.loads((out / "learning_llm.json").read_text())
    assert saved["estimators"]["grpo"]["runs"]["0"]["history"][0]["iteration"] == 1.0
    assert (out / "learning_llm.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "warm_start" / "warm_start.json").exists()
    printed = capsys.readouterr().out
    assert "warm start (" in printed and "| proxmo (n=1) |" in printed and "| grpo (n=1) |" in printed
