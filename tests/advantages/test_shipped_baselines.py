"""verl-agent's GRPO and GiGPO (``grpo_official``, ``gigpo_official``): each departure from ``gigpo`` by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from envs import ALFWORLD, HOUSEHOLD, WEBSHOP
from rllib_proxmo.advantages import RECIPE_GIGPO_NORM, AdvantageConfig, compute_advantages
from tests.advantages.reference import reference_shipped
from tests.advantages.test_estimators import call, random_batch

EPS = 1e-6


def test_episode_statistics_are_over_rows_so_longer_episodes_weigh_more():
    # A three-step success and a one-step failure, distinct states (no step term). Row scores x10:
    # 10, 10, 10, 0: mean 7.5, unbiased std sqrt((3 * 2.5**2 + 7.5**2) / 3) = 5.
    args = ([0] * 4, [0, 0, 0, 1], [0, 1, 2, 0], [0, 0, 1, 0], ["a", "b", "c", "d"], [1, 1, 1, 0])
    mean_std = compute_advantages(*args, estimator="gigpo_official", gigpo_norm="mean_std_norm")
    np.testing.assert_allclose(mean_std, [2.5 / (5 + EPS)] * 3 + [-7.5 / (5 + EPS)], atol=1e-12)
    mean_only = compute_advantages(*args, estimator="gigpo_official", gigpo_norm="mean_norm")
    np.testing.assert_allclose(mean_only, [2.5, 2.5, 2.5, -7.5], atol=1e-12)
    # gigpo: one value per episode, returns 1 and 0: +-0.5 / (sqrt(0.5) + eps), whatever the lengths.
    z = 0.5 / (math.sqrt(0.5) + EPS)
    np.testing.assert_allclose(compute_advantages(*args, estimator="gigpo"), [z, z, z, -z], atol=1e-12)
    np.testing.assert_allclose(compute_advantages(*args, estimator="grpo_official"), mean_std, atol=1e-12)


@pytest.mark.parametrize("norm", ["mean_norm", "mean_std_norm"])
def test_zero_spread_group_gives_zero_and_a_lone_row_keeps_its_score(norm):
    # Two successes of different lengths (every row scores 10) and a one-row group (a single-step success).
    group, episode, t = [0, 0, 0, 1], [0, 0, 1, 2], [0, 1, 0, 0]
    args = (group, episode, t, [0, 1, 1, 1], ["s", "u", "s", "s"], [1, 1, 1, 1])
    adv = compute_advantages(*args, estimator="gigpo_official", gigpo_norm=norm, gamma=0.5)
    # Group 0: uniform scores, episode term 0; state "s" rows hold returns 5 and 10 (x10, gamma 0.5).
    step = np.array([-2.5, 0.0, 2.5]) / ((math.sqrt(12.5) + EPS) if norm == "mean_std_norm" else 1.0)
    # Group 1 is one row: mean 0, std 1, so its episode term is its score, 10 (or 10 / (1 + eps)).
    lone = 10.0 / (1 + EPS) if norm == "mean_std_norm" else 10.0
    np.testing.assert_allclose(adv, [*step, lone], atol=1e-9)
    np.testing.assert_allclose(compute_advantages(*args, estimator="gigpo", gamma=0.5)[3], 0.0)


def test_singleton_step_state_has_no_step_term_and_shared_states_use_scaled_discounted_returns():
    # Episodes 0 (success at t=1) and 1 (fail) share "start" at t=0; "hall" and "yard" are seen once.
    args = ([0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 0, 0], ["start", "hall", "start", "yard"], [1, 1, 0, 0])
    adv = compute_advantages(*args, estimator="gigpo_official", gigpo_norm="mean_norm", gamma=0.9, omega=2.0)
    # Episode term (mean 5 over the rows): +5, +5, -5, -5. "start": returns 9 and 0, mean 4.5: +-4.5 x omega.
    np.testing.assert_allclose(adv, [5 + 9.0, 5, -5 - 9.0, -5], atol=1e-12)


def test_invalid_action_penalty_enters_the_row_score_and_its_return():
    # Four failed steps (two episodes, "kitchen" then "fridge"); episode 1's second turn was invalid.
    args = ([0] * 4, [0, 0, 1, 1], [0, 1, 0, 1], [0.0] * 4, ["kitchen", "fridge"] * 2, [0] * 4)
    penalty = [0, 0, 0, 0.1]
    mean_only = compute_advantages(*args, estimator="gigpo_official", gigpo_norm="mean_norm", penalty=penalty)
    # Row scores 0, 0, 0, -0.1 (mean -0.025); "fridge" returns 0 and -0.1 (mean -0.05).
    np.testing.assert_allclose(mean_only, [0.025, 0.025 + 0.05, 0.025, -0.075 - 0.05], atol=1e-12)
    mean_std = compute_advantages(*args, estimator="gigpo_official", gigpo_norm="mean_std_norm", penalty=penalty)
    # Row std sqrt(0.0075 / 3) = 0.05 and "fridge" std sqrt(0.005) divide: the penalty becomes a unit signal.
    episode = np.array([0.025, 0.025, 0.025, -0.075]) / (0.05 + EPS)
    fridge = 0.05 / (math.sqrt(0.005) + EPS)
    np.testing.assert_allclose(mean_std, episode + [0, fridge, 0, -fridge], atol=1e-9)
    # gigpo: the penalty comes off its own step only.
    np.testing.assert_allclose(compute_advantages(*args, estimator="gigpo", penalty=penalty), [0, 0, 0, -0.1])


@pytest.mark.parametrize("estimator", ["grpo_official", "gigpo_official"])
@pytest.mark.parametrize("norm", ["mean_norm", "mean_std_norm"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_literal_reference(estimator, norm, seed):
    batch = random_batch(np.random.default_rng(seed))
    kwargs = dict(gamma=0.9, omega=0.7)
    out = call(batch, estimator=estimator, gigpo_norm=norm, **kwargs)
    columns = {k: batch[k] for k in ("group_id", "episode_id", "t", "reward", "state", "penalty")}
    expected = reference_shipped(**columns, estimator=estimator, norm=norm, **kwargs)
    np.testing.assert_allclose(out, expected, atol=1e-6, rtol=0)


def test_recipe_norm_per_env():
    assert RECIPE_GIGPO_NORM == {ALFWORLD: "mean_std_norm", WEBSHOP: "mean_norm"}
    config = AdvantageConfig(estimator="gigpo_official")
    assert config.gigpo_norm == "recipe"
    assert config.for_env(ALFWORLD).gigpo_norm == "mean_std_norm"
    assert config.for_env(WEBSHOP).gigpo_norm == "mean_norm"
    assert config.for_env(HOUSEHOLD).gigpo_norm == config.for_env(object).gigpo_norm == "mean_norm"
    explicit = AdvantageConfig(estimator="gigpo_official", gigpo_norm="mean_norm")
    assert explicit.for_env(ALFWORLD) is explicit
    # An unresolved "recipe" is verl-agent's trainer default, mean_norm.
    batch = random_batch(np.random.default_rng(3))
    np.testing.assert_array_equal(
        call(batch, estimator="gigpo_official"), call(batch, estimator="gigpo_official", gigpo_norm="mean_norm")
    )
