"""benchmarks/warm_start_prompts.py end to end on a tiny model: a warm start and two plays per template."""

from __future__ import annotations

import json

import pytest

from benchmarks import warm_start_prompts
from rllib_proxmo.testing import build_tiny_chat_model
from tests.benchmarks.test_learning_llm import WORDS


@pytest.mark.slow
def test_every_template_gets_its_warm_start_and_greedy_and_sampled_plays(tmp_path, capsys):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    out = tmp_path / "bench"
    tiny_job = ["--env", "tests.text_env:TextGuess-v0", "--env-config", '{"code_length": 1}', "--model", model]
    tiny_job += ["--trainable-layers", "1"]
    tiny_job += ["--sft-episodes", "2", "--sft-epochs", "1", "--max-new-tokens", "6", "--max-turns", "2"]
    templates = ["alfworld-compact", "alfworld-numbered"]
    results = warm_start_prompts.main(["--templates", *templates, "--samples", "2", "--out", str(out), "--", *tiny_job])
    assert list(results) == templates
    saved = json.loads((out / "warm_start_prompts.json").read_text())["results"]
    for template in templates:
        greedy, sampled = saved[template]["greedy"], saved[template]["sampled"]
        assert sampled["episodes"] == 2 * greedy["episodes"] > 0
        assert 0 <= greedy["success_rate"] <= 1 and greedy["mean_prompt_tokens"] > 0
        assert (out / template / "warm_start" / "warm_start.json").exists()
    assert "alfworld-numbered: warm start" in capsys.readouterr().out
