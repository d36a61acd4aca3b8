"""The token-level PPO learner on a tiny model, built in-process (no Ray cluster)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID

from benchmarks import gpu_check
from envs.spaces import TextSpace
from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.algorithm.torch.llm_rl_module import autocast_dtype, compute_dtype
from rllib_proxmo.rollout.episodes import TextEpisode, Turn
from rllib_proxmo.testing import build_tiny_chat_model

REPO = Path(__file__).resolve().parents[2]
WORDS = "press red green blue look help the chest open close <action> </action>".split()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), WORDS, seed=1))


def _learner(model_dir: str, *, model_config: dict | None = None, **training):
    config = (
        ProxMOConfig()
        .rl_module(model_config={"model_name_or_path": model_dir, **(model_config or {})})
        .training(**training)
        .debugging(seed=3)
    )
    return config.build_learner(spaces={DEFAULT_MODULE_ID: (TextSpace(), TextSpace())})


def _episodes(num_turns: int, seed: int = 0, vocab_size: int = 18) -> list[TextEpisode]:
    """One-turn episodes with random prompts and responses of varied lengths, advantages of both signs."""
    rng = np.random.default_rng(seed)
    episodes = []
    for index in range(num_turns):
        prompt = tuple(int(x) for x in rng.integers(6, vocab_size, size=int(rng.integers(4, 9))))
        response = tuple(int(x) for x in rng.integers(6, vocab_size, size=int(rng.integers(2, 6))))
        turn = Turn(prompt, response, 0.0, "state", advantage=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.5)))
        episodes.append(TextEpisode(f"e{index}", f"g{index // 4}", "task", "type", turns=[turn]))
    return episodes


def _trainable(learner) -> dict[str, torch.Tensor]:
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    return {name: p.detach().clone() for name, p in policy.named_parameters() if p.requires_grad}


def test_bf16_compute_keeps_fp32_master_weights_that_move_at_lr_1e_6(model_dir):
    learner = _learner(model_dir, model_config={"dtype": "bfloat16"}, lr=1e-6)
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    before = _trainable(learner)
    learner.update(episodes=_episodes(8))
    after = _trainable(learner)
    changed = sum(int((after[name] != value).sum()) for name, value in before.items())
    assert changed / sum(value.numel() for value in before.values()) > 0.5
    optimizer = learner.get_optimizer(DEFAULT_MODULE_ID)
    assert {p.dtype for group in optimizer.param_groups for p in group["params"]} == {torch.float32}
    assert {p.dtype for p in policy._reference.parameters()} == {torch.bfloat16}
    shipped = policy.get_state(inference_only=True)
    assert {v.dtype for v in shipped.values() if v.is_floating_point()} == {torch.bfloat16}
    full = policy.get_state()
    assert {v.dtype for k, v in full.items() if not k.startswith("reference::")} == {torch.float32}


def test_autocast_only_on_cuda_and_no_fp16_training():
    assert autocast_dtype("cuda", torch.bfloat16) is torch.bfloat16
    assert autocast_dtype("cuda", torch.float16) is torch.float16
    assert autocast_dtype("cuda", torch.float32) is None
    assert autocast_dtype("cpu", torch.bfloat16) is None
    assert compute_dtype("float16", training=False) is torch.float16
    with pytest.raises(ValueError, match="loss scaling"):
        compute_dtype("float16", training=True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        compute_dtype("int8", training=False)


def test_gpu_check_skips_without_cuda_and_exits_zero():
    environment = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "gpu_check.py")],
        capture_output=True,
        text=True,
        env=environment,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout and "CUDA" in done.stdout


def test_gpu_check_names_a_missing_package_and_counts_failures(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(gpu_check, "CHECKS", {})
    gpu_check.check("needs_missing", packages=("no_such_package_xyz",))(lambda context: {})
    gpu_check.check("two_gpus", min_gpus=2)(lambda context: {})
    gpu_check.check("broken")(lambda context: 1 / 0)
    gpu_check.check("fine")(lambda context: {"figure": 0.5})
    context = gpu_check.Context(model_dir=str(tmp_path), num_gpus=1, work_dir=tmp_path)
    assert gpu_check.run_checks(context, list(gpu_check.CHECKS)) == 1
    out = capsys.readouterr().out
    assert "needs_missing: skipped: no_such_package_xyz not installed" in out
    assert "two_gpus: skipped: needs 2 GPUs, 1 visible" in out
    assert "broken: FAILED" in out and "ZeroDivisionError" in out
    assert "fine: figure = 0.5" in out and "fine: ok" in out
