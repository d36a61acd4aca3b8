"""Episodes of a text agent, as env runners hand them to the learner.

A :class:`TextEpisode` keeps, per turn, the exact prompt and response token ids
that were sampled (the learner never re-tokenises text), the reward, and the raw
environment state text used by PSA/GiGPO. Episodes of one task group share a
``group_id``; the group is the unit of credit assignment and of learner sharding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GroupRequest:
    """One task to be played ``size`` times from the same initial state.

    Attributes:
        group_id: Unique id of the group within the training run.
        seed: Seed for ``env.reset`` (identical for every member) and for sampling.
        size: Number of rollouts (N in the paper).
        task_id: Task to pin with ``reset(options={"task_id": ...})``; None lets the
            env choose from ``seed`` (the first member's task is then pinned for the rest).
    """

    group_id: str
    seed: int
    size: int
    task_id: Any = None

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"group size must be >= 1, got {self.size}")


@dataclass
class Turn:
    """One agent step.

    Attributes:
        prompt_ids: Token ids of the chat-formatted prompt (no padding).
        response_ids: Sampled response token ids (eos included when emitted).
        reward: Reward the env returned for this step (the task's own reward, without
            any invalid-action penalty).
        state: Raw observation text the action was taken in (PSA / GiGPO state).
        action: What the agent did, as text: the command the env's action parser read
            (``info["parsed_action"]``, in its admissible spelling when admissible), else
            the response text itself (a malformed output, or an env without a parser).
        format_valid: Whether the response parsed into an action.
        action_admissible: Whether the parsed action was admissible.
        action_repaired: Whether it was admissible only after the wrapper removed a list
            prefix, a trailing full stop or surrounding quotes (``info["action_repaired"]``).
        penalty: Invalid-action penalty of this step (>= 0; ``info["invalid_penalty"]``),
            applied to this step only by the advantage step, outside the episode return.
        sampler_logp: Per-token log-probs of ``response_ids`` under the sampler, as the
            engine computed them (empty when the engine did not report them).
        cut: True when the response was cut at ``max_new_tokens`` (no stop token).
        advantage: Per-step advantage, filled in by the advantage step.
        trunk_states: The sampler's (P + T - 1, D) trunk output of this turn
            (``Generation.trunk_states``), which the learner continues from; None when
            the sampler kept none.
        expert_answer: What the env's expert would answer in this turn's state, in the
            template's answer form (:func:`envs.llm_wrappers.format_response` of
            ``info["expert_action"]``); None when the env reports no expert command.
            On-policy relabelling (:mod:`rllib_proxmo.sft.dagger`) trains on it.
    """

    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    reward: float
    state: str
    action: str = ""
    format_valid: bool = True
    action_admissible: bool = True
    action_repaired: bool = False
    penalty: float = 0.0
    sampler_logp: tuple[float, ...] = ()
    cut: bool = False
    advantage: float = math.nan
    trunk_states: torch.Tensor | None = None
    expert_answer: str | None = None


@dataclass
class TextEpisode:
    """A finished (terminated or truncated) multi-turn episode.

    ``score`` is the env's task score at the end of the episode when its ``info``
    reports one (``info["score"]``, e.g. WebShop's purchase score, also when the env
    pays binary success as reward); None for envs that report none.
    """

    episode_id: str
    group_id: str
    task_id: str
    task_type: str
    turns: list[Turn] = field(default_factory=list)
    won: bool = False
    truncated: bool = False
    score: float | None = None

    def __len__(self) -> int:
        return len(self.turns)

    @property
    def total_reward(self) -> float:
        return float(sum(turn.reward for turn in self.turns))

    @property
    def num_tokens(self) -> int:
        """Prompt plus response tokens over all turns (the learner's work)."""
        return sum(len(t.prompt_ids) + len(t.response_ids) for t in self.turns)


def step_columns(episodes: Sequence[TextEpisode]) -> dict[str, Any]:
    """The episodes' turns as flat step columns (one row per turn, in episode order).

    Keys: ``group_id`` and ``episode_id`` (dense ints, numbered in order of first
    appearance), ``t``, ``reward``, ``state`` (list of str), ``success`` (the
    episode's ``won``), ``penalty`` (``Turn.penalty``), ``task_id`` and
    ``task_type`` (lists of str): the inputs of
    :func:`rllib_proxmo.advantages.compute_advantages` and the columns of
    :mod:`rllib_proxmo.analysis.rollout_files` (but ``iteration``); and, stored there
    as extra columns, ``action`` (list of str, ``Turn.action``), ``admissible``
    (``Turn.action_admissible``) and ``advantage`` (``Turn.advantage``: NaN before
    the advantage step has filled it in).

    Raises:
        ValueError: for an empty episode list or an episode without turns.
    """
    if not episodes:
        raise ValueError("no episodes to flatten")
    group_codes: dict[str, int] = {}
    columns: dict[str, list[Any]] = {
        key: []
        for key in (
            "group_id",
            "episode_id",
            "t",
            "reward",
            "state",
            "success",
            "penalty",
            "task_id",
            "task_type",
            "action",
            "admissible",
            "advantage",
        )
    }
    for number, episode in enumerate(episodes):
        if not episode.turns:
            raise ValueError(f"episode {episode.episode_id} has no turns")
        code = group_codes.setdefault(episode.group_id, len(group_codes))
        for t, turn in enumerate(episode.turns):
            columns["group_id"].append(code)
            columns["episode_id"].append(number)
            columns["t"].append(t)
            columns["reward"].append(turn.reward)
            columns["state"].append(turn.state)
            columns["success"].append(episode.won)
            columns["penalty"].append(turn.penalty)
            columns["task_id"].append(str(episode.task_id))
            columns["task_type"].append(episode.task_type or "")
            columns["action"].append(turn.action)
            columns["admissible"].append(turn.action_admissible)
            columns["advantage"].append(turn.advantage)
    return {
        **columns,
        "group_id": np.asarray(columns["group_id"], dtype=np.int64),
        "episode_id": np.asarray(columns["episode_id"], dtype=np.int64),
        "t": np.asarray(columns["t"], dtype=np.int64),
        "reward": np.asarray(columns["reward"], dtype=np.float64),
        "success": np.asarray(columns["success"], dtype=bool),
        "penalty": np.asarray(columns["penalty"], dtype=np.float64),
        "admissible": np.asarray(columns["admissible"], dtype=bool),
        "advantage": np.asarray(columns["advantage"], dtype=np.float64),
    }
