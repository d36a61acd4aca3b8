"""benchmarks/evaluation_cpus.py on a tiny model: the same held-out tasks timed on 1 and 2 evaluation CPUs."""

from __future__ import annotations

import json

import ray

from benchmarks import evaluation_cpus
from rllib_proxmo.testing import build_tiny_chat_model
from tests.benchmarks.test_learning_llm import WORDS


def test_both_cpu_counts_play_the_same_tasks(tmp_path, capsys):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    job = ["--env", "tests.text_env:TextGuess-v0", "--model", model, "--trainable-layers", "1"]
    job += ["--eval-tasks", "3", "--max-new-tokens", "6", "--max-turns", "2"]
    out = tmp_path / "evaluation_cpus.json"
    rows = evaluation_cpus.main(["--json", str(out), "--", *job])
    assert not ray.is_initialized()
    assert [row["cpus"] for row in rows] == [1, 2]
    # The same tasks and seeds on both: the same success.
    assert rows[0]["success_rate"] == rows[1]["success_rate"] and all(row["turns"] >= 3 for row in rows)
    assert json.loads(out.read_text())["runs"] == rows
    assert "speed-up" in capsys.readouterr().out
