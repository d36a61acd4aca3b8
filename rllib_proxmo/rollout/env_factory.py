"""Create the LLM-facing text env an env runner plays.

``config.env`` may be a name registered with ``ray.tune.register_env``, a Gymnasium
id (``import envs`` registers ``ALFWorld-v0`` and ``WebShop-v0``; ``"module:Id"``
imports ``module`` first), or a callable ``env_config -> env``. The base env is then
wrapped with :func:`envs.llm_wrappers.make_llm_env` using ``config.llm_env_config``
(prompt template, history length, invalid-action penalty, ``require_think``); set
``llm_env_config=None`` when the env already speaks prompts and raw LLM outputs.
"""

from __future__ import annotations

import importlib
from typing import Any

import gymnasium as gym
from ray.rllib.env.env_context import EnvContext
from ray.tune.registry import ENV_CREATOR, _global_registry


def make_text_env(config: Any, *, worker_index: int | None, index: int) -> gym.Env:
    """Build one env instance for env runner ``worker_index``, slot ``index``."""
    context = EnvContext(dict(config.env_config or {}), worker_index=worker_index or 0, vector_index=index)
    spec = config.env
    if spec is None:
        raise ValueError("no environment configured: call config.environment(<env id or creator>)")
    if isinstance(spec, str) and _global_registry.contains(ENV_CREATOR, spec):
        env = _global_registry.get(ENV_CREATOR, spec)(context)
    elif isinstance(spec, str):
        importlib.import_module("envs")
        try:
            env = gym.make(spec, disable_env_checker=True, **context)
        except gym.error.Error as error:
            raise ValueError(f"cannot make environment {spec!r}: {error}") from error
    elif callable(spec):
        env = spec(context)
    else:
        raise ValueError(f"config.env must be an env id or a callable, got {type(spec).__name__}")
    if config.llm_env_config is None:
        return env
    from envs.llm_wrappers import check_llm_env_settings, make_llm_env

    check_llm_env_settings(config.llm_env_config)
    return make_llm_env(env, **config.llm_env_config)
