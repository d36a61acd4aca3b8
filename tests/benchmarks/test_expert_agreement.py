"""benchmarks/expert_agreement.py on the text env (an expert that wins every game in exactly code-length steps)."""

from __future__ import annotations

import json

from benchmarks import expert_agreement
from rllib_proxmo.testing import build_tiny_chat_model
from tests.benchmarks.test_learning_llm import WORDS


def test_expert_success_by_step_limit_and_step_agreement_counts(tmp_path, capsys):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    job = ["--env", "tests.text_env:TextGuess-v0", "--env-config", '{"code_length": 2}', "--model", model]
    out = tmp_path / "agreement.json"
    argv = ["--model", model, "--episodes", "2", "--step-limits", "1", "2", "--json", str(out), "--", *job]
    results = expert_agreement.main(argv)
    # Every one of the 3 x 3 codes is played once; the expert needs exactly two presses.
    assert results["held_out_games"] == 9
    assert results["expert_success"] == {"all": {"1": 0.0, "2": 1.0}}
    agreement = results["agreement"]
    assert agreement["all"]["states"] == 4 and agreement["by_verb"]["press"]["states"] == 4
    assert 0 <= agreement["all"]["agree"] <= 4 and not agreement["held_answers"]
    assert json.loads(out.read_text())["expert_success"] == results["expert_success"]
    assert "step agreement of" in capsys.readouterr().out


def test_answers_held_to_the_admissible_commands_name_one_in_every_state(tmp_path):
    model = str(build_tiny_chat_model(tmp_path / "tiny", WORDS, seed=4))
    job = [
        "--env",
        "tests.text_env:TextGuess-v0",
        "--env-config",
        '{"code_length": 2}',
        "--llm-env-config",
        '{"template": "alfworld-unlisted", "require_think": false}',
        "--constrain-to-admissible",
        "--model",
        model,
    ]
    free = expert_agreement.main(["--model", model, "--episodes", "3", "--", *job[:-3], "--model", model])
    held = expert_agreement.main(["--model", model, "--episodes", "3", "--", *job])["agreement"]
    # The untrained model writes free text, which names no command; held, every answer names one.
    assert not free["agreement"]["held_answers"] and free["agreement"]["admissible"] < 6
    assert held["held_answers"] and held["admissible"] == held["all"]["states"] == 6
