"""The household text MDP of ``benchmarks/text_mdp.py``: exact values, optimal policy, rendering."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from envs.household.mdp import EMPTY, HouseMDP, HouseTask, Latent, render_episode, sample_task

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
    assert mdp.states[mdp.start_state] == Latent(room=1, held=EMPTY)
