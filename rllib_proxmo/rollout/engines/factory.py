"""The engine an env runner samples with, chosen by ``model_config["engine"]``.

- ``"hf"`` (default): :class:`~rllib_proxmo.rollout.engines.hf_engine.HFEngine` on the
  runner's module, which is moved to the runner's device (its GPU when Ray assigned
  one, else the CPU).
- ``"vllm"``: :class:`~rllib_proxmo.rollout.engines.vllm_engine.VLLMEngine` on the GPU
  of a remote env runner (CUDA build) or on its CPU cores (CPU build); the module stays
  on the CPU (the source of pushed weights).
  The local env runner (worker 0, never a GPU) always uses the HF engine: it samples
  only when its runner group has no healthy remote runner.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from rllib_proxmo.rollout.engine_choice import check_engine
from rllib_proxmo.rollout.engines.base import InferenceEngine
from rllib_proxmo.rollout.engines.hf_engine import HFEngine


def build_engine(
    name: str,
    module: Any,
    device: torch.device,
    model_config: Mapping[str, Any],
    *,
    max_prompt_tokens: int | None,
    max_new_tokens: int,
    trunk_block: int | None = None,
    num_threads: int = 1,
) -> InferenceEngine:
    """The ``name`` engine over ``module`` (an :class:`LLMRLModule`) on ``device``.

    ``max_prompt_tokens`` / ``max_new_tokens`` (the runner's sampler settings) size the
    vLLM engine's context; ``trunk_block`` is the HF engine's (vLLM keeps no hidden states);
    ``num_threads`` the vLLM CPU build's threads (the runner's ``num_cpus_per_env_runner``).
    """
    if check_engine(name) == "vllm":
        from rllib_proxmo.rollout.engines.vllm_engine import VLLMEngine

        return VLLMEngine.build(module, model_config, device, max_prompt_tokens, max_new_tokens, num_threads)
    module.to(device)
    return HFEngine(module.model, module.tokenizer, trunk_block=trunk_block)
