"""Generation with vLLM colocated in the env-runner process (``model_config["engine"] = "vllm"``).

Built against vLLM 0.33.0 (:data:`VLLM_VERSION`, the ``vllm`` extra of setup.py); every
vLLM name used here is that version's. Not yet run (README, "Inference engine: Hugging
Face or vLLM"; docs/design.md §4.7).

One :class:`VLLMEngine` per remote env runner, on the GPU Ray assigned to it:

- ``vllm.LLM`` loads the same local directory the RLModule loaded (never the hub), in
  the module's ``dtype``, with vLLM's own model implementation, prefix caching on (the
  ``group_size`` identical prompts of a group share one prefill), no tokenizer (prompts
  arrive as token ids, responses are decoded by the module's tokenizer) and no
  checkpoint generation defaults (``generation_config="vllm"``). The engine core runs
  in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so weights are loaded into
  the model by a direct call instead of being pickled to a subprocess.
- Sampling is :func:`request_kwargs`: one vLLM ``SamplingParams`` per prompt, each
  with its own seed (identical prompts of a group must not draw identical responses),
  every stop id of the checkpoint, ``logprobs=0`` (the drawn token's log-prob only)
  and ``logprobs_mode="processed_logprobs"``: log-probs after temperature and top-p,
  i.e. of the distribution the token was drawn from, as :class:`Generation` requires.
- :meth:`VLLMEngine.update_weights` pushes the new weights without disk:
  :class:`WeightPush` turns the RLModule's inference-only state into the
  ``(checkpoint name, tensor)`` pairs ``load_weights`` of vLLM's Llama / Qwen2 / Qwen3
  models take (it maps them onto its fused ``qkv_proj`` / ``gate_up_proj`` itself);
  with LoRA it merges ``W + scaling * B @ A`` for the adapted modules only and does not
  re-send the frozen base (unless sleep mode discarded it). The prefix cache is reset
  after every push.
- Sleep mode (``vllm_sleep_mode``): :meth:`VLLMEngine.pause` (end of each
  ``sample`` call) discards weights and KV cache (level 2), freeing the GPU for a
  learner that shares it; the next update wakes the weights, loads every weight
  (the discarded ones too), then wakes the KV cache. Sampling again before an update
  (a retry) reloads the runner's current weights the same way: the engine never
  wakes without reloading.

The env runner keeps its RLModule on the CPU with this engine: the module is the
source of the pushed weights (and, with LoRA, the base copy the merge starts from).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, PreTrainedModel, PreTrainedTokenizerBase

from rllib_proxmo.rollout.engines.base import Generation, SamplingParams
from rllib_proxmo.rollout.engines.hf_engine import stop_token_ids

#: The vLLM release this engine is written against (setup.py pins the same).
VLLM_VERSION = "0.33.0"
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
            activations and KV cache. The default suits a GPU of its own; with a
            learner on the same GPU (fractional ``num_gpus_per_env_runner``), set it to
            what the learner leaves free at vLLM's start (vLLM fails when less is free)
            and turn ``sleep_mode`` on.
        max_model_len: Longest prompt + response in tokens; None: ``max_prompt_tokens
            + max_new_tokens`` when ``max_prompt_tokens`` is set, else the checkpoint's
            context length. Must be at least ``max_prompt_tokens + max_new_tokens``.
        enforce_eager: No CUDA graphs (less memory and a faster start, slower decoding).
        sleep_mode: Free weights and KV cache between sampling and the next weight push.
    """

    gpu_memory_utilization: float = 0.9
    max_model_len: int | None = None
    enforce_eager: bool = False
    sleep_mode: bool = False

    def __post_init__(self) -> None:
        value = self.gpu_memory_utilization
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise ValueError(f"model_config vllm_gpu_memory_utilization must be in (0, 1], got {value!r}")
        length = self.max_model_len
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 2):
            raise ValueError(f"model_config vllm_max_model_len must be None or an int >= 2, got {length!r}")
        for name in ("enforce_eager", "sleep_mode"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"model_config vllm_{name} must be True or False, got {getattr(self, name)!r}")

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


class WeightPush:
    """The ``(checkpoint name, tensor)`` pairs one weight update sends to vLLM.

    Without LoRA: the inference-only state (with ``trainable_layers`` only those
    layers; vLLM holds the frozen rest already). With LoRA: the merged weights of the
    adapted layers only (the rest of vLLM's weights are the frozen base already). When
    vLLM's weights were discarded (sleep mode), everything: the runner's model, which
    holds the state just loaded, with the merged layers.

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

    def weights(self, state: Mapping[str, torch.Tensor], *, full: bool) -> list[tuple[str, torch.Tensor]]:
        """What to load for ``state`` (an RLModule inference-only state); ``full``: every weight."""
        if not self.lora:
            return checkpoint_weights({**self.model.state_dict(), **state} if full else state, self.tied_embeddings)
        merged = [(target.name, target.merged(state)) for target in self.lora]
        if not full:
            return merged
        adapted = {target.name for target in self.lora}
        base = checkpoint_weights(self.model.state_dict(), self.tied_embeddings)
        return [(name, value) for name, value in base if name not in adapted] + merged


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


def vllm_missing() -> str | None:
    """Why vLLM cannot be imported here (None: it can be)."""
    if importlib.util.find_spec("vllm") is None:
        return f"vllm is not installed (pip install 'rllib-proxmo[vllm]', vLLM {VLLM_VERSION})"
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

    Checked on the driver, before Ray starts anything. An evaluation config without
    env runners of its own samples on the training runners or, lacking those, on the
    evaluation group's local runner (HF engine, CPU), so its runner counts are not
    checked.
    """
    problems = [reason] if (reason := vllm_missing()) else []
    try:
        VLLMSettings.from_model_config(model_config).model_len(max_prompt_tokens, max_new_tokens)
    except ValueError as error:
        problems.append(str(error))
    if in_evaluation and num_env_runners == 0:
        return problems
    if num_env_runners < 1:
        problems.append("it samples on remote env runners: set num_env_runners >= 1")
    if not num_gpus_per_env_runner > 0:
        problems.append(
            "each remote env runner needs a GPU: set num_gpus_per_env_runner > 0 (a fraction shares the "
            "GPU with a learner: see vllm_gpu_memory_utilization and vllm_sleep_mode)"
        )
    return problems


def build_problems(model_dir: Path, device: torch.device) -> list[str]:
    """Why this env runner cannot build the vLLM engine (empty: it can)."""
    problems = [reason] if (reason := vllm_missing()) else []
    if device.type != "cuda" or not torch.cuda.is_available():
        problems.append(
            f"the env runner samples on {device}, not a CUDA GPU (set num_gpus_per_env_runner > 0 and "
            "num_env_runners >= 1; the local env runner never has a GPU)"
        )
    architectures = AutoConfig.from_pretrained(model_dir).architectures or []
    if not set(architectures) & set(SUPPORTED_ARCHITECTURES):
        problems.append(
            f"the checkpoint's architectures {architectures} are not among {list(SUPPORTED_ARCHITECTURES)}, "
            "whose weight names this engine maps"
        )
    return problems


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
    ) -> VLLMEngine:
        """The engine of an env runner whose (CPU) RLModule is ``module``, on ``device``.

        ``max_prompt_tokens`` and ``max_new_tokens`` are the runner's sampler settings
        (they size vLLM's ``max_model_len``).

        Raises:
            ValueError: for a model without a local copy or a bad ``vllm_*`` setting.
            RuntimeError: naming every reason it cannot run here (vllm missing, no
                GPU, an unsupported architecture), before anything is loaded.
        """
        settings = VLLMSettings.from_model_config(model_config)
        model_len = settings.model_len(max_prompt_tokens, max_new_tokens)
        model_dir = local_model_dir(model_config["model_name_or_path"])
        problems = build_problems(model_dir, device)
        if problems:
            raise RuntimeError("model_config engine='vllm' cannot run on this env runner: " + "; ".join(problems))
        # The engine core in this process: load_weights is then a call, not a pickled message.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        from vllm import LLM

        llm = LLM(
            model=str(model_dir),
            skip_tokenizer_init=True,
            dtype=str(module.compute_dtype).removeprefix("torch."),  # the module's inference dtype
            model_impl="vllm",
            tensor_parallel_size=1,
            distributed_executor_backend="uni",
            gpu_memory_utilization=settings.gpu_memory_utilization,
            max_model_len=model_len,
            enable_prefix_caching=True,
            enforce_eager=settings.enforce_eager,
            enable_sleep_mode=settings.sleep_mode,
            logprobs_mode="processed_logprobs",
            generation_config="vllm",
        )
        if not hasattr(llm.llm_engine, "model_executor"):
            raise RuntimeError("vLLM runs its engine core in a subprocess; weights could not be pushed in place")
        return cls(llm, module.model, module.tokenizer, settings, llm.llm_engine.model_config.max_model_len)

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        """One response per prompt; see :class:`Generation` for what each carries."""
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
        """``load_weights`` of the in-process vLLM model (it copies into its own, fused parameters)."""
        self.llm.apply_model(lambda model: _load_weights(model, weights))

    def pause(self) -> None:
        """Sampling is over until the next weight push: with sleep mode, free weights and KV cache."""
        if self.settings.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True


@torch.no_grad()
def _load_weights(model: torch.nn.Module, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    model.load_weights(weights)
