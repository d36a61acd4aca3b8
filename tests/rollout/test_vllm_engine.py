"""The vLLM engine's parts that run without vLLM: sampling translation, weight names, LoRA merges.

Weight names are checked against what vLLM reads at start-up: the tensor names of the
checkpoint's own safetensors file, for tiny Llama, Qwen2 and Qwen3 models built here.
The sleep-mode order is checked on a recording stand-in (the CPU platform has no sleep
mode); the last test runs it for real and needs vLLM's CUDA build and a GPU.
tests/rollout/test_vllm_runs.py runs the engine on vLLM's CPU build.
"""

from __future__ import annotations

import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from safetensors import safe_open
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

from rllib_proxmo.rollout.engines import SamplingParams
from rllib_proxmo.rollout.engines.vllm_engine import (
    NEUTRAL_SAMPLING,
    SUPPORTED_ARCHITECTURES,
    VLLMSettings,
    WeightPush,
    checkpoint_name,
    installed_build,
    lora_targets,
    make_generation,
    request_kwargs,
    request_seeds,
)
from rllib_proxmo.testing import build_tiny_chat_model

SHAPE = {
    "vocab_size": 48,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 128,
}
CONFIGS = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config}
LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj", "down_proj"], "init_lora_weights": False}


def _checkpoint(directory, family: str, tied: bool) -> tuple[torch.nn.Module, set[str]]:
    """A saved tiny model of ``family`` and the tensor names of its safetensors file."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[family](**SHAPE, tie_word_embeddings=tied))
    model.save_pretrained(directory)
    with safe_open(directory / "model.safetensors", "pt") as saved:
        names = set(saved.keys())
    assert model.config.architectures[0] in SUPPORTED_ARCHITECTURES
    return model, names


# ------------------------------------------------------------------ sampling
def test_each_prompt_gets_its_own_reproducible_seed_distinct_across_turns():
    seeds = request_seeds(7, 8)
    assert seeds == request_seeds(7, 8) and len(set(seeds)) == 8
    # The runner seeds turn k with seed + k: no request of one turn repeats one of the next.
    assert not set(seeds) & set(request_seeds(8, 8))
    assert request_seeds(None, 3) == [None, None, None]


def test_sampling_params_translate_to_the_plain_temperature_and_top_p_sampler():
    params = SamplingParams(max_new_tokens=12, temperature=0.7, top_p=0.9, seed=3)
    kwargs = request_kwargs(params, (2, 3), seed=11)
    assert kwargs == {
        "n": 1,
        "temperature": 0.7,
        "top_p": 0.9,
        **NEUTRAL_SAMPLING,
        "max_tokens": 12,
        "seed": 11,
        "logprobs": 0,
        "detokenize": False,
        "stop_token_ids": [2, 3],
        "ignore_eos": False,
    }
    assert NEUTRAL_SAMPLING == {
        "top_k": 0,
        "min_p": 0.0,
        "repetition_penalty": 1.0,
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
    }
    greedy = request_kwargs(SamplingParams(max_new_tokens=4, temperature=0.0, top_p=0.5), (2,), seed=None)
    assert greedy["temperature"] == 0.0 and greedy["top_p"] == 1.0


def test_completions_become_generations_with_stop_cut_text_and_aligned_logprobs(tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(build_tiny_chat_model(tmp_path, ["red", "blue"]))
    red, blue, eos = (tokenizer.convert_tokens_to_ids(t) for t in ("red", "blue", "<eos>"))
    stopped = make_generation([red, blue, eos], [-0.1, -0.2, -0.3], "stop", (eos,), tokenizer)
    assert stopped.stopped and stopped.token_ids == (red, blue, eos) and stopped.text == "red blue"
    assert stopped.logprobs == (-0.1, -0.2, -0.3)
    cut = make_generation([red, red], [-0.5, -0.25], "length", (eos,), tokenizer)
    assert not cut.stopped and cut.text == "red red"
    with pytest.raises(RuntimeError, match="'abort'"):
        make_generation([red], [-0.5], "abort", (eos,), tokenizer)
    with pytest.raises(RuntimeError, match="expected 'stop'"):
        make_generation([red, eos], [-0.5, -0.1], "length", (eos,), tokenizer)
    with pytest.raises(RuntimeError, match="1 log-probs for 2 tokens"):
        make_generation([red, blue], [-0.5], "length", (eos,), tokenizer)


def test_vllm_settings_are_checked_and_size_the_context():
    assert VLLMSettings.from_model_config({"vllm_sleep_mode": True, "dtype": "bfloat16"}) == VLLMSettings(
        sleep_mode=True
    )
    assert VLLMSettings().model_len(2048, 512) == 2560
    assert VLLMSettings().model_len(None, 512) is None
    assert VLLMSettings(max_model_len=4096).model_len(2048, 512) == 4096
    with pytest.raises(ValueError, match=r"vllm_max_model_len=2000 is below max_prompt_tokens \+ max_new_tokens"):
        VLLMSettings(max_model_len=2000).model_len(2048, 512)
    with pytest.raises(ValueError, match="vllm_gpu_memory_utilization must be in"):
        VLLMSettings(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="vllm_enforce_eager must be None, True or False"):
        VLLMSettings(enforce_eager="yes")
    with pytest.raises(ValueError, match="vllm_cpu_kv_cache_gib must be a number > 0, got 0"):
        VLLMSettings(cpu_kv_cache_gib=0)
    with pytest.raises(ValueError, match="unknown model_config keys \\['vllm_gpu_util'\\]"):
        VLLMSettings.from_model_config({"vllm_gpu_util": 0.5})


# ------------------------------------------------------------------- weights
@pytest.mark.parametrize("family", sorted(CONFIGS))
@pytest.mark.parametrize("tied", [True, False])
def test_pushed_names_are_the_checkpoint_names_vllm_loads(tmp_path, family, tied):
    model, names = _checkpoint(tmp_path, family, tied)
    push = WeightPush(model)
    pushed = push.weights(model.state_dict(), full=False)
    assert len(pushed) == len(names) and {name for name, _ in pushed} == names
    state = model.state_dict()
    assert all(torch.equal(value, state[name]) for name, value in pushed)


def test_peft_keys_map_to_checkpoint_names():
    key = "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    assert checkpoint_name(key) == "model.layers.0.self_attn.q_proj.weight"
    assert checkpoint_name("base_model.model.lm_head.weight") == "lm_head.weight"
    assert checkpoint_name("model.norm.weight") == "model.norm.weight"


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_lora_push_equals_peft_merge_and_sends_only_the_adapted_layers(tmp_path, family, dtype):
    base, names = _checkpoint(tmp_path, family, tied=True)
    runner_model = get_peft_model(base.to(dtype), LoraConfig(**LORA))
    # The learner's adapter after some updates: other values than the runner's initial ones.
    torch.manual_seed(1)
    state = {
        key: torch.randn_like(value) * 0.1
        for key, value in runner_model.state_dict().items()
        if "lora_" in key  # what LLMRLModule.get_state(inference_only=True) ships with LoRA
    }
    push = WeightPush(runner_model)
    runner_model.load_state_dict(state, strict=False)
    adapted = push.weights(state, full=False)
    # 3 target modules x 2 layers and the rest of each fused qkv_proj (k_proj; Qwen2's q/k/v biases)
    # from the base: nothing else.
    modules = ("q_proj", "k_proj", "v_proj", "down_proj")
    assert len(adapted) == 8 + (6 if family == "qwen2" else 0)
    assert all(name.rsplit(".", 1)[0].endswith(modules) for name, _ in adapted)
    everything = dict(push.weights(state, full=True))
    assert set(everything) == names

    reference = get_peft_model(AutoModelForCausalLM.from_pretrained(tmp_path, dtype=dtype), LoraConfig(**LORA))
    reference.load_state_dict(state, strict=False)
    merged = reference.merge_and_unload().state_dict()
    # bf16: peft rounds the update and the sum separately, the push once (at most one bf16 step apart).
    tolerance = {} if dtype == torch.float32 else {"atol": 0.0, "rtol": 2**-7}
    for name, value in adapted:
        assert value.dtype == dtype
        torch.testing.assert_close(value, merged[name], **tolerance)
    for name, value in everything.items():
        torch.testing.assert_close(value, merged[name], **tolerance)


def test_lora_configs_a_weight_merge_cannot_express_are_refused(tmp_path):
    base, _ = _checkpoint(tmp_path, "llama", tied=True)
    dora = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj"], use_dora=True))
    with pytest.raises(ValueError, match=r"merges plain LoRA linear layers; the lora config sets \['use_dora'\]"):
        lora_targets(dora)


def test_lora_scaling_is_peft_s_own_rslora_included(tmp_path):
    base, _ = _checkpoint(tmp_path, "llama", tied=True)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj"], use_rslora=True))
    assert {target.scaling for target in lora_targets(model)} == {8 / math.sqrt(4)}


class _RecordingLLM:
    """Records the ``vllm.LLM`` calls of a weight push (vLLM cannot run here); loads go to a real module."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def collective_rpc(self, method, kwargs):
        assert method == "reload_weights" and kwargs["is_checkpoint_format"]
        self.calls.append(("load", sorted(name for name, _ in kwargs["weights_iterator"])))

    def apply_model(self, fn):
        self.calls.append(("apply_model", fn.__name__))

    def wake_up(self, tags):
        self.calls.append(("wake_up", tuple(tags)))
        return tags == ["kv_cache"]

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def reset_prefix_cache(self):
        self.calls.append(("reset_prefix_cache",))


@pytest.mark.parametrize("lora", [False, True])
def test_a_push_reloads_everything_after_sleep_and_only_the_adapted_layers_otherwise(tmp_path, lora):
    from transformers import AutoTokenizer

    from rllib_proxmo.rollout.engines.vllm_engine import VLLMEngine

    model_dir = build_tiny_chat_model(tmp_path, ["red", "blue"])
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    if lora:
        model = get_peft_model(model, LoraConfig(**LORA))
    with safe_open(model_dir / "model.safetensors", "pt") as saved:
        everything = sorted(saved.keys())
    pushed = sorted(WeightPush(model).weights(model.state_dict(), full=False), key=lambda pair: pair[0])
    llm = _RecordingLLM()
    engine = VLLMEngine(llm, model, AutoTokenizer.from_pretrained(model_dir), VLLMSettings(sleep_mode=True), 64)
    state = model.state_dict()
    engine.update_weights(state)
    engine.pause()
    engine.pause()  # already asleep: nothing more
    engine.update_weights(state)
    # With trainable_layers the learner ships the trained layers only; waking reloads everything.
    top_layer = {name: value for name, value in model.state_dict().items() if ".layers.1." in name}
    if not lora:
        engine.pause()
        engine.update_weights(top_layer)
        engine.update_weights(top_layer)
    refresh = ("apply_model", "refresh_tied_head")  # the tiny model ties its embeddings
    assert llm.calls[:9] == [
        ("load", [name for name, _ in pushed]),
        refresh,
        ("reset_prefix_cache",),
        ("sleep", 2),
        ("wake_up", ("weights",)),
        ("load", everything),
        refresh,
        ("wake_up", ("kv_cache",)),
        ("reset_prefix_cache",),
    ]
    if not lora:
        assert llm.calls[9:13] == [("sleep", 2), ("wake_up", ("weights",)), ("load", everything), refresh]
        assert llm.calls[-3:] == [("load", sorted(top_layer)), refresh, ("reset_prefix_cache",)]
    assert (len(pushed) == 8) if lora else ([name for name, _ in pushed] == everything)
    assert not engine.asleep


# ------------------------------------------------------ vLLM on a GPU (only)
VLLM_READY = installed_build() == "cuda" and torch.cuda.is_available()


@pytest.mark.skipif(not VLLM_READY, reason="needs vLLM's CUDA build and a GPU")
def test_vllm_samples_the_policy_the_learner_scores_before_and_after_sleeping(tmp_path):
    from rllib_proxmo.algorithm.torch.llm_rl_module import (
        ATTENTION_MASK,
        INPUT_IDS,
        SCORED_TOKENS,
        TOKEN_LOGP,
        LLMRLModule,
    )
    from rllib_proxmo.rollout.engines.vllm_engine import VLLMEngine

    model_dir = str(build_tiny_chat_model(tmp_path, "red green blue look press".split(), hidden_size=128))
    config = {
        "model_name_or_path": model_dir,
        "dtype": "bfloat16",
        "temperature": 0.5,
        "vllm_gpu_memory_utilization": 0.3,
        "vllm_sleep_mode": True,
    }
    learner = LLMRLModule(model_config=config, inference_only=False).to("cuda")
    runner = LLMRLModule(model_config=config, inference_only=True)
    engine = VLLMEngine.build(runner, config, torch.device("cuda"), max_prompt_tokens=64, max_new_tokens=16)
    prompts = [[4, 8, 9, 3, 5]] * 4 + [[4, 10, 3, 5]]
    params = SamplingParams(max_new_tokens=16, temperature=0.5, seed=0)

    def push_and_sample(scale: float) -> float:
        """Sharpen the learner's logits (tied embeddings x scale), push, sample; the largest mean gap."""
        with torch.no_grad():
            learner.model.model.embed_tokens.weight.mul_(scale)
        state = learner.get_state(inference_only=True)
        runner.set_state(state)
        engine.update_weights(state)
        generations = engine.generate(prompts, params)
        assert len({g.token_ids for g in generations[:4]}) > 1  # one group's identical prompts differ
        gaps = []
        for prompt, generation in zip(prompts, generations):
            ids = torch.tensor([prompt + list(generation.token_ids)], device="cuda")
            batch = {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(generation.token_ids)}
            with torch.no_grad():
                learner_logp = learner._forward(batch)[TOKEN_LOGP][0].float().cpu()
            gaps.append((learner_logp - torch.tensor(generation.logprobs)).abs().mean())
        engine.pause()
        return float(max(gaps))

    # Logits of std ~2 at temperature 0.5: log-probs taken before temperature would be off by ~1 nat.
    assert push_and_sample(8.0) < 0.05
    assert engine.asleep
    assert push_and_sample(1.5) < 0.05  # woken by the push, with every weight reloaded
