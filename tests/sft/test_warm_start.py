"""Supervised warm start: demonstrations tokenised as sampled, a loss that learns them, a model dir RL loads."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from envs.llm_wrappers import make_llm_env
from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
from rllib_proxmo.rollout import chat
from rllib_proxmo.sft import FineTuneSettings, collect_demonstrations, fine_tune, warm_start
from rllib_proxmo.testing import build_tiny_chat_model
from tests.text_env import TextGuessEnv

WORDS = (
    "task open the chest by pressing red green blue in this order press look help <action> </action> 1 2 3 4".split()
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), WORDS, seed=2))


def _policy(model_dir: str) -> LLMRLModule:
    return LLMRLModule(model_config={"model_name_or_path": model_dir}, inference_only=False)


class _NoExpert(gym.Wrapper):
    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        info.pop("expert_action")
        return obs, info


def test_demonstrations_are_the_expert_answers_tokenised_as_the_sampler_would(model_dir):
    tokenizer = _policy(model_dir).tokenizer
    env = make_llm_env(TextGuessEnv(code_length=3), template="alfworld-numbered", require_think=False)
    episodes = collect_demonstrations(env, tokenizer, num_episodes=4, task_ids=[5, 7], detour_prob=0.0, seed=0)
    assert [e.task_id for e in episodes] == ["5", "7", "5", "7"] and all(e.won for e in episodes)
    first = episodes[0]
    assert len(first.turns) == 3
    prompt, _ = env.reset(seed=0, options={"task_id": 5})  # code: red, green, blue -> listed numbers 2, 3, 4
    assert first.turns[0].prompt_ids == chat.prompt_ids(tokenizer, prompt)
    expected = [chat.response_ids(tokenizer, f"<action>{n}</action>") for n in (2, 3, 4)]
    assert [turn.response_ids for turn in first.turns] == expected
    assert all(ids[-1] == tokenizer.eos_token_id for ids in expected)
    assert all(turn.advantage == 1.0 for turn in first.turns)


def test_detours_visit_other_states_and_still_record_the_expert(model_dir):
    tokenizer = _policy(model_dir).tokenizer
    env = make_llm_env(TextGuessEnv(code_length=3, max_steps=12), require_think=True)
    straight = collect_demonstrations(env, tokenizer, num_episodes=6, task_ids=[5], detour_prob=0.0, seed=0)
    detoured = collect_demonstrations(env, tokenizer, num_episodes=6, task_ids=[5], detour_prob=0.5, seed=0)
    prompts = {turn.prompt_ids for e in straight for turn in e.turns}
    assert len(prompts) == 3
    assert {turn.prompt_ids for e in detoured for turn in e.turns} - prompts
    assert not all(e.won for e in detoured)  # a wrong press jams the lock
    responses = {turn.response_ids for e in detoured for turn in e.turns}
    thought = "<think>The next step towards the task is to {}.</think>\n<action>{}</action>"
    assert responses == {
        chat.response_ids(tokenizer, thought.format(c, c)) for c in ("press red", "press green", "press blue")
    }


def test_an_env_without_an_expert_and_bad_settings_are_refused(model_dir):
    tokenizer = _policy(model_dir).tokenizer
    env = make_llm_env(_NoExpert(TextGuessEnv()))
    with pytest.raises(ValueError, match=r"reports no info\['expert_action'\].*env_config \{'expert': 'search'\}"):
        collect_demonstrations(env, tokenizer, num_episodes=1, task_ids=None, detour_prob=0.0, seed=0)
    with pytest.raises(ValueError, match="detour_prob"):
        collect_demonstrations(
            make_llm_env(TextGuessEnv()), tokenizer, num_episodes=1, task_ids=None, detour_prob=1.0, seed=0
        )
    for bad in ({"lr": 0.0}, {"epochs": 0}, {"batch_size": 1.5}, {"grad_clip": 0.0}):
        with pytest.raises(ValueError):
            FineTuneSettings(**bad)


def test_fine_tuning_makes_the_expert_answers_likely(model_dir):
    policy = _policy(model_dir)
    env = make_llm_env(TextGuessEnv(code_length=2), template="alfworld-compact", require_think=False)
    episodes = collect_demonstrations(
        env, policy.tokenizer, num_episodes=9, task_ids=list(range(9)), detour_prob=0.0, seed=0
    )
    history = fine_tune(policy, episodes, FineTuneSettings(lr=3e-3, epochs=12, batch_size=6))
    assert history[-1].loss < 0.5 * history[0].loss
    assert history[-1].answer_prob > 5 * history[0].answer_prob
    assert all(stats.num_turns == 18 for stats in history)


def test_later_epochs_of_a_top_layer_policy_train_from_the_kept_trunk_exactly(model_dir, monkeypatch):
    env = make_llm_env(TextGuessEnv(code_length=2), template="alfworld-compact", require_think=False)
    trained, calls = {}, {}
    for budget in (64, 0):
        policy = LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1})
        episodes = collect_demonstrations(
            env, policy.tokenizer, num_episodes=6, task_ids=list(range(6)), detour_prob=0.0, seed=0
        )
        calls[budget] = 0

        def count(*_, budget=budget):
            calls[budget] += 1

        policy.model.register_forward_pre_hook(count)
        history = fine_tune(policy, episodes, FineTuneSettings(lr=3e-3, epochs=3, batch_size=4, trunk_cache_mb=budget))
        trained[budget] = ([s.loss for s in history], {k: v.clone() for k, v in policy.model.state_dict().items()})
    assert calls == {64: 3, 0: 9}  # 12 turns in 3 batches: full forwards in the first epoch only
    np.testing.assert_allclose(trained[64][0], trained[0][0], rtol=1e-5)
    for name, value in trained[0][1].items():
        torch.testing.assert_close(trained[64][1][name], value, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="trunk_cache_mb must be an int >= 0"):
        FineTuneSettings(trunk_cache_mb=-1)


def test_warm_start_saves_a_model_that_rl_and_transformers_load(model_dir, tmp_path):
    config = (
        ProxMOConfig()
        .environment("tests.text_env:TextGuess-v0", env_config={"code_length": 2})
        .rl_module(model_config={"model_name_or_path": model_dir, "trainable_layers": 1})
        .training(llm_env_config={"template": "alfworld-compact", "require_think": False}, max_turns=4)
    )
    lines = []
    result = warm_start(
        config,
        tmp_path / "warm",
        num_episodes=4,
        settings=FineTuneSettings(lr=1e-3, epochs=2),
        detour_prob=0.0,
        log=lines.append,
    )
    assert lines[0].startswith("warm-up: 4 expert episodes, 8 turns (expert success 1.00")
    assert [line.split(" |")[0] for line in lines[1:]] == ["warm-up epoch 1/2", "warm-up epoch 2/2"]
    summary = json.loads((result.model_dir / "warm_start.json").read_text())
    assert summary["base_model"] == model_dir and len(summary["epochs"]) == 2 and summary["num_turns"] == 8
    reloaded = AutoModelForCausalLM.from_pretrained(result.model_dir)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    changed = [n for n, p in reloaded.named_parameters() if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed and all(name.startswith("model.layers.1.") for name in changed)
    # An RL run starts from it: the policy and its KL reference are the warm-started weights.
    rl = LLMRLModule(model_config={"model_name_or_path": str(result.model_dir)}, inference_only=False)
    state = dict(reloaded.named_parameters())
    for name, value in rl.model.named_parameters():
        np.testing.assert_array_equal(value.detach().numpy(), state[name].detach().numpy())


def test_the_sft_command_writes_a_model_and_a_finished_mlflow_run(model_dir, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "warm"
    job = subprocess.run(
        [sys.executable, "-m", "rllib_proxmo.sft", "--env", "tests.text_env:TextGuess-v0", "--model", model_dir]
        + ["--trainable-layers", "1", "--episodes", "2", "--epochs", "1", "--output", str(out), "--tracking-uri", uri],
        cwd=Path(__file__).resolve().parents[2],
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr
    assert f"python -m rllib_proxmo.train --model {out} --sft-episodes 0" in job.stdout
    assert (out / "model.safetensors").exists() and (out / "warm_start.json").exists()
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rllib-proxmo-sft").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["episodes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "warm_start/loss")] == [1]
