"""Sharded learners (``sharding="fsdp"``): 2 FSDP2 learners over gloo on real Ray, against unsharded ones.

The learners are real Ray Train workers of a learner group (a process group over gloo, a CPU
device mesh), on the tiny warm-started model of ``test_proxmo``.
"""

from __future__ import annotations

import json
import time

import pytest
import ray
import torch
import torch.distributed as dist
from ray.rllib.algorithms.algorithm import Algorithm
from ray.rllib.core import DEFAULT_MODULE_ID
from safetensors.torch import load_file

from envs.spaces import TextSpace
from rllib_proxmo.algorithm.sharding import shard_by_group
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import ProxMOTorchLearner
from rllib_proxmo.export import export_policy
from tests.algorithm import test_proxmo
from tests.algorithm.test_learner import _episodes, _metric
from tests.algorithm.test_proxmo import WORDS, _config, _learner, _learner_weights, _runner_weights
from tests.text_env import DEFAULT_BUTTONS

# The warm-started tiny model and the Ray session of the end-to-end tests.
model_dir = test_proxmo.model_dir
ray_session = test_proxmo.ray_session

SPACES = {DEFAULT_MODULE_ID: (TextSpace(), TextSpace())}
#: Token ids of the tiny model (its words plus 6 special tokens).
VOCAB = 6 + len(set(WORDS) | set(DEFAULT_BUTTONS))
COMPARED = ("policy_loss", "kl", "grad_norm", "num_optimizer_steps", "num_response_tokens")


LR = 1e-3


def _learner_config(model_dir: str, num_learners: int, sharding: str = "ddp"):
    """Mini-batches of 8 turns in micro-batches of 2, a strong KL and a clip below the gradient norm."""
    return (
        _config(model_dir, lr=LR, minibatch_size=8, micro_batch_size=2, grad_clip=0.05, kl_coeff=0.5)
        .learners(num_learners=num_learners, sharding=sharding)
        .debugging(seed=3)
    )


#: The updates: 8 turns (one on-policy step), 8 others (KL > 0), 20 in groups of 4 split 12 / 8
#: over 2 learners (3 steps, recomputed old log-probs, a different micro-batch count per learner).
UPDATES = [_episodes(8, seed=1, vocab_size=VOCAB), _episodes(8, seed=2, vocab_size=VOCAB)]
UPDATES.append(_episodes(20, seed=3, vocab_size=VOCAB))


def _run(model_dir: str, num_learners: int, sharding: str = "ddp") -> list[tuple[dict, dict]]:
    """(metrics, inference-only weights) after each of :data:`UPDATES`."""
    config = _learner_config(model_dir, num_learners, sharding)
    if not num_learners:
        learner = config.build_learner(spaces=SPACES)
        runs = []
        for episodes in UPDATES:
            results = learner.update(episodes=episodes)
            weights = learner.module[DEFAULT_MODULE_ID].get_state(inference_only=True)
            runs.append(({key: _metric(results, key) for key in COMPARED}, weights))
        return runs
    group = config.build_learner_group(spaces=SPACES)
    runs = []
    try:
        for episodes in UPDATES:
            shards = [ray.put(shard) for shard in shard_by_group(episodes, num_learners)]
            results = group.update(episodes_refs=shards, num_epochs=1)
            metrics = {key: sum(_metric(r, key) for r in results) / len(results) for key in COMPARED}
            state = group.get_state(components="learner/rl_module", inference_only=True)
            runs.append((metrics, state["learner"]["rl_module"][DEFAULT_MODULE_ID]))
    finally:
        group.shutdown()
    return runs


def _max_gap(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(float((a[key].float() - b[key].float()).abs().max()) for key in a)


@pytest.mark.slow
def test_two_sharded_learners_update_like_one_learner_and_like_ddp(model_dir, ray_session):
    start = time.perf_counter()
    sharded = _run(model_dir, 2, "fsdp")
    sharded_s = time.perf_counter() - start
    single, ddp = _run(model_dir, 0), _run(model_dir, 2)
    figures = []
    for index, ((metrics, weights), (base, base_weights), (ddp_metrics, _)) in enumerate(zip(sharded, single, ddp)):
        # The clip acts (norm above 0.05); KL is 0 only on the first, on-policy, update.
        assert metrics["grad_norm"] > 0.05 and (metrics["kl"] > 0) == (index > 0)
        # Mini-batches of the third update differ from one learner's (rows shuffled per learner): DDP's are the same.
        reference, reference_weights = (base, base_weights) if index < 2 else (ddp_metrics, ddp[index][1])
        gaps = {key: abs(metrics[key] - reference[key]) for key in COMPARED}
        gaps["weights"] = _max_gap(weights, reference_weights)
        if index < 2:
            gaps["ddp_weights"] = _max_gap(ddp[index][1], reference_weights)
        figures.append(gaps)
        for key in COMPARED:
            assert metrics[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), (index, key)
        # AdamW's first steps move a weight by about lr whatever its gradient's size, so float noise
        # in a near-zero gradient shows as a weight gap of a small fraction of lr (DDP's as well).
        assert gaps["weights"] < 0.01 * LR, (index, gaps)
    assert sharded[2][0]["num_optimizer_steps"] == 3
    print(f"2 sharded learners, 3 updates: {sharded_s:.1f} s; max abs gaps per update: {figures}")


def test_sharding_is_validated_once_with_clear_errors(model_dir):
    config = _config(model_dir, tasks_per_iteration=2)
    assert config.sharding == "ddp"
    with pytest.raises(ValueError, match="sharding must be one of"):
        config.copy().learners(num_learners=2, sharding="zero3").validate()
    for num_learners in (0, 1):
        with pytest.raises(ValueError, match="N >= 2"):
            config.copy().learners(num_learners=num_learners, sharding="fsdp").validate()
    for key, value in (("lora", {"r": 2}), ("trainable_layers", 1)):
        subset = config.copy().rl_module(model_config={"model_name_or_path": model_dir, key: value})
        with pytest.raises(ValueError, match=f"is for full fine-tuning, but model_config sets \\['{key}'\\]"):
            subset.learners(num_learners=2, sharding="fsdp").validate()
    config.copy().learners(num_learners=2, sharding="fsdp").validate()


def _assert_runners_hold_the_learners_weights(algo: Algorithm) -> dict[str, torch.Tensor]:
    learner = _learner_weights(algo)
    for runner in _runner_weights(algo):
        assert _max_gap(runner, learner) == 0.0
    return learner


def _assert_same_update(a: dict, b: dict, tolerance: float) -> None:
    for key in ("grad_norm", "policy_loss", "kl"):
        assert _learner(a)[key] == pytest.approx(_learner(b)[key], rel=tolerance, abs=1e-9), key
    assert a["proxmo"]["advantages"] == b["proxmo"]["advantages"]


@pytest.mark.slow
def test_a_sharded_run_trains_syncs_checkpoints_restores_2_to_2_and_2_to_1_and_exports(
    model_dir, ray_session, tmp_path
):
    config = _config(model_dir, code_length=1, kl_coeff=0.5).learners(num_learners=2, sharding="fsdp")
    algo = config.build_algo()
    try:
        first = algo.train()
        assert _learner(first)["num_optimizer_steps"] == 1 and first["proxmo"]["num_groups"] == 2
        _assert_runners_hold_the_learners_weights(algo)
        checkpoint = algo.save(str(tmp_path / "sharded")).checkpoint.path
        continued = algo.train()
        continued_weights = _assert_runners_hold_the_learners_weights(algo)
    finally:
        algo.stop()
    assert _learner(continued)["kl"] > 0

    restored = Algorithm.from_checkpoint(checkpoint)
    try:
        assert restored.config.sharding == "fsdp" and restored.training_iteration == 1
        _assert_runners_hold_the_learners_weights(restored)
        _assert_same_update(restored.train(), continued, 1e-6)
        assert _max_gap(_assert_runners_hold_the_learners_weights(restored), continued_weights) == 0.0
    finally:
        restored.stop()

    single = config.copy().learners(num_learners=0, sharding="ddp").build_algo()
    try:
        single.restore_from_path(checkpoint)
        unsharded = single.save(str(tmp_path / "unsharded")).checkpoint.path
        _assert_same_update(single.train(), continued, 1e-4)
        assert _max_gap(_assert_runners_hold_the_learners_weights(single), continued_weights) < 2e-5
    finally:
        single.stop()

    exported = [export_policy(path, tmp_path / f"export_{i}") for i, path in enumerate((checkpoint, unsharded))]
    assert sorted(f.name for f in exported[0].iterdir()) == sorted(f.name for f in exported[1].iterdir())
    tensors = [load_file(directory / "model.safetensors") for directory in exported]
    assert _max_gap(*tensors) == 0.0
    configs = [json.loads((directory / "config.json").read_text()) for directory in exported]
    assert configs[0] == configs[1]


class FailingOnRankOneLearner(ProxMOTorchLearner):
    """The learner of rank 1 raises in its update; rank 0 is then left in a collective."""

    def _update(self, batch, **kwargs):
        if dist.get_rank() == 1:
            raise RuntimeError("learner 1 failed on purpose")
        return super()._update(batch, **kwargs)


@pytest.mark.slow
def test_a_failing_sharded_learner_raises_its_error_on_the_driver_without_hanging(model_dir, ray_session, monkeypatch):
    # Ray Train waits this long for the blocked learner's process group before killing it.
    monkeypatch.setenv("TORCH_PROCESS_GROUP_SHUTDOWN_TIMEOUT_S", "2")
    config = _learner_config(model_dir, 2, "fsdp").training(learner_class=FailingOnRankOneLearner)
    group = config.build_learner_group(spaces=SPACES)
    shards = [ray.put(shard) for shard in shard_by_group(UPDATES[0], 2)]
    start = time.perf_counter()
    try:
        with pytest.raises(Exception, match="learner 1 failed on purpose"):
            group.update(episodes_refs=shards, num_epochs=1)
        assert time.perf_counter() - start < 30
    finally:
        group.shutdown()
    assert time.perf_counter() - start < 60
