"""Reference policies: the oracle solves the generated test goals, random play does not."""

from __future__ import annotations

import numpy as np
import pytest

from envs.webshop.env import WebShopEnv
from envs.webshop.policies import OraclePolicy, RandomPolicy, best_options, run_episode


@pytest.fixture(scope="module")
def env():
    return WebShopEnv(split="test")


def _sample(env):
    """Every fifth test goal."""
    return range(0, env.num_tasks, 5)


def test_oracle_scores_at_least_point_nine_on_test_goals(env):
    results = [run_episode(env, OraclePolicy.for_env, task_id) for task_id in _sample(env)]
    assert np.mean([result.score for result in results]) >= 0.9
    assert all(result.steps <= env.max_steps for result in results)


def test_random_admissible_play_scores_low(env):
    rng = np.random.default_rng(0)
    results = [run_episode(env, lambda _: RandomPolicy(rng), task_id) for task_id in _sample(env)]
    assert np.mean([result.score for result in results]) < 0.4
    assert np.mean([result.won for result in results]) < 0.05


def test_oracle_respects_a_short_step_limit():
    short = WebShopEnv(split="test", max_steps=6)
    results = [run_episode(short, OraclePolicy.for_env, task_id) for task_id in range(40)]
    assert all(result.steps <= 6 for result in results)
    assert np.mean([result.score for result in results]) > 0.8


def test_best_options_pick_the_goal_values(env):
    env.reset(options={"task_id": 0})
    goal = env.goal
    chosen = best_options(env.shop.catalog.get(goal.asin), goal)
    assert sorted(chosen.values()) == sorted(goal.options)
