"""Token-level clipped PPO for LLM policies, with KL to a frozen reference.

One :meth:`ProxMOTorchLearner._update` call processes one iteration's shard:

1. Old log-probs (and reference log-probs) are recomputed by this learner, without
   gradients, on exactly the micro-batches used for the update, so the first epoch's
   importance ratios are exactly 1.
2. For each of ``num_epochs`` epochs: gradients are accumulated over micro-batches of
   ``micro_batch_size`` rows (one row = one turn), clipped to ``grad_clip`` (global
   norm), and one optimizer step is taken.

Loss per response token (token-mean over all response tokens of all learners)::

    -min(r A, clip(r, 1-eps, 1+eps) A) + kl_coeff * k3(ref || pi) - entropy_coeff * H

with ``r = exp(logp - old_logp)`` and the low-variance estimator
``k3 = exp(ref - logp) - (ref - logp) - 1``.

With ``num_learners > 1`` each epoch triggers exactly one synchronised backward pass
per learner (earlier micro-batches run under DDP's ``no_sync``), so learners with
different numbers of micro-batches cannot deadlock.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchDDPRLModule
from ray.rllib.utils.typing import ModuleID, TensorType

from rllib_proxmo.algorithm.token_batch import ADVANTAGES, RESPONSE_MASK
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    SCORED_TOKENS,
    TOKEN_ENTROPY,
    TOKEN_LOGP,
)

OLD_LOGP = "old_logp"
REF_LOGP = "ref_logp"
LOSS_SCALE = "loss_scale"

POLICY_LOSS = "policy_loss"
KL = "kl"
ENTROPY = "entropy"
CLIP_FRACTION = "clip_fraction"
RATIO_MEAN = "ratio_mean"
FIRST_EPOCH_MAX_RATIO_DEVIATION = "first_epoch_max_abs_ratio_minus_one"
GRAD_NORM = "grad_norm"
NUM_RESPONSE_TOKENS = "num_response_tokens"
NUM_MICRO_BATCHES = "num_micro_batches"


def trim_left_padding(columns: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Drop leading all-padding columns and set ``scored_tokens`` to the response span.

    Rows are left-padded with the response at the end, so after this the last
    ``scored_tokens`` columns hold every response token of the micro-batch.
    """
    start = int(columns[ATTENTION_MASK].any(dim=0).nonzero()[0])
    trimmed: dict[str, Any] = {key: value[:, start:] for key, value in columns.items()}
    first_response = int(trimmed[RESPONSE_MASK].any(dim=0).nonzero()[0])
    trimmed[SCORED_TOKENS] = max(trimmed[INPUT_IDS].shape[1] - first_response, 1)
    return trimmed


class ProxMOTorchLearner(TorchLearner):
    """PPO-clip on response tokens with gradient accumulation and reference KL."""

    def build(self) -> None:
        super().build()
        self._stats: dict[str, float] = {}
        self._max_ratio_deviation = 0.0

    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        module = self._module[module_id]
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def _micro_batches(self, columns: dict[str, np.ndarray], size: int) -> list[dict[str, torch.Tensor]]:
        tensors = {
            key: torch.as_tensor(np.asarray(columns[key]), device=self._device)
            for key in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK, ADVANTAGES)
        }
        rows = tensors[INPUT_IDS].shape[0]
        return [
            trim_left_padding({key: value[start : start + size] for key, value in tensors.items()})
            for start in range(0, rows, size)
        ]

    def _global_token_count(self, micro_batches: list[dict[str, torch.Tensor]]) -> float:
        count = torch.tensor(float(sum(mb[RESPONSE_MASK].sum() for mb in micro_batches)), dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(count)
        if count.item() == 0:
            raise ValueError("the train batch holds no response tokens")
        return float(count.item())

    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        scored = batch[SCORED_TOKENS]
        mask = batch[RESPONSE_MASK][:, -scored:]
        advantages = batch[ADVANTAGES][:, -scored:]
        logp = fwd_out[TOKEN_LOGP]
        ratio = torch.exp(logp - batch[OLD_LOGP])
        clipped = torch.clamp(ratio, 1.0 - config.clip_param, 1.0 + config.clip_param)
        policy_loss = -torch.minimum(ratio * advantages, clipped * advantages)
        log_ratio_ref = batch[REF_LOGP] - logp
        kl = torch.exp(log_ratio_ref) - log_ratio_ref - 1.0
        entropy = fwd_out[TOKEN_ENTROPY]
        per_token = policy_loss + config.kl_coeff * kl - config.entropy_coeff * entropy
        scale = batch[LOSS_SCALE]
        with torch.no_grad():
            self._stats[POLICY_LOSS] += float((policy_loss * mask).sum()) * scale
            self._stats[KL] += float((kl * mask).sum()) * scale
            self._stats[ENTROPY] += float((entropy * mask).sum()) * scale
            self._stats[RATIO_MEAN] += float((ratio * mask).sum()) * scale
            self._stats[CLIP_FRACTION] += float((((ratio - 1.0).abs() > config.clip_param) * mask).sum()) * scale
            deviation = float(((ratio - 1.0).abs() * mask).max())
            self._max_ratio_deviation = max(self._max_ratio_deviation, deviation)
        return (per_token * mask).sum() * scale

    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        module_id = DEFAULT_MODULE_ID
        config = self.config.get_config_for_module(module_id)
        module = self.module[module_id]
        policy = module.unwrapped()
        micro_batches = self._micro_batches(batch[module_id], config.micro_batch_size)
        world_size = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        # Token mean over all learners: DDP averages gradients over ranks, hence * world_size.
        scale = world_size / self._global_token_count(micro_batches)
        with torch.no_grad():
            for mb in micro_batches:
                mb[OLD_LOGP] = policy._forward(mb)[TOKEN_LOGP]
                mb[REF_LOGP] = policy.reference_logp(mb)
                mb[LOSS_SCALE] = scale
        optimizer = self.get_optimizer(module_id)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        epochs = int(config.num_epochs)
        for epoch in range(epochs):
            self._stats = dict.fromkeys((POLICY_LOSS, KL, ENTROPY, RATIO_MEAN, CLIP_FRACTION), 0.0)
            self._max_ratio_deviation = 0.0
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=self._device)
            for index, mb in enumerate(micro_batches):
                last = index == len(micro_batches) - 1
                no_sync = isinstance(module, TorchDDPRLModule) and not last
                with module.no_sync() if no_sync else contextlib.nullcontext():
                    fwd_out = module.forward_train(mb)
                    loss = self.compute_loss_for_module(module_id=module_id, config=config, batch=mb, fwd_out=fwd_out)
                    loss.backward()
                total += loss.detach()
            grad_norm = torch.nn.utils.clip_grad_norm_(params, config.grad_clip or float("inf"))
            if not torch.isfinite(grad_norm):
                raise FloatingPointError(f"non-finite gradient norm {float(grad_norm)} in epoch {epoch}")
            optimizer.step()
            if epoch == 0:
                self.metrics.log_value(
                    (module_id, FIRST_EPOCH_MAX_RATIO_DEVIATION), self._max_ratio_deviation, window=1
                )
        # Each learner's share is scaled by world_size; the learner group's mean over
        # learners therefore gives the token mean over the whole batch.
        for key, value in self._stats.items():
            self.metrics.log_value((module_id, key), value, window=1)
        self.metrics.log_value((module_id, GRAD_NORM), float(grad_norm), window=1)
        self.metrics.log_value((module_id, NUM_RESPONSE_TOKENS), world_size / scale, window=1)
        self.metrics.log_value((module_id, NUM_MICRO_BATCHES), len(micro_batches), window=1)
        return {}, {module_id: total}, {}
