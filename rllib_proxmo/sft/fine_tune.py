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

import numpy as np
import torch

from rllib_proxmo.algorithm.token_batch import RESPONSE_MASK, pad_turns
from rllib_proxmo.algorithm.torch.llm_rl_module import ATTENTION_MASK, INPUT_IDS, SCORED_TOKENS, TOKEN_LOGP, LLMRLModule
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import trim_left_padding
from rllib_proxmo.rollout.episodes import TextEpisode


@dataclass(frozen=True)
class FineTuneSettings:
    """Optimisation settings of the warm-up.

    Attributes:
        lr: AdamW learning rate.
        epochs: Passes over the demonstrations.
        batch_size: Turns per optimizer step.
        grad_clip: Global gradient-norm clip.
        seed: Seed of the per-epoch shuffle.
    """

    lr: float = 1e-4
    epochs: int = 3
    batch_size: int = 4
    grad_clip: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {self.lr}")
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
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


def fine_tune(
    policy: LLMRLModule,
    episodes: Sequence[TextEpisode],
    settings: FineTuneSettings,
    *,
    on_epoch: Callable[[EpochStats], None] | None = None,
) -> list[EpochStats]:
    """Train ``policy`` in place on the turns of ``episodes``; one :class:`EpochStats` per epoch.

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
    by_length = sorted(range(len(turns)), key=lambda i: len(turns[i].prompt_ids) + len(turns[i].response_ids))
    batches = [by_length[i : i + settings.batch_size] for i in range(0, len(by_length), settings.batch_size)]
    history = []
    for epoch in range(1, settings.epochs + 1):
        start = time.perf_counter()
        loss_sum, prob_sum, tokens, input_tokens = 0.0, 0.0, 0, 0
        for batch_index in rng.permutation(len(batches)):
            rows = [turns[i] for i in batches[batch_index]]
            columns = pad_turns([TextEpisode("sft", "sft", "sft", "", turns=rows)], pad_id)
            batch = trim_left_padding(
                {
                    key: torch.as_tensor(columns[key], device=device)
                    for key in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK)
                }
            )
            logp = policy.forward_train(batch)[TOKEN_LOGP]
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
