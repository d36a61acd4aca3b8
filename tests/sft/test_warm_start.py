"""Supervised warm start: demonstrations tokenised as sampled, a loss that learns them, a model dir RL loads."""

from __future__ import annotations

import importlib
import json
from typing import Any

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
from rllib_proxmo.sft.dagger import play_policy, relabel
from rllib_proxmo.sft.fine_tune import DemonstrationBatches
from rllib_proxmo.sft.warm_start import check_framing
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


def test_a_later_call_on_more_turns_keeps_the_earlier_batches_and_their_trunks(model_dir):
    env = make_llm_env(TextGuessEnv(code_length=2), template="alfworld-compact", require_think=False)
    policy = LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1})
    episodes = collect_demonstrations(
        env, policy.tokenizer, num_episodes=10, task_ids=list(range(9)), detour_prob=0.0, seed=0
    )
    full_forwards = []
    policy.model.register_forward_pre_hook(lambda *_: full_forwards.append(1))
    batches = DemonstrationBatches(batch_size=4, budget_mb=64)
    fine_tune(policy, episodes[:6], FineTuneSettings(lr=1e-3, epochs=2, batch_size=4), batches=batches)
    first = [list(batch) for batch in batches.batches]
    assert len(full_forwards) == 3  # 12 turns: 3 batches, full forwards in the first epoch only
    fine_tune(policy, episodes, FineTuneSettings(lr=1e-3, epochs=2, batch_size=4), batches=batches)
    assert batches.batches[:3] == first and len(batches.batches) == 5
    assert len(full_forwards) == 5  # only the 2 batches of the 8 new turns ran the whole model
    with pytest.raises(ValueError, match="pass every earlier turn again"):
        fine_tune(policy, episodes[:2], FineTuneSettings(epochs=1), batches=batches)


def _guess_config(model_dir: str, code_length: int = 3, **model_config) -> ProxMOConfig:
    return (
        ProxMOConfig()
        .environment("tests.text_env:TextGuess-v0", env_config={"code_length": code_length, "max_steps": 5})
        .rl_module(model_config={"model_name_or_path": model_dir, "trainable_layers": 1, **model_config})
        .training(llm_env_config={"template": "alfworld-compact", "require_think": False}, max_turns=4)
    )


def _warm_start(config: ProxMOConfig, tmp_path, **options) -> tuple[Any, list[str]]:
    """The warm start of 4 expert episodes x 2 epochs without detours, and the lines it logged."""
    lines = []
    settings = FineTuneSettings(lr=1e-3, epochs=2)
    result = warm_start(
        config, tmp_path / "warm", num_episodes=4, settings=settings, detour_prob=0.0, log=lines.append, **options
    )
    return result, lines


def test_warm_start_saves_a_model_that_rl_and_transformers_load(model_dir, tmp_path):
    result, lines = _warm_start(_guess_config(model_dir, code_length=2), tmp_path)
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


def test_demonstrations_play_past_the_rl_turn_limit_to_the_end_of_the_task(model_dir, tmp_path):
    """RL episodes of 2 turns cut every 3-press demonstration before its last press; a demonstration
    limit of 4 lets each reach it."""
    config = _guess_config(model_dir).training(max_turns=2)
    cut, lines = _warm_start(config, tmp_path / "cut")
    assert cut.num_turns == 8 and cut.expert_success_rate == 0.0 and "(expert success 0.00" in lines[0]
    assert json.loads((cut.model_dir / "warm_start.json").read_text())["demonstration_max_turns"] == 2
    whole, _ = _warm_start(config, tmp_path / "whole", demonstration_max_turns=4)
    assert whole.num_turns == 12 and whole.expert_success_rate == 1.0
    summary = json.loads((whole.model_dir / "warm_start.json").read_text())
    assert summary["demonstration_max_turns"] == 4 and summary["num_turns"] == 12
    with pytest.raises(ValueError, match="demonstration_max_turns must be >= 1, got 0"):
        warm_start(config, tmp_path / "bad", num_episodes=1, settings=FineTuneSettings(), demonstration_max_turns=0)


@pytest.mark.parametrize("system_prompt", ["", "look"])
def test_the_warm_start_tokenises_its_demonstrations_with_the_policys_system_message(
    model_dir, tmp_path, monkeypatch, system_prompt
):
    """The demonstrations carry the system message the env runner will send (``model_config["system_prompt"]``),
    ``warm_start.json`` records it, and a run sending another one is refused."""
    collected = []

    def recording(*args, **kwargs):
        collected.extend(collect_demonstrations(*args, **kwargs))
        return collected

    # The package's ``warm_start`` is the function; the module is patched where it looks the name up.
    monkeypatch.setattr(importlib.import_module("rllib_proxmo.sft.warm_start"), "collect_demonstrations", recording)
    result, _ = _warm_start(_guess_config(model_dir, code_length=2, system_prompt=system_prompt), tmp_path)
    tokenizer = _policy(model_dir).tokenizer
    env = make_llm_env(TextGuessEnv(code_length=2, max_steps=5), template="alfworld-compact", require_think=False)
    prompt, _ = env.reset(seed=FineTuneSettings().seed, options={"task_id": int(collected[0].task_id)})
    assert collected[0].turns[0].prompt_ids == chat.prompt_ids(tokenizer, prompt, system_prompt)
    assert collected[0].turns[0].prompt_ids != chat.prompt_ids(tokenizer, prompt)
    summary_file = result.model_dir / "warm_start.json"
    summary = json.loads(summary_file.read_text())
    assert summary["system_prompt"] == system_prompt
    check_framing(result.model_dir, system_prompt)
    check_framing(model_dir, None)  # not a warm start: nothing to compare
    with pytest.raises(ValueError, match=f"system message {system_prompt!r} .* system_prompt=None; warm-start again"):
        check_framing(result.model_dir, None)
    # A warm start saved before the setting existed was framed by the template's default.
    del summary["system_prompt"]
    summary_file.write_text(json.dumps(summary))
    check_framing(result.model_dir, None)
    with pytest.raises(ValueError, match=f"the chat template's default .* system_prompt={system_prompt!r}"):
        check_framing(result.model_dir, system_prompt)


def test_relabelling_keeps_the_policy_states_with_the_expert_answer_there(model_dir):
    """Every turn the policy played carries the expert's answer in that turn's state, which a replay of
    the episode's own actions confirms; relabelling trains on exactly those answers."""
    config = _guess_config(model_dir, temperature=1.0, eval_temperature=1.0)
    policy = LLMRLModule(model_config=config.model_config, inference_only=False)
    played = play_policy(config, policy, episode_indices=range(3, 9), task_ids=[1, 2, 3], seed=10)
    assert [e.task_id for e in played] == ["1", "2", "3"] * 2
    env = make_llm_env(TextGuessEnv(code_length=3, max_steps=5), template="alfworld-compact", require_think=False)
    off_path = 0
    for index, episode in zip(range(3, 9), played):
        prompt, info = env.reset(seed=10 + index, options={"task_id": int(episode.task_id)})
        for turn in episode.turns:
            assert turn.prompt_ids == chat.prompt_ids(policy.tokenizer, prompt)
            assert turn.expert_answer == f"<action>{info['expert_action']}</action>"
            off_path += turn.action != info["expert_action"]
            prompt, _, _, _, info = env.step(policy.tokenizer.decode(turn.response_ids, skip_special_tokens=True))
    assert off_path > 0  # the untrained policy leaves the expert's path: those states are the point
    relabelled = relabel(played, policy.tokenizer)
    turns = [turn for episode in played for turn in episode.turns]
    assert [t.prompt_ids for e in relabelled for t in e.turns] == [t.prompt_ids for t in turns]
    assert [t.response_ids for e in relabelled for t in e.turns] == [
        chat.response_ids(policy.tokenizer, t.expert_answer) for t in turns
    ]
    assert all(t.advantage == 1.0 for e in relabelled for t in e.turns)
    with pytest.raises(ValueError, match=r"relabelling needs an env that reports info\['expert_action'\]"):
        for turn in turns:
            turn.expert_answer = None
        relabel(played, policy.tokenizer)


def test_a_warm_start_with_relabelling_rounds_fine_tunes_on_the_aggregate(model_dir, tmp_path):
    config = _guess_config(model_dir)
    result, lines = _warm_start(config, tmp_path, relabel_rounds=2, relabel_episodes=3, relabel_epochs=1)
    rounds = [line for line in lines if line.startswith("relabelling round")]
    assert [line.split(":")[0] for line in rounds] == ["relabelling round 1/2", "relabelling round 2/2"]
    assert len(result.epochs) == 4 and len(result.policy_success_rates) == 2
    assert [line.split(" |")[0] for line in lines if line.startswith("warm-up epoch")] == [
        "warm-up epoch 1/2",
        "warm-up epoch 2/2",
        "warm-up epoch 1/1",
        "warm-up epoch 1/1",
    ]
    expert_turns = 12  # 4 expert episodes of 3 presses
    relabelled_turns = [int(line.split("; ")[1].split()[0]) for line in rounds]
    assert result.num_turns == expert_turns + sum(relabelled_turns)
    assert [stats.num_turns for stats in result.epochs] == [12, 12, 12 + relabelled_turns[0], result.num_turns]
    summary = json.loads((result.model_dir / "warm_start.json").read_text())
    assert summary["relabel_rounds"] == 2 and summary["relabel_episodes"] == 3 and summary["num_episodes"] == 10
    assert summary["relabel_epochs"] == 1
    for bad in ({"relabel_rounds": -1}, {"relabel_episodes": 0}, {"relabel_epochs": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            warm_start(config, tmp_path / "bad", num_episodes=1, settings=FineTuneSettings(), **bad)


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
        + ["--trainable-layers", "1", "--episodes", "2", "--epochs", "1", "--max-turns", "3"]
        + ["--output", str(out), "--tracking-uri", uri],
        cwd=Path(__file__).resolve().parents[2],
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert job.returncode == 0, job.stderr
    assert f"python -m rllib_proxmo.train --model {out} --sft-episodes 0" in job.stdout
    assert (out / "model.safetensors").exists()
    assert json.loads((out / "warm_start.json").read_text())["demonstration_max_turns"] == 3
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rllib-proxmo-sft").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["episodes"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "warm_start/loss")] == [1]
