"""The grouped env runner: device placement, sampler log-probs in turns and in the token batch.

The policy is a tiny random Llama whose checkpoint carries generation defaults (a
repetition penalty, a top-k) that must not leak into sampling; the game is
``TextGuess-v0`` (tests/text_env.py) behind the real LLM wrappers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import ray
import torch
from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from ray.rllib.utils.metrics import WEIGHTS_SEQ_NO
from transformers import AutoTokenizer, GenerationConfig

import rllib_proxmo.rollout.env_runner as env_runner_module
from envs.llm_wrappers import make_llm_env
from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.algorithm.token_batch import RESPONSE_MASK, SAMPLER_LOGP, pad_turns
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    TOKEN_LOGP,
    TRUNK_STATES,
    LLMRLModule,
)
from rllib_proxmo.rollout import chat
from rllib_proxmo.rollout.env_runner import PROMPT_HISTORY_CUTS, GroupedEnvRunner, SamplerSettings, _LiveEpisode
from rllib_proxmo.rollout.episodes import GroupRequest, TextEpisode
from rllib_proxmo.rollout.metrics import episode_metrics
from rllib_proxmo.testing import build_tiny_chat_model
from tests.text_env import DEFAULT_BUTTONS, TextGuessEnv

REPO = Path(__file__).resolve().parents[2]
ENV_ID = "tests.text_env:TextGuess-v0"
WORDS = ["press", "look", "help", "<action>", "</action>", *DEFAULT_BUTTONS]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), WORDS, seed=1)
    GenerationConfig(do_sample=True, repetition_penalty=1.3, top_k=3).save_pretrained(directory)
    return str(directory)


def _config(model_dir: str, **model_config) -> ProxMOConfig:
    return (
        ProxMOConfig()
        .environment(ENV_ID, env_config={"code_length": 1})
        .rl_module(model_config={"model_name_or_path": model_dir, "max_new_tokens": 4, **model_config})
        .training(group_size=2, tasks_per_iteration=1, llm_env_config={"require_think": False})
    )


def test_runner_builds_its_module_on_the_device_rllib_assigns(model_dir, monkeypatch):
    requested = []

    def get_device(config, num_gpus_requested=1):
        requested.append(num_gpus_requested)
        return torch.device("meta")  # stands in for the GPU Ray would assign

    monkeypatch.setattr(env_runner_module, "get_device", get_device)
    config = _config(model_dir).env_runners(num_gpus_per_env_runner=1)
    for worker_index in (1, 0):  # a remote runner, then the local one (RLlib: never a GPU)
        runner = GroupedEnvRunner(config=config, worker_index=worker_index)
        assert runner.device == torch.device("meta")
        assert {p.device for p in runner.module.parameters()} == {torch.device("meta")}
        assert runner.engine.model is runner.module.model
    assert requested == [1, 0]


def _learner_gap(model_dir: str, episodes: list[TextEpisode], pad_token_id: int, temperature: float) -> float:
    """Largest difference between the turns' sampler log-probs and the learner's on their token batch."""
    for episode in episodes:
        for turn in episode.turns:
            turn.advantage = 0.0
    columns = pad_turns(episodes, pad_token_id)
    learner = LLMRLModule(
        model_config={"model_name_or_path": model_dir, "temperature": temperature}, inference_only=False
    )
    batch = {key: torch.as_tensor(columns[key]) for key in (INPUT_IDS, ATTENTION_MASK)}
    with torch.no_grad():
        learner_logp = learner.forward_inference(batch)[TOKEN_LOGP].numpy()  # (B, L-1): tokens 1..L-1
    mask = columns[RESPONSE_MASK][:, 1:]
    sampler_logp = columns[SAMPLER_LOGP][:, 1:]
    assert columns[SAMPLER_LOGP].dtype == np.float32 and np.all(columns[SAMPLER_LOGP][:, 0] == 0)
    assert np.all(sampler_logp[mask == 0] == 0) and np.all(sampler_logp[mask == 1] < 0)
    return float(np.abs((learner_logp - sampler_logp) * mask).max())


def test_a_runner_held_to_admissible_answers_plays_listed_commands_with_the_learners_log_probs(model_dir):
    config = _config(model_dir, temperature=0.8, constrain_to_admissible=True, max_new_tokens=8)
    runner = GroupedEnvRunner(config=config)
    episodes = runner.sample(groups=[GroupRequest("a", 1, 3), GroupRequest("b", 2, 3)], seed=0, max_turns=4)
    runner.stop()
    turns = [turn for episode in episodes for turn in episode.turns]
    # The random model answers malformed without the restriction (the test above); held to the list, never.
    assert all(turn.format_valid and turn.action_admissible and not turn.cut for turn in turns)
    commands = {"look", "help", *(f"press {button}" for button in DEFAULT_BUTTONS)}
    assert {turn.action for turn in turns} <= commands and len({turn.action for turn in turns}) > 1
    assert _learner_gap(model_dir, episodes, runner.module.tokenizer.pad_token_id, temperature=0.8) <= 1e-5


def test_answers_too_long_to_write_are_left_out_with_a_warning_and_bare_envs_refused(model_dir, caplog):
    # Every answer takes its command's tokens and the eos: none fits in one token.
    config = _config(model_dir, constrain_to_admissible=True, max_new_tokens=1)
    runner = GroupedEnvRunner(config=config)
    with caplog.at_level("WARNING", logger=env_runner_module.__name__):
        episodes = runner.sample(groups=[GroupRequest("a", 1, 2)], seed=0, max_turns=2)
    assert re.search(r"(\d+) of \1 admissible answers exceed max_new_tokens=1", caplog.text)
    assert caplog.text.count("exceed max_new_tokens") == 1  # once per runner
    assert not all(turn.format_valid for episode in episodes for turn in episode.turns)  # answered freely
    bare = TextGuessEnv(code_length=1)
    prompt, info = bare.reset(seed=0)
    with pytest.raises(ValueError, match="needs the LLM wrappers"):
        runner._answer_choices(_LiveEpisode(bare, TextEpisode("e", "g", "0", ""), prompt, info))
    runner.stop()


def test_answer_ids_keep_the_answers_that_fit_and_name_each_one_left_out(model_dir):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    short, long = "look", "press " + " and ".join(DEFAULT_BUTTONS)
    limit = len(chat.response_ids(tokenizer, short))
    assert len(chat.response_ids(tokenizer, long)) > limit
    fitting, too_long = chat.answer_ids(tokenizer, [long, short], limit)
    assert fitting == [chat.response_ids(tokenizer, short)] and fitting[0][-1] == tokenizer.eos_token_id
    assert too_long == [(long, len(chat.response_ids(tokenizer, long)))]


def test_turns_carry_the_log_probs_the_learner_computes_on_the_token_batch(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir, temperature=0.8))
    episodes = runner.sample(groups=[GroupRequest("a", 1, 3), GroupRequest("b", 2, 3)], seed=0)
    runner.stop()
    turns = [turn for episode in episodes for turn in episode.turns]
    stops = set(runner.engine.stop_token_ids)
    for turn in turns:
        assert len(turn.sampler_logp) == len(turn.response_ids)
        assert turn.cut == (turn.response_ids[-1] not in stops)
        assert not turn.cut or len(turn.response_ids) == 4
    assert episode_metrics(episodes)["response_cut_rate"] == pytest.approx(np.mean([t.cut for t in turns]))
    assert 0 < episode_metrics(episodes)["response_cut_rate"] < 1
    # What the agent did: the command the parser read, else (a malformed output) the response text.
    for turn in turns:
        text = runner.module.tokenizer.decode(turn.response_ids, skip_special_tokens=True)
        assert turn.action == text if not turn.format_valid else turn.action in text
    assert not all(turn.format_valid for turn in turns)  # the random model writes malformed answers too

    assert _learner_gap(model_dir, episodes, runner.module.tokenizer.pad_token_id, temperature=0.8) <= 1e-5

    turns[0].sampler_logp = ()  # e.g. an engine that reports none: no column rather than a wrong one
    assert SAMPLER_LOGP not in pad_turns(episodes, runner.module.tokenizer.pad_token_id)


def test_a_runner_reusing_its_trunk_hands_the_learner_states_it_scores_the_samples_with(model_dir):
    trunk = {"trainable_layers": 1, "reuse_sampler_trunk": True}
    runner = GroupedEnvRunner(config=_config(model_dir, **trunk))
    episodes = runner.sample(groups=[GroupRequest("a", 1, 3), GroupRequest("b", 2, 3)], seed=0)
    evaluated = runner.sample(groups=[GroupRequest("c", 3, 1)], seed=1, explore=False)
    runner.stop()
    for turn in (turn for episode in episodes for turn in episode.turns):
        turn.advantage = 0.0
        assert turn.trunk_states.shape[0] == len(turn.prompt_ids) + len(turn.response_ids) - 1
    # Evaluation episodes never reach a learner: they keep no states.
    assert all(turn.trunk_states is None for episode in evaluated for turn in episode.turns)
    columns = pad_turns(episodes, runner.module.tokenizer.pad_token_id)
    learner = LLMRLModule(model_config={"model_name_or_path": model_dir, **trunk}, inference_only=False)
    batch = {key: torch.as_tensor(columns[key]) for key in (INPUT_IDS, ATTENTION_MASK, TRUNK_STATES)}
    with torch.no_grad():
        learner_logp = learner.forward_inference(batch)[TOKEN_LOGP].numpy()
    mask = columns[RESPONSE_MASK][:, 1:]
    assert np.abs((learner_logp - columns[SAMPLER_LOGP][:, 1:]) * mask).max() <= 1e-5
    with pytest.raises(ValueError, match="reuse_sampler_trunk needs trainable_layers"):
        _config(model_dir, reuse_sampler_trunk=True).validate()
    with pytest.raises(ValueError, match="reuse_sampler_trunk needs the 'hf' engine"):
        SamplerSettings(engine="vllm", reuse_sampler_trunk=True)


def test_sampling_settings_refuse_nucleus_training_and_bad_values(model_dir):
    with pytest.raises(ValueError, match="top_p=0.9 is not supported while training.*eval_top_p"):
        _config(model_dir, top_p=0.9).validate()
    with pytest.raises(ValueError, match="max_prompt_tokens must be None or an int >= 1"):
        _config(model_dir, max_prompt_tokens=0).validate()
    with pytest.raises(ValueError, match="top_p"):
        SamplerSettings(eval_top_p=0.0)
    settings = SamplerSettings.from_model_config({"max_new_tokens": 8, "eval_top_p": 0.9, "dtype": "float32"})
    assert settings == SamplerSettings(max_new_tokens=8, eval_top_p=0.9)
    # Answers held to the admissible commands: the HF engine, no nucleus, no think block, a bool.
    for settings, message in [
        ({"engine": "vllm"}, "needs the 'hf' engine and eval_top_p 1.0"),
        ({"eval_top_p": 0.9}, "needs the 'hf' engine and eval_top_p 1.0"),
        ({"constrain_to_admissible": "yes"}, "constrain_to_admissible must be a bool"),
    ]:
        with pytest.raises(ValueError, match=message):
            SamplerSettings.from_model_config({"constrain_to_admissible": True, **settings})
    held = _config(model_dir, constrain_to_admissible=True)
    held.validate()
    with pytest.raises(ValueError, match="constrain_to_admissible needs .* require_think=False"):
        held.copy().training(llm_env_config={"require_think": True}).validate()


@pytest.mark.parametrize("system_prompt", ["", "look first"])
def test_a_runner_sends_every_prompt_with_its_system_message(model_dir, system_prompt):
    """The prompts of a sampled group carry ``system_prompt``; a non-string one fails the config's validation."""
    runner = GroupedEnvRunner(config=_config(model_dir, system_prompt=system_prompt))
    tokenizer = runner.module.tokenizer
    [episode] = runner.sample(groups=[GroupRequest("g", 3, 1, 2)], explore=True, seed=3)
    env = make_llm_env(TextGuessEnv(code_length=1), require_think=False)
    prompt, _ = env.reset(seed=3, options={"task_id": 2})
    first = episode.turns[0].prompt_ids
    assert first == chat.prompt_ids(tokenizer, prompt, system_prompt) != chat.prompt_ids(tokenizer, prompt)
    runner.stop()
    with pytest.raises(ValueError, match="system_prompt must be None or a str, got 5"):
        _config(model_dir, system_prompt=5).validate()


def _live_episode_with_two_history_turns() -> _LiveEpisode:
    env = make_llm_env(TextGuessEnv(code_length=1, max_steps=5), require_think=False)
    env.reset(options={"task_id": 2})
    env.step("no action")
    prompt, _, _, _, info = env.step("no action either")
    return _LiveEpisode(env, TextEpisode("e", "g", "2", ""), prompt, info)


def test_an_over_long_prompt_drops_the_oldest_history_turns_until_it_fits(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir))
    item = _live_episode_with_two_history_turns()
    lengths = [len(runner._encode_prompt(item.env.render_prompt(k))) for k in range(3)]  # 0, 1, 2 history turns
    assert lengths[0] < lengths[1] < lengths[2]
    for limit, history_turns in [(lengths[2], 2), (lengths[2] - 1, 1), (lengths[1] - 1, 0), (lengths[0], 0)]:
        runner.settings = SamplerSettings(max_prompt_tokens=limit)
        cuts = runner._stats[PROMPT_HISTORY_CUTS]
        assert runner._prompt_ids(item) == runner._encode_prompt(item.env.render_prompt(history_turns))
        assert runner._stats[PROMPT_HISTORY_CUTS] == cuts + (history_turns < 2)
    assert runner.get_metrics()[PROMPT_HISTORY_CUTS] == 3


def test_a_prompt_too_long_without_history_fails_naming_task_and_lengths(model_dir):
    runner = GroupedEnvRunner(config=_config(model_dir))
    item = _live_episode_with_two_history_turns()
    lengths = [len(runner._encode_prompt(item.env.render_prompt(k))) for k in range(3)]
    runner.settings = SamplerSettings(max_prompt_tokens=lengths[0] - 1)
    expected = (
        f"task '2': the prompt has {lengths[0]} tokens even without history ({lengths[2]} with its 2 history "
        f"turns), more than max_prompt_tokens={lengths[0] - 1}"
    )
    with pytest.raises(ValueError, match=re.escape(expected)):
        runner._prompt_ids(item)
    # A fresh episode's first prompt has no history to drop: sampling fails the same way.
    runner.settings = SamplerSettings(max_prompt_tokens=5)
    with pytest.raises(ValueError, match=r"task '1': the prompt has \d+ tokens and no history to drop.*=5"):
        runner.sample(groups=[GroupRequest("a", 0, 1, task_id=1)])


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


def _learner_weights(algo) -> tuple[dict, int]:
    """The learner's inference-only weights and their sequence number."""
    component = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
    state = algo.learner_group.get_state(components=component, inference_only=True)[COMPONENT_LEARNER]
    return state[COMPONENT_RL_MODULE][DEFAULT_MODULE_ID], state[WEIGHTS_SEQ_NO]


def _assert_runners_hold_the_learners_weights(algo) -> dict:
    weights, seq_no = _learner_weights(algo)
    group = algo.env_runner_group
    states = group.foreach_env_runner(lambda runner: runner.get_state(), local_env_runner=False)
    if group.local_env_runner is not None:
        states.append(group.local_env_runner.get_state())
    assert len(states) == 1 + group.num_remote_env_runners()
    for state in states:
        assert state[WEIGHTS_SEQ_NO] == seq_no
        held = state[COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]
        assert held.keys() == weights.keys()
        assert all(torch.equal(held[name], value) for name, value in weights.items())
    return weights


@pytest.mark.parametrize("num_env_runners", [0, 1])
def test_runners_hold_the_learners_weights_after_train_save_and_restore(
    model_dir, ray_session, tmp_path, num_env_runners
):
    config = (
        _config(model_dir, max_new_tokens=2, max_prompt_tokens=200)
        .env_runners(num_env_runners=num_env_runners)
        .training(lr=1e-2)
    )
    algo = config.build_algo()
    try:
        # The limit cuts the history of later turns' prompts (about 175 tokens at reset, 244 with 2 turns).
        assert algo.train()["env_runners"][PROMPT_HISTORY_CUTS] > 0
        first = _assert_runners_hold_the_learners_weights(algo)
        checkpoint = algo.save(str(tmp_path / "checkpoint")).checkpoint.path
        for _ in range(3):
            algo.train()
            latest = _assert_runners_hold_the_learners_weights(algo)
        assert not all(torch.equal(latest[name], value) for name, value in first.items())  # training moved them
        algo.restore(checkpoint)  # the learner's weights_seq_no goes back from 4 to 1
        restored = _assert_runners_hold_the_learners_weights(algo)
        assert all(torch.equal(restored[name], value) for name, value in first.items())
        algo.train()
        _assert_runners_hold_the_learners_weights(algo)
    finally:
        algo.stop()
