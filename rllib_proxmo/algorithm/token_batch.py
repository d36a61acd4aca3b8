"""Learner connector: episodes with per-step advantages -> padded token batch.

One row per turn: the turn's prompt ids followed by its response ids, exactly as
sampled. Rows are sorted by length (so micro-batches cut from consecutive rows
carry little padding) and left-padded to the longest row. Columns, for the
default module:

- ``input_ids`` (B, L) int64, ``attention_mask`` (B, L) int64;
- ``response_mask`` (B, L) float32: 1 on the response tokens;
- ``advantages`` (B, L) float32: the step's advantage on each of its response tokens
  (the same scalar for every token of the step), 0 elsewhere;
- ``sampler_logp`` (B, L) float32: the sampler's log-prob of each response token
  (``Turn.sampler_logp``), 0 elsewhere; present only when every turn carries one
  log-prob per response token (an engine that reports none leaves it out);
- ``trunk_states`` (B, L, D) float32: the input of the policy's lowest trained decoder
  block at every position but the row's last (``Turn.trunk_states``), 0 at the last
  position and on padding; present only when every turn carries them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from ray.rllib.connectors.connector_v2 import ConnectorV2
from ray.rllib.core import DEFAULT_MODULE_ID

from rllib_proxmo.algorithm.torch.llm_rl_module import ATTENTION_MASK, INPUT_IDS, TRUNK_STATES
from rllib_proxmo.rollout.episodes import TextEpisode

RESPONSE_MASK = "response_mask"
ADVANTAGES = "advantages"
SAMPLER_LOGP = "sampler_logp"


def pad_turns(episodes: list[TextEpisode], pad_token_id: int) -> dict[str, np.ndarray]:
    """Build the padded columns described in the module docstring."""
    turns = [turn for episode in episodes for turn in episode.turns]
    if not turns:
        raise ValueError("no turns to build a train batch from")
    for turn in turns:
        if not math.isfinite(turn.advantage):
            raise ValueError("a turn has no advantage: run GroupAdvantages on the whole batch first")
        if not turn.response_ids:
            raise ValueError("a turn has an empty response")
    turns.sort(key=lambda turn: len(turn.prompt_ids) + len(turn.response_ids))
    width = len(turns[-1].prompt_ids) + len(turns[-1].response_ids)
    rows = len(turns)
    input_ids = np.full((rows, width), pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((rows, width), dtype=np.int64)
    response_mask = np.zeros((rows, width), dtype=np.float32)
    advantages = np.zeros((rows, width), dtype=np.float32)
    with_sampler_logp = all(len(turn.sampler_logp) == len(turn.response_ids) for turn in turns)
    sampler_logp = np.zeros((rows, width), dtype=np.float32) if with_sampler_logp else None
    trunk_states = _trunk_column(turns, width)
    for row, turn in enumerate(turns):
        length = len(turn.prompt_ids) + len(turn.response_ids)
        start = width - length
        response_start = start + len(turn.prompt_ids)
        input_ids[row, start:] = turn.prompt_ids + turn.response_ids
        attention_mask[row, start:] = 1
        response_mask[row, response_start:] = 1.0
        advantages[row, response_start:] = turn.advantage
        if sampler_logp is not None:
            sampler_logp[row, response_start:] = turn.sampler_logp
        if trunk_states is not None:
            trunk_states[row, start : width - 1] = turn.trunk_states.numpy()
    columns = {
        INPUT_IDS: input_ids,
        ATTENTION_MASK: attention_mask,
        RESPONSE_MASK: response_mask,
        ADVANTAGES: advantages,
    }
    if sampler_logp is not None:
        columns[SAMPLER_LOGP] = sampler_logp
    if trunk_states is not None:
        columns[TRUNK_STATES] = trunk_states
    return columns


def _trunk_column(turns: list[Any], width: int) -> np.ndarray | None:
    """The zero (B, width, D) trunk-states column, or None unless every turn carries its states.

    Raises:
        ValueError: for a turn whose states do not cover its prompt and response but the last token.
    """
    if any(turn.trunk_states is None for turn in turns):
        return None
    for turn in turns:
        expected = len(turn.prompt_ids) + len(turn.response_ids) - 1
        if turn.trunk_states.shape[0] != expected:
            raise ValueError(f"a turn's trunk_states cover {turn.trunk_states.shape[0]} positions, not {expected}")
    return np.zeros((len(turns), width, turns[0].trunk_states.shape[1]), dtype=np.float32)


class TokenTrainBatch(ConnectorV2):
    """Learner connector piece turning annotated episodes into a padded token batch."""

    def __call__(
        self,
        *,
        rl_module: Any,
        batch: dict[str, Any],
        episodes: list[TextEpisode],
        explore: bool | None = None,
        shared_data: dict | None = None,
        metrics: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        module = rl_module[DEFAULT_MODULE_ID]
        module = module.unwrapped() if hasattr(module, "unwrapped") else module
        batch[DEFAULT_MODULE_ID] = pad_turns(list(episodes), module.tokenizer.pad_token_id)
        return batch
