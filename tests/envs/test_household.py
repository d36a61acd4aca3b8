"""The household text MDP (envs/household): exact values, policy, rendering, rollout batches, Gymnasium env."""

from __future__ import annotations

import dataclasses
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from envs import HOUSEHOLD
from envs.household.env import HouseholdEnv
from envs.household.mdp import EMPTY, Episode, HouseMDP, HouseTask, render_episode, sample_task
from envs.household.rollouts import roll_out
from rllib_proxmo.advantages import returns_to_go

GAMMA = 0.9


def corridor_task(process: str | None, epsilon: float = 0.5) -> HouseTask:
    """kitchen - hallway - bedroom in a line; start in the hallway, the mug on the bedroom's desk,
    the goal shelf (and the microwave of a heat task) in the kitchen."""
    return HouseTask(
        rooms=("kitchen", "hallway", "bedroom"),
        doors=((1,), (0, 2), (1,)),
        furniture=(("shelf", "microwave") if process else ("shelf",), ("table",), ("desk", "bed")),
        items=(("apple",), (), ("mug", "book")),
        target="mug",
        target_room=2,
        receptacle="shelf",
        goal_room=0,
        process=process,
        appliance_room=0 if process else None,
        start_room=1,
        epsilon=epsilon,
    )


def discounted_first_returns(episodes, gamma: float) -> np.ndarray:
    return np.array([episode.returns_to_go(gamma)[0] for episode in episodes])


def assert_within_standard_errors(samples: np.ndarray, expected: float, label: str) -> None:
    standard_error = samples.std(ddof=1) / np.sqrt(samples.size)
    assert abs(samples.mean() - expected) <= 4.5 * standard_error + 1e-12, (
        f"{label}: Monte-Carlo {samples.mean():.4f} vs exact {expected:.4f} (se {standard_error:.4f})"
    )


@pytest.mark.parametrize("process", [None, "heat"])
def test_exact_values_match_monte_carlo(process):
    mdp = HouseMDP(corridor_task(process))
    horizon = 7
    values = mdp.exact_values(horizon, GAMMA)
    rng = np.random.default_rng(0)
    # V_t(s) of a stationary policy is V_0(s) of the same policy with horizon - t steps left.
    for t in (0, 3, 5):
        for s in range(len(mdp.states)):
            episodes = mdp.sample_episodes(3000, horizon - t, rng, start_state=s)
            assert_within_standard_errors(
                discounted_first_returns(episodes, GAMMA), values.v[t, s], f"V_{t}({mdp.states[s]})"
            )
    # Q_0(start, a): the return of the episodes that chose a first.
    episodes = mdp.sample_episodes(20000, horizon, rng)
    returns = discounted_first_returns(episodes, GAMMA)
    first = np.array([episode.actions[0] for episode in episodes])
    for a, command in enumerate(mdp.commands[mdp.start_state]):
        assert (first == a).sum() > 500
        assert_within_standard_errors(returns[first == a], values.q[0, mdp.start_state, a], command.text)


def test_true_advantages_average_to_zero_under_the_policy():
    mdp = HouseMDP(corridor_task("heat", epsilon=0.4))
    values = mdp.exact_values(10, GAMMA)
    advantages = values.q - values.v[:-1, :-1, None]
    expected = np.nansum(mdp.policy[None] * advantages, axis=2)
    np.testing.assert_allclose(expected, 0.0, atol=1e-12)


def test_episode_advantages_index_the_visited_steps():
    mdp = HouseMDP(corridor_task(None))
    values = mdp.exact_values(8, GAMMA)
    episode = mdp.sample_episodes(1, 8, np.random.default_rng(3))[0]
    steps = enumerate(zip(episode.states, episode.actions))
    expected = [values.q[t, s, a] - values.v[t, s] for t, (s, a) in steps]
    np.testing.assert_allclose(values.advantages(episode), expected)


@pytest.mark.parametrize("process, distance", [(None, 5), ("heat", 6)])
def test_optimal_policy_reaches_the_goal_by_the_shortest_path(process, distance):
    mdp = HouseMDP(corridor_task(process, epsilon=0.0))
    assert mdp.distance[mdp.start_state] == distance
    episodes = mdp.sample_episodes(5, 20, np.random.default_rng(0))
    assert all(episode.success and episode.states.size == distance for episode in episodes)
    assert [mdp.commands[s][a].text for s, a in zip(episodes[0].states, episodes[0].actions)][:2] == [
        "go to the {}",
        "take the {} from the {}",
    ]
    values = mdp.exact_values(20, GAMMA)
    assert values.v[0, mdp.start_state] == pytest.approx(GAMMA ** (distance - 1))
    # With fewer steps than the distance, even the optimal policy fails.
    assert mdp.exact_values(distance - 1, GAMMA).v[0, mdp.start_state] == 0.0


@pytest.mark.parametrize("seed", range(8))
def test_optimal_policy_solves_sampled_tasks(seed):
    task = sample_task(np.random.default_rng(seed), n_rooms=6, epsilon=0.0)
    mdp = HouseMDP(task)
    episode = mdp.sample_episodes(1, 50, np.random.default_rng(seed))[0]
    assert episode.success
    assert episode.states.size == mdp.distance[mdp.start_state]
    assert episode.rewards.sum() == 1.0


def test_renders_are_deterministic_given_a_seed():
    mdp = HouseMDP(sample_task(np.random.default_rng(1), epsilon=0.6))
    episodes = mdp.sample_episodes(4, 15, np.random.default_rng(2))

    def render(seed: int, noise: float) -> list[list[str]]:
        rng = np.random.default_rng(seed)
        return [render_episode(mdp, episode, noise, rng) for episode in episodes]

    assert render(7, 0.5) == render(7, 0.5)
    assert render(7, 0.5) != render(8, 0.5)


def test_noise_zero_reads_identically_for_identical_latent_states():
    mdp = HouseMDP(sample_task(np.random.default_rng(4), epsilon=0.8))
    episodes = mdp.sample_episodes(16, 20, np.random.default_rng(5))
    seen: dict[int, set[str]] = {}
    for seed in range(3):
        rng = np.random.default_rng(seed)
        for episode in episodes:
            for s, text in zip(episode.states, render_episode(mdp, episode, 0.0, rng)):
                seen.setdefault(int(s), set()).add(text)
    assert len(seen) > 5
    assert all(len(texts) == 1 for texts in seen.values())
    # ... and distinct latent states read differently: the text identifies the state.
    assert len({next(iter(texts)) for texts in seen.values()}) == len(seen)


def test_heavy_noise_makes_texts_unique_but_keeps_their_content():
    task = sample_task(np.random.default_rng(6), epsilon=0.8)
    mdp = HouseMDP(task)
    episodes = mdp.sample_episodes(8, 20, np.random.default_rng(7))
    rng = np.random.default_rng(8)
    texts, states = [], []
    for episode in episodes:
        texts += render_episode(mdp, episode, 1.0, rng)
        states += [mdp.states[s] for s in episode.states]
    assert len(set(texts)) / len(texts) > 0.95
    for text, state in zip(texts, states):
        assert task.rooms[state.room] in text
        assert all(piece in text for piece in task.furniture[state.room])
        assert ("carrying nothing" in text) == (state.held == EMPTY)


def test_bad_input_is_rejected_with_a_clear_message():
    task = corridor_task("heat")
    with pytest.raises(ValueError, match="microwave"):
        dataclasses.replace(task, furniture=(("shelf",), ("table",), ("desk",)))
    with pytest.raises(ValueError, match="epsilon"):
        dataclasses.replace(task, epsilon=1.5)
    with pytest.raises(ValueError, match="doors"):
        dataclasses.replace(task, doors=((1,), (2,), (1,)))
    with pytest.raises(ValueError, match="n_rooms"):
        sample_task(np.random.default_rng(0), n_rooms=2)
    mdp = HouseMDP(task)
    with pytest.raises(ValueError, match="horizon"):
        mdp.exact_values(0, GAMMA)
    with pytest.raises(ValueError, match="start_state"):
        mdp.sample_episodes(1, 5, np.random.default_rng(0), start_state=len(mdp.states))
    episode = mdp.sample_episodes(1, 5, np.random.default_rng(0))[0]
    with pytest.raises(ValueError, match="noise"):
        render_episode(mdp, episode, 1.2, np.random.default_rng(0))


# --- rollout batches (envs/household/rollouts.py) ---------------------------------------------------


def test_rollout_batches_carry_the_exact_values_of_their_steps():
    batch = roll_out(5, tasks=3, episodes=4, horizon=9, epsilon_range=(0.2, 0.6), gamma=GAMMA)
    assert roll_out(5, tasks=3, episodes=4, horizon=9, epsilon_range=(0.2, 0.6), gamma=GAMMA).t.tolist() == (
        batch.t.tolist()
    )
    np.testing.assert_allclose(batch.returns, returns_to_go(batch.episode_id, batch.t, batch.reward, GAMMA))
    first = 0
    for group, (mdp, episodes) in enumerate(zip(batch.mdps, batch.episodes)):
        assert 0.2 <= mdp.task.epsilon <= 0.6
        values = mdp.exact_values(9, GAMMA)
        for episode in episodes:
            rows = slice(first, first + episode.states.size)
            first += episode.states.size
            assert set(batch.group_id[rows]) == {group} and batch.t[rows].tolist() == list(range(episode.states.size))
            np.testing.assert_array_equal(batch.latent[rows], episode.states)
            np.testing.assert_allclose(batch.value[rows], values.v[np.arange(episode.states.size), episode.states])
            np.testing.assert_allclose(batch.true_advantage[rows], values.advantages(episode))
            assert set(batch.success[rows]) == {episode.success}
    assert first == batch.t.size == len(batch.texts(0.0, np.random.default_rng(0)))
    np.testing.assert_allclose(batch.oracle, batch.returns - batch.value)
    with pytest.raises(ValueError, match="epsilon_range"):
        roll_out(0, tasks=1, episodes=1, horizon=3, gamma=GAMMA, epsilon_range=(0.5, 0.2))


# --- the Gymnasium env (envs/household/env.py) --------------------------------------------------------


def optimal_command(mdp: HouseMDP, state: int) -> int:
    return next(a for a, c in enumerate(mdp.commands[state]) if mdp.distance[c.next_state] == mdp.distance[state] - 1)


def test_household_env_passes_gymnasiums_checker():
    env = gym.make(HOUSEHOLD, disable_env_checker=True, noise=0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped)
    assert not caught, [str(w.message) for w in caught]


@pytest.mark.parametrize("noise", [0.0, 0.5])
def test_household_env_plays_the_mdp_and_reads_like_its_rendered_episodes(noise):
    env = HouseholdEnv(max_steps=30, noise=noise)
    obs, info = env.reset(seed=4, options={"task_id": 11})
    mdp = env.mdp
    assert info["task"] == mdp.task.description and info["task_type"] == (mdp.task.process or "pick")
    texts, states, actions, rewards = [obs], [], [], []
    while not info["won"]:
        states.append(info["latent_state"])
        actions.append(optimal_command(mdp, states[-1]))
        assert len(info["admissible_actions"]) == len(mdp.commands[states[-1]])
        obs, reward, terminated, truncated, info = env.step(info["admissible_actions"][actions[-1]])
        texts.append(obs)
        rewards.append(reward)
        assert info["state"] == obs and not truncated
    assert terminated and rewards[-1] == 1.0 and sum(rewards) == 1.0
    assert len(states) == mdp.distance[mdp.start_state] and info["admissible_actions"] == []
    assert texts[-1].startswith("You put the ")
    # The observations before each command are the MDP's texts s_t of the same trajectory.
    episode = Episode(np.array(states), np.array(actions), np.array(rewards))
    assert texts[:-1] == render_episode(mdp, episode, noise, np.random.default_rng(4))
    with pytest.raises(ValueError, match="call reset"):
        env.step("look")


def test_household_env_ignores_inadmissible_commands_and_truncates():
    env = HouseholdEnv(max_steps=3)
    obs, info = env.reset(seed=0, options={"task_id": 2})
    for step in range(1, 4):
        obs, reward, terminated, truncated, info = env.step("fly to the moon")
        assert obs == "Nothing happens." and reward == 0.0 and info["step"] == step
        assert info["latent_state"] == env.mdp.start_state and not terminated
    assert truncated and info["admissible_actions"] == [] and not info["won"]


def test_household_env_tasks_follow_the_task_id_and_the_seed():
    env = HouseholdEnv()
    first = env.reset(seed=1, options={"task_id": 5})
    assert env.reset(seed=1, options={"task_id": 5}) == first  # group members start alike
    drawn = env.reset(seed=9)[1]["task_id"]
    assert env.reset(seed=9)[1]["task_id"] == drawn
    replayed = env.reset(seed=3, options={"task_id": drawn})[1]
    assert replayed["task_id"] == drawn and replayed["task"] == env.mdp.task.description
    assert HouseMDP(sample_task(np.random.default_rng(drawn), 6)).task == env.mdp.task


def test_household_env_refuses_bad_settings():
    with pytest.raises(ValueError, match="n_rooms"):
        HouseholdEnv(n_rooms=2)
    with pytest.raises(ValueError, match="max_steps"):
        HouseholdEnv(max_steps=0)
    with pytest.raises(ValueError, match="noise"):
        HouseholdEnv(noise=1.5)
    with pytest.raises(ValueError, match="task_id"):
        HouseholdEnv().reset(options={"task_id": -1})
    with pytest.raises(ValueError, match="call reset"):
        HouseholdEnv().step("look")


def test_household_env_builds_a_task_once_for_consecutive_resets_of_its_id():
    """A group's N resets of one task reuse its MDP (the dynamic programming runs once); another id rebuilds."""
    env = HouseholdEnv(n_rooms=4)
    env.reset(seed=0, options={"task_id": 3})
    mdp = env.mdp
    env.step(env.admissible_actions()[0])
    obs, info = env.reset(options={"task_id": 3})
    assert env.mdp is mdp and info["latent_state"] == mdp.start_state and info["step"] == 0
    env.reset(options={"task_id": 4})
    assert env.mdp is not mdp and env.mdp.task == HouseMDP(sample_task(np.random.default_rng(4), 4)).task
