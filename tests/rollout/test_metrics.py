"""Episode metrics read the env's reported score, not the reward it paid."""

from __future__ import annotations

import pytest

from envs.webshop.env import WebShopEnv
from rllib_proxmo.rollout.episodes import TextEpisode, Turn
from rllib_proxmo.rollout.metrics import episode_metrics


def _played(env: WebShopEnv, task_id: int, actions: list[str]) -> TextEpisode:
    """One WebShop episode recorded as the env runner records it (reward per turn, last info's score)."""
    _, info = env.reset(options={"task_id": task_id})
    episode = TextEpisode(f"e{task_id}", "g", str(task_id), info["task_type"])
    for action in actions:
        state = info["state"]
        _, reward, _, _, info = env.step(action)
        episode.turns.append(Turn((1,), (2,), float(reward), state))
    episode.won, episode.score = info["won"], info["score"]
    return episode


def test_score_mean_is_webshop_score_under_a_binary_reward():
    env = WebShopEnv(split="test", reward="success")
    goal = env.goals[4]
    episode = _played(env, 4, [f"search[{goal.instruction_text}]", f"click[{goal.asin}]", "click[buy now]"])
    assert episode.total_reward == 0.0 and 0.0 < episode.score < 1.0  # a partial purchase pays 0 here
    metrics = episode_metrics([episode, TextEpisode("x", "g", "t", "pick", [Turn((1,), (2,), 0.0, "s")], score=1.0)])
    assert metrics["score_mean"] == pytest.approx((episode.score + 1.0) / 2)


def test_score_mean_falls_back_to_the_return_for_envs_without_a_score():
    episodes = [TextEpisode("a", "g", "t", "pick", [Turn((1,), (2,), 0.0, "s"), Turn((1,), (2,), 1.0, "s")])]
    assert episodes[0].score is None and episode_metrics(episodes)["score_mean"] == 1.0


def test_action_repaired_rate_counts_the_turns_whose_command_was_repaired():
    turns = [Turn((1,), (2,), 0.0, "s", action_repaired=flag) for flag in (True, False, False, True)]
    metrics = episode_metrics([TextEpisode("a", "g", "t", "pick", turns)])
    assert metrics["action_repaired_rate"] == 0.5 and metrics["admissible_action_rate"] == 1.0
