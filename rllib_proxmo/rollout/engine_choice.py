"""Names of the inference engines (``model_config["engine"]``), importable without torch.

The command lines check ``--engine`` against :data:`ENGINES` while parsing, before any
framework is imported; :mod:`rllib_proxmo.rollout.engines.factory` builds the engine.
"""

from __future__ import annotations

from typing import Any

#: Values of ``model_config["engine"]``: Hugging Face ``generate`` or vLLM.
ENGINES = ("hf", "vllm")
DEFAULT_ENGINE = "hf"


def check_engine(name: Any) -> str:
    """``name`` if it is one of :data:`ENGINES`.

    Raises:
        ValueError: naming the setting and the allowed values.
    """
    if name not in ENGINES:
        raise ValueError(f"model_config engine must be one of {list(ENGINES)}, got {name!r}")
    return name
