"""Which training tasks an iteration plays: uniformly, or weighted towards groups that can teach.

A task group whose rollouts all win or all lose has equal returns, and every critic-free estimator
here (GRPO, GiGPO's episode term, ProxMO's PSC) then gives its rollouts no episode-level advantage:
they cost sampling time and move nothing (the ``zero_std_group_fraction`` diagnostic counts them).
With ``task_sampling="informative"`` the driver draws each listed task with probability proportional
to the chance that a group of ``group_size`` rollouts of it holds both a win and a loss, estimated
from the wins and plays it has recorded for that task so far (:class:`TaskOutcomes`). A task never
played keeps the prior's chance, so every task stays drawable and the estimate follows the policy as
it learns. ``"uniform"`` (the default) draws every listed task with the same probability.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

#: Values of ``ProxMOConfig.task_sampling``, and its default.
TASK_SAMPLINGS = ("uniform", "informative")
DEFAULT_TASK_SAMPLING = "uniform"
#: Beta prior of a task's win probability (Jeffreys): before its first play a task's chance of a mixed
#: group of 4 is 0.45, after one group of 4 that all lost 0.28, after two 0.18.
PRIOR_WINS, PRIOR_LOSSES = 0.5, 0.5


def sampling_problem(task_sampling: str, group_size: int) -> str | None:
    """Why ``task_sampling`` cannot draw groups of ``group_size`` rollouts, or None when it can."""
    if task_sampling not in TASK_SAMPLINGS:
        return f"task_sampling must be one of {list(TASK_SAMPLINGS)}, got {task_sampling!r}"
    if task_sampling == "informative" and group_size < 2:
        return (
            f"task_sampling='informative' draws tasks whose groups can hold a win and a loss: group_size must "
            f"be >= 2, got {group_size}"
        )
    return None


def task_ids_problem(task_ids: Sequence[Any] | None) -> str | None:
    """Why ``task_ids`` cannot be weighted by their outcomes (none listed, repeated or unhashable ids), or None."""
    try:
        distinct = task_ids is not None and len(set(task_ids)) == len(task_ids)
    except TypeError:  # unhashable ids
        distinct = False
    if distinct:
        return None
    return (
        "task_sampling='informative' weights each task of task_ids by its recorded outcomes: set "
        "training(task_ids=[...]) to distinct, hashable task ids (the main job lists its env's own)"
    )


def mixed_group_probability(wins: np.ndarray, plays: np.ndarray, group_size: int) -> np.ndarray:
    """Chance that ``group_size`` rollouts of each task hold a win and a loss, under its Beta posterior.

    With ``a = PRIOR_WINS + wins`` and ``b = PRIOR_LOSSES + plays - wins``, a task's win probability p
    is Beta(a, b); ``E[p^N] = prod_{k<N} (a + k) / (a + b + k)`` (all N win), ``E[(1 - p)^N]`` likewise
    with b (all N lose), and the result is ``1 - E[p^N] - E[(1 - p)^N]``: 0 for ``group_size`` 1 (up
    to rounding), otherwise strictly between 0 and 1.

    Args:
        wins: (T,) episodes won per task.
        plays: (T,) episodes played per task (>= wins).
        group_size: Rollouts per group, N >= 1.

    Returns:
        (T,) probabilities.
    """
    a = PRIOR_WINS + np.asarray(wins, dtype=np.float64)
    b = PRIOR_LOSSES + np.asarray(plays, dtype=np.float64) - wins
    steps = np.arange(group_size, dtype=np.float64)[:, None]
    all_win = np.prod((a + steps) / (a + b + steps), axis=0)
    all_lose = np.prod((b + steps) / (a + b + steps), axis=0)
    return np.maximum(1.0 - all_win - all_lose, 0.0)  # not below 0 by rounding (group_size 1)


class TaskOutcomes:
    """Wins and plays of each listed training task, and the draw they weight.

    Args:
        task_ids: The distinct tasks to draw from, in the config's order (hashable).
    """

    def __init__(self, task_ids: Sequence[Hashable]) -> None:
        problem = task_ids_problem(task_ids)
        if problem:
            raise ValueError(problem)
        self.task_ids = list(task_ids)
        self._slot = {task: i for i, task in enumerate(self.task_ids)}
        self.wins = np.zeros(len(self.task_ids), dtype=np.int64)
        self.plays = np.zeros(len(self.task_ids), dtype=np.int64)

    def record(self, outcomes: Iterable[tuple[Hashable, bool]]) -> None:
        """Count (task id, won) pairs, one per finished episode; an id not listed raises KeyError."""
        for task, won in outcomes:
            slot = self._slot[task]
            self.plays[slot] += 1
            self.wins[slot] += bool(won)

    def mixed_group_probability(self, group_size: int) -> np.ndarray:
        """(T,) :func:`mixed_group_probability` of every task from the outcomes recorded so far."""
        return mixed_group_probability(self.wins, self.plays, group_size)

    def draw(self, rng: np.random.Generator, count: int, group_size: int) -> tuple[list[Hashable], float]:
        """``count`` tasks, each drawn with probability proportional to its mixed-group chance.

        Distinct while ``count`` does not exceed the number of tasks (with replacement beyond).
        Returns the tasks and the mean mixed-group chance of those drawn (the fraction of the
        iteration's groups expected to hold both a win and a loss).

        Raises:
            ValueError: for ``group_size`` < 2 (no group of one can be mixed).
        """
        problem = sampling_problem("informative", group_size)
        if problem:
            raise ValueError(problem)
        chance = self.mixed_group_probability(group_size)
        picks = rng.choice(len(self.task_ids), size=count, replace=count > len(self.task_ids), p=chance / chance.sum())
        return [self.task_ids[int(i)] for i in picks], float(chance[picks].mean())

    def state(self) -> dict[str, list[int]]:
        """The counts, for a checkpoint (JSON-friendly lists in the tasks' order)."""
        return {"wins": self.wins.tolist(), "plays": self.plays.tolist()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """Counts from :meth:`state`; their length must be the number of tasks."""
        wins, plays = np.asarray(state["wins"], dtype=np.int64), np.asarray(state["plays"], dtype=np.int64)
        if len(wins) != len(self.task_ids) or len(plays) != len(self.task_ids):
            raise ValueError(
                f"checkpointed task outcomes cover {len(plays)} tasks, the config lists {len(self.task_ids)}: "
                "restore with the task_ids the run was trained on"
            )
        self.wins, self.plays = wins, plays


def uniform_tasks(rng: np.random.Generator, task_ids: Sequence[Any] | None, count: int) -> list[Any]:
    """``count`` of ``task_ids`` drawn uniformly: distinct while ``count`` does not exceed their number,
    with replacement beyond; ``count`` Nones for None (each env then picks its task from the group's seed)."""
    if task_ids is None:
        return [None] * count
    if count <= len(task_ids):
        return [task_ids[int(i)] for i in rng.choice(len(task_ids), size=count, replace=False)]
    return [task_ids[int(i)] for i in rng.integers(len(task_ids), size=count)]
