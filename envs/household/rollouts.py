"""Batches of household-MDP rollouts with their exact values, flattened to step columns.

A batch is what one training iteration would see: K tasks (task groups), N episodes of each, played
by every task's epsilon-greedy rollout policy (:class:`envs.household.mdp.HouseMDP`), with the exact
``V_t(s_t)`` and ``Q_t(s_t, a_t)`` of that policy next to each step. The columns are the inputs of
``rllib_proxmo.advantages.compute_advantages`` (the texts come from :meth:`RolloutBatch.texts` at a
chosen lexical noise), so estimated advantages can be scored against the true ones
(``benchmarks/credit_assignment.py``) and the PSA regressor against the true values
(``tuned_examples/psa_similarity_search.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.household.mdp import Episode, HouseMDP, render_episode, sample_task

__all__ = ["DEFAULT_EPSILON_RANGE", "DEFAULT_ROOMS", "RolloutBatch", "roll_out"]

DEFAULT_ROOMS = 6
#: Each task's exploration rate is drawn uniformly from this range: task groups differ in success rate.
DEFAULT_EPSILON_RANGE = (0.3, 0.9)


@dataclass(frozen=True)
class RolloutBatch:
    """One batch of rollouts, flattened to n steps in (task group, episode, t) order.

    Attributes:
        group_id, episode_id, t: (n,) ints; episodes are numbered across the batch.
        reward: (n,) immediate rewards (1 on the successful ``put``, else 0).
        success: (n,) bool, whether the step's episode succeeded.
        latent: (n,) the latent state index of each step in its task's MDP.
        returns: (n,) discounted return-to-go ``R_t``.
        value: (n,) exact ``V_t(s_t)`` of the rollout policy.
        true_advantage: (n,) exact ``Q_t(s_t, a_t) - V_t(s_t)``.
        mdps: task group g's MDP is ``mdps[g]``.
        episodes: task group g's episodes, in row order, are ``episodes[g]``.
    """

    group_id: np.ndarray
    episode_id: np.ndarray
    t: np.ndarray
    reward: np.ndarray
    success: np.ndarray
    latent: np.ndarray
    returns: np.ndarray
    value: np.ndarray
    true_advantage: np.ndarray
    mdps: list[HouseMDP]
    episodes: list[list[Episode]]

    @property
    def oracle(self) -> np.ndarray:
        """(n,) ``R_t - V_t(s_t)``: the Monte-Carlo return with the exact baseline."""
        return self.returns - self.value

    def texts(self, noise: float, rng: np.random.Generator) -> list[str]:
        """The n observation texts rendered with lexical noise ``noise`` (see :func:`render_episode`)."""
        return [
            text
            for mdp, group in zip(self.mdps, self.episodes)
            for episode in group
            for text in render_episode(mdp, episode, noise, rng)
        ]


def roll_out(
    seed: int,
    *,
    tasks: int,
    episodes: int,
    horizon: int,
    gamma: float,
    rooms: int = DEFAULT_ROOMS,
    epsilon_range: tuple[float, float] = DEFAULT_EPSILON_RANGE,
) -> RolloutBatch:
    """Sample ``tasks`` tasks and ``episodes`` episodes of each, with exact values.

    Each task's exploration rate epsilon is drawn uniformly from ``epsilon_range``, so task groups
    differ in success rate. Tasks and the policy draw from two generators seeded by ``seed``, so a
    batch is a function of its arguments.

    Args:
        seed: seed of the batch.
        tasks: task groups K, >= 1.
        episodes: episodes N per task, >= 1.
        horizon: step limit H of an episode, >= 1.
        rooms: rooms per house, 3 to ``len(ROOM_NAMES)``.
        epsilon_range: ``(low, high)`` with ``0 <= low <= high <= 1``.
        gamma: discount of the returns and of the exact values, in (0, 1].
    """
    if tasks < 1:
        raise ValueError(f"tasks must be >= 1, got {tasks}")
    low, high = epsilon_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"epsilon_range needs 0 <= low <= high <= 1, got {epsilon_range}")
    task_rng = np.random.default_rng([seed, 0])
    policy_rng = np.random.default_rng([seed, 1])
    columns: dict[str, list[np.ndarray]] = {
        name: []
        for name in ("group_id", "episode_id", "t", "reward", "success", "latent", "returns", "value", "true_advantage")
    }
    mdps, groups = [], []
    for group in range(tasks):
        mdp = HouseMDP(sample_task(task_rng, rooms, epsilon=float(task_rng.uniform(low, high))))
        values = mdp.exact_values(horizon, gamma)
        group_episodes = mdp.sample_episodes(episodes, horizon, policy_rng)
        for episode in group_episodes:
            steps = np.arange(episode.states.size)
            columns["group_id"].append(np.full(steps.size, group))
            columns["episode_id"].append(np.full(steps.size, len(columns["episode_id"])))
            columns["t"].append(steps)
            columns["reward"].append(episode.rewards)
            columns["success"].append(np.full(steps.size, episode.success))
            columns["latent"].append(episode.states)
            columns["returns"].append(episode.returns_to_go(gamma))
            columns["value"].append(values.v[steps, episode.states])
            columns["true_advantage"].append(values.advantages(episode))
        mdps.append(mdp)
        groups.append(group_episodes)
    return RolloutBatch(**{name: np.concatenate(parts) for name, parts in columns.items()}, mdps=mdps, episodes=groups)
