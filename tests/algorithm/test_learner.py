"""The token-level PPO learner on a tiny model, built in-process (no Ray cluster)."""

from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from ray.rllib.core import ALL_MODULES, DEFAULT_MODULE_ID
from ray.rllib.utils.metrics import NUM_ENV_STEPS_SAMPLED_LIFETIME

from benchmarks import gpu_check
from envs.spaces import TextSpace
from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.algorithm.token_batch import RESPONSE_MASK, pad_turns
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    REF_LOGP,
    SCORED_TOKENS,
    TOKEN_ENTROPY,
    TOKEN_LOGP,
    WITH_REFERENCE,
    LLMRLModule,
    autocast_dtype,
    capture_block_input,
    compute_dtype,
    decoder_layers,
)
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import k3_kl, step_plan, trim_left_padding
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
    assert {v.dtype for v in full.values() if isinstance(v, torch.Tensor)} == {torch.float32}


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
        [sys.executable, "-m", "benchmarks.gpu_check"],
        cwd=REPO,
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


def _metric(results: dict, key: str) -> float:
    return results[DEFAULT_MODULE_ID][key].peek()


def test_collectives_get_tensors_on_the_learners_device(model_dir, monkeypatch):
    learner = _learner(model_dir, minibatch_size=3, num_epochs=2)
    devices = []

    def all_reduce(tensor, *args, **kwargs):
        devices.append(tensor.device)
        assert tensor.device == learner._device, f"collective got a tensor on {tensor.device}"

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args, **kwargs: 1)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    episodes = _episodes(8)
    # On a GPU the default device (CPU) differs from the learner's (CUDA); with "meta" as
    # the default, a tensor built without an explicit device shows the same mismatch here.
    with torch.device("meta"):
        results = learner.update(episodes=episodes)
    assert len(devices) >= 2 and _metric(results, "num_optimizer_steps") == 6


def _count_calls(model: torch.nn.Module, *, completed: bool = False) -> list[int]:
    """A one-item counter of ``model``'s forward calls (``completed``: only those that ran to the end)."""
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    (model.register_forward_hook if completed else model.register_forward_pre_hook)(count)
    return calls


def test_step_plan_shuffles_every_row_once_per_epoch_into_near_equal_sorted_mini_batches():
    lengths = np.array([5, 3, 9, 3, 7, 1, 4, 8, 2, 6])
    plan = step_plan(lengths, num_steps=3, num_epochs=2, micro_batch_size=2, rng=np.random.default_rng(0))
    again = step_plan(lengths, num_steps=3, num_epochs=2, micro_batch_size=2, rng=np.random.default_rng(0))
    assert [[[m.tolist() for m in step] for step in epoch] for epoch in plan] == [
        [[m.tolist() for m in step] for step in epoch] for epoch in again
    ]
    for epoch in plan:
        rows = [np.concatenate(step) for step in epoch]
        assert sorted(np.concatenate(rows).tolist()) == list(range(10))
        assert sorted(len(r) for r in rows) == [3, 3, 4]
        assert all((np.diff(lengths[r]) >= 0).all() for r in rows)
        assert all(len(micro) <= 2 for step in epoch for micro in step)
    assert [np.concatenate(s).tolist() for s in plan[0]] != [np.concatenate(s).tolist() for s in plan[1]]
    single = step_plan(lengths, num_steps=1, num_epochs=1, micro_batch_size=4, rng=np.random.default_rng(0))
    assert np.concatenate(single[0][0]).tolist() == np.argsort(lengths, kind="stable").tolist()
    sparse = step_plan(lengths[:2], num_steps=3, num_epochs=1, micro_batch_size=4, rng=np.random.default_rng(0))
    assert sorted(len(step) for step in sparse[0]) == [0, 1, 1]


def test_mini_batches_take_ceil_rows_over_size_steps_per_epoch_and_go_off_policy(model_dir):
    learner = _learner(model_dir, minibatch_size=4, micro_batch_size=3, num_epochs=2, lr=1e-3)
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    steps = [0]
    learner.get_optimizer(DEFAULT_MODULE_ID).register_step_post_hook(lambda *args: steps.__setitem__(0, steps[0] + 1))
    forwards = _count_calls(policy.model)
    results = learner.update(episodes=_episodes(10))
    assert steps[0] == _metric(results, "num_optimizer_steps") == 3 * 2
    # Old log-probs: one no-grad pass over the 10 rows (4 micro-batches of <= 3 rows in
    # mini-batches of 3, 3 and 4 rows), then 2 epochs x (1 + 1 + 2) training forwards.
    assert forwards[0] == 4 + 2 * 4
    assert _metric(results, "ratio_max_deviation") > 1e-3
    assert 0 < _metric(results, "clip_fraction") < 1


def test_a_single_step_is_on_policy_with_one_forward_per_micro_batch(model_dir):
    learner = _learner(model_dir, minibatch_size=256, micro_batch_size=3, lr=1e-3)
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    forwards, reference_forwards = _count_calls(policy.model), _count_calls(policy._reference)
    results = learner.update(episodes=_episodes(10))
    assert _metric(results, "num_optimizer_steps") == 1
    assert forwards[0] == 4 and reference_forwards[0] == 4
    assert _metric(results, "ratio_max_deviation") == 0.0 and _metric(results, "ratio_mean") == 1.0
    assert _metric(results, "kl") == 0.0
    without_kl = _learner(model_dir, minibatch_size=256, micro_batch_size=3, kl_coeff=0.0)
    policy = without_kl.module[DEFAULT_MODULE_ID].unwrapped()
    forwards, reference_forwards = _count_calls(policy.model), _count_calls(policy._reference)
    without_kl.update(episodes=_episodes(10))
    assert forwards[0] == 4 and reference_forwards[0] == 0


def test_the_loss_is_a_token_mean_per_mini_batch_whatever_the_micro_batch_size(model_dir):
    episodes = _episodes(10)
    gradients = []
    for micro_batch_size in (1, 3, 16):
        learner = _learner(model_dir, minibatch_size=5, micro_batch_size=micro_batch_size, grad_clip=None, lr=1e-3)
        step_gradients = []
        learner.get_optimizer(DEFAULT_MODULE_ID).register_step_pre_hook(
            lambda optimizer, args, kwargs, into=step_gradients: into.append(
                [p.grad.clone() for group in optimizer.param_groups for p in group["params"]]
            )
        )
        learner.update(episodes=episodes)
        gradients.append(step_gradients)
    assert len(gradients[0]) == 2
    for other in gradients[1:]:
        for step, step_gradients in enumerate(other):
            for got, expected in zip(step_gradients, gradients[0][step]):
                torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-7)
    # On-policy (one step, ratio 1) the policy loss is minus the token mean of the advantages.
    learner = _learner(model_dir, micro_batch_size=3)
    results = learner.update(episodes=episodes)
    turns = [episode.turns[0] for episode in episodes]
    token_mean = sum(t.advantage * len(t.response_ids) for t in turns) / sum(len(t.response_ids) for t in turns)
    assert _metric(results, "policy_loss") == pytest.approx(-token_mean, rel=1e-6)
    assert _metric(results, "num_response_tokens") == sum(len(t.response_ids) for t in turns)


def test_a_learner_with_fewer_rows_than_steps_takes_every_step_with_zero_weight_fillers(model_dir, monkeypatch):
    """Emulate a DDP peer holding 20 more rows (and 100 more tokens per step) than this learner."""
    learner = _learner(model_dir, minibatch_size=4, micro_batch_size=2, lr=1e-3)
    reduced = []

    def all_reduce(tensor, *args, **kwargs):
        tensor += 20 if tensor.numel() == 1 else 100
        reduced.append(tensor.clone())

    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "get_world_size", lambda *args, **kwargs: 2)
    monkeypatch.setattr(torch.distributed, "all_reduce", all_reduce)
    before = _trainable(learner)
    results = learner.update(episodes=_episodes(3))
    steps = 6  # ceil((3 + 20) / 4): the peer's count decides, 3 of them empty here
    assert reduced[0].item() == 23 and reduced[1].shape == (1, steps)
    assert _metric(results, "num_optimizer_steps") == steps
    assert _metric(results, "num_micro_batches") == steps  # one backward pass per step, fillers included
    assert any(not torch.equal(before[name], value) for name, value in _trainable(learner).items())


@pytest.mark.parametrize("minibatch_size", [0, 2.5])
def test_config_rejects_a_bad_minibatch_size(model_dir, minibatch_size):
    config = ProxMOConfig().rl_module(model_config={"model_name_or_path": model_dir})
    assert config.minibatch_size == 256
    with pytest.raises(ValueError, match="minibatch_size"):
        config.training(minibatch_size=minibatch_size).validate()


def test_k3_kl_is_clamped_for_extreme_log_ratios(model_dir):
    logp = torch.tensor([[-100.0, 0.0, -1.0, -0.5]], requires_grad=True)
    ref = torch.tensor([[0.0, -100.0, -1.0, -0.7]])
    kl = k3_kl(logp, ref)
    d = torch.tensor(-0.2)
    assert kl[0, :3].tolist() == [10.0, 10.0, 0.0]
    assert kl[0, 3].item() == pytest.approx(float(torch.exp(d) - d - 1))
    kl.sum().backward()
    assert torch.isfinite(logp.grad).all()
    learner = _learner(model_dir, micro_batch_size=4)
    with torch.no_grad():
        for parameter in learner.module[DEFAULT_MODULE_ID].unwrapped()._reference.parameters():
            parameter.mul_(-40.0)
    results = learner.update(episodes=_episodes(6))
    assert 0 < _metric(results, "kl") <= 10.0 and math.isfinite(_metric(results, "grad_norm"))


def test_an_lr_schedule_follows_the_sampled_timesteps(model_dir):
    learner = _learner(model_dir, lr=[[0, 1e-3], [100, 0.0]])
    optimizer = learner.get_optimizer(DEFAULT_MODULE_ID)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)
    learner.update(episodes=_episodes(4), timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: 50})
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-4)


def _with_sampler_logp(learner, episodes: list[TextEpisode], offsets: list[np.ndarray]) -> list[TextEpisode]:
    """Copies of ``episodes`` whose sampler log-probs are the learner's own plus ``offsets``."""
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    annotated = []
    for episode, offset in zip(episodes, offsets):
        turn = episode.turns[0]
        ids = torch.tensor([turn.prompt_ids + turn.response_ids])
        logp = policy.forward_inference(
            {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(turn.response_ids)}
        )[TOKEN_LOGP][0].numpy()
        sampled = dataclasses.replace(turn, sampler_logp=tuple(float(x) for x in logp + offset))
        annotated.append(dataclasses.replace(episode, turns=[sampled]))
    return annotated


@pytest.mark.parametrize("old_logp_source", ["recompute", "sampler"])
@pytest.mark.parametrize("minibatch_size", [256, 2])
def test_the_sampler_gap_is_measured_before_any_optimizer_step(model_dir, minibatch_size, old_logp_source):
    learner = _learner(
        model_dir, minibatch_size=minibatch_size, micro_batch_size=3, lr=1e-2, old_logp_source=old_logp_source
    )
    episodes = _episodes(6)
    offsets = [np.full(len(e.turns[0].response_ids), 0.1) for e in episodes]
    # With sampler old log-probs and several steps only the first mini-batch is measured: every row gets the 0.7.
    for offset in offsets if old_logp_source == "sampler" and minibatch_size == 2 else offsets[3:4]:
        offset[1] = -0.7
    results = learner.update(episodes=_with_sampler_logp(learner, episodes, offsets))
    assert _metric(results, "num_optimizer_steps") == (1 if minibatch_size == 256 else 3)
    assert _metric(results, "sampler_logp_gap_max") == pytest.approx(0.7, abs=1e-4)
    if old_logp_source == "sampler" and minibatch_size == 2:
        assert 0.1 < _metric(results, "sampler_logp_gap_mean") < 0.7
        return
    gaps = np.abs(np.concatenate(offsets))
    assert _metric(results, "sampler_logp_gap_mean") == pytest.approx(gaps.mean(), abs=1e-4)
    # Without the column nothing is measured: no stale figure of the previous update.
    without = learner.update(episodes=episodes)[DEFAULT_MODULE_ID]
    assert math.isnan(without["sampler_logp_gap_max"].peek())
    assert "sampler_logp_gap_max" not in _learner(model_dir).update(episodes=episodes)[DEFAULT_MODULE_ID]


def test_parameter_counts_are_numbers_in_every_result(model_dir):
    learner = _learner(model_dir, model_config={"lora": {"r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}})
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    trainable = sum(p.numel() for p in policy.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in policy.parameters() if not p.requires_grad)
    for _ in range(2):
        results = learner.update(episodes=_episodes(4))
        for scope in (DEFAULT_MODULE_ID, ALL_MODULES):
            assert results[scope]["num_trainable_parameters"].peek() == trainable
            assert results[scope]["num_non_trainable_parameters"].peek() == frozen
    full = _learner(model_dir).update(episodes=_episodes(4))
    assert full[DEFAULT_MODULE_ID]["num_non_trainable_parameters"].peek() == 0


@pytest.fixture(scope="module")
def ray_session():
    import ray

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    yield
    ray.shutdown()


def test_training_results_advance_the_lr_schedule_and_count_parameters(model_dir, ray_session):
    from tests.text_env import DEFAULT_BUTTONS

    words_model = build_tiny_chat_model(Path(model_dir).parent / "guess", [*WORDS, *DEFAULT_BUTTONS], seed=2)
    config = (
        ProxMOConfig()
        .environment("tests.text_env:TextGuess-v0", env_config={"code_length": 1})
        .rl_module(model_config={"model_name_or_path": str(words_model), "max_new_tokens": 4})
        .training(
            group_size=2, tasks_per_iteration=1, llm_env_config={"require_think": False}, lr=[[0, 1e-3], [8, 0.0]]
        )
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        results = [algo.train() for _ in range(2)]
    finally:
        algo.stop()
    policy = algo.learner_group._learner.module[DEFAULT_MODULE_ID].unwrapped()
    trainable = sum(p.numel() for p in policy.parameters())
    turns = 0
    for result in results:
        learner = result["learners"][DEFAULT_MODULE_ID]
        turns += result["env_runners"]["num_turns"]
        # The lr in a result is the one set after the update, from the lifetime turns so far.
        assert learner["default_optimizer_learning_rate"] == pytest.approx(1e-3 * max(0.0, 1 - turns / 8))
        assert learner["num_trainable_parameters"] == trainable
        assert learner["num_non_trainable_parameters"] == 0
        assert math.isfinite(learner["sampler_logp_gap_max"])


def test_sampler_old_logp_saves_the_recompute_pass_and_trains_like_it(model_dir):
    episodes = _episodes(10)
    updated = {}
    for source in ("recompute", "sampler"):
        learner = _learner(
            model_dir, minibatch_size=4, micro_batch_size=3, num_epochs=2, lr=1e-3, old_logp_source=source
        )
        policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
        exact = _with_sampler_logp(learner, episodes, [np.zeros(len(e.turns[0].response_ids)) for e in episodes])
        forwards = _count_calls(policy.model)
        results = learner.update(episodes=exact)
        # 2 epochs x (1 + 1 + 2) training forwards, plus the 4-micro-batch pre-pass when recomputing.
        assert forwards[0] == 2 * 4 + (4 if source == "recompute" else 0)
        assert _metric(results, "sampler_logp_gap_max") < 1e-5
        updated[source] = _trainable(learner)
    for name, value in updated["recompute"].items():
        torch.testing.assert_close(updated["sampler"][name], value, atol=1e-5, rtol=0)
    # Without the sampler's log-probs there is nothing to take the old ones from.
    learner = _learner(model_dir, minibatch_size=4, old_logp_source="sampler")
    with pytest.raises(ValueError, match="old_logp_source='sampler' needs the sampler's log-probs"):
        learner.update(episodes=episodes)
    with pytest.raises(ValueError, match="old_logp_source must be one of"):
        ProxMOConfig().rl_module(model_config={"model_name_or_path": model_dir}).training(
            old_logp_source="vllm"
        ).validate()


def test_trainable_layers_trains_the_top_layers_only_and_ships_only_them(model_dir):
    learner = _learner(model_dir, model_config={"trainable_layers": 1}, minibatch_size=256, lr=1e-2)
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    trained = {name for name, p in policy.model.named_parameters() if p.requires_grad}
    assert trained and all(name.startswith("model.layers.1.") for name in trained)
    before = {name: p.detach().clone() for name, p in policy.model.named_parameters()}
    learner.update(episodes=_episodes(6))
    moved = {name for name, p in policy.model.named_parameters() if not torch.equal(p, before[name])}
    assert moved == trained
    shipped = policy.get_state(inference_only=True)
    assert set(shipped) == trained
    runner_side = LLMRLModule(
        model_config={"model_name_or_path": model_dir, "trainable_layers": 1}, inference_only=True
    )
    runner_side.set_state(shipped)
    for name, value in runner_side.model.state_dict().items():
        torch.testing.assert_close(value, policy.model.state_dict()[name])
    for bad, message in ((3, r"trainable_layers must be in \[1, 2\]"), ("2", "must be an int")):
        with pytest.raises(ValueError, match=message):
            LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": bad}, inference_only=True)
    with pytest.raises(ValueError, match="both lora and trainable_layers"):
        LLMRLModule(
            model_config={"model_name_or_path": model_dir, "trainable_layers": 1, "lora": {"r": 2}},
            inference_only=True,
        )


def test_a_shared_frozen_trunk_gives_the_reference_logp_of_a_full_reference_pass(model_dir):
    learner = _learner(model_dir, model_config={"trainable_layers": 1}, minibatch_size=256, lr=1e-2)
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    assert policy.shares_frozen_trunk
    learner.update(episodes=_episodes(6))  # the policy's top layer now differs from the reference's
    columns = learner._columns(pad_turns(_episodes(5, seed=4), policy.tokenizer.pad_token_id))
    batch = trim_left_padding({key: columns[key] for key in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK)})
    shared = policy.forward_train({**batch, WITH_REFERENCE: True})
    plain = policy.forward_train(batch)
    torch.testing.assert_close(shared[REF_LOGP], policy.reference_logp(batch), atol=1e-6, rtol=0)
    torch.testing.assert_close(shared[TOKEN_LOGP], plain[TOKEN_LOGP], atol=0, rtol=0)
    assert not torch.allclose(shared[REF_LOGP], shared[TOKEN_LOGP], atol=1e-4)
    # The trunk's output continues the forward pass exactly, with gradients for the top layer only.
    out, trunk = policy.forward_train_with_trunk(batch)
    again = policy.forward_train_from_trunk(trunk, batch)
    for key in (TOKEN_LOGP, TOKEN_ENTROPY):
        torch.testing.assert_close(again[key], out[key], atol=1e-6, rtol=0)
    again[TOKEN_LOGP].sum().backward()
    assert {name for name, p in policy.model.named_parameters() if p.grad is not None} == {
        name for name, p in policy.model.named_parameters() if p.requires_grad
    }


def _top_layer_kl_learner(model_dir: str):
    """A learner training the top layer with a strong KL term, several steps per update."""
    return _learner(
        model_dir, model_config={"trainable_layers": 1}, minibatch_size=4, num_epochs=2, lr=1e-3, kl_coeff=0.5
    )


def _assert_trained_alike(updated: dict[bool, dict[str, torch.Tensor]], kls: dict[bool, float]) -> None:
    """The shortcut run (True) ends with the KL and the weights of the full run (False)."""
    assert kls[True] > 0
    assert kls[True] == pytest.approx(kls[False], rel=1e-4)
    for name, value in updated[False].items():
        torch.testing.assert_close(updated[True][name], value, atol=1e-5, rtol=0)


def test_the_shared_trunk_saves_the_reference_pass_and_trains_like_the_full_one(model_dir, monkeypatch, caplog):
    episodes = _episodes(10)
    updated, kls = {}, {}
    for shared in (True, False):
        learner = _top_layer_kl_learner(model_dir)
        policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
        monkeypatch.setattr(policy, "_trunk_is_reference", shared)
        reference_forwards = _count_calls(policy._reference)
        learner.update(episodes=episodes)
        learner.update(episodes=episodes)
        kls[shared] = _metric(learner.update(episodes=episodes), "kl")
        # The reference's full forward runs once per micro-batch of each first epoch, unless shared.
        assert (reference_forwards[0] == 0) is shared
        updated[shared] = _trainable(learner)
    _assert_trained_alike(updated, kls)
    # A state whose frozen layers are not the reference's turns sharing off, with a warning.
    state = policy.get_state()
    state["model.layers.0.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"] + 0.1
    other = LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1})
    assert other.shares_frozen_trunk
    with caplog.at_level("WARNING"):
        other.set_state(state)
    assert not other.shares_frozen_trunk
    assert "full forward pass of their own" in caplog.text
    other.set_state(LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1}).get_state())
    assert other.shares_frozen_trunk


def _with_trunk_states(episodes: list[TextEpisode], policy: LLMRLModule) -> list[TextEpisode]:
    """Copies of ``episodes`` whose turns carry their trunk output, as the HF engine keeps it."""
    block = decoder_layers(policy.model)[policy.first_trained_block]
    copies = []
    for episode in episodes:
        turns = []
        for turn in episode.turns:
            fed = torch.tensor([turn.prompt_ids + turn.response_ids[:-1]])
            with capture_block_input(block) as captured, torch.no_grad():
                policy.model(input_ids=fed)
            turns.append(dataclasses.replace(turn, trunk_states=captured[0].hidden_states[0].clone()))
        copies.append(dataclasses.replace(episode, turns=turns))
    return copies


def test_a_batch_carrying_the_samplers_trunk_states_trains_like_the_full_forward(model_dir):
    episodes = _episodes(10)
    updated, kls = {}, {}
    for reuse in (True, False):
        learner = _top_layer_kl_learner(model_dir)
        policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
        batch = _with_trunk_states(episodes, policy) if reuse else episodes
        # Completed forwards of the frozen block (a pre-hook would also count the stopped ones).
        frozen_calls = _count_calls(decoder_layers(policy.model)[0], completed=True)
        learner.update(episodes=batch)
        kls[reuse] = _metric(learner.update(episodes=batch), "kl")
        # With the sampler's states the frozen block never runs in the learner.
        assert (frozen_calls[0] == 0) is reuse
        updated[reuse] = _trainable(learner)
    _assert_trained_alike(updated, kls)
    short = _with_trunk_states(episodes[:1], policy)[0].turns[0]
    short = dataclasses.replace(short, trunk_states=short.trunk_states[:-1])
    with pytest.raises(ValueError, match="trunk_states cover"):
        pad_turns([TextEpisode("e", "g", "task", "type", turns=[short])], 0)


def test_a_bf16_reference_beside_fp32_master_weights_on_a_cpu_takes_its_own_pass(model_dir):
    policy = LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1, "dtype": "bfloat16"})
    assert autocast_dtype("cpu", policy.compute_dtype) is None
    assert not policy.shares_frozen_trunk
    with pytest.raises(ValueError, match="with_reference needs a module whose frozen trunk"):
        policy.forward_train({WITH_REFERENCE: True, INPUT_IDS: torch.ones(1, 3, dtype=torch.long)})
