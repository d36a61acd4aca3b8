"""Validation and indexing of a flat batch of agent steps.

Every estimator reads the same inputs: one row per environment step, in any
order. :class:`StepBatch` checks them once and derives the dense indices the
vectorised estimators need (episode and group numbers, per-episode returns,
return-to-go). Nothing here depends on Ray or torch.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "StepBatch",
    "as_binary_column",
    "as_finite_column",
    "as_int_column",
    "as_text_column",
    "first_seen_codes",
    "lookup_codes",
    "returns_to_go",
    "sorted_codes",
]

# Column checks shared by StepBatch, the Parquet rollout files and the PSA regressor. ``name`` is how
# the message names the column; ``n`` (group_id's length in a StepBatch), when given, the rows it must have.


def _as_vector(name: str, values, n: int | None) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {array.shape}")
    if n is not None and len(array) != n:
        raise ValueError(f"length mismatch: {name} has {len(array)} rows, group_id has {n}")
    return array


def as_int_column(name: str, values, n: int | None = None) -> np.ndarray:
    """(n,) int64 of a column of integers (or bools)."""
    array = _as_vector(name, values, n)
    if len(array) and not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"{name} must hold integers, got dtype {array.dtype}")
    return array.astype(np.int64, copy=False)


def as_finite_column(name: str, values, n: int | None = None) -> np.ndarray:
    """(n,) float64 of a column of finite real numbers (or bools); complex values are refused."""
    array = _as_vector(name, values, n)
    if len(array) and not np.issubdtype(array.dtype, np.number) and array.dtype != bool:
        raise ValueError(f"{name} must be numeric, got dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds {int(np.sum(~np.isfinite(array)))} NaN or infinite value(s)")
    return array


def as_binary_column(name: str, values, n: int | None = None) -> np.ndarray:
    """(n,) bool of a column of bools or 0/1 numbers."""
    array = _as_vector(name, values, n)
    if array.dtype != bool:
        if len(array) and (not np.issubdtype(array.dtype, np.number) or not np.all(np.isin(array, (0, 1)))):
            raise ValueError(f"{name} must be binary (bool, or 0/1 values)")
        array = array.astype(bool)
    return array


def as_text_column(name: str, values: Sequence[str], n: int | None = None) -> tuple[str, ...]:
    """The n strings of a column of texts."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} must be a sequence of strings, not a single string")
    texts = tuple(values)
    if n is not None and len(texts) != n:
        raise ValueError(f"length mismatch: {name} has {len(texts)} rows, group_id has {n}")
    bad = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if bad is not None:
        raise ValueError(f"{name} must hold strings; row {bad} is {type(texts[bad]).__name__}")
    return texts


# Dense codes: the distinct keys of a column numbered 0..K-1. ``sorted_codes`` numbers an integer
# array vectorised, in sorted order; ``first_seen_codes`` numbers any hashable keys (texts, tuples of
# ids) in order of first appearance and keeps the numbering for ``lookup_codes`` of new keys.


def sorted_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(unique_values, codes)``: (K,) the sorted distinct values and (n,) int64 codes,
    ``unique_values[codes] == values``."""
    unique, codes = np.unique(values, return_inverse=True)
    return unique, codes.reshape(-1).astype(np.int64, copy=False)


def first_seen_codes(keys: Iterable[Hashable]) -> tuple[dict, np.ndarray]:
    """``(codes, index)``: ``codes`` maps the K distinct keys to 0..K-1 in order of first appearance
    (``list(codes)`` lists them in that order), ``index`` (n,) int64 is the code of each key."""
    codes: dict = {}
    index = np.fromiter((codes.setdefault(key, len(codes)) for key in keys), dtype=np.int64)
    return codes, index


def lookup_codes(codes: Mapping, keys: Iterable[Hashable]) -> np.ndarray:
    """(n,) int64 code of each key in ``codes`` (from :func:`first_seen_codes`), -1 for a key not in it."""
    return np.fromiter((codes.get(key, -1) for key in keys), dtype=np.int64)


def _as_penalty(penalty, n: int) -> np.ndarray:
    """(n,) float64 invalid-action penalties: zeros for None, else finite values >= 0."""
    if penalty is None:
        return np.zeros(n)
    array = as_finite_column("penalty", penalty, n)
    if np.any(array < 0):
        row = int(np.argmax(array < 0))
        raise ValueError(f"penalty must be finite and >= 0 (it is subtracted); row {row} holds {array[row]}")
    return array


def returns_to_go(episode_id, t, reward, gamma: float) -> np.ndarray:
    """Discounted return-to-go ``R_t = sum_{k>=t} gamma**(k-t) * r_k`` of every step.

    Args:
        episode_id: (n,) ints, the episode of each step.
        t: (n,) ints, 0-based step index inside the episode (each episode holds
            exactly the steps 0..T-1, in any row order).
        reward: (n,) floats, immediate rewards.
        gamma: discount factor in [0, 1].

    Returns:
        (n,) float64, in the rows' order.
    """
    episode_id = as_int_column("episode_id", episode_id)
    n = len(episode_id)
    t = as_int_column("t", t, n)
    reward = np.asarray(reward, dtype=np.float64)
    if reward.shape != (n,):
        raise ValueError(f"length mismatch: reward has shape {reward.shape}, episode_id has {n} rows")
    _, episode_index = sorted_codes(episode_id)
    lengths = np.bincount(episode_index) if n else np.zeros(0, dtype=np.int64)
    _check_contiguous_steps(episode_id, episode_index, t, lengths)
    return _returns_to_go(episode_index, t, reward, lengths, gamma)


def _check_contiguous_steps(
    episode_id: np.ndarray, episode_index: np.ndarray, t: np.ndarray, lengths: np.ndarray
) -> None:
    if len(t) and t.min() < 0:
        raise ValueError("t must be non-negative (0-based step index)")
    if len(t) and np.any(t >= lengths[episode_index]):
        bad = episode_id[np.argmax(t >= lengths[episode_index])]
        raise ValueError(f"episode {bad} does not hold exactly the steps t=0..T-1: a step index is missing or repeated")
    # With every t < T_e, duplicates are the only way left to break 0..T-1.
    key = episode_index * (int(lengths.max(initial=0)) + 1) + t
    if len(np.unique(key)) != len(key):
        raise ValueError("two rows share the same (episode_id, t)")


def _returns_to_go(
    episode_index: np.ndarray, t: np.ndarray, reward: np.ndarray, lengths: np.ndarray, gamma: float
) -> np.ndarray:
    """Backward recursion ``R_t = r_t + gamma R_{t+1}``, vectorised over episodes.

    Rewards are laid out in an (episodes, max_len) matrix and the recursion
    runs over columns, so the Python loop is over time steps, not rows.
    """
    if not len(reward):
        return np.zeros(0)
    padded = np.zeros((len(lengths), int(lengths.max())))
    padded[episode_index, t] = reward
    for column in range(padded.shape[1] - 2, -1, -1):
        padded[:, column] += gamma * padded[:, column + 1]
    return padded[episode_index, t]


@dataclass(frozen=True)
class StepBatch:
    """A validated batch of ``n`` steps from ``E`` episodes in ``G`` task groups.

    Attributes:
        group_index: (n,) dense group number in ``[0, G)`` of each step.
        episode_index: (n,) dense episode number in ``[0, E)`` of each step.
        t: (n,) 0-based step index inside the episode.
        reward: (n,) float64 immediate rewards (the env's own: R(tau), the
            z-score, PSC and the returns-to-go see only these).
        penalty: (n,) float64 invalid-action penalty of each step (>= 0; 0 for a
            valid step), kept apart from ``reward``: the estimators subtract it
            from the offending step's advantage only.
        state: the n raw state texts.
        episode_group: (E,) dense group number of each episode.
        episode_success: (E,) bool, success flag of each episode.
        episode_return: (E,) float64, undiscounted episode return ``R(tau)``.
        episode_length: (E,) number of steps of each episode.
    """

    group_index: np.ndarray
    episode_index: np.ndarray
    t: np.ndarray
    reward: np.ndarray
    penalty: np.ndarray
    state: tuple[str, ...]
    episode_group: np.ndarray
    episode_success: np.ndarray
    episode_return: np.ndarray
    episode_length: np.ndarray

    @property
    def num_steps(self) -> int:
        return len(self.t)

    @property
    def num_groups(self) -> int:
        return int(self.episode_group.max()) + 1 if len(self.episode_group) else 0

    def returns_to_go(self, gamma: float) -> np.ndarray:
        """(n,) discounted return-to-go of every step (see :func:`returns_to_go`)."""
        return _returns_to_go(self.episode_index, self.t, self.reward, self.episode_length, gamma)

    @classmethod
    def from_arrays(
        cls,
        group_id,
        episode_id,
        t,
        reward,
        state: Sequence[str],
        success,
        penalty=None,
    ) -> StepBatch:
        """Check the raw columns and build the dense indices.

        ``penalty`` is an optional (n,) column of non-negative invalid-action
        penalties (None: no step is penalised).

        Raises:
            ValueError: mismatched lengths, non-integer ids, NaN/inf rewards,
                a negative or non-finite penalty, non-binary success values, an episode split across groups or
                with varying success, step indices that are not 0..T-1, or
                states that are not strings.
        """
        group_id = as_int_column("group_id", group_id)
        n = len(group_id)
        episode_id = as_int_column("episode_id", episode_id, n)
        t = as_int_column("t", t, n)
        reward = as_finite_column("reward", reward, n)
        penalty = _as_penalty(penalty, n)
        state = as_text_column("state", state, n)
        success = as_binary_column("success", success, n)

        _, episode_index = sorted_codes(episode_id)
        num_episodes = int(episode_index.max()) + 1 if n else 0
        _, group_index = sorted_codes(group_id)

        episode_group = np.full(num_episodes, -1, dtype=np.int64)
        episode_group[episode_index] = group_index
        if np.any(episode_group[episode_index] != group_index):
            row = int(np.argmax(episode_group[episode_index] != group_index))
            raise ValueError(f"episode {episode_id[row]} has steps in more than one group")

        episode_success = np.zeros(num_episodes, dtype=bool)
        episode_success[episode_index] = success
        if np.any(episode_success[episode_index] != success):
            row = int(np.argmax(episode_success[episode_index] != success))
            raise ValueError(f"episode {episode_id[row]} has steps with different success flags")

        episode_length = np.bincount(episode_index, minlength=num_episodes)
        _check_contiguous_steps(episode_id, episode_index, t, episode_length)
        episode_return = np.bincount(episode_index, weights=reward, minlength=num_episodes)

        return cls(
            group_index=group_index,
            episode_index=episode_index,
            t=t,
            reward=reward,
            penalty=penalty,
            state=state,
            episode_group=episode_group,
            episode_success=episode_success,
            episode_return=episode_return,
            episode_length=episode_length,
        )
