"""Sharded learners: the policy and its frozen reference split over the learners with FSDP2.

With ``sharding="fsdp"`` (:class:`~rllib_proxmo.algorithm.proxmo.ProxMOConfig`) every learner
holds 1/n of each weight, gradient and AdamW moment (n learners, one device mesh over them):
each decoder block, then the whole model, is a ``fully_shard`` unit, so a forward or backward
pass all-gathers one block at a time and gradients are reduce-scattered per block. The
reference model is sharded the same way (frozen, no gradients).

Mixed precision: on CUDA with ``dtype`` bf16 the policy computes in bf16 over fp32 sharded
master weights and reduces gradients in fp32 (``MixedPrecisionPolicy``); on CPUs and with
fp32 everything is fp32. Reductions are sums followed by a division by n
(``set_force_sum_reduction_for_comms``): gloo's AVG reduce-scatter has summed in some
PyTorch versions (pytorch#162338), and the gradient parity test checks the result.

Full (unsharded) tensors are built one at a time (:func:`gathered`): a state for the env
runners or a checkpoint is streamed parameter by parameter, each gathered, cast and moved
to the CPU before the next, and loading a full state cuts each tensor to this learner's
shard without communication (:func:`sharded_like`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor


def learner_mesh(device: torch.device) -> DeviceMesh:
    """A 1-D device mesh over all learners of the process group, on ``device``'s type.

    Named explicitly: on a machine with GPUs a mesh left to guess picks CUDA even under a
    gloo group of CPU learners.
    """
    return init_device_mesh(device.type, (dist.get_world_size(),))


def shard_model(
    model: torch.nn.Module, blocks: Iterable[torch.nn.Module], mesh: DeviceMesh, compute_dtype: torch.dtype | None
) -> None:
    """``fully_shard`` each block, then ``model`` (the rest: embeddings, final norm, head).

    Args:
        model: The model, on ``mesh``'s device type.
        blocks: Its decoder blocks.
        mesh: The learners' device mesh.
        compute_dtype: Forward dtype over the fp32 shards, gradients reduced in fp32
            (None: compute in the weights' own dtype).
    """
    mp_policy = (
        MixedPrecisionPolicy()
        if compute_dtype is None
        else MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32)
    )
    for block in blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp_policy)
    fully_shard(model, mesh=mesh, mp_policy=mp_policy)
    model.set_force_sum_reduction_for_comms(True)


def gathered(tensor: torch.Tensor) -> torch.Tensor:
    """The full tensor of a shard (an all-gather, so every learner must call it), else ``tensor``."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local(tensor: torch.Tensor) -> torch.Tensor:
    """This learner's shard of a sharded tensor, else ``tensor`` (for storage identity checks)."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def sharded_like(own: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """``full`` (every learner holds it) laid out as ``own``: this learner's shard, no communication."""
    if not isinstance(own, DTensor):
        return full
    value = torch.as_tensor(full).to(own.device_mesh.device_type)
    return distribute_tensor(value, own.device_mesh, own.placements, src_data_rank=None)
