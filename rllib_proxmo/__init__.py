"""rllib-proxmo: ProxMO credit assignment for multi-turn LLM agents on Ray RLlib.

``from rllib_proxmo import ProxMOConfig`` gives the RLlib algorithm config (and
registers the algorithm with Ray Tune as ``"ProxMO"``);
:mod:`rllib_proxmo.advantages` holds the framework-free credit assignment and
can be imported without Ray.
"""

from importlib import import_module

__version__ = "0.1.0"

# Ray-dependent names load on first use, so that importing the advantage
# core (``rllib_proxmo.advantages``) does not import Ray.
_LAZY = {
    "ProxMO": "rllib_proxmo.algorithm.proxmo",
    "ProxMOConfig": "rllib_proxmo.algorithm.proxmo",
    "LLMRLModule": "rllib_proxmo.algorithm.torch.llm_rl_module",
    "ProxMOTorchLearner": "rllib_proxmo.algorithm.torch.proxmo_torch_learner",
    "GroupedEnvRunner": "rllib_proxmo.rollout.env_runner",
    "HFEngine": "rllib_proxmo.rollout.engines.hf_engine",
    "SamplingParams": "rllib_proxmo.rollout.engines.base",
    "resolve_model_path": "rllib_proxmo.algorithm.torch.model_loading",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
