"""A TorchRLModule wrapping a Hugging Face causal LM as a text policy.

Model config keys (``config.rl_module(model_config={...})``):

- ``model_name_or_path`` (required): embedded alias, local directory or hub id
  (see :func:`rllib_proxmo.algorithm.torch.model_loading.resolve_model_path`).
- ``dtype``: the compute and inference dtype, ``"float32"`` (default), ``"bfloat16"``
  or ``"float16"`` (inference only: fp16 training would need loss scaling, so a
  learner refuses it). The learner's trainable parameters are always fp32 (master
  weights, updated by AdamW in fp32; bf16 weights would round most lr-1e-6 updates
  away); its forward passes run under ``torch.autocast`` in ``dtype`` on CUDA
  (:func:`autocast_dtype`) and in fp32 on CPU, where bf16 matmuls are slower than fp32
  (no AMX). The frozen reference model is stored in ``dtype``; env-runner
  (``inference_only``) modules load in ``dtype`` and receive weights cast to it.
- ``lora``: optional dict of ``peft.LoraConfig`` arguments (e.g. ``{"r": 8,
  "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}``). With LoRA only the
  adapter is trained (fp32 on the learner) and sent to env runners, the frozen base
  is stored in ``dtype``, and the reference policy is the base model with the adapter
  disabled (no second copy).
- ``trainable_layers``: train only the top N decoder layers (embeddings, the lower
  layers, the final norm and the LM head stay frozen; None, the default, trains every
  weight). Backward passes then stop at layer N from the top: on the CPU default
  (SmolLM2-135M, 30 layers, top 4) a forward+backward costs about one forward pass
  (``benchmarks/learner_throughput.py``). Not combinable with ``lora``. The frozen
  trunk below them is then shared with the reference: a training forward whose batch
  sets ``with_reference`` also returns the reference's log-probs (``ref_logp``), from
  the reference's top layers run on the hidden states the policy's trunk computed
  (:meth:`LLMRLModule.shares_frozen_trunk`), instead of a second full forward pass.
  A batch may even carry the trunk's output itself (``trunk_states``, (B, L, D): the
  input of the lowest trained block at every position, as the HF engine keeps it
  with ``reuse_sampler_trunk``); the training forward then runs the trained blocks
  only, and the frozen ones not at all.
- ``temperature`` (default 1.0): the training sampling temperature, which the
  log-probs of this module use too (the env runner samples with ``self.temperature``).
- ``max_new_tokens``, ``eval_temperature``, ``eval_top_p``, ``max_prompt_tokens``,
  ``system_prompt`` (the system message of every prompt; None, the default, keeps the chat
  template's own): the env runner's other sampling settings
  (:class:`rllib_proxmo.rollout.env_runner.SamplerSettings`; ``top_p < 1`` is refused).
- ``reuse_sampler_trunk`` (default False; needs ``trainable_layers`` and the HF
  engine): the env runner keeps the trunk output of every sampled turn for the
  learner (:class:`rllib_proxmo.rollout.env_runner.SamplerSettings`).
- ``constrain_to_admissible`` (default False; the HF engine, no think block): every
  answer is drawn from the model restricted to the admissible commands the prompt lists
  (:class:`rllib_proxmo.rollout.env_runner.SamplerSettings`); the log-probs stay the
  unrestricted ones this module computes.
- ``engine``: ``"hf"`` (default) or ``"vllm"``, the env runners' inference engine
  (:mod:`rllib_proxmo.rollout.engines.factory`); ``vllm_gpu_memory_utilization``,
  ``vllm_max_model_len``, ``vllm_enforce_eager``, ``vllm_sleep_mode``: the vLLM engine's
  settings (:class:`rllib_proxmo.rollout.engines.vllm_engine.VLLMSettings`).

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

Checkpoints (:meth:`LLMRLModule.save_to_path`) hold the policy's weights in one
safetensors file (``model.safetensors``, fp32 master weights; with LoRA only the adapter).
The frozen weights (the reference model; with LoRA the base model, which is also the
reference) are stored as where they came from, ``model_name_or_path`` and the SHA-256
of their tensors, as long as they are what the module loaded from there; restoring
checks the hash against the weights the module loaded and refuses a mismatch (the model
files changed since). Frozen weights that differ from their source (a state loaded with
other reference weights) are stored in full under ``"reference::<name>"``.

Sharded learners (:meth:`LLMRLModule.shard`, :mod:`rllib_proxmo.algorithm.torch.fsdp`):
:meth:`~LLMRLModule.get_state` gathers every shard one tensor at a time, so every learner
must call it together; only those whose ``keeps_gathered_state`` is True keep the result
(the others take part in the gathering and return the non-tensor entries only).
:meth:`~LLMRLModule.set_state` takes full tensors on every learner and keeps each
learner's shard of them.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Collection, Iterator
from typing import Any, NamedTuple

import torch
from ray.rllib.core.rl_module.torch import TorchRLModule
from ray.rllib.utils.typing import StateDict

from rllib_proxmo.algorithm.torch import fsdp, safetensors_io
from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
SCORED_TOKENS = "scored_tokens"
TOKEN_LOGP = "token_logp"
TOKEN_ENTROPY = "token_entropy"
#: Per-token log-probs (B, K) under the frozen reference policy.
REF_LOGP = "ref_logp"
#: Batch key (bool): ``forward_train`` also returns :data:`REF_LOGP` from the shared frozen trunk.
WITH_REFERENCE = "with_reference"
#: Batch key: (B, L, D) input of the lowest trained decoder block at every position, computed
#: by the sampler (the last position of each row, never fed to it, and padding hold zeros).
TRUNK_STATES = "trunk_states"

logger = logging.getLogger(__name__)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_REFERENCE_PREFIX = "reference::"
#: State key of the frozen weights' source: ``{"model_name_or_path": ..., "sha256": ...}``.
REFERENCE_SOURCE = "reference_source"
#: The policy's weights inside a module checkpoint directory.
WEIGHTS_FILE = "model.safetensors"


def compute_dtype(name: str, *, training: bool) -> torch.dtype:
    """The torch dtype named by ``model_config["dtype"]``; fp16 only for inference."""
    if name not in _DTYPES:
        raise ValueError(f"dtype must be one of {sorted(_DTYPES)}, got {name!r}")
    if training and name == "float16":
        raise ValueError(
            "dtype 'float16' cannot be trained: fp16 gradients need loss scaling, which this learner "
            "does not do; use 'bfloat16' (GPUs with bf16 support) or 'float32'"
        )
    return _DTYPES[name]


def autocast_dtype(device_type: str, dtype: torch.dtype) -> torch.dtype | None:
    """Dtype to autocast forward passes to on ``device_type`` (None: no autocast).

    CUDA computes in ``dtype`` over fp32 master weights. CPUs compute in fp32: bf16
    is slower than fp32 on CPUs without AMX (docs/design.md), and weights stored in
    bf16 (reference, env runners) compute in bf16 without autocast anyway.
    """
    return dtype if device_type == "cuda" and dtype != torch.float32 else None


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The decoder blocks of a Hugging Face causal LM (``model.model.layers``, Llama/Qwen2/SmolLM style).

    Raises:
        ValueError: for an architecture that keeps its blocks elsewhere.
    """
    layers = getattr(getattr(model, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(
            f"{type(model).__name__} keeps no decoder blocks in model.layers: trainable_layers needs a "
            "Llama/Qwen2-style causal LM (or leave trainable_layers unset)"
        )
    return layers


def freeze_below_top_layers(model: torch.nn.Module, trainable_layers: int) -> None:
    """Leave only the top ``trainable_layers`` decoder blocks trainable.

    Raises:
        ValueError: unless ``1 <= trainable_layers <= number of blocks``.
    """
    layers = decoder_layers(model)
    if isinstance(trainable_layers, bool) or not isinstance(trainable_layers, int):
        raise ValueError(f"trainable_layers must be an int, got {trainable_layers!r}")
    if not 1 <= trainable_layers <= len(layers):
        raise ValueError(f"trainable_layers must be in [1, {len(layers)}] for this model, got {trainable_layers}")
    model.requires_grad_(False)
    for layer in layers[len(layers) - trainable_layers :]:
        layer.requires_grad_(True)


class TrunkOutput(NamedTuple):
    """The input of the lowest trained decoder block, as the model's forward passed it.

    Everything the blocks above need to continue the forward pass: the hidden states
    (B, L, D) and the block's other keyword arguments (attention mask, position
    embeddings, position ids), all computed by frozen weights.
    """

    hidden_states: torch.Tensor
    block_kwargs: dict[str, Any]


@contextlib.contextmanager
def capture_block_input(block: torch.nn.Module) -> Iterator[list[TrunkOutput]]:
    """Record the input of every call of ``block`` while the context is open (a forward pre-hook)."""
    captured: list[TrunkOutput] = []

    def hook(_: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        if len(args) > 1 or (not args and "hidden_states" not in kwargs):
            raise ValueError(
                f"{type(block).__name__} is called with {len(args)} positional arguments: a shared trunk "
                "needs decoder blocks called as block(hidden_states, **kwargs) (Llama/Qwen2 style)"
            )
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        captured.append(TrunkOutput(hidden.detach(), kwargs))

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield captured
    finally:
        handle.remove()


class _BlockInputsCaptured(Exception):
    """Raised by :func:`block_kwargs` once the first decoder block's keyword arguments are known."""


def block_kwargs(model: torch.nn.Module, **inputs: Any) -> dict[str, Any]:
    """The keyword arguments ``model``'s forward gives its decoder blocks for ``inputs``, no block run.

    Every block of a Llama/Qwen2-style model receives the same ones (attention mask,
    position embeddings and ids); the forward is stopped before the first block.
    """
    first = decoder_layers(model)[0]

    def stop(_: torch.nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        raise _BlockInputsCaptured

    with capture_block_input(first) as captured:
        handle = first.register_forward_pre_hook(stop, with_kwargs=True)
        try:
            model(**inputs)
        except _BlockInputsCaptured:
            pass
        finally:
            handle.remove()
    if not captured:
        raise RuntimeError(f"{type(model).__name__}'s forward never called its first decoder block")
    return captured[0].block_kwargs


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions 0, 1, ... counted over real tokens only (left padding gets 0)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def _laid_out_as(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Full tensors of ``state`` as ``model`` holds its own: this learner's shards of sharded ones."""
    own = model.state_dict()
    return {k: fsdp.sharded_like(own[k], v) if k in own else v for k, v in state.items()}


class LLMRLModule(TorchRLModule):
    """Policy = causal LM; action = generated response text (generation via an engine)."""

    def setup(self) -> None:
        config = self.model_config or {}
        if "model_name_or_path" not in config:
            raise ValueError("model_config must name a model: {'model_name_or_path': ...}")
        training = not bool(self.inference_only)
        self.compute_dtype = compute_dtype(config.get("dtype", "float32"), training=training)
        self.temperature = float(config.get("temperature", 1.0))
        self.uses_lora = bool(config.get("lora"))
        trainable_layers = config.get("trainable_layers")
        if trainable_layers is not None and self.uses_lora:
            raise ValueError("model_config sets both lora and trainable_layers: choose one way to train")
        # Weights that AdamW updates are fp32; frozen and inference-only weights use the compute dtype.
        storage_dtype = torch.float32 if training and not self.uses_lora else self.compute_dtype
        model, self.tokenizer = load_causal_lm(config["model_name_or_path"], storage_dtype)
        if self.uses_lora:
            from peft import LoraConfig, get_peft_model

            # peft's autocast_adapter_dtype keeps the trained adapter in fp32 over a bf16 base.
            model = get_peft_model(model, LoraConfig(**config["lora"]), autocast_adapter_dtype=training)
        elif trainable_layers is not None:
            freeze_below_top_layers(model, trainable_layers)
        #: Index of the lowest trained decoder block (None: every weight trains, or LoRA).
        self.first_trained_block = None if trainable_layers is None else len(decoder_layers(model)) - trainable_layers
        self.model = model
        #: Whether only part of the weights is trained (LoRA adapter or top layers):
        #: env runners then receive only those, the rest stays as loaded.
        self.trains_subset = self.uses_lora or trainable_layers is not None
        reference = None
        if training and not self.uses_lora:
            reference = copy.deepcopy(model).to(self.compute_dtype).requires_grad_(False).eval()
        # Stored outside nn.Module's registry: not a parameter, not in DDP, not synced.
        object.__setattr__(self, "_reference", reference)
        # Whether the reference's blocks below the trained ones are the policy's (checked on set_state).
        self._trunk_is_reference = reference is not None and self.first_trained_block is not None
        self._source = config["model_name_or_path"]
        # Whether the frozen weights are still those loaded from the source, and their hash (lazy).
        self._frozen_is_source = True
        self._source_sha256: str | None = None
        if training:
            # Hashed now, while the frozen weights are certainly the source's (about 1 s per GB).
            self.source_sha256()
        #: Whether get_state keeps the tensors it gathers from shards (False: only takes part).
        self.keeps_gathered_state = True

    def shard(self, mesh: Any) -> None:
        """Shard the policy and the reference over ``mesh`` with FSDP2 (see :mod:`~rllib_proxmo.algorithm.torch.fsdp`).

        The policy computes in :func:`autocast_dtype` over fp32 shards; the reference in its own dtype.

        Raises:
            ValueError: for a module that trains a subset of its weights (LoRA, ``trainable_layers``)
                or holds no reference (an inference-only module).
        """
        if self.trains_subset or self._reference is None:
            raise ValueError("sharded learners train every weight of a policy with a reference model")
        compute = autocast_dtype(mesh.device_type, self.compute_dtype)
        fsdp.shard_model(self.model, decoder_layers(self.model), mesh, compute)
        fsdp.shard_model(self._reference, decoder_layers(self._reference), mesh, None)

    def to(self, *args: Any, **kwargs: Any) -> LLMRLModule:
        super().to(*args, **kwargs)
        if self._reference is not None:
            self._reference.to(*args, **kwargs)
        return self

    def _autocast(self, device_type: str) -> contextlib.AbstractContextManager:
        autocast = autocast_dtype(device_type, self.compute_dtype)
        return torch.autocast(device_type, dtype=autocast) if autocast is not None else contextlib.nullcontext()

    @staticmethod
    def _scored_tokens(batch: dict[str, torch.Tensor]) -> int:
        length = batch[INPUT_IDS].shape[1]
        scored = int(batch.get(SCORED_TOKENS, length - 1))
        if not 1 <= scored < length:
            raise ValueError(f"scored_tokens must be in [1, {length - 1}], got {scored}")
        return scored

    def _scored_logp(
        self, logits: torch.Tensor, batch: dict[str, torch.Tensor], scored: int, with_entropy: bool
    ) -> dict[str, torch.Tensor]:
        """Log-probs (and entropies) (B, K) of the last K tokens from the logits (B, K+1, V) before them."""
        logits = logits[:, :-1].float()
        if self.temperature > 0:
            logits = logits / self.temperature
        log_probs = torch.log_softmax(logits, dim=-1)
        targets = batch[INPUT_IDS][:, -scored:]
        out = {TOKEN_LOGP: log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)}
        if with_entropy:
            out[TOKEN_ENTROPY] = -(log_probs.exp() * log_probs).sum(-1)
        return out

    @staticmethod
    def _model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        mask = batch[ATTENTION_MASK]
        return dict(
            input_ids=batch[INPUT_IDS], attention_mask=mask, position_ids=position_ids_from_mask(mask), use_cache=False
        )

    def _token_logp_and_entropy(
        self, model: torch.nn.Module, batch: dict[str, torch.Tensor], with_entropy: bool
    ) -> dict[str, torch.Tensor]:
        scored = self._scored_tokens(batch)
        with self._autocast(batch[INPUT_IDS].device.type):
            output = model(**self._model_inputs(batch), logits_to_keep=scored + 1)
        return self._scored_logp(output.logits, batch, scored, with_entropy)

    def _trunk_from_batch(self, batch: dict[str, torch.Tensor]) -> TrunkOutput:
        """The trunk output a batch carries (:data:`TRUNK_STATES`), with the block arguments of its rows."""
        if self.first_trained_block is None:
            raise ValueError(f"a batch with {TRUNK_STATES!r} needs model_config['trainable_layers']")
        states = batch[TRUNK_STATES]
        if states.shape[:2] != batch[INPUT_IDS].shape:
            raise ValueError(
                f"{TRUNK_STATES} of shape {tuple(states.shape)} for input_ids {tuple(batch[INPUT_IDS].shape)}"
            )
        with torch.no_grad(), self._autocast(states.device.type):
            kwargs = block_kwargs(self.model, **self._model_inputs(batch))
        return TrunkOutput(states, kwargs)

    def _top_logp(
        self, model: torch.nn.Module, trunk: TrunkOutput, batch: dict[str, torch.Tensor], with_entropy: bool
    ) -> dict[str, torch.Tensor]:
        """:meth:`_token_logp_and_entropy` of ``model`` continued from the trunk's output: its top blocks only."""
        scored = self._scored_tokens(batch)
        hidden = trunk.hidden_states
        with self._autocast(hidden.device.type):
            for block in decoder_layers(model)[self.first_trained_block :]:
                output = block(hidden, **trunk.block_kwargs)
                hidden = output[0] if isinstance(output, tuple) else output
            logits = model.get_output_embeddings()(model.model.norm(hidden[:, -(scored + 1) :]))
        return self._scored_logp(logits, batch, scored, with_entropy)

    @property
    def shares_frozen_trunk(self) -> bool:
        """Whether the reference's log-probs can be computed from the policy's frozen trunk.

        True for a learner module with ``trainable_layers`` whose blocks below the trained ones
        are the reference's (the reference differs from the policy only in the trained top),
        when the reference's blocks can take the trunk's hidden states: under autocast (CUDA),
        or stored in the trunk's dtype (a bf16 reference beside fp32 master weights on a CPU
        takes a full pass of its own).
        """
        if not self._trunk_is_reference:
            return False
        device_type = next(self.model.parameters()).device.type
        return autocast_dtype(device_type, self.compute_dtype) is not None or self._reference.dtype == self.model.dtype

    def forward_train_with_trunk(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], TrunkOutput]:
        """:meth:`forward_train` that also returns the frozen trunk's output (for :meth:`forward_train_from_trunk`)."""
        if self.first_trained_block is None:
            raise ValueError("a trunk output needs model_config['trainable_layers']")
        self.model.eval()
        return self._policy_forward_with_trunk(batch)

    def _policy_forward_with_trunk(self, batch: dict[str, Any]) -> tuple[dict[str, torch.Tensor], TrunkOutput]:
        """The policy's log-probs and entropies (B, K), and the input its lowest trained block received."""
        with capture_block_input(decoder_layers(self.model)[self.first_trained_block]) as captured:
            out = self._token_logp_and_entropy(self.model, batch, with_entropy=True)
        return out, captured[0]

    def forward_train_from_trunk(self, trunk: TrunkOutput, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """:meth:`forward_train` of the same batch computed from its frozen trunk's output: the trained blocks only.

        Exact while the frozen weights are unchanged, which they always are.
        """
        self.model.eval()
        return self._top_logp(self.model, trunk, batch, with_entropy=True)

    def _forward(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-token log-probs (B, K) of the given token sequences under the policy."""
        if TRUNK_STATES in batch:
            return self._top_logp(self.model, self._trunk_from_batch(batch), batch, with_entropy=False)
        return self._token_logp_and_entropy(self.model, batch, with_entropy=False)

    def _forward_train(self, batch: dict[str, Any], **kwargs: Any) -> dict[str, torch.Tensor]:
        """Per-token log-probs and entropies (B, K), with gradients; dropout stays off.

        With ``batch["with_reference"]``, also the reference's log-probs (B, K) under
        :data:`REF_LOGP`, from the shared frozen trunk (see :attr:`shares_frozen_trunk`).
        A batch with :data:`TRUNK_STATES` runs the trained blocks only, from those states.
        """
        self.model.eval()
        with_reference = bool(batch.get(WITH_REFERENCE))
        if with_reference and not self.shares_frozen_trunk:
            raise ValueError("with_reference needs a module whose frozen trunk is the reference's")
        if TRUNK_STATES in batch:
            trunk = self._trunk_from_batch(batch)
            out = self._top_logp(self.model, trunk, batch, with_entropy=True)
        elif with_reference:
            out, trunk = self._policy_forward_with_trunk(batch)
        else:
            return self._token_logp_and_entropy(self.model, batch, with_entropy=True)
        if with_reference:
            with torch.no_grad():
                out[REF_LOGP] = self._top_logp(self._reference, trunk, batch, with_entropy=False)[TOKEN_LOGP]
        return out

    @torch.no_grad()
    def reference_logp(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-token log-probs (B, K) under the frozen reference policy."""
        if self.inference_only:
            raise ValueError("an inference-only module holds no reference model")
        if self.uses_lora:
            with self.model.disable_adapter():
                return self._token_logp_and_entropy(self.model, batch, with_entropy=False)[TOKEN_LOGP]
        if TRUNK_STATES in batch and self.shares_frozen_trunk:
            return self._top_logp(self._reference, self._trunk_from_batch(batch), batch, with_entropy=False)[TOKEN_LOGP]
        return self._token_logp_and_entropy(self._reference, batch, with_entropy=False)[TOKEN_LOGP]

    @property
    def _has_frozen_weights(self) -> bool:
        return self.uses_lora or self._reference is not None

    def _frozen_state(self) -> dict[str, torch.Tensor] | None:
        """The weights that never train: the reference model's, or with LoRA the base model's."""
        if self.uses_lora:
            return {k: v for k, v in self.model.state_dict().items() if "lora_" not in k}
        if self._reference is None:
            return None
        # Full tensors: a collective on sharded learners (set_state runs on all of them), all keep them.
        return {k: fsdp.gathered(v) for k, v in self._reference.state_dict().items()}

    def _tied_aliases(self) -> dict[str, str]:
        """State-dict keys that name another key's tensor (tied weights, e.g. lm_head = embeddings): alias -> key.

        States leave the aliases out (a tied weight is sent and stored once) and loading fills them in.
        """
        first: dict[int, str] = {}
        aliases = {}
        for key, tensor in self.model.state_dict().items():
            if tensor.numel() == 0:
                continue
            pointer = fsdp.local(tensor).data_ptr()
            if pointer in first:
                aliases[key] = first[pointer]
            else:
                first[pointer] = key
        return aliases

    def source_sha256(self) -> str:
        """SHA-256 of the frozen weights as loaded from ``model_name_or_path`` (computed once)."""
        if not self._frozen_is_source:
            raise ValueError("the frozen weights were replaced and no longer match their source")
        if self._source_sha256 is None:
            self._source_sha256 = safetensors_io.tensors_sha256(self._frozen_state())
        return self._source_sha256

    def get_state(
        self,
        components: str | Collection[str] | None = None,
        *,
        not_components: str | Collection[str] | None = None,
        inference_only: bool = False,
        **kwargs: Any,
    ) -> StateDict:
        """Weights as CPU tensors.

        ``inference_only=True`` gives what env runners need: the policy weights (with
        LoRA only the adapter, with ``trainable_layers`` only those layers), cast to the
        compute dtype. Otherwise the weights keep their own dtype (fp32 master weights)
        and the frozen weights are described by ``"reference_source"`` (model path and
        SHA-256) while they are their source's, else included in full (reference model
        under ``"reference::<name>"``, with LoRA the base weights alongside the adapter).
        """
        aliases = self._tied_aliases()
        policy = {k: v for k, v in self.model.state_dict().items() if k not in aliases}
        from_source = not inference_only and self._has_frozen_weights and self._frozen_is_source
        if inference_only and self.trains_subset:
            trained = {name for name, param in self.model.named_parameters() if param.requires_grad}
            policy = {k: v for k, v in policy.items() if k in trained}
        elif self.uses_lora and from_source:
            policy = {k: v for k, v in policy.items() if "lora_" in k}
        tensors = policy.items()
        if not from_source and not inference_only and self._reference is not None:
            reference = self._reference.state_dict().items()
            tensors = [*tensors, *((_REFERENCE_PREFIX + k, v) for k, v in reference)]
        state: StateDict = {}
        # One tensor at a time: a shard is gathered, cast and moved to the CPU before the next.
        for key, value in tensors:
            full = fsdp.gathered(value).detach()
            if self.keeps_gathered_state:
                cast = self.compute_dtype if inference_only and full.is_floating_point() else full.dtype
                state[key] = full.to("cpu", cast, copy=True)
        if from_source:
            state[REFERENCE_SOURCE] = {"model_name_or_path": self._source, "sha256": self.source_sha256()}
        return state

    def set_state(self, state: StateDict) -> None:
        """Load weights produced by :meth:`get_state` (full or inference-only).

        Raises:
            ValueError: for weights this model does not have or lacks, and for a
                ``"reference_source"`` whose hash is not that of this module's frozen weights.
        """
        source = state.get(REFERENCE_SOURCE)
        reference = {k[len(_REFERENCE_PREFIX) :]: v for k, v in state.items() if k.startswith(_REFERENCE_PREFIX)}
        policy = {k: v for k, v in state.items() if not k.startswith(_REFERENCE_PREFIX) and k != REFERENCE_SOURCE}
        if source is not None and self._has_frozen_weights:
            self._check_source(source)
        aliases = self._tied_aliases()
        own = {k: v for k, v in self.model.state_dict().items() if k not in aliases}
        unknown = sorted(set(policy) - set(own))
        if unknown:
            raise ValueError(f"state holds weights this model does not have: {unknown[:5]}")
        if not self.trains_subset and set(policy) != set(own):
            raise ValueError(f"state lacks weights of this model: {sorted(set(own) - set(policy))[:5]}")
        lora_base_given = self.uses_lora and any("lora_" not in k for k in policy)
        source_sha256 = self.source_sha256() if (reference or lora_base_given) and self._frozen_is_source else None
        # A state may carry only the trained weights (adapter, top layers); the rest stays as loaded.
        tied = {alias: policy[key] for alias, key in aliases.items() if key in policy}
        self.model.load_state_dict(_laid_out_as(self.model, {**policy, **tied}), strict=not self.trains_subset)
        if reference and self._reference is not None:
            self._reference.load_state_dict(_laid_out_as(self._reference, reference))
        if source_sha256 is not None:
            self._frozen_is_source = safetensors_io.tensors_sha256(self._frozen_state()) == source_sha256
        if self._reference is not None and self.first_trained_block is not None:
            self._check_shared_trunk()

    def _check_shared_trunk(self) -> None:
        """Share the frozen trunk with the reference only while its weights equal the reference's."""
        reference = self._reference.state_dict()
        shared = all(
            torch.equal(param.to(reference[name].dtype), reference[name])
            for name, param in self.model.named_parameters()
            if not param.requires_grad
        )
        if self._trunk_is_reference and not shared:
            logger.warning(
                "the policy's frozen layers differ from the reference's (a state trained with other "
                "trainable_layers?): the reference log-probs take a full forward pass of their own"
            )
        self._trunk_is_reference = shared

    def _check_source(self, source: dict[str, str]) -> None:
        sha256 = self.source_sha256() if self._frozen_is_source else None
        if sha256 != source["sha256"]:
            raise ValueError(
                f"the state's frozen (reference) weights are those of {source['model_name_or_path']!r} with "
                f"SHA-256 {source['sha256']}, but this module's frozen weights, loaded from {self._source!r}, "
                f"{'hash to ' + sha256 if sha256 else 'were replaced'}: the model files changed since the "
                "checkpoint, or the module was built from another model or dtype; build it from the model "
                "and dtype the checkpoint was trained from"
            )

    def save_to_path(
        self,
        path: Any = None,
        *,
        state: StateDict | None = None,
        filesystem: Any = None,
        use_msgpack: bool = False,
    ) -> str:
        """RLlib's module checkpoint with the weights in ``model.safetensors`` instead of the pickle."""
        state = self.get_state() if state is None else state
        if path is not None:
            filesystem, path = safetensors_io.resolve(path, filesystem)
        # The state file keeps a pointer to the weights only (RLlib writes a non-empty state as given).
        path = super().save_to_path(
            path, state={"weights_file": WEIGHTS_FILE}, filesystem=filesystem, use_msgpack=use_msgpack
        )
        filesystem, path = safetensors_io.resolve(path, filesystem)
        tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
        other = {k: v for k, v in state.items() if not isinstance(v, torch.Tensor)}
        safetensors_io.write_state(filesystem, f"{path}/{WEIGHTS_FILE}", tensors, other)
        return path

    def restore_from_path(
        self, path: Any, *, component: str | None = None, filesystem: Any = None, **kwargs: Any
    ) -> None:
        """Load a checkpoint of :meth:`save_to_path` (or an older, all-pickle one, through RLlib)."""
        filesystem, path = safetensors_io.resolve(path, filesystem)
        weights = f"{path}/{WEIGHTS_FILE}"
        if component is not None or not safetensors_io.exists(filesystem, weights):
            super().restore_from_path(path, component=component, filesystem=filesystem, **kwargs)
            return
        tensors, other = safetensors_io.read_state(filesystem, weights)
        self.set_state({**tensors, **other})
