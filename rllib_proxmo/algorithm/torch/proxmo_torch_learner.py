"""Token-level clipped PPO for LLM policies, with KL to a frozen reference.

One :meth:`ProxMOTorchLearner._update` call trains on this learner's shard of one
iteration: B rows (one row = one turn, columns of shape (B, L), see
:mod:`rllib_proxmo.algorithm.token_batch`).

Optimizer steps (as the release's ``ppo_mini_batch_size``): each of ``num_epochs``
epochs shuffles the rows (seeded by ``config.seed``, the learner's weights sequence
number and the epoch) and cuts them into S near-equal mini-batches, with
S = ceil(rows on all learners / ``minibatch_size``) taken from an all-reduced row
count, so that every learner takes the same S x ``num_epochs`` optimizer steps.
Inside a mini-batch the rows are sorted by length and gradients accumulate over
micro-batches of ``micro_batch_size`` rows; then the global gradient norm is clipped
to ``grad_clip`` and AdamW steps (on fp32 master weights, see
:mod:`rllib_proxmo.algorithm.torch.llm_rl_module`).

Old log-probs: with a single optimizer step in total the update is on-policy and
``old_logp = logp.detach()`` (ratio 1, as verl). With more steps they are the
sampler's per-token log-probs under ``old_logp_source="sampler"``; otherwise an
extra no-grad forward pass computes them before the first step, on exactly the
micro-batches of the first epoch. Reference log-probs come from the same pre-pass
(skipped when ``kl_coeff`` is 0), except for a module that trains only its top layers
(``trainable_layers``): its training forward also returns them, from the reference's
top layers run on the frozen trunk's hidden states (``LLMRLModule.shares_frozen_trunk``),
which saves a full forward pass per token.

Loss per response token, averaged over the response tokens of the mini-batch on all
learners (token mean per mini-batch)::

    -min(r A, clip(r, 1-eps, 1+eps) A) + kl_coeff * k3(ref || pi) - entropy_coeff * H

with ``r = exp(logp - old_logp)`` and the low-variance estimator
``k3 = exp(ref - logp) - (ref - logp) - 1`` (log-ratio clamped to +-20, k3 to +-10, as
verl). Each learner's loss is its tokens' sum divided by the mini-batch's token count
N_s over all learners (one all-reduce for all steps) and multiplied by the world
size, because DDP averages gradients over learners.

DDP: inside a step every micro-batch but the last runs under ``no_sync``, so each
learner runs exactly one synchronised backward pass per optimizer step. A learner
holding fewer rows than S gets an empty mini-batch for some steps; it then runs one
of its rows with loss weight 0, which still joins that step's gradient all-reduce.
Every tensor handed to a collective lives on the learner's device (NCCL rejects CPU
tensors).

Sharded learners (``sharding="fsdp"``, :mod:`rllib_proxmo.algorithm.torch.fsdp`): the module
is sharded as it is built, before the optimizer, and never wrapped in DDP. Every forward and
backward pass is then a collective, so all learners run the same number of micro-batches in
every step and in the pre-pass (the largest count over learners, an all-reduced maximum;
the extra ones are zero-weight fillers as above), and gradients are reduce-scattered after
every micro-batch (no ``no_sync``: that would keep unsharded gradients). The clipped norm is
the global one over all shards. The learner's state (:meth:`ProxMOTorchLearner.get_state`:
weights and AdamW moments) is gathered one tensor at a time, with every learner taking part
(:meth:`ProxMOTorchLearner.take_part_in_get_state`); the full state has the DDP learner's
format, so checkpoints restore into any number of learners, sharded or not.

Metrics (per module; a learner group's mean over learners gives batch-wide values):
``policy_loss``, ``kl``, ``entropy``, ``ratio_mean``, ``clip_fraction`` (token means,
averaged over optimizer steps), ``ratio_max_deviation`` (max |r - 1| over the steps
after the first, i.e. once the weights have moved; 0 with a single step),
``grad_norm`` (before clipping, mean over steps), ``num_optimizer_steps``,
``num_response_tokens`` (over all learners), ``num_input_tokens`` (prompt and
response tokens of this learner's rows, once each), ``num_micro_batches`` (this
learner's backward passes), and, when the batch carries the sampler's log-probs,
``sampler_logp_gap_max`` / ``sampler_logp_gap_mean``: max / mean over response tokens
of |learner logp - sampler logp| of the rows the learner scores before its first
optimizer step (every row when old log-probs are recomputed, else the first
mini-batch's; ``_mean`` is this learner's token mean).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from ray.rllib.core import ALL_MODULES, DEFAULT_MODULE_ID
from ray.rllib.core.learner.torch.torch_learner import TorchLearner
from ray.rllib.core.rl_module.torch.torch_rl_module import TorchDDPRLModule
from ray.rllib.utils.metrics import NUM_NON_TRAINABLE_PARAMETERS, NUM_TRAINABLE_PARAMETERS
from ray.rllib.utils.numpy import convert_to_numpy
from ray.rllib.utils.typing import ModuleID, StateDict, TensorType

from rllib_proxmo.algorithm.token_batch import ADVANTAGES, RESPONSE_MASK, SAMPLER_LOGP
from rllib_proxmo.algorithm.torch import fsdp
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    REF_LOGP,
    SCORED_TOKENS,
    TOKEN_ENTROPY,
    TOKEN_LOGP,
    TRUNK_STATES,
    WITH_REFERENCE,
)

OLD_LOGP = "old_logp"
LOSS_SCALE = "loss_scale"

POLICY_LOSS = "policy_loss"
KL = "kl"
ENTROPY = "entropy"
CLIP_FRACTION = "clip_fraction"
RATIO_MEAN = "ratio_mean"
RATIO_MAX_DEVIATION = "ratio_max_deviation"
GRAD_NORM = "grad_norm"
NUM_RESPONSE_TOKENS = "num_response_tokens"
NUM_INPUT_TOKENS = "num_input_tokens"
NUM_MICRO_BATCHES = "num_micro_batches"
NUM_OPTIMIZER_STEPS = "num_optimizer_steps"
SAMPLER_LOGP_GAP_MAX = "sampler_logp_gap_max"
SAMPLER_LOGP_GAP_MEAN = "sampler_logp_gap_mean"

#: verl's clamps of the low-variance KL: log-ratio to +-20, k3 to +-10.
KL_LOG_RATIO_CLAMP = 20.0
KL_CLAMP = 10.0

_TOKEN_STATS = (POLICY_LOSS, KL, ENTROPY, RATIO_MEAN, CLIP_FRACTION)
#: The row a zero-weight filler micro-batch runs (every learner holds at least one row).
_FILLER_ROWS = np.zeros(1, dtype=np.int64)


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Low-variance KL(pi || ref) estimate per token, ``exp(d) - d - 1`` with ``d = ref - logp``.

    Args:
        logp, ref_logp: (B, K) log-probs of the sampled tokens under the policy and the reference.

    Returns:
        (B, K) estimates, d clamped to +-20 and the result to +-10 (verl's ``low_var_kl``).
    """
    log_ratio = torch.clamp(ref_logp - logp, -KL_LOG_RATIO_CLAMP, KL_LOG_RATIO_CLAMP)
    return torch.clamp(torch.exp(log_ratio) - log_ratio - 1.0, -KL_CLAMP, KL_CLAMP)


def trim_left_padding(columns: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Drop leading all-padding columns and set ``scored_tokens`` to the response span.

    Rows are left-padded with the response at the end, so after this the last
    ``scored_tokens`` columns hold every response token of the micro-batch.
    """
    start = int(columns[ATTENTION_MASK].any(dim=0).nonzero()[0])
    trimmed: dict[str, Any] = {key: value[:, start:] for key, value in columns.items()}
    first_response = int(trimmed[RESPONSE_MASK].any(dim=0).nonzero()[0])
    trimmed[SCORED_TOKENS] = max(trimmed[INPUT_IDS].shape[1] - first_response, 1)
    return trimmed


def step_plan(
    lengths: np.ndarray, num_steps: int, num_epochs: int, micro_batch_size: int, rng: np.random.Generator
) -> list[list[list[np.ndarray]]]:
    """Row indices of every micro-batch: ``plan[epoch][step] = [rows of micro-batch, ...]``.

    Rows are shuffled per epoch (unless there is one step in all) and split into
    ``num_steps`` near-equal mini-batches; a mini-batch's rows are sorted by length
    (ties in row order) before being cut into micro-batches. A mini-batch without
    rows (fewer rows than steps) is an empty list.
    """
    rows = len(lengths)
    plan = []
    for _ in range(num_epochs):
        order = rng.permutation(rows) if num_steps * num_epochs > 1 else np.arange(rows)
        epoch = []
        for part in np.array_split(order, num_steps):
            part = part[np.lexsort((part, lengths[part]))]
            epoch.append([part[i : i + micro_batch_size] for i in range(0, len(part), micro_batch_size)])
        plan.append(epoch)
    return plan


def weighted_micro_batches(micro_rows: list[np.ndarray], weight: float, count: int) -> list[tuple[np.ndarray, float]]:
    """A step's micro-batches with their loss weight, padded to ``count`` with zero-weight fillers."""
    return [(rows, weight) for rows in micro_rows] + [(_FILLER_ROWS, 0.0)] * (count - len(micro_rows))


class ProxMOTorchLearner(TorchLearner):
    """PPO-clip on response tokens: mini-batch optimizer steps, gradient accumulation, reference KL."""

    def build(self) -> None:
        # Read by _make_module and _make_modules_ddp_if_necessary, which super().build() calls.
        self._sharded = self.config.sharding == "fsdp"
        #: Whether get_state keeps what it gathers from shards (False while taking part for a peer).
        self._keeps_gathered_state = True
        super().build()
        self._stats: dict[str, float] = {}
        # True once this update has taken an optimizer step (ratios may then differ from 1).
        self._weights_moved = False
        self._gap = {"max": 0.0, "sum": 0.0, "count": 0}

    # ---------------------------------------------------------------- sharding
    def _make_module(self) -> Any:
        """The module on this learner's device; with ``sharding="fsdp"`` sharded over all learners."""
        module = super()._make_module()
        if self._sharded:
            mesh = fsdp.learner_mesh(self._device)
            for module_id in module.keys():
                module[module_id].shard(mesh)
        return module

    def _make_modules_ddp_if_necessary(self) -> None:
        if not self._sharded:
            super()._make_modules_ddp_if_necessary()

    def take_part_in_get_state(self, *args: Any, **kwargs: Any) -> None:
        """Run :meth:`get_state`'s gathering of the shards without keeping the result.

        Sharded learners call this while the learner RLlib asks runs ``get_state`` with the
        same arguments (:class:`~rllib_proxmo.algorithm.sharded_learner_group.ShardedLearnerGroup`).
        """
        with self._discarding_gathered_state():
            self.get_state(*args, **kwargs)

    @contextlib.contextmanager
    def _discarding_gathered_state(self) -> Iterator[None]:
        policies = [self.module[module_id].unwrapped() for module_id in self.module.keys()]
        self._keeps_gathered_state = False
        for policy in policies:
            policy.keeps_gathered_state = False
        try:
            yield
        finally:
            self._keeps_gathered_state = True
            for policy in policies:
                policy.keeps_gathered_state = True

    def _get_optimizer_state(self) -> StateDict:
        """RLlib's optimizer state; sharded: the full moments, gathered one tensor at a time."""
        if not self._sharded:
            return super()._get_optimizer_state()
        states = {}
        for name, optimizer in self._named_optimizers.items():
            state_dict = optimizer.state_dict()
            full = {}
            for index, values in state_dict["state"].items():
                gathered = {key: fsdp.gathered(value).cpu() for key, value in values.items()}
                if self._keeps_gathered_state:
                    full[index] = gathered
            states[name] = {
                "module_id": self._optimizer_name_to_module[name],
                "state": convert_to_numpy({**state_dict, "state": full}),
            }
        return states

    def _set_optimizer_state(self, state: StateDict) -> None:
        """RLlib's optimizer state loading; sharded: each full moment cut to this learner's shard."""
        if self._sharded:
            state = {name: self._sharded_optimizer_state(name, entry) for name, entry in state.items()}
        super()._set_optimizer_state(state)

    def _sharded_optimizer_state(self, name: str, entry: dict[str, Any]) -> dict[str, Any]:
        if name not in self._named_optimizers:
            return entry
        params = [p for group in self._named_optimizers[name].param_groups for p in group["params"]]
        moments = {}
        for index, values in entry["state"]["state"].items():
            param = params[int(index)]
            moments[index] = {
                key: fsdp.sharded_like(param, torch.as_tensor(value)) if np.shape(value) == param.shape else value
                for key, value in values.items()
            }
        return {**entry, "state": {**entry["state"], "state": moments}}

    def configure_optimizers_for_module(self, module_id: ModuleID, config: Any = None) -> None:
        module = self._module[module_id]
        params = [p for p in module.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        # The learning rate (fixed or scheduled) is set by register_optimizer.
        optimizer = torch.optim.AdamW(params, weight_decay=0.0)
        self.register_optimizer(module_id=module_id, optimizer=optimizer, params=params, lr_or_lr_schedule=config.lr)

    def _log_trainable_parameters(self) -> None:
        """Parameter counts of each module, logged at build and after every update.

        RLlib logs them once, at build, so every result after the first read NaN;
        modules without frozen parameters got no non-trainable count at all. The
        frozen reference model lives outside the module and is not counted.
        """
        totals = {NUM_TRAINABLE_PARAMETERS: 0, NUM_NON_TRAINABLE_PARAMETERS: 0}
        for module_id in self.module.keys():
            params = list(self.module[module_id].parameters())
            counts = {
                NUM_TRAINABLE_PARAMETERS: sum(p.numel() for p in params if p.requires_grad),
                NUM_NON_TRAINABLE_PARAMETERS: sum(p.numel() for p in params if not p.requires_grad),
            }
            for key, count in counts.items():
                self.metrics.log_value((module_id, key), count, window=1)
                totals[key] += count
        for key, count in totals.items():
            self.metrics.log_value((ALL_MODULES, key), count, window=1)

    # ------------------------------------------------------------- collectives
    def _all_reduce(self, values: list[float] | np.ndarray, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        """Sum (or ``op``) of ``values`` over all learners, as a float64 tensor on this learner's device."""
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64), device=self._device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(tensor, op=op)
        return tensor

    @staticmethod
    def _world_size() -> int:
        return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1

    # ------------------------------------------------------------ micro-batches
    def _columns(self, columns: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The batch's (B, L) columns as tensors on this learner's device."""
        keys = [INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK, ADVANTAGES, SAMPLER_LOGP, TRUNK_STATES]
        return {key: torch.as_tensor(columns[key], device=self._device) for key in keys if key in columns}

    @staticmethod
    def _micro_batch(tensors: dict[str, torch.Tensor], rows: np.ndarray) -> dict[str, Any]:
        index = torch.as_tensor(rows, device=tensors[INPUT_IDS].device)
        return trim_left_padding({key: value.index_select(0, index) for key, value in tensors.items()})

    @staticmethod
    def _scatter(target: torch.Tensor, rows: np.ndarray, values: torch.Tensor) -> None:
        """Write (b, K) per-token values of micro-batch ``rows`` into the last K columns of ``target``."""
        target[torch.as_tensor(rows, device=target.device), -values.shape[1] :] = values.to(target.dtype)

    def _pre_pass(
        self,
        policy: Any,
        tensors: dict[str, torch.Tensor],
        micro_batches: list[tuple[np.ndarray, float]],
        config: Any,
        on_policy: bool,
    ) -> None:
        """No-grad forwards over the first epoch's micro-batches: reference and (off-policy) old log-probs.

        Zero-weight fillers (sharded learners) run their forwards for the collectives only.
        """
        recompute = not on_policy and config.old_logp_source == "recompute"
        if not on_policy and not recompute:
            if SAMPLER_LOGP not in tensors:
                raise ValueError(
                    "old_logp_source='sampler' needs the sampler's log-probs, but the batch has no "
                    f"{SAMPLER_LOGP!r} column (an engine that does not report them): use 'recompute'"
                )
            tensors[OLD_LOGP] = tensors[SAMPLER_LOGP].float()
        # A module sharing its frozen trunk returns the reference log-probs from its training forward.
        reference = config.kl_coeff > 0 and not policy.shares_frozen_trunk
        if not recompute and not reference:
            return
        shape = tensors[INPUT_IDS].shape
        if reference:
            tensors[REF_LOGP] = torch.zeros(shape, dtype=torch.float32, device=self._device)
        if recompute:
            tensors[OLD_LOGP] = torch.zeros(shape, dtype=torch.float32, device=self._device)
        with torch.no_grad():
            for rows, weight in micro_batches:
                mb = self._micro_batch(tensors, rows)
                if reference:
                    ref_logp = policy.reference_logp(mb)
                    if weight:
                        self._scatter(tensors[REF_LOGP], rows, ref_logp)
                if recompute:
                    old_logp = policy._forward(mb)[TOKEN_LOGP]
                    if weight:
                        self._scatter(tensors[OLD_LOGP], rows, old_logp)
                        self._record_sampler_gap(mb, old_logp)

    def _record_sampler_gap(self, mb: dict[str, Any], logp: torch.Tensor) -> None:
        """Accumulate |logp - sampler logp| (B, K) over the micro-batch's response tokens."""
        if SAMPLER_LOGP not in mb:
            return
        scored = logp.shape[1]
        mask = mb[RESPONSE_MASK][:, -scored:] > 0
        gap = (logp.detach() - mb[SAMPLER_LOGP][:, -scored:]).abs()[mask]
        self._gap["max"] = max(self._gap["max"], float(gap.max()))
        self._gap["sum"] += float(gap.sum())
        self._gap["count"] += gap.numel()

    # -------------------------------------------------------------------- loss
    def compute_loss_for_module(
        self, *, module_id: ModuleID, config: Any, batch: dict[str, Any], fwd_out: dict[str, TensorType]
    ) -> TensorType:
        """This learner's share of a mini-batch's token-mean loss, for one micro-batch.

        ``batch[LOSS_SCALE]`` is world_size / N_s; ``OLD_LOGP`` and ``REF_LOGP`` are
        optional (B, L') columns (absent: on-policy, resp. no KL term); ``REF_LOGP`` may
        come as (B, K) in ``fwd_out`` instead (a shared frozen trunk).
        """
        scored = batch[SCORED_TOKENS]
        mask = batch[RESPONSE_MASK][:, -scored:]
        advantages = batch[ADVANTAGES][:, -scored:]
        logp = fwd_out[TOKEN_LOGP]
        old_logp = batch[OLD_LOGP][:, -scored:] if OLD_LOGP in batch else logp.detach()
        ratio = torch.exp(logp - old_logp)
        clipped = torch.clamp(ratio, 1.0 - config.clip_param, 1.0 + config.clip_param)
        policy_loss = -torch.minimum(ratio * advantages, clipped * advantages)
        if REF_LOGP in fwd_out:
            kl = k3_kl(logp, fwd_out[REF_LOGP])
        elif REF_LOGP in batch:
            kl = k3_kl(logp, batch[REF_LOGP][:, -scored:])
        else:
            kl = torch.zeros_like(logp)
        entropy = fwd_out[TOKEN_ENTROPY]
        per_token = policy_loss + config.kl_coeff * kl - config.entropy_coeff * entropy
        scale = batch[LOSS_SCALE]
        if scale > 0:
            with torch.no_grad():
                for key, value in zip(
                    _TOKEN_STATS, (policy_loss, kl, entropy, ratio, ((ratio - 1.0).abs() > config.clip_param).float())
                ):
                    self._stats[key] += float((value * mask).sum()) * scale
                if self._weights_moved:
                    deviation = float(((ratio - 1.0).abs() * mask).max())
                    self._stats[RATIO_MAX_DEVIATION] = max(self._stats[RATIO_MAX_DEVIATION], deviation)
        return (per_token * mask).sum() * scale

    # ------------------------------------------------------------------ update
    def _update(self, batch: dict[str, Any], **kwargs: Any) -> tuple[Any, Any, Any]:
        module_id = DEFAULT_MODULE_ID
        config = self.config.get_config_for_module(module_id)
        module = self.module[module_id]
        policy = module.unwrapped()
        tensors = self._columns(batch[module_id])
        lengths = tensors[ATTENTION_MASK].sum(dim=1).cpu().numpy()
        world_size = self._world_size()
        epochs = int(config.num_epochs)
        total_rows = int(self._all_reduce([len(lengths)]).item())
        steps_per_epoch = math.ceil(total_rows / int(config.minibatch_size))
        on_policy = steps_per_epoch * epochs == 1
        rng = np.random.default_rng([config.seed or 0, self._weights_seq_no])
        plan = step_plan(lengths, steps_per_epoch, epochs, int(config.micro_batch_size), rng)
        row_tokens = tensors[RESPONSE_MASK].sum(dim=1).cpu().numpy()
        local_tokens = [[sum(row_tokens[rows].sum() for rows in step) for step in epoch] for epoch in plan]
        tokens = self._all_reduce(local_tokens).cpu().numpy()
        if (tokens <= 0).any():
            raise ValueError("a mini-batch holds no response tokens on any learner")
        # Micro-batches per step: sharded learners all run the largest count (collective passes).
        counts = np.array([[len(step) for step in epoch] for epoch in plan])
        if self._sharded:
            counts = self._all_reduce(counts, op=dist.ReduceOp.MAX).cpu().numpy().astype(int)
        pre_pass = [
            micro
            for step, micro_rows in enumerate(plan[0])
            for micro in weighted_micro_batches(micro_rows, 1.0, counts[0, step])
        ]
        self._gap = {"max": 0.0, "sum": 0.0, "count": 0}
        self._pre_pass(policy, tensors, pre_pass, config, on_policy)
        # Without a recomputing pre-pass, the gap is measured on the forwards before the first step.
        gap_in_training = on_policy or config.old_logp_source != "recompute"
        shared_reference = config.kl_coeff > 0 and policy.shares_frozen_trunk

        optimizer = self.get_optimizer(module_id)
        params = [p for group in optimizer.param_groups for p in group["params"]]
        self._stats = dict.fromkeys((*_TOKEN_STATS, RATIO_MAX_DEVIATION), 0.0)
        self._weights_moved = False
        grad_norms, losses, num_backward = [], [], 0
        for epoch, epoch_plan in enumerate(plan):
            for step, micro_rows in enumerate(epoch_plan):
                scale = world_size / float(tokens[epoch, step])
                # An empty mini-batch still joins the step's gradient all-reduce, with weight 0.
                weighted = weighted_micro_batches(micro_rows, scale, max(counts[epoch, step], 1))
                optimizer.zero_grad(set_to_none=True)
                loss_sum = torch.zeros((), device=self._device)
                for index, (rows, weight) in enumerate(weighted):
                    no_sync = isinstance(module, TorchDDPRLModule) and index < len(weighted) - 1
                    mb = self._micro_batch(tensors, rows)
                    mb[LOSS_SCALE] = weight
                    mb[WITH_REFERENCE] = shared_reference
                    with module.no_sync() if no_sync else contextlib.nullcontext():
                        fwd_out = module.forward_train(mb)
                        if weight and gap_in_training and not self._weights_moved:
                            self._record_sampler_gap(mb, fwd_out[TOKEN_LOGP])
                        loss = self.compute_loss_for_module(
                            module_id=module_id, config=config, batch=mb, fwd_out=fwd_out
                        )
                        loss.backward()
                    loss_sum += loss.detach()
                    num_backward += 1
                # The global norm: over all shards of every gradient when sharded.
                grads = [p.grad for p in params if p.grad is not None]
                grad_norm = fsdp.gathered(torch.nn.utils.get_total_norm(grads))
                torch.nn.utils.clip_grads_with_norm_(params, config.grad_clip or float("inf"), grad_norm)
                if not torch.isfinite(grad_norm):
                    raise FloatingPointError(
                        f"non-finite gradient norm {float(grad_norm)} in epoch {epoch}, step {step}"
                    )
                optimizer.step()
                self._weights_moved = True
                grad_norms.append(float(grad_norm))
                losses.append(loss_sum)
        num_steps = len(grad_norms)
        for key in _TOKEN_STATS:
            self.metrics.log_value((module_id, key), self._stats[key] / num_steps, window=1)
        self.metrics.log_value(
            (module_id, RATIO_MAX_DEVIATION), self._stats[RATIO_MAX_DEVIATION], reduce="max", window=1
        )
        self.metrics.log_value((module_id, GRAD_NORM), float(np.mean(grad_norms)), window=1)
        self.metrics.log_value((module_id, NUM_OPTIMIZER_STEPS), num_steps, window=1)
        self.metrics.log_value((module_id, NUM_RESPONSE_TOKENS), float(tokens[0].sum()), window=1)
        self.metrics.log_value((module_id, NUM_MICRO_BATCHES), num_backward, window=1)
        self.metrics.log_value((module_id, NUM_INPUT_TOKENS), float(lengths.sum()), window=1)
        if self._gap["count"]:
            self.metrics.log_value((module_id, SAMPLER_LOGP_GAP_MAX), self._gap["max"], reduce="max", window=1)
            self.metrics.log_value((module_id, SAMPLER_LOGP_GAP_MEAN), self._gap["sum"] / self._gap["count"], window=1)
        self._log_trainable_parameters()
        return {}, {module_id: torch.stack(losses).mean()}, {}
