"""The bring-your-own-env example (tuned_examples/custom_text_env.py) and Gymnasium's env checker on the test env."""

from __future__ import annotations

import math
import warnings

import gymnasium as gym
import pytest
import ray
from gymnasium.utils.env_checker import check_env

from envs.llm_wrappers import make_llm_env
from rllib_proxmo.testing import build_tiny_chat_model
from tests.envs.test_llm_wrappers import assert_follows_gymnasium
from tuned_examples import custom_text_env as example

REQUIRED_INFO = {"state", "task_id", "task_type", "won", "task", "admissible_actions"}


@pytest.mark.parametrize("env_id", ["Door-v0", "tests.text_env:TextGuess-v0"])
def test_text_envs_pass_gymnasiums_checker(env_id):
    env = gym.make(env_id, disable_env_checker=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not caught, [str(w.message) for w in caught]


def test_example_env_keeps_the_contract_proxmo_relies_on():
    env = gym.make("Door-v0", max_steps=2).unwrapped
    obs, info = env.reset(seed=5)
    assert REQUIRED_INFO <= set(info) and info["state"] == obs and not info["won"]
    # A group member reset with the same seed and the reported task id starts alike.
    assert env.reset(seed=5, options={"task_id": info["task_id"]}) == (obs, info)
    colour = example.COLOURS[info["task_id"]]
    assert env.step("look")[1:4] == (0.0, False, False)
    obs, reward, terminated, truncated, info = env.step(f"press {colour}")
    assert (obs, reward, terminated, truncated, info["won"]) == ("The door swings open.", 1.0, True, False, True)
    env.reset(seed=5, options={"task_id": (info["task_id"] + 1) % 3})
    env.step(f"press {colour}")
    assert env.step(f"press {colour}")[2:4] == (False, True)  # the wrong colour twice: truncated
    # Behind the LLM wrappers: the prompt shows the task and the commands; a bad output runs the no-op.
    llm_env = make_llm_env(env, require_think=False)
    prompt, _ = llm_env.reset(seed=0, options={"task_id": 2})
    assert "open the door with the blue button" in prompt and "press green" in prompt
    *_, info = llm_env.step("I would rather dance.")
    assert info["parsed_action"] is None and info["state"] == "Nothing happens."


def test_example_env_behind_the_llm_wrappers_passes_gymnasiums_checker():
    assert_follows_gymnasium(make_llm_env("Door-v0", require_think=False))


@pytest.fixture
def ray_two_cpus():
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_example_trains_one_iteration_on_a_tiny_model(tmp_path, ray_two_cpus, capsys):
    words = ["press", "look", *example.COLOURS, "<action>", "</action>"]
    model = build_tiny_chat_model(tmp_path / "tiny", words, seed=0)
    (result,) = example.main(["--model", str(model)])
    runners, learner = result["env_runners"], result["learners"]["default_policy"]
    assert runners["num_episodes"] == 8 and result["proxmo"]["num_groups"] == 2
    assert 0.0 <= runners["success_rate/door"] <= 1.0 and 1 <= runners["episode_len_mean"] <= 3
    assert math.isfinite(learner["policy_loss"]) and math.isfinite(learner["grad_norm"])
    assert "iteration 1: success rate" in capsys.readouterr().out
