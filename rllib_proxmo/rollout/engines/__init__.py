"""Inference engines that turn prompt token ids into sampled responses."""

from rllib_proxmo.rollout.engines.base import Generation, InferenceEngine, SamplingParams
from rllib_proxmo.rollout.engines.hf_engine import HFEngine

__all__ = ["Generation", "HFEngine", "InferenceEngine", "SamplingParams"]
