"""Checks of the training path that only a CUDA machine can run, with the figures they measure.

Each check is a function registered in :data:`CHECKS` under a short name; it gets a
:class:`Context` (the model directory, the visible GPUs), returns the figures it
measured (printed as ``name: key = value``), raises :class:`Skipped` when it cannot
run here (a package or a second GPU missing) and fails by raising anything else.

    python -m benchmarks.gpu_check                     # every check, tiny Llama built on the fly
    python -m benchmarks.gpu_check --model /models/qwen2.5-0.5b --only learner_bf16
    make gpu-check

The model is either a local Hugging Face directory (``--model``; never the hub) or a
tiny randomly initialised Llama written by :func:`rllib_proxmo.testing.build_tiny_chat_model`.
Without CUDA the script prints that it skipped and exits 0; it exits 1 when any
check failed.

Checks (in order):

- ``learner_bf16``: one learner update with ``dtype="bfloat16"`` at lr 1e-6 on the
  GPU: share of the fp32 master weights that changed, parameter / optimizer /
  reference / shipped-weight dtypes.
- ``shared_trunk_bf16``: ``trainable_layers=1`` in bf16 with a KL term: max / mean
  |reference log-probs from the shared frozen trunk - a full bf16 reference pass|
  (fails above 0.1), KL and update time with and without sharing.
- ``sampler_gap``: 16 prompts x 32 sampled tokens on the GPU in fp32 and bf16 (runner
  weights shipped from a learner module): max / mean |learner logp - sampler logp|,
  new tokens/s, cut rate; fails when the fp32 gap exceeds 1e-3.
- ``sampler_trunk``: ``trainable_layers=1``, an HF engine on the GPU keeping its trunk
  output, the learner module on the GPU scoring the samples from it (the trained block
  only), fp32 and bf16: max / mean |learner logp - sampler logp|; fails when the fp32 gap
  exceeds 1e-3 or a state is not returned on the CPU.
- ``vllm_engine``: the HF and the vLLM engine on the same bf16 weights pushed from a
  learner (64 prompts = 8 groups of 8, 64 new tokens, temperature 0.8): new tokens/s of
  each, max / mean sampler gap of each, cut rate, distinct responses per group, the
  time of one vLLM weight push; then vLLM in sleep mode: pause (weights and KV cache
  discarded), a push of new weights (wake -> load -> wake KV cache) and the gap of a
  fresh sample against them. Fails when vLLM's mean gap exceeds max(0.05, 4 x HF's),
  before or after sleeping. Skipped without vllm installed.
- ``env_runner_on_gpu``: one ProxMO iteration with a remote env runner given
  ``num_gpus_per_env_runner=1``: the runner's device and parameters are on CUDA and it
  holds the learner's weights after the sync; tokens/s, cut rate, learner gap metrics.
- ``alfworld_iteration``: one ProxMO iteration on generated ALFWorld games with the
  learner on the GPU; the ``proxmo`` time split of the result.
- ``ddp_nccl``: two DDP learners over NCCL (needs >= 2 GPUs).
- ``fsdp_nccl``: two sharded (FSDP2) bf16 learners against two DDP learners on one update:
  loss and grad-norm gaps, step time, peak GPU memory per learner (needs >= 2 GPUs).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Words of the tiny model's vocabulary: ALFWorld's commands and objects, the answer tags.
TINY_WORDS = (
    "go to take put open close look examine use heat cool clean inventory from in on with "
    "cabinet drawer countertop fridge microwave sinkbasin shelf desk bed apple mug knife "
    "1 2 3 <action> </action> <think> </think>"
).split()


#: Learner metrics the iteration checks print.
LEARNER_FIGURES = (
    "num_optimizer_steps",
    "num_response_tokens",
    "grad_norm",
    "kl",
    "ratio_max_deviation",
    "sampler_logp_gap_max",
    "sampler_logp_gap_mean",
)


class Skipped(Exception):
    """The check cannot run on this machine (the message says why)."""


@dataclass
class Context:
    """What every check may use: the model directory and the visible GPUs."""

    model_dir: str
    num_gpus: int
    work_dir: Path


@dataclass(frozen=True)
class Check:
    """A registered check: its function and the Python packages it imports."""

    function: Callable[[Context], dict[str, Any]]
    packages: tuple[str, ...] = ()
    min_gpus: int = 1


CHECKS: dict[str, Check] = {}


def check(name: str, *, packages: tuple[str, ...] = (), min_gpus: int = 1) -> Callable:
    """Register ``function(context) -> figures`` under ``name`` (registration order = run order)."""

    def register(function: Callable[[Context], dict[str, Any]]) -> Callable[[Context], dict[str, Any]]:
        if name in CHECKS:
            raise ValueError(f"check {name!r} is registered twice")
        CHECKS[name] = Check(function, packages, min_gpus)
        return function

    return register


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """The packages of ``packages`` that are not importable here."""
    return [package for package in packages if importlib.util.find_spec(package) is None]


def _learner_config(context: Context, **model_config: Any) -> Any:
    from rllib_proxmo.algorithm.proxmo import ProxMOConfig

    return (
        ProxMOConfig()
        .learners(num_learners=0, num_gpus_per_learner=1)
        .rl_module(model_config={"model_name_or_path": context.model_dir, **model_config})
    )


def _random_episodes(vocab_size: int, count: int, seed: int) -> list:
    """``count`` one-turn episodes with random tokens and advantages of both signs."""
    from rllib_proxmo.rollout.episodes import TextEpisode, Turn

    generator = torch.Generator().manual_seed(seed)
    episodes = []
    for index in range(count):
        prompt = torch.randint(6, vocab_size, (12 + index % 5,), generator=generator).tolist()
        response = torch.randint(6, vocab_size, (6 + index % 3,), generator=generator).tolist()
        turn = Turn(tuple(prompt), tuple(response), 0.0, "state", advantage=1.0 if index % 2 else -1.0)
        episodes.append(TextEpisode(f"episode-{index}", "group-0", "task", "type", turns=[turn]))
    return episodes


# ----------------------------------------------------------------- (a) learner
@check("learner_bf16", packages=("ray",))
def check_learner_bf16(context: Context) -> dict[str, Any]:
    """A bf16-autocast update on the GPU moves most fp32 master weights, even at lr 1e-6."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from envs.spaces import TextSpace

    config = _learner_config(context, dtype="bfloat16").training(lr=1e-6)
    learner = config.build_learner(spaces={DEFAULT_MODULE_ID: (TextSpace(), TextSpace())})
    policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
    if learner._device.type != "cuda":
        raise AssertionError(f"the learner sits on {learner._device}, not on a GPU")
    before = {name: p.detach().clone() for name, p in policy.named_parameters() if p.requires_grad}
    start = time.perf_counter()
    learner.update(episodes=_random_episodes(policy.tokenizer.vocab_size, 16, seed=0))
    torch.cuda.synchronize()
    update_s = time.perf_counter() - start
    after = dict(policy.named_parameters())
    changed = sum(int((after[name].detach() != value).sum()) for name, value in before.items())
    total = sum(value.numel() for value in before.values())
    optimizer = learner.get_optimizer(DEFAULT_MODULE_ID)
    shipped = policy.get_state(inference_only=True)
    figures = {
        "device": str(learner._device),
        "fraction_of_weights_changed": changed / total,
        "parameter_dtypes": sorted({str(p.dtype) for p in before.values()}),
        "optimizer_param_dtypes": sorted({str(p.dtype) for g in optimizer.param_groups for p in g["params"]}),
        "reference_dtypes": sorted({str(p.dtype) for p in policy._reference.parameters()}),
        "shipped_weight_dtypes": sorted({str(v.dtype) for v in shipped.values()}),
        "update_s": update_s,
    }
    if figures["fraction_of_weights_changed"] <= 0.5:
        raise AssertionError(f"only {changed}/{total} master weights changed: {figures}")
    if figures["optimizer_param_dtypes"] != ["torch.float32"] or figures["shipped_weight_dtypes"] != ["torch.bfloat16"]:
        raise AssertionError(f"wrong dtypes: {figures}")
    return figures


@check("shared_trunk_bf16", packages=("ray",))
def check_shared_trunk_bf16(context: Context) -> dict[str, Any]:
    """trainable_layers on the GPU in bf16: the reference log-probs from the shared frozen trunk
    (fp32 master trunk under autocast) against a full pass of the bf16 reference, and the update
    time with and without sharing."""
    from ray.rllib.core import DEFAULT_MODULE_ID

    from envs.spaces import TextSpace
    from rllib_proxmo.algorithm.token_batch import RESPONSE_MASK, pad_turns
    from rllib_proxmo.algorithm.torch.llm_rl_module import (
        ATTENTION_MASK,
        INPUT_IDS,
        REF_LOGP,
        WITH_REFERENCE,
    )
    from rllib_proxmo.algorithm.torch.proxmo_torch_learner import trim_left_padding

    figures: dict[str, Any] = {}
    for shared in (True, False):
        config = _learner_config(context, dtype="bfloat16", trainable_layers=1).training(kl_coeff=0.1, lr=1e-4)
        learner = config.build_learner(spaces={DEFAULT_MODULE_ID: (TextSpace(), TextSpace())})
        policy = learner.module[DEFAULT_MODULE_ID].unwrapped()
        if not policy.shares_frozen_trunk:
            raise AssertionError("a bf16 learner with trainable_layers does not share its frozen trunk")
        policy._trunk_is_reference = shared
        episodes = _random_episodes(policy.tokenizer.vocab_size, 16, seed=0)
        learner.update(episodes=episodes)  # warm-up; the top layer now differs from the reference
        torch.cuda.synchronize()
        start = time.perf_counter()
        results = learner.update(episodes=episodes)
        torch.cuda.synchronize()
        figures[f"update_s_{'shared' if shared else 'full_reference'}"] = time.perf_counter() - start
        figures[f"kl_{'shared' if shared else 'full_reference'}"] = float(results[DEFAULT_MODULE_ID]["kl"].peek())
    columns = learner._columns(pad_turns(episodes, policy.tokenizer.pad_token_id))
    batch = trim_left_padding({key: columns[key] for key in (INPUT_IDS, ATTENTION_MASK, RESPONSE_MASK)})
    policy._trunk_is_reference = True
    with torch.no_grad():
        gap = (policy.forward_train({**batch, WITH_REFERENCE: True})[REF_LOGP] - policy.reference_logp(batch)).abs()
    figures["ref_logp_gap_max"] = float(gap.max())
    figures["ref_logp_gap_mean"] = float(gap.mean())
    if figures["ref_logp_gap_max"] > 0.1:
        raise AssertionError(f"shared-trunk reference log-probs disagree with the bf16 reference: {figures}")
    return figures


# ------------------------------------------------------- (b), (c) sampler work
def _chat_prompts(tokenizer: Any, count: int) -> list[list[int]]:
    """``count`` chat-formatted prompts of different lengths, as token ids."""
    words = TINY_WORDS
    texts = [" ".join(words[(3 * i) % len(words) :][: 5 + i % 7]) for i in range(count)]
    chats = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        for text in texts
    ]
    return [tokenizer(chat, add_special_tokens=False)["input_ids"] for chat in chats]


def _sampler_gaps(learner: Any, prompts: list[list[int]], generations: list) -> torch.Tensor:
    """|learner logp - sampler logp| of every generated token (the learner module on CUDA).

    Generations that kept their trunk output are scored from it (the trained blocks only).
    """
    from rllib_proxmo.algorithm.torch.llm_rl_module import (
        ATTENTION_MASK,
        INPUT_IDS,
        SCORED_TOKENS,
        TOKEN_LOGP,
        TRUNK_STATES,
    )

    gaps = []
    for prompt, generation in zip(prompts, generations):
        ids = torch.tensor([list(prompt) + list(generation.token_ids)], device="cuda")
        batch = {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(generation.token_ids)}
        if generation.trunk_states is not None:
            states = torch.nn.functional.pad(generation.trunk_states, (0, 0, 0, 1))  # the last token is never fed
            batch[TRUNK_STATES] = states.unsqueeze(0).to("cuda")
        with torch.no_grad():
            learner_logp = learner._forward(batch)[TOKEN_LOGP][0].float().cpu()
        gaps.append((learner_logp - torch.tensor(generation.logprobs)).abs())
    return torch.cat(gaps)


def _sample_and_score(context: Context, dtype: str, *, keep_trunk: bool) -> tuple[Any, list, torch.Tensor, float]:
    """16 prompts x 32 tokens sampled on the GPU by a runner module holding a learner's shipped weights.

    ``keep_trunk``: both modules train the top layer only and the engine keeps its trunk output,
    which the learner then scores from. Returns the engine, the generations, the per-token
    sampler gaps and the generation seconds.
    """
    from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
    from rllib_proxmo.rollout.engines import HFEngine, SamplingParams

    config = {"model_name_or_path": context.model_dir, "dtype": dtype, "temperature": 1.0}
    if keep_trunk:
        config["trainable_layers"] = 1
    learner = LLMRLModule(model_config=config, inference_only=False).to("cuda")
    runner = LLMRLModule(model_config=config, inference_only=True).to("cuda")
    runner.set_state(learner.get_state(inference_only=True))
    engine = HFEngine(runner.model, runner.tokenizer, trunk_block=runner.first_trained_block if keep_trunk else None)
    prompts = _chat_prompts(runner.tokenizer, 16)
    start = time.perf_counter()
    generations = engine.generate(prompts, SamplingParams(max_new_tokens=32, temperature=1.0, seed=0))
    torch.cuda.synchronize()
    generate_s = time.perf_counter() - start
    return engine, generations, _sampler_gaps(learner, prompts, generations), generate_s


@check("sampler_gap", packages=("ray",))
def check_sampler_gap(context: Context) -> dict[str, Any]:
    """|learner logp - sampler logp| on the GPU, fp32 and bf16 (runner weights shipped from the learner)."""
    figures: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        engine, generations, gaps, generate_s = _sample_and_score(context, dtype, keep_trunk=False)
        figures[f"{dtype}_gap_max"] = float(gaps.max())
        figures[f"{dtype}_gap_mean"] = float(gaps.mean())
        figures[f"{dtype}_new_tokens_per_s"] = sum(len(g.token_ids) for g in generations) / generate_s
        figures[f"{dtype}_cut_rate"] = sum(not g.stopped for g in generations) / len(generations)
    figures["stop_token_ids"] = list(engine.stop_token_ids)
    if figures["float32_gap_max"] > 1e-3:
        raise AssertionError(f"fp32 sampler and learner disagree: {figures}")
    return figures


@check("sampler_trunk", packages=("ray",))
def check_sampler_trunk(context: Context) -> dict[str, Any]:
    """The learner continues from the trunk output an engine on the GPU kept (``reuse_sampler_trunk``)."""
    figures: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        _, generations, gaps, _ = _sample_and_score(context, dtype, keep_trunk=True)
        if any(g.trunk_states is None or g.trunk_states.device.type != "cpu" for g in generations):
            raise AssertionError("the engine kept no trunk states, or left them on the GPU")
        figures[f"{dtype}_gap_max"] = float(gaps.max())
        figures[f"{dtype}_gap_mean"] = float(gaps.mean())
    if figures["float32_gap_max"] > 1e-3:
        raise AssertionError(f"the learner from the sampler's trunk disagrees with the sampler: {figures}")
    return figures


@check("vllm_engine", packages=("ray", "vllm"))
def check_vllm_engine(context: Context) -> dict[str, Any]:
    """HF and vLLM side by side on the same bf16 weights: new tokens/s, sampler gap, weight push time.

    The temperature is 0.8, so a sampler that reported log-probs before temperature
    scaling (vLLM's default ``raw_logprobs``) would show here as a large gap.
    """
    from rllib_proxmo.algorithm.torch.llm_rl_module import LLMRLModule
    from rllib_proxmo.rollout.engines import HFEngine, SamplingParams
    from rllib_proxmo.rollout.engines.vllm_engine import VLLMEngine

    temperature, max_new_tokens = 0.8, 64
    config = {
        "model_name_or_path": context.model_dir,
        "dtype": "bfloat16",
        "temperature": temperature,
        "max_new_tokens": max_new_tokens,
        "vllm_gpu_memory_utilization": 0.4,
        "vllm_sleep_mode": True,
    }
    learner = LLMRLModule(model_config=config, inference_only=False).to("cuda")
    with torch.no_grad():  # weights the checkpoint on disk does not hold: the push must carry them
        for parameter in learner.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    state = learner.get_state(inference_only=True)
    hf_runner = LLMRLModule(model_config=config, inference_only=True).to("cuda")
    hf_runner.set_state(state)
    vllm_runner = LLMRLModule(model_config=config, inference_only=True)
    engines = {
        "hf": HFEngine(hf_runner.model, hf_runner.tokenizer),
        "vllm": VLLMEngine.build(vllm_runner, config, torch.device("cuda"), None, max_new_tokens),
    }
    vllm_runner.set_state(state)
    start = time.perf_counter()
    engines["vllm"].update_weights(state)
    figures: dict[str, Any] = {"vllm_weight_push_s": time.perf_counter() - start}
    # 8 groups of 8 identical prompts, as a ProxMO iteration sends them.
    prompts = [prompt for prompt in _chat_prompts(hf_runner.tokenizer, 8) for _ in range(8)]
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=0)
    for name, engine in engines.items():
        engine.generate(prompts[:8], params)  # warm-up (CUDA graphs, kernels)
        torch.cuda.synchronize()
        start = time.perf_counter()
        generations = engine.generate(prompts, params)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        gaps = _sampler_gaps(learner, prompts, generations)
        figures[f"{name}_new_tokens_per_s"] = sum(len(g.token_ids) for g in generations) / seconds
        figures[f"{name}_gap_max"] = float(gaps.max())
        figures[f"{name}_gap_mean"] = float(gaps.mean())
        figures[f"{name}_cut_rate"] = sum(not g.stopped for g in generations) / len(generations)
        figures[f"{name}_distinct_responses_per_group"] = sum(
            len({g.token_ids for g in generations[k : k + 8]}) for k in range(0, len(generations), 8)
        ) / (len(generations) // 8)
    # Sleep mode: the pause discards weights and KV cache; the next push wakes, reloads every weight, wakes the cache.
    engines["vllm"].pause()
    with torch.no_grad():
        for parameter in learner.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    state = learner.get_state(inference_only=True)
    vllm_runner.set_state(state)
    start = time.perf_counter()
    engines["vllm"].update_weights(state)
    figures["vllm_wake_and_push_s"] = time.perf_counter() - start
    gaps = _sampler_gaps(learner, prompts, engines["vllm"].generate(prompts, params))
    figures["vllm_gap_mean_after_sleep"] = float(gaps.mean())
    limit = max(0.05, 4 * figures["hf_gap_mean"])
    if max(figures["vllm_gap_mean"], figures["vllm_gap_mean_after_sleep"]) > limit:
        raise AssertionError(f"vLLM's sampler log-probs are not the learner's: {figures}")
    return figures


@check("env_runner_on_gpu", packages=("ray",))
def check_env_runner_on_gpu(context: Context) -> dict[str, Any]:
    """A remote env runner with num_gpus_per_env_runner=1 samples on the GPU and holds the learner's weights."""
    import ray
    from ray.rllib.core import COMPONENT_LEARNER, COMPONENT_RL_MODULE, DEFAULT_MODULE_ID

    from rllib_proxmo.experiments.runtime import start_ray

    start_ray(num_cpus=3, num_gpus=1)
    try:
        config = (
            _learner_config(context, max_new_tokens=16, temperature=1.0)
            .environment("tests.text_env:TextGuess-v0", env_config={"code_length": 2})
            .env_runners(num_env_runners=1, num_gpus_per_env_runner=1)
            .training(group_size=4, tasks_per_iteration=2, llm_env_config={"require_think": False})
            .debugging(seed=0)
        )
        algo = config.build_algo()
        try:
            result = algo.train()

            def placement(runner: Any) -> tuple[str, str, dict]:
                state = runner.module.get_state(inference_only=True)
                return str(runner.device), str(next(runner.module.parameters()).device), state

            [(device, parameter_device, runner_state)] = algo.env_runner_group.foreach_env_runner(
                placement, local_env_runner=False
            )
            component = f"{COMPONENT_LEARNER}/{COMPONENT_RL_MODULE}"
            learner_state = algo.learner_group.get_state(components=component, inference_only=True)
            weights = learner_state[COMPONENT_LEARNER][COMPONENT_RL_MODULE][DEFAULT_MODULE_ID]
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    same = all(torch.equal(runner_state[name], value) for name, value in weights.items())
    learner = result["learners"][DEFAULT_MODULE_ID]
    figures = {
        "runner_device": device,
        "runner_parameter_device": parameter_device,
        "runner_holds_learner_weights": same,
        "generated_tokens_per_s": result["proxmo"]["generated_tokens_per_s"],
        "response_cut_rate": result["env_runners"]["response_cut_rate"],
        **{key: learner[key] for key in ("sampler_logp_gap_max", "sampler_logp_gap_mean") if key in learner},
    }
    if not device.startswith("cuda") or not parameter_device.startswith("cuda") or not same:
        raise AssertionError(f"the env runner is not sampling on the GPU with the learner's weights: {figures}")
    return figures


# ------------------------------------------------------- (d) ALFWorld iteration
@check("alfworld_iteration", packages=("ray", "textworld", "alfworld", "fast_downward"))
def check_alfworld_iteration(context: Context) -> dict[str, Any]:
    """One ProxMO iteration on generated ALFWorld games, learner on the GPU."""
    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    from envs import ALFWORLD
    from rllib_proxmo.experiments.runtime import start_ray

    start_ray(num_cpus=2, num_gpus=1)
    try:
        config = (
            _learner_config(context, dtype="bfloat16", max_new_tokens=32, temperature=1.0)
            .environment(ALFWORLD, env_config={"data_source": "generated", "num_games": 12, "max_steps": 50})
            .env_runners(num_env_runners=0)
            .training(group_size=4, tasks_per_iteration=2, max_turns=3, micro_batch_size=4)
            .debugging(seed=0)
        )
        algo = config.build_algo()
        try:
            result = algo.train()
            [learner_device] = [
                call.get() for call in algo.learner_group.foreach_learner(lambda learner: str(learner._device))
            ]
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    if not learner_device.startswith("cuda"):
        raise AssertionError(f"the learner sat on {learner_device}, not on a GPU")
    learner = result["learners"][DEFAULT_MODULE_ID]
    return {
        "learner_device": learner_device,
        **{key: value for key, value in result["proxmo"].items() if key != "advantages"},
        **{key: learner[key] for key in LEARNER_FIGURES if key in learner},
    }


# ------------------------------------------------------------ (e) DDP on NCCL
@check("ddp_nccl", packages=("ray",), min_gpus=2)
def check_ddp_nccl(context: Context) -> dict[str, Any]:
    """Two learners, one GPU each, one update through NCCL all-reduces."""
    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    from rllib_proxmo.experiments.runtime import start_ray

    start_ray(num_cpus=3, num_gpus=2)
    try:
        config = (
            _learner_config(context, dtype="bfloat16")
            .learners(num_learners=2, num_gpus_per_learner=1)
            .environment("tests.text_env:TextGuess-v0", env_config={"code_length": 2})
            .training(group_size=4, tasks_per_iteration=2, llm_env_config={"require_think": False})
            .debugging(seed=0)
        )
        algo = config.build_algo()
        try:
            result = algo.train()
            placements = [
                call.get()
                for call in algo.learner_group.foreach_learner(
                    lambda learner: f"{learner._device}/{torch.distributed.get_backend()}"
                )
            ]
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    if len(placements) != 2 or not all(p.startswith("cuda") and p.endswith("nccl") for p in placements):
        raise AssertionError(f"the learners did not train on GPUs over NCCL: {placements}")
    learner = result["learners"][DEFAULT_MODULE_ID]
    return {"learner_placements": placements, **{key: learner[key] for key in LEARNER_FIGURES if key in learner}}


# ------------------------------------------------------- (f) FSDP2 on NCCL
def _two_gpu_update(context: Context, sharding: str, episodes: list) -> dict[str, Any]:
    """One update of 2 bf16 learners (one GPU each): loss, grad norm, step time, peak GPU memory per learner."""
    import ray
    from ray.rllib.core import DEFAULT_MODULE_ID

    from envs.spaces import TextSpace
    from rllib_proxmo.algorithm.sharding import shard_by_group

    config = (
        _learner_config(context, dtype="bfloat16")
        .learners(num_learners=2, num_gpus_per_learner=1, sharding=sharding)
        .training(lr=1e-5, minibatch_size=len(episodes), micro_batch_size=4)
        .debugging(seed=0)
    )
    group = config.build_learner_group(spaces={DEFAULT_MODULE_ID: (TextSpace(), TextSpace())})
    try:
        refs = [ray.put(shard) for shard in shard_by_group(episodes, 2)]
        start = time.perf_counter()
        results = group.update(episodes_refs=refs, num_epochs=1)
        step_s = time.perf_counter() - start
        peaks = [call.get() for call in group.foreach_learner(lambda learner: torch.cuda.max_memory_allocated())]
    finally:
        group.shutdown()
    mean = {key: sum(r[DEFAULT_MODULE_ID][key].peek() for r in results) / 2 for key in ("policy_loss", "grad_norm")}
    return {**mean, "step_s": step_s, "peak_gib": max(peaks) / 2**30}


@check("fsdp_nccl", packages=("ray",), min_gpus=2)
def check_fsdp_nccl(context: Context) -> dict[str, Any]:
    """Two sharded learners against two DDP learners on the same update: parity, memory, step time."""
    import dataclasses

    import ray
    from transformers import AutoConfig

    from rllib_proxmo.experiments.runtime import start_ray

    vocab_size = AutoConfig.from_pretrained(context.model_dir).vocab_size
    episodes = [
        dataclasses.replace(episode, group_id=f"group-{index % 2}")
        for index, episode in enumerate(_random_episodes(vocab_size, 16, seed=0))
    ]
    start_ray(num_cpus=3, num_gpus=2)
    try:
        runs = {sharding: _two_gpu_update(context, sharding, episodes) for sharding in ("ddp", "fsdp")}
    finally:
        ray.shutdown()
    gaps = {key: abs(runs["fsdp"][key] - runs["ddp"][key]) for key in ("policy_loss", "grad_norm")}
    # bf16 compute: both sides round alike but reduce in a different order.
    if gaps["grad_norm"] > 1e-2 * runs["ddp"]["grad_norm"]:
        raise AssertionError(f"sharded and DDP learners disagree: {runs}")
    figures = {f"{sharding}_{key}": value for sharding, run in runs.items() for key, value in run.items()}
    return {**figures, **{f"gap_{key}": value for key, value in gaps.items()}}


# ------------------------------------------------------------------- driver
def _tiny_model(directory: Path) -> str:
    from rllib_proxmo.testing import build_tiny_chat_model

    return str(build_tiny_chat_model(directory, TINY_WORDS, hidden_size=128, num_layers=2))


def run_checks(context: Context, names: list[str]) -> int:
    """Run the named checks, print their figures; the number of failed checks."""
    failures = 0
    for name in names:
        entry = CHECKS[name]
        missing = missing_packages(entry.packages)
        if missing:
            print(f"{name}: skipped: {', '.join(missing)} not installed")
            continue
        if context.num_gpus < entry.min_gpus:
            print(f"{name}: skipped: needs {entry.min_gpus} GPUs, {context.num_gpus} visible")
            continue
        try:
            figures = entry.function(context)
        except Skipped as reason:
            print(f"{name}: skipped: {reason}")
            continue
        except Exception:  # a failed check is reported and counted; the others still run
            failures += 1
            print(f"{name}: FAILED\n{traceback.format_exc()}")
            continue
        for key, value in figures.items():
            print(f"{name}: {key} = {value:.6g}" if isinstance(value, float) else f"{name}: {key} = {value}")
        print(f"{name}: ok")
    return failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="local Hugging Face model directory (default: build a tiny Llama)")
    parser.add_argument("--only", nargs="+", choices=sorted(CHECKS), help="run only these checks")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu_check: skipped: CUDA is not available on this machine")
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        work_dir = Path(work)
        model_dir = args.model or _tiny_model(work_dir / "tiny_model")
        context = Context(model_dir=model_dir, num_gpus=torch.cuda.device_count(), work_dir=work_dir)
        print(f"gpu_check: {context.num_gpus} GPU(s), {torch.cuda.get_device_name(0)}, model {model_dir}")
        names = args.only or list(CHECKS)
        failures = run_checks(context, names)
    print(f"gpu_check: {len(names) - failures}/{len(names)} checks passed or skipped, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
