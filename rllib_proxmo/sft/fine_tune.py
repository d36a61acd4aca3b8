"""Supervised fine-tuning of the policy on demonstrations: the loss on response tokens only.

The policy is the RL run's own :class:`~rllib_proxmo.algorithm.torch.llm_rl_module.LLMRLModule`
(same model config: dtype, ``trainable_layers`` or LoRA, temperature), and a batch is
the RL learner's token batch (:func:`~rllib_proxmo.algorithm.token_batch.pad_turns`,
left-padded, response at the end), so the log-probs trained here are the ones the
RL learner and the sampler compute. Per batch of B turns with response mask M (B, K)
and token log-probs log pi (B, K)::

    loss = -sum(M * log pi) / sum(M)            (token mean over the batch)

Batches are cut from the turns sorted by length (little padding: the forward pass is
the cost on a CPU) and visited in a new random order every epoch. AdamW on the
trainable (fp32) weights, gradient norm clipped to ``grad_clip``.
With ``trainable_layers`` the frozen trunk's output of every batch is kept from the
first epoch (up to ``trunk_cache_mb``), and later epochs run only the trained top
layers on it: the same numbers for a fraction of the cost (:class:`DemonstrationBatches`,
which can carry them into a later call on more turns).
Reported per epoch: the token-mean loss and ``answer_prob``, the mean over turns of
``exp(sum of the response's log pi)``, the chance that sampling at the training
temperature reproduces the expert's answer exactly (both from the forward passes of
that epoch, before each batch's update).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from rllib_proxmo.algorithm.token_batch import RESPONSE_MASK, pad_turns
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    SCORED_TOKENS,
    TOKEN_LOGP,
    LLMRLModule,
    TrunkOutput,
)
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import trim_left_padding
from rllib_proxmo.rollout.episodes import TextEpisode, Turn


@dataclass(frozen=True)
class FineTuneSettings:
    """Optimisation settings of the warm-up.

    Attributes:
        lr: AdamW learning rate.
        epochs: Passes over the demonstrations.
        batch_size: Turns per optimizer step.
        grad_clip: Global gradient-norm clip.
        seed: Seed of the per-epoch shuffle.
        trunk_cache_mb: Memory for the frozen trunk's outputs kept across epochs (a policy
            with ``trainable_layers`` only; 0: recompute every epoch).
    """

    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 4
    grad_clip: float = 1.0
    seed: int = 0
    trunk_cache_mb: int = 2048

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name, least in (("epochs", 1), ("batch_size", 1), ("trunk_cache_mb", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"{name} must be an int >= {least}, got {value!r}")
        if not self.grad_clip > 0:
            raise ValueError(f"grad_clip must be > 0, got {self.grad_clip}")


@dataclass(frozen=True)
class EpochStats:
    """What one epoch of fine-tuning measured (see the module docstring)."""

    epoch: int
    loss: float
    answer_prob: float
    num_turns: int
    num_tokens: int
    num_input_tokens: int
    seconds: float


class DemonstrationBatches:
    """Length-sorted batches of demonstration turns and the frozen trunk's output of each.

    Kept across :func:`fine_tune` calls on a growing set of turns (a warm start's relabelling
    rounds): turns batched by an earlier call keep their batches, and so their kept trunk
    outputs; new turns form batches of their own. Trunk outputs are kept within
    ``budget_mb`` (a policy with ``trainable_layers`` only; 0 keeps none).
    """

    def __init__(self, batch_size: int, budget_mb: int) -> None:
        self.batch_size = batch_size
        self.budget_bytes = budget_mb * 2**20
        self.used_bytes = 0
        self.batches: list[list[Turn]] = []
        self._batched: set[int] = set()
        self.trunks: dict[int, TrunkOutput] = {}

    def plan(self, turns: Sequence[Turn]) -> list[list[Turn]]:
        """Every batch, after adding length-sorted batches of the ``turns`` not batched before.

        Raises:
            ValueError: when ``turns`` leaves out a turn an earlier call batched.
        """
        new = sorted(
            (turn for turn in turns if id(turn) not in self._batched),
            key=lambda turn: len(turn.prompt_ids) + len(turn.response_ids),
        )
        self.batches += [new[i : i + self.batch_size] for i in range(0, len(new), self.batch_size)]
        self._batched.update(id(turn) for turn in new)
        if len(self._batched) != len(turns):
            raise ValueError("fine_tune's batches hold turns the given episodes do not: pass every earlier turn again")
        return self.batches

    def forward_train(self, policy: LLMRLModule, key: int, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """``policy.forward_train(batch)``, from the kept trunk output of batch ``key`` when there is one."""
        if key in self.trunks:
            return policy.forward_train_from_trunk(self.trunks[key], batch)
        if self.used_bytes >= self.budget_bytes or policy.first_trained_block is None:
            return policy.forward_train(batch)
        out, trunk = policy.forward_train_with_trunk(batch)
        size = _tensor_bytes(trunk)
        if self.used_bytes + size <= self.budget_bytes:
            self.trunks[key] = trunk
            self.used_bytes += size
        return out


def _tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (nested tuples, lists and dicts)."""
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_tensor_bytes(item) for item in value.values())
    if isinstance(value, (tuple, list)):
        return sum(_tensor_bytes(item) for item in value)
    return 0


def fine_tune(
    policy: LLMRLModule,
    episodes: Sequence[TextEpisode],
    settings: FineTuneSettings,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
    batches: DemonstrationBatches | None = None,
) -> list[EpochStats]:
    """Train ``policy`` in place on the turns of ``episodes``; one :class:`EpochStats` per epoch.

    ``batches`` carries the batches and kept trunk outputs of an earlier call on a subset of
    these turns (None: new ones for this call).

    Raises:
        ValueError: for no turns, or a policy without trainable weights.
    """
    turns = [turn for episode in episodes for turn in episode.turns]
    if not turns:
        raise ValueError("no demonstration turns to fine-tune on")
    params = [p for p in policy.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the policy has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    device = params[0].device
    pad_id = policy.tokenizer.pad_token_id
    rng = np.random.default_rng(settings.seed)
    if batches is None:
        batches = DemonstrationBatches(settings.batch_size, settings.trunk_cache_mb)
    plan = batches.plan(turns)
    history = []
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        loss_sum, prob_sum, tokens, input_tokens = 0.0, 0.0, 0, 0
        for batch_index in rng.permutation(len(plan)):
            rows = plan[batch_index]
            columns = pad_turns([TextEpisode("sft", "sft", "sft", "", turns=rows)], pad_id)
            batch = trim_left_padding(
                {
                    key: torch.as_tensor(columns[key], device=device)
                    for key in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK)
                }
            )
            logp = batches.forward_train(policy, int(batch_index), batch)[TOKEN_LOGP]
            mask = batch[RESPONSE_MASK][:, -batch[SCORED_TOKENS] :]
            count = mask.sum()
            loss = -(logp * mask).sum() / count
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, settings.grad_clip)
            optimizer.step()
            loss_sum += float(loss.detach()) * float(count)
            prob_sum += float(torch.exp((logp.detach() * mask).sum(dim=1)).sum())
            tokens += int(count)
            input_tokens += int(batch[ATTENTION_MASK].sum())
        seconds = time.perf_counter() - start
        stats = EpochStats(epoch, loss_sum / tokens, prob_sum / len(turns), len(turns), tokens, input_tokens, seconds)
        history.append(stats)
        if on_epoch is not None:
            on_epoch(stats)
    return history
