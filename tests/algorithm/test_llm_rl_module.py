"""The LLM RLModule, the Hugging Face engine and the model resolver, on a tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    REFERENCE_SOURCE,
    SCORED_TOKENS,
    TOKEN_ENTROPY,
    TOKEN_LOGP,
    WEIGHTS_FILE,
    LLMRLModule,
)
from rllib_proxmo.algorithm.torch.model_loading import resolve_model_path
from rllib_proxmo.rollout.engines import HFEngine, SamplingParams
from rllib_proxmo.testing import build_tiny_chat_model

WORDS = "press red green blue look help the chest <action> </action>".split()


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return str(build_tiny_chat_model(tmp_path_factory.mktemp("tiny"), WORDS, seed=3))


def _module(path: str, **config) -> LLMRLModule:
    return LLMRLModule(model_config={"model_name_or_path": path, **config}, inference_only=False)


def test_token_logp_is_the_same_with_and_without_left_padding(tiny_model_dir):
    module = _module(tiny_model_dir)
    short, long = [4, 12, 9, 5, 13], [4, 12, 9, 7, 14, 5, 13, 8]
    alone = module.forward_inference(
        {INPUT_IDS: torch.tensor([short]), ATTENTION_MASK: torch.ones(1, 5, dtype=torch.long)}
    )
    padded_ids = torch.tensor([[0, 0, 0, *short], long])
    mask = (padded_ids != 0).long()
    batched = module.forward_train({INPUT_IDS: padded_ids, ATTENTION_MASK: mask})
    torch.testing.assert_close(batched[TOKEN_LOGP][0, 3:], alone[TOKEN_LOGP][0], rtol=0, atol=1e-5)
    assert batched[TOKEN_ENTROPY].shape == (2, 7) and (batched[TOKEN_ENTROPY] > 0).all()
    assert batched[TOKEN_LOGP].requires_grad
    tail = module.forward_train({INPUT_IDS: padded_ids, ATTENTION_MASK: mask, SCORED_TOKENS: 3})
    torch.testing.assert_close(tail[TOKEN_LOGP], batched[TOKEN_LOGP][:, -3:], rtol=0, atol=1e-5)
    torch.testing.assert_close(tail[TOKEN_ENTROPY], batched[TOKEN_ENTROPY][:, -3:], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="scored_tokens"):
        module.forward_inference({INPUT_IDS: padded_ids, ATTENTION_MASK: mask, SCORED_TOKENS: 8})


def test_reference_matches_policy_until_the_policy_changes(tiny_model_dir):
    module = _module(tiny_model_dir)
    batch = {INPUT_IDS: torch.tensor([[4, 12, 9, 5, 13]]), ATTENTION_MASK: torch.ones(1, 5, dtype=torch.long)}
    torch.testing.assert_close(
        module.reference_logp(batch), module.forward_inference(batch)[TOKEN_LOGP], rtol=0, atol=0
    )
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.add_(0.05)
    assert not torch.allclose(module.reference_logp(batch), module.forward_inference(batch)[TOKEN_LOGP])


def test_inference_state_leaves_the_reference_behind_and_ships_bf16(tiny_model_dir):
    module = _module(tiny_model_dir, dtype="bfloat16")
    full = module.get_state()
    light = module.get_state(inference_only=True)
    assert REFERENCE_SOURCE in full and REFERENCE_SOURCE not in light
    assert not any(k.startswith("reference::") for k in (*full, *light))
    assert {v.dtype for v in light.values()} == {torch.bfloat16}
    runner_side = LLMRLModule(
        model_config={"model_name_or_path": tiny_model_dir, "dtype": "bfloat16"}, inference_only=True
    )
    assert {p.dtype for p in runner_side.model.parameters()} == {torch.bfloat16}
    with torch.no_grad():
        for parameter in module.model.parameters():
            parameter.mul_(0.5)
    runner_side.set_state(module.get_state(inference_only=True))
    for name, value in runner_side.model.state_dict().items():
        torch.testing.assert_close(value, module.model.state_dict()[name].to(torch.bfloat16), rtol=0, atol=0)
    with pytest.raises(ValueError, match="does not have"):
        runner_side.set_state({"no.such.weight": torch.zeros(1)})


def test_lora_trains_and_ships_only_the_adapter(tiny_model_dir):
    module = _module(tiny_model_dir, lora={"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trainable = [n for n, p in module.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    shipped = module.get_state(inference_only=True)
    assert shipped and all("lora_" in k for k in shipped)


def test_lora_in_bf16_trains_an_fp32_adapter_over_a_bf16_base(tiny_model_dir):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    module = _module(tiny_model_dir, dtype="bfloat16", lora=lora)
    assert {p.dtype for p in module.parameters() if p.requires_grad} == {torch.float32}
    assert {p.dtype for p in module.parameters() if not p.requires_grad} == {torch.bfloat16}
    assert {v.dtype for v in module.get_state(inference_only=True).values()} == {torch.bfloat16}
    runner_side = LLMRLModule(
        model_config={"model_name_or_path": tiny_model_dir, "dtype": "bfloat16", "lora": lora}, inference_only=True
    )
    assert {p.dtype for p in runner_side.parameters()} == {torch.bfloat16}


def _perturb(model: torch.nn.Module, scale: float = 0.05) -> None:
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(scale * torch.randn_like(parameter))


def _dir_bytes(directory: Path) -> int:
    return sum(f.stat().st_size for f in directory.rglob("*") if f.is_file())


def test_checkpoint_stores_the_policy_in_safetensors_and_the_reference_by_its_source(tiny_model_dir, tmp_path):
    module = _module(tiny_model_dir)
    reference = {k: v.clone() for k, v in module._reference.state_dict().items()}
    _perturb(module.model)
    module.save_to_path(tmp_path / "module")
    with safe_open(tmp_path / "module" / WEIGHTS_FILE, "pt") as weights:
        assert set(weights.keys()) == set(module.get_state()) - {REFERENCE_SOURCE}
    fp32_model = sum(p.numel() * 4 for p in module.model.parameters())
    # The policy once (fp32), RLlib's metadata and ctor files; no reference copy, no pickled weights.
    assert _dir_bytes(tmp_path / "module") <= 1.05 * fp32_model
    assert max(f.stat().st_size for f in (tmp_path / "module").glob("*.pkl")) < 20_000

    restored = _module(tiny_model_dir)
    restored.restore_from_path(tmp_path / "module")
    for name, value in module.model.state_dict().items():
        torch.testing.assert_close(restored.model.state_dict()[name], value, rtol=0, atol=0)
    for name, value in reference.items():
        torch.testing.assert_close(restored._reference.state_dict()[name], value, rtol=0, atol=0)


def test_restore_refuses_a_reference_source_that_changed(tiny_model_dir, tmp_path):
    module = _module(tiny_model_dir)
    module.save_to_path(tmp_path / "module")
    other = str(build_tiny_chat_model(tmp_path / "other", WORDS, seed=4))
    with pytest.raises(ValueError, match="SHA-256"):
        _module(other).restore_from_path(tmp_path / "module")


def test_a_reference_that_differs_from_its_source_is_stored_in_full(tiny_model_dir, tmp_path):
    module = _module(tiny_model_dir)
    _perturb(module._reference)
    changed = {"reference::" + k: v.clone() for k, v in module._reference.state_dict().items()}
    fresh = _module(tiny_model_dir)
    policy = {k: v for k, v in module.get_state().items() if k != REFERENCE_SOURCE}
    fresh.set_state({**policy, **changed})
    state = fresh.get_state()
    assert REFERENCE_SOURCE not in state and set(changed) <= set(state)
    fresh.save_to_path(tmp_path / "module")
    restored = _module(tiny_model_dir)
    restored.restore_from_path(tmp_path / "module")
    for name, value in changed.items():
        torch.testing.assert_close(restored._reference.state_dict()[name[len("reference::") :]], value)


def test_lora_checkpoint_holds_the_adapter_and_the_base_by_its_source(tiny_model_dir, tmp_path):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    module = _module(tiny_model_dir, lora=lora)
    with torch.no_grad():
        for name, parameter in module.model.named_parameters():
            if "lora_" in name:
                parameter.add_(0.1)
    module.save_to_path(tmp_path / "module")
    with safe_open(tmp_path / "module" / WEIGHTS_FILE, "pt") as weights:
        assert weights.keys() and all("lora_" in k for k in weights.keys())
    restored = _module(tiny_model_dir, lora=lora)
    restored.restore_from_path(tmp_path / "module")
    for name, value in module.model.state_dict().items():
        torch.testing.assert_close(restored.model.state_dict()[name], value, rtol=0, atol=0)


def test_tied_weights_are_stored_once_and_stay_tied(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tied_dir = tmp_path / "tied"
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, tie_word_embeddings=True)
    model.tie_weights()
    model.save_pretrained(tied_dir)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)
    module = _module(str(tied_dir))
    assert module.model.lm_head.weight.data_ptr() == module.model.model.embed_tokens.weight.data_ptr()
    _perturb(module.model)
    state = module.get_state()
    assert "lm_head.weight" not in state and "lm_head.weight" not in module.get_state(inference_only=True)
    module.save_to_path(tmp_path / "module")
    with safe_open(tmp_path / "module" / WEIGHTS_FILE, "pt") as weights:
        assert "lm_head.weight" not in weights.keys()
    restored = _module(str(tied_dir))
    restored.restore_from_path(tmp_path / "module")
    torch.testing.assert_close(restored.model.lm_head.weight, module.model.lm_head.weight, rtol=0, atol=0)
    assert restored.model.lm_head.weight.data_ptr() == restored.model.model.embed_tokens.weight.data_ptr()


def test_hf_engine_samples_reproducibly_and_stops_at_eos(tiny_model_dir):
    module = _module(tiny_model_dir)
    engine = HFEngine(module.model, module.tokenizer)
    prompts = [[4, 12, 9, 5], [4, 12, 9, 7, 14, 8, 5]]
    first = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=1.0, seed=11))
    again = engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=1.0, seed=11))
    assert first == again
    eos = module.tokenizer.eos_token_id
    for generation in first:
        assert 1 <= len(generation.token_ids) <= 8
        assert generation.stopped == (generation.token_ids[-1] == eos)
        assert module.tokenizer.pad_token_id not in generation.token_ids[:-1] or eos == module.tokenizer.pad_token_id
    greedy = [engine.generate(prompts, SamplingParams(max_new_tokens=8, temperature=0.0, seed=s)) for s in (1, 2)]
    assert greedy[0] == greedy[1]


def test_sampling_params_and_resolver_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match="max_new_tokens"):
        SamplingParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingParams(max_new_tokens=4, temperature=-1)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="config.json"):
        resolve_model_path(str(tmp_path))
    with pytest.raises(ValueError, match="model_name_or_path"):
        LLMRLModule(model_config={}, inference_only=True)


@pytest.mark.slow
def test_the_embedded_model_converts_to_a_plain_checkpoint_a_fine_tuned_copy_saves_from(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    from transformers import AutoModelForCausalLM

    from rllib_proxmo.algorithm.torch.model_loading import load_causal_lm, model_cache_dir, resolve_model_path

    monkeypatch.setenv("RLLIB_PROXMO_CACHE", str(tmp_path / "cache"))
    converted = Path(resolve_model_path("smollm2-135m-instruct"))
    assert converted.parent == model_cache_dir()
    assert "quantization_config" not in json.loads((converted / "config.json").read_text())
    model, _ = load_causal_lm("smollm2-135m-instruct")
    model.save_pretrained(tmp_path / "copy")  # a GGUF-marked checkpoint refused this
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "copy").config.num_hidden_layers == 30
    # A cache converted by an older version (still marked as GGUF-quantised) is converted again.
    config = json.loads((converted / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "gguf"}
    (converted / "config.json").write_text(json.dumps(config))
    assert "quantization_config" not in json.loads(
        (Path(resolve_model_path("smollm2-135m-instruct")) / "config.json").read_text()
    )
