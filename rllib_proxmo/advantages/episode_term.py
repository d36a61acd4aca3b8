"""Episode-level credit: group z-scores (GRPO, paper Eq. 5) and PSC (Eq. 6-7).

All functions work on per-episode arrays of length ``E`` with a dense group
number per episode; the caller broadcasts the result to the episode's steps.
"""

from __future__ import annotations

import numpy as np

__all__ = ["EPS", "ZERO_STD", "episode_zscore", "group_mean_std", "psc_weight", "sigmoid", "success_rate"]

EPS = 1e-6
"""Added to the group standard deviation before dividing (paper Eq. 5)."""

ZERO_STD = 1e-8
"""A group whose return standard deviation is below this carries no signal: advantage 0."""


def group_mean_std(values: np.ndarray, group: np.ndarray, ddof: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group count, mean and standard deviation, broadcast back to the rows.

    Args:
        values: (m,) float64.
        group: (m,) dense group numbers.
        ddof: 0 for the population std, 1 for the unbiased one (a group of one
            row then gets std 0).

    Returns:
        ``(count, mean, std)``, each (m,): the statistics of each row's group.
    """
    count = np.bincount(group)
    mean = np.bincount(group, weights=values) / np.maximum(count, 1)
    centred = values - mean[group]
    sq = np.bincount(group, weights=centred * centred)
    var = np.where(count > ddof, sq / np.maximum(count - ddof, 1), 0.0)
    return count[group], mean[group], np.sqrt(var)[group]


def episode_zscore(episode_return: np.ndarray, episode_group: np.ndarray) -> np.ndarray:
    """GRPO's episode advantage ``(R(tau) - mu) / (sigma + EPS)`` per episode.

    mu and sigma are the mean and unbiased standard deviation (``ddof=1``, the
    convention of every z-score of the paper family, docs/design.md §2) of the
    returns of the episodes of the same group; a group with sigma below
    :data:`ZERO_STD` (one episode, all successes, all failures) gives 0.

    Args:
        episode_return: (E,) undiscounted returns.
        episode_group: (E,) dense group numbers.

    Returns:
        (E,) float64.
    """
    if not len(episode_return):
        return np.zeros(0)
    _, mean, std = group_mean_std(episode_return, episode_group, ddof=1)
    return np.where(std < ZERO_STD, 0.0, (episode_return - mean) / (std + EPS))


def success_rate(episode_success: np.ndarray, episode_group: np.ndarray) -> np.ndarray:
    """(E,) the success rate ``p`` of each episode's group (fraction of episodes)."""
    if not len(episode_success):
        return np.zeros(0)
    _, mean, _ = group_mean_std(episode_success.astype(np.float64), episode_group)
    return mean


def psc_weight(success, p, alpha: float, beta: float) -> np.ndarray:
    """PSC modulation weight ``w(R, p)`` of paper Eq. 6, with ``d = 1 - p``.

    ``w = 1 + beta * (sigmoid(d**alpha) - 0.5)`` for a successful episode and
    ``w = 1 + beta * (sigmoid(-p**alpha) - 0.5)`` for a failed one: powers, as
    the paper typesets ``d^alpha`` / ``p^alpha`` and as the authors' release
    computes them. Successes in hard groups (p -> 0) are amplified up to
    ``1 + beta * (sigmoid(1) - 0.5)`` (1.0231 for alpha=4, beta=0.1); failures
    in easy groups (p -> 1) are attenuated down to
    ``1 + beta * (sigmoid(-1) - 0.5)`` (0.9769); at p = 0.5 the modulation is
    minimal (1.0016 / 0.9984). Larger alpha flattens the weight towards 1 for
    every p away from the extremes. The release uses this same function with its
    own beta and its own p (see :mod:`rllib_proxmo.advantages.release`).

    Args:
        success: (E,) bools.
        p: (E,) group success rates in [0, 1].
        alpha: exponent applied to d (successes) and p (failures).
        beta: strength.

    Returns:
        (E,) float64 weights.
    """
    success = np.asarray(success, dtype=bool)
    p = np.asarray(p, dtype=np.float64)
    logits = np.where(success, np.power(1.0 - p, alpha), -np.power(p, alpha))
    return 1.0 + beta * (sigmoid(logits) - 0.5)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Logistic function ``1 / (1 + exp(-x))``, without overflow for large |x|."""
    return 0.5 * (1.0 + np.tanh(0.5 * x))
