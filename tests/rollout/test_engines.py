"""The Hugging Face engine samples exactly the policy the learner scores, and stops right.

The tiny checkpoint carries a ``generation_config.json`` with a repetition penalty
and a top-k, as real chat checkpoints do: ``model.generate`` would apply both unless
the engine keeps them out.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, GenerationConfig

from rllib_proxmo.algorithm.torch.llm_rl_module import (
    ATTENTION_MASK,
    INPUT_IDS,
    SCORED_TOKENS,
    TOKEN_LOGP,
    LLMRLModule,
    capture_block_input,
    decoder_layers,
)
from rllib_proxmo.rollout.engines import Generation, HFEngine, SamplingParams
from rllib_proxmo.rollout.engines.hf_engine import length_buckets
from rllib_proxmo.testing import build_tiny_chat_model

WORDS = "press red green blue look help the chest <action> </action>".split()
PROMPTS = [[4, 12, 9, 5], [4, 12, 9, 7, 14, 8, 5], [4, 10, 11, 5], [4, 6, 5]]
# What a checkpoint's generation_config.json may hold; none of it is part of the scored policy.
CHECKPOINT_DEFAULTS = {"do_sample": True, "repetition_penalty": 1.3, "top_k": 5}


def _checkpoint(directory, **generation_defaults) -> str:
    build_tiny_chat_model(directory, WORDS, seed=3)
    GenerationConfig(**generation_defaults).save_pretrained(directory)
    return str(directory)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return _checkpoint(tmp_path_factory.mktemp("tiny"), **CHECKPOINT_DEFAULTS)


def _policy(model_dir: str, temperature: float = 1.0) -> LLMRLModule:
    config = {"model_name_or_path": model_dir, "temperature": temperature}
    return LLMRLModule(model_config=config, inference_only=False)


def _learner_logp(policy: LLMRLModule, prompt: list[int], generation: Generation) -> torch.Tensor:
    """(T,) log-probs of the response under the learner's forward pass (fp32, one unpadded row)."""
    ids = torch.tensor([prompt + list(generation.token_ids)])
    batch = {INPUT_IDS: ids, ATTENTION_MASK: torch.ones_like(ids), SCORED_TOKENS: len(generation.token_ids)}
    with torch.no_grad():
        return policy.forward_inference(batch)[TOKEN_LOGP][0]


def _max_gap(policy: LLMRLModule, generations: list[Generation]) -> float:
    gaps = []
    for prompt, generation in zip(PROMPTS, generations, strict=True):
        assert len(generation.logprobs) == len(generation.token_ids) >= 1
        gaps.append((_learner_logp(policy, prompt, generation) - torch.tensor(generation.logprobs)).abs().max())
    return float(max(gaps))


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_sampler_logprobs_equal_the_learners_despite_checkpoint_generation_defaults(model_dir, temperature):
    policy = _policy(model_dir, temperature)
    assert policy.model.generation_config.repetition_penalty == 1.3  # generate() would apply it by default
    engine = HFEngine(policy.model, policy.tokenizer)
    generations = engine.generate(PROMPTS, SamplingParams(max_new_tokens=12, temperature=temperature, seed=1))
    assert _max_gap(policy, generations) <= 1e-5
    # The checkpoint's settings are only hidden during the call, not lost.
    assert policy.model.generation_config.repetition_penalty == 1.3 and policy.model.generation_config.top_k == 5


def test_greedy_takes_the_argmax_path_and_reports_temperature_one_logprobs(model_dir):
    policy = _policy(model_dir, temperature=1.0)
    engine = HFEngine(policy.model, policy.tokenizer)
    generations = engine.generate(PROMPTS, SamplingParams(max_new_tokens=8, temperature=0.0))
    assert _max_gap(policy, generations) <= 1e-5
    for prompt, generation in zip(PROMPTS, generations, strict=True):
        ids = torch.tensor([prompt + list(generation.token_ids)])
        with torch.no_grad():
            logits = policy.model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        # No repetition penalty: every token is the plain argmax (the penalised path repeats less).
        assert logits.argmax(-1).tolist() == list(generation.token_ids)


def test_generation_stops_at_every_eos_id_of_the_checkpoint(tmp_path):
    plain = _checkpoint(tmp_path / "plain")
    policy = _policy(plain)
    greedy = SamplingParams(max_new_tokens=6, temperature=0.0)
    first_token = HFEngine(policy.model, policy.tokenizer).generate(PROMPTS[:1], greedy)[0].token_ids[0]
    eos = policy.tokenizer.eos_token_id
    assert first_token != eos
    # An end-of-turn id listed next to eos in generation_config.json, as chat checkpoints do.
    two_stops = _checkpoint(tmp_path / "two_stops", eos_token_id=[eos, first_token])
    policy = _policy(two_stops)
    engine = HFEngine(policy.model, policy.tokenizer)
    assert engine.stop_token_ids == tuple(sorted({eos, first_token}))
    [generation] = engine.generate(PROMPTS[:1], greedy)
    assert generation.token_ids == (first_token,) and generation.stopped and len(generation.logprobs) == 1
    for generation in engine.generate(PROMPTS * 4, SamplingParams(max_new_tokens=6, temperature=1.0, seed=5)):
        inner = generation.token_ids[:-1]
        assert not set(inner) & set(engine.stop_token_ids)
        assert generation.stopped == (generation.token_ids[-1] in engine.stop_token_ids)


def test_responses_cut_at_max_new_tokens_are_flagged(model_dir):
    policy = _policy(model_dir)
    engine = HFEngine(policy.model, policy.tokenizer)
    generations = engine.generate(PROMPTS * 4, SamplingParams(max_new_tokens=3, temperature=1.0, seed=2))
    assert any(not g.stopped for g in generations)
    for generation in generations:
        if generation.stopped:
            assert generation.token_ids[-1] in engine.stop_token_ids
        else:
            assert len(generation.token_ids) == 3 and not set(generation.token_ids) & set(engine.stop_token_ids)
        assert len(generation.logprobs) == len(generation.token_ids)


def _choices(eos: int) -> list[list[tuple[int, ...]] | None]:
    """Listed answers of :data:`PROMPTS`: two sharing a first token, a short one; none; one; two."""
    return [[(12, 9, eos), (12, 7, eos), (10, eos)], None, [(6, 6, 6, eos)], [(11, eos), (8, 13, eos)]]


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_choices_hold_each_response_to_a_listed_answer_and_keep_the_models_logprobs(model_dir, temperature):
    policy = _policy(model_dir, temperature or 1.0)
    engine = HFEngine(policy.model, policy.tokenizer)
    eos = policy.tokenizer.eos_token_id
    # The first prompt once more, with other choices: the shared prefill serves both rows.
    prompts, choices = [*PROMPTS, PROMPTS[0]], [*_choices(eos), [(9, 9, eos), (6, eos)]]
    generations = engine.generate(prompts, SamplingParams(12, temperature, seed=2), choices)
    assert engine.shared_prefill_tokens == len(PROMPTS[0]) - 1
    for row, generation in zip(choices, generations, strict=True):
        assert row is None or (generation.token_ids in row and generation.stopped)
    # The recorded log-probs are the model's own, which the learner computes, not the restricted ones.
    assert _max_gap(policy, generations[: len(PROMPTS)]) <= 1e-5
    if temperature == 0.0:
        # Greedy: at each step the likeliest of the tokens that continue a listed answer.
        with torch.no_grad():
            logits = policy.model(torch.tensor([PROMPTS[0]])).logits[0, -1]
        first = 12 if logits[12] > logits[10] else 10
        assert generations[0].token_ids[0] == first


def test_every_listed_answer_can_be_drawn_and_malformed_choices_are_refused(model_dir):
    policy = _policy(model_dir)
    engine = HFEngine(policy.model, policy.tokenizer)
    eos = policy.tokenizer.eos_token_id
    listed = _choices(eos)[:1]
    drawn = [engine.generate(PROMPTS[:1], SamplingParams(12, 1.0, seed=seed), listed)[0] for seed in range(40)]
    assert {g.token_ids for g in drawn} == set(listed[0])
    params = SamplingParams(12, 1.0)
    for bad, message in [
        ([[(10, eos)]], "one entry per prompt"),
        ([[(10, eos)], None, [], None], "at least one response"),
        ([[(10, 11)], None, None, None], "must end with its only stop token"),
        ([[(10, eos, 11, eos)], None, None, None], "must end with its only stop token"),
        ([[(10,) * 12 + (eos,)], None, None, None], "fit max_new_tokens=12"),
    ]:
        with pytest.raises(ValueError, match=message):
            engine.generate(PROMPTS, params, bad)
    with pytest.raises(ValueError, match="top_p=0.9"):
        engine.generate(PROMPTS, SamplingParams(12, 1.0, top_p=0.9), [None] * len(PROMPTS))


def test_nucleus_logprobs_are_renormalised_over_the_nucleus(model_dir):
    policy = _policy(model_dir)
    engine = HFEngine(policy.model, policy.tokenizer)
    nucleus = engine.generate(PROMPTS, SamplingParams(max_new_tokens=6, temperature=1.0, top_p=0.5, seed=4))
    raised = []
    for prompt, generation in zip(PROMPTS, nucleus, strict=True):
        # A drawn token's nucleus probability is at least its full-softmax probability.
        raised.append(torch.tensor(generation.logprobs) - _learner_logp(policy, prompt, generation))
    raised = torch.cat(raised)
    assert raised.min() >= -1e-6 and raised.max() > 0.1


def test_engine_needs_a_pad_token(tmp_path):
    policy = _policy(_checkpoint(tmp_path / "model"))
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "model")
    tokenizer.pad_token = None
    with pytest.raises(ValueError, match="pad token"):
        HFEngine(policy.model, tokenizer)


# Rows 0, 2 and 4 are one prompt (a group at turn 0), rows 1 and 3 another.
SHARED_PROMPTS = [PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[3]]


def test_identical_prompts_are_prefilled_once_and_sample_what_an_unshared_call_samples(model_dir):
    policy = _policy(model_dir)
    params = SamplingParams(max_new_tokens=6, temperature=1.0, seed=11)
    shared = HFEngine(policy.model, policy.tokenizer)
    generations = shared.generate(SHARED_PROMPTS, params)
    # Two repeats of a 7-token prompt and one of a 4-token prompt: 2 * 6 + 1 * 3 prefill tokens saved.
    assert shared.shared_prefill_tokens == 15
    unshared = HFEngine(policy.model, policy.tokenizer, share_prefill=False)
    reference = unshared.generate(SHARED_PROMPTS, params)
    assert unshared.shared_prefill_tokens == 0
    assert [g.token_ids for g in generations] == [g.token_ids for g in reference]
    for prompt, generation in zip(SHARED_PROMPTS, generations, strict=True):
        gap = (_learner_logp(policy, list(prompt), generation) - torch.tensor(generation.logprobs)).abs().max()
        assert float(gap) < 1e-4


@pytest.mark.parametrize("prompts", [SHARED_PROMPTS, PROMPTS], ids=["shared-prefill", "distinct"])
def test_kept_trunk_states_are_the_trained_blocks_input_of_a_full_pass(model_dir, prompts):
    policy = LLMRLModule(model_config={"model_name_or_path": model_dir, "trainable_layers": 1}, inference_only=True)
    block = policy.first_trained_block
    engine = HFEngine(policy.model, policy.tokenizer, trunk_block=block)
    # Enough tokens that some rows stop before others, so finished rows keep being fed padding.
    generations = engine.generate(prompts * 2, SamplingParams(max_new_tokens=8, temperature=1.0, seed=7))
    assert len({len(g.token_ids) for g in generations}) > 1
    for prompt, generation in zip(prompts * 2, generations, strict=True):
        fed = torch.tensor([list(prompt) + list(generation.token_ids[:-1])])
        with capture_block_input(decoder_layers(policy.model)[block]) as captured, torch.no_grad():
            policy.model(input_ids=fed)
        assert generation.trunk_states.dtype == torch.float32 and generation.trunk_states.device.type == "cpu"
        # Its own storage, not a view of the whole batch (which pickling would ship with every turn).
        assert generation.trunk_states.untyped_storage().nbytes() == generation.trunk_states.nbytes
        torch.testing.assert_close(generation.trunk_states, captured[0].hidden_states[0], atol=1e-5, rtol=0)
    assert HFEngine(policy.model, policy.tokenizer).generate(prompts, SamplingParams(4, seed=1))[0].trunk_states is None
    with pytest.raises(ValueError, match=r"trunk_block must be in \[1, 1\]"):
        HFEngine(policy.model, policy.tokenizer, trunk_block=0)


def test_length_buckets_bound_the_padding_and_keep_every_prompt_once():
    lengths = [480, 150, 300, 310, 150, 460, 290, 155]
    buckets = length_buckets(lengths, max_padding=0.25)
    assert sorted(i for bucket in buckets for i in bucket) == list(range(len(lengths)))
    for bucket in buckets:
        width, tokens = max(lengths[i] for i in bucket), sum(lengths[i] for i in bucket)
        assert width * len(bucket) <= 1.25 * tokens
    assert buckets == [[0, 5, 3, 2], [6], [7, 1, 4]]
    assert length_buckets(lengths, max_padding=float("inf")) == [[0, 5, 3, 2, 6, 7, 1, 4]]
    assert length_buckets([5, 5, 5], max_padding=0.0) == [[0, 1, 2]]


def test_length_buckets_generate_what_one_padded_batch_generates(model_dir):
    policy = _policy(model_dir)
    params = SamplingParams(max_new_tokens=6, temperature=0.0, seed=0)
    bucketed = HFEngine(policy.model, policy.tokenizer, max_padding=0.0).generate(PROMPTS, params)
    one_batch = HFEngine(policy.model, policy.tokenizer, max_padding=float("inf")).generate(PROMPTS, params)
    assert [g.token_ids for g in bucketed] == [g.token_ids for g in one_batch]
    assert max(abs(a - b) for x, y in zip(bucketed, one_batch) for a, b in zip(x.logprobs, y.logprobs)) < 1e-4
    assert _max_gap(policy, bucketed) < 1e-4


def test_negative_padding_allowance_is_refused(model_dir):
    policy = _policy(model_dir)
    with pytest.raises(ValueError, match="max_padding must be >= 0"):
        HFEngine(policy.model, policy.tokenizer, max_padding=-0.1)
