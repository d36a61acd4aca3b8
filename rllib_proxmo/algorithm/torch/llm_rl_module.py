"""A TorchRLModule wrapping a Hugging Face causal LM as a text policy.

Model config keys (``config.rl_module(model_config={...})``):

- ``model_name_or_path`` (required): embedded alias, local directory or hub id
  (see :func:`rllib_proxmo.algorithm.torch.model_loading.resolve_model_path`).
- ``dtype``: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``; weights travel to
  env runners in this dtype.
- ``lora``: optional dict of ``peft.LoraConfig`` arguments (e.g. ``{"r": 8,
  "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}``). With LoRA only the
  adapter is trained and sent to env runners, and the reference policy is the base
  model with the adapter disabled (no second copy).
- ``max_new_tokens``, ``temperature``, ``top_p``, ``eval_temperature``: sampling
  settings read by the env runner.

Batches hold left-padded ``input_ids`` and ``attention_mask`` of shape (B, L) and
optionally ``scored_tokens`` = K, an int: only the last K tokens of every row are
scored (responses sit at the end of left-padded rows, so K = the longest response
suffices). The forward passes return per-token log-probs and entropies of shape
(B, K) for tokens L-K .. L-1 (default K = L-1, every token but the first). The LM
head and the softmax run on those K positions only, which keeps memory at
O(B·K·vocab) instead of O(B·L·vocab) for long prompts.

The reference model lives outside the module's parameter registry: it is never
optimised, never wrapped by DDP and never part of the inference-only state that is
sent to env runners.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Any

import torch
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import StateDict

from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
SCORED_TOKENS = "scored_tokens"
TOKEN_LOGP = "token_logp"
TOKEN_ENTROPY = "token_entropy"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_REFERENCE_PREFIX = "reference::"


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class LLMRLModule(TorchRLModule):
    """Policy = causal LM; action = generated response text (generation via an engine)."""

    def setup(self) -> None:
        config = self.model_config or {}
        if "model_name_or_path" not in config:
            raise ValueError("model_config must name a model: {'model_name_or_path': ...}")
        dtype_name = config.get("dtype", "float32")
        if dtype_name not in _DTYPES:
            raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {dtype_name!r}")
        self.temperature = float(config.get("temperature", 1.0))
        model, self.tokenizer = load_causal_lm(config["model_name_or_path"], _DTYPES[dtype_name])
        self.uses_lora = bool(config.get("lora"))
        if self.uses_lora:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(**config["lora"]))
        self.model = model
        reference = None
        if not bool(self.inference_only) and not self.uses_lora:
            reference = copy.deepcopy(model).requires_grad_(False).eval()
        # Stored outside nn.Module's registry: not a parameter, not in DDP, not synced.
        object.__setattr__(self, "_reference", reference)

    def to(self, *args: Any, **kwargs: Any) -> LLMRLModule:
        super().to(*args, **kwargs)
        if self._reference is not None:
            self._reference.to(*args, **kwargs)
        return self

    def _token_logp_and_entropy(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool
    ) -> dict[str, torch.Tensor]:
        input_ids = batch[INPUT_IDS]
        mask = batch[ATTENTION_MASK]
        scored = int(batch.get(SCORED_TOKENS, input_ids.shape[1] - 1))
        if not 1 <= scored < input_ids.shape[1]:
            raise ValueError(f"scored_tokens must be in [1, {input_ids.shape[1] - 1}], got {scored}")
        logits = (
            model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position_ids_from_mask(mask),
                use_cache=False,
                logits_to_keep=scored + 1,
            )
            .logits[:, :-1]
            .float()
        )
        if self.temperature > 0:
            logits = logits / self.temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = input_ids[:, -scored:]
        out = {TOKEN_LOGP: log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)}
        if with_entropy:
            out[TOKEN_ENTROPY] = -(log_probs.exp() * log_probs).sum(-1)
        return out

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-token log-probs (B, K) of the given token sequences under the policy."""
        return self._token_logp_and_entropy(self.model, batch, with_entropy=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-token log-probs and entropies (B, K), with gradients; dropout stays off."""
        self.model.eval()
        return self._token_logp_and_entropy(self.model, batch, with_entropy=True)

    @torch.no_grad()
    def reference_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs (B, K) under the frozen reference policy."""
        if self.inference_only:
            raise ValueError("an inference-only module holds no reference model")
        if self.uses_lora:
            with self.model.disable_adapter():
                return self._token_logp_and_entropy(self.model, batch, with_entropy=False)[TOKEN_LOGP]
        return self._token_logp_and_entropy(self._reference, batch, with_entropy=False)[TOKEN_LOGP]

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        inference_only: bool = False,
        **kwargs: Any,
    ) -> StateDict:
        """Weights as CPU tensors in the model's dtype (bf16 stays bf16).

        ``inference_only=True`` gives what env runners need: the policy weights (with
        LoRA, only the adapter). Otherwise the reference model's weights are included
        under ``"reference::<name>"`` so checkpoints restore it.
        """
        policy = self.model.state_dict()
        if inference_only and self.uses_lora:
            policy = {k: v for k, v in policy.items() if "lora_" in k}
        state = {k: v.detach().cpu().clone() for k, v in policy.items()}
        if not inference_only and self._reference is not None:
            state.update(
                {_REFERENCE_PREFIX + k: v.detach().cpu().clone() for k, v in self._reference.state_dict().items()}
            )
        return state

    def set_state(self, state: StateDict) -> None:
        """Load weights produced by :meth:`get_state` (full or inference-only)."""
        reference = {k[len(_REFERENCE_PREFIX) :]: v for k, v in state.items() if k.startswith(_REFERENCE_PREFIX)}
        policy = {k: v for k, v in state.items() if not k.startswith(_REFERENCE_PREFIX)}
        own = self.model.state_dict()
        unknown = sorted(set(policy) - set(own))
        if unknown:
            raise ValueError(f"state holds weights this model does not have: {unknown[:5]}")
        if not self.uses_lora and set(policy) != set(own):
            raise ValueError(f"state lacks weights of this model: {sorted(set(own) - set(policy))[:5]}")
        # A LoRA state may carry only the adapter; the frozen base stays as loaded.
        self.model.load_state_dict(policy, strict=not self.uses_lora)
        if reference and self._reference is not None:
            self._reference.load_state_dict(reference)
