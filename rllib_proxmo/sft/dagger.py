"""On-policy relabelling of the warm start (DAgger: Ross, Gordon and Bagnell, 2011).

Fine-tuning on expert episodes trains the policy on the states the expert visits; once it
acts on its own it reaches states off that path (a receptacle it should not have opened,
an object taken by mistake) that no demonstration shows. A relabelling round lets the
fine-tuned policy play training tasks with the RL run's own env runner (its prompt,
sampler settings, answer constraint and evaluation decoding), keeps every state it
reached with the answer the env's expert gives there (:attr:`Turn.expert_answer`: the
searching expert tracks what *this* episode has seen, so its command continues from the
policy's detours), and adds these turns to the demonstrations for the next fine-tuning.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from ray.rllib.core import COMPONENT_RL_MODULE, DEFAULT_MODULE_ID
from transformers import PreTrainedTokenizerBase

from rllib_proxmo.rollout.env_runner import GroupedEnvRunner
from rllib_proxmo.rollout.episodes import GroupRequest, TextEpisode
from rllib_proxmo.sft.demonstrations import demonstration_turn


def play_policy(
    config: Any, policy: Any, *, episode_indices: Sequence[int], task_ids: Sequence[Any] | None, seed: int
) -> list[TextEpisode]:
    """The policy's own episodes, one per index ``i`` of ``episode_indices``: task
    ``task_ids[i % len(task_ids)]`` (None: the env picks by seed), reset seed ``seed + i``.

    Played on a local :class:`GroupedEnvRunner` of ``config`` (whose env config switches an
    expert on) loaded with ``policy``'s weights, with the evaluation decoding.
    """
    runner = GroupedEnvRunner(config=config)
    try:
        runner.set_state({COMPONENT_RL_MODULE: {DEFAULT_MODULE_ID: policy.get_state(inference_only=True)}})
        groups = [
            GroupRequest(uuid.uuid4().hex, seed + index, 1, None if not task_ids else task_ids[index % len(task_ids)])
            for index in episode_indices
        ]
        return runner.sample(groups=groups, explore=False, seed=seed + episode_indices[0], max_turns=config.max_turns)
    finally:
        runner.stop()


def relabel(episodes: Sequence[TextEpisode], tokenizer: PreTrainedTokenizerBase) -> list[TextEpisode]:
    """The episodes as demonstrations: each turn's prompt with the expert's answer as the response.

    Turns whose state has no expert answer (the expert found no route) are left out, and so
    are episodes left with no turn. Every kept turn has ``advantage=1.0``, as the expert's
    own demonstrations (:func:`~rllib_proxmo.sft.demonstrations.demonstration_turn`).

    Raises:
        ValueError: when no turn of any episode has an expert answer (the env reports no expert).
    """
    relabelled = []
    for episode in episodes:
        turns = [
            demonstration_turn(tokenizer, turn.prompt_ids, turn.expert_answer, turn.state)
            for turn in episode.turns
            if turn.expert_answer is not None
        ]
        if turns:
            relabelled.append(
                TextEpisode(episode.episode_id, episode.group_id, episode.task_id, episode.task_type, turns=turns)
            )
    if not relabelled:
        raise ValueError(
            "no state of the policy's episodes has an expert answer: relabelling needs an env that reports "
            "info['expert_action'] (ALFWorld: env_config {'expert': 'search'})"
        )
    return relabelled
