"""Generation with Hugging Face ``generate`` on a model shared with an RLModule.

The sampler must be the policy the learner scores: ``softmax(logits / temperature)``
of the same weights, nothing more. ``generate`` normally fills every setting a call
leaves unset from the checkpoint's ``generation_config.json`` (a
``repetition_penalty`` of 1.3, a ``top_k`` of 20, ``suppress_tokens``, ...), which
silently changes the distribution the tokens are drawn from. :class:`HFEngine`
therefore hides the checkpoint's generation config for the duration of each call
and passes a complete one built from :class:`SamplingParams` alone; its only logits
processors are its own (temperature, then top-p), the last of which records each
drawn token's log-probability.

Identical prompts in one call (the N rollouts of a group at turn 0, and any two
episodes of a group that reach the same prompt later) are prefilled once: one
forward pass over the distinct prompts fills a KV cache, which is copied row by row
to every prompt's place before ``generate`` samples from it. Rows keep their order,
so the random draws are the ones an unshared call would make.

Prompts of very different lengths are not padded to the longest: a call is split into
**length buckets** (:func:`length_buckets`), each left-padded to its own longest prompt
and generated in turn from one random stream. A forward pass on a CPU runs at the
compute roofline, so padding costs what real tokens cost: padded to one width, 48 unseen
prompts of 188-389 tokens made 18,672 prompt positions for 13,256 tokens
(``benchmarks/length_buckets.py``).

With ``choices`` (:meth:`HFEngine.generate`), a prompt's response is held to one of the
token sequences listed for it (an env's admissible commands, each written as a complete
answer): the engine's last logits processor (:class:`_ChoicePrefixes`) gives -inf to every
token that continues none of them. The log-probabilities reported are still the model's own, taken
before that mask: the learner's, which knows nothing of the choices.

With ``trunk_block`` set (a policy that trains only its top decoder layers), the
engine also keeps what the frozen blocks computed: the input of block
``trunk_block`` at every position the model was fed (the prompt, then each drawn
token but the last). The learner continues from these hidden states through the
trained blocks only (``LLMRLModule``, ``TRUNK_STATES``), instead of running the
frozen trunk over the same tokens again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from transformers import (
    DynamicCache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    TemperatureLogitsWarper,
    TopPLogitsWarper,
)

from rllib_proxmo.algorithm.torch.llm_rl_module import capture_block_input, decoder_layers
from rllib_proxmo.rollout.engines.base import AnswerChoices, Generation, SamplingParams


def stop_token_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """Every end-of-sequence id of a checkpoint, sorted.

    The union of the generation config's ``eos_token_id`` (an int or a list: chat
    models often list the end-of-turn token besides the end-of-text token), the
    model config's and the tokenizer's.

    Raises:
        ValueError: when none of them names an eos token.
    """
    ids: set[int] = set()
    for source in (_hf_model(model).generation_config.eos_token_id, model.config.eos_token_id, tokenizer.eos_token_id):
        if source is not None:
            ids.update([source] if isinstance(source, int) else source)
    if not ids:
        raise ValueError(f"{type(model).__name__} and its tokenizer name no eos token: generation could never stop")
    return tuple(sorted(ids))


#: Padding a length bucket may add, as a share of its prompts' tokens (:func:`length_buckets`).
MAX_PADDING = 0.25


def length_buckets(lengths: Sequence[int], max_padding: float = MAX_PADDING) -> list[list[int]]:
    """Indices of ``lengths`` in buckets that each pad to their longest with at most ``max_padding`` waste.

    Longest first; a bucket takes the next-longest prompt while ``width x count <= (1 + max_padding) x
    tokens`` holds (``width`` the bucket's first, longest length). Equal lengths are adjacent, so the
    identical prompts of a group share a bucket unless it fills up among them. ``float("inf")``: one bucket.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    buckets: list[list[int]] = []
    tokens = 0
    for index in order:
        if buckets and lengths[buckets[-1][0]] * (len(buckets[-1]) + 1) <= (1 + max_padding) * (
            tokens + lengths[index]
        ):
            buckets[-1].append(index)
            tokens += lengths[index]
        else:
            buckets.append([index])
            tokens = lengths[index]
    return buckets


def _hf_model(model: PreTrainedModel) -> PreTrainedModel:
    """The Transformers model that runs ``generate`` (the base model under a PEFT wrapper)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@contextlib.contextmanager
def _no_checkpoint_generation_defaults(model: PreTrainedModel) -> Iterator[None]:
    """Hide ``model.generation_config`` so that ``generate`` falls back to neutral defaults only."""
    target = _hf_model(model)
    saved = target.generation_config
    target.generation_config = GenerationConfig()
    try:
        yield
    finally:
        target.generation_config = saved


class _DrawnTokenLogProbs(LogitsProcessor):
    """Last logits processor: records log p(drawn token) under the final scores.

    ``generate`` calls the processors, then draws the token from
    ``softmax(scores)``; the token of step k is therefore known at call k + 1 (the
    last column of ``input_ids``) or, for the final step, from the returned
    sequences. Memory stays at one (B, V) array.
    """

    def __init__(self) -> None:
        self.drawn: list[torch.Tensor] = []  # (B,) per step whose token is known
        self.latest: torch.Tensor | None = None  # (B, V) log-softmax of the latest call

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.latest is not None:
            self.drawn.append(self.latest.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.latest = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def logprobs(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """(B, T) log-probs of the returned new tokens (B, T).

        ``generate`` may run a few steps past the end and drop them again (deferred
        stop checks); their records are cut off here.
        """
        steps = new_tokens.shape[1]
        columns = self.drawn[:steps]
        if len(columns) == steps - 1:
            columns.append(self.latest.gather(-1, new_tokens[:, -1:]).squeeze(-1))
        if len(columns) != steps:
            raise RuntimeError(f"recorded {len(self.drawn) + 1} sampling steps for {steps} generated tokens")
        return torch.stack(columns, dim=1)


def _prefix_table(sequences: Sequence[Sequence[int]]) -> dict[tuple[int, ...], set[int]]:
    """Every proper prefix of ``sequences`` -> the tokens that continue it in one of them."""
    table: dict[tuple[int, ...], set[int]] = {}
    for sequence in sequences:
        for end in range(len(sequence)):
            table.setdefault(tuple(sequence[:end]), set()).add(sequence[end])
    return table


class _ChoicePrefixes(LogitsProcessor):
    """Runs after the recorder: a row with choices continues one of its token sequences only.

    At every step a constrained row's tokens that continue none of its sequences from what it
    has generated so far (``input_ids`` past the prompt width) get -inf. Rows without choices,
    and rows past the end of every sequence (finished rows that ``generate`` keeps padding), are
    left as they are.
    """

    def __init__(self, choices: AnswerChoices, width: int) -> None:
        self.width = width
        self.tables = [None if row is None else _prefix_table(row) for row in choices]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        generated = input_ids[:, self.width :].tolist()
        banned = None
        for row, table in enumerate(self.tables):
            allowed = None if table is None else table.get(tuple(generated[row]))
            if allowed is None:
                continue
            if banned is None:
                banned = torch.zeros_like(scores, dtype=torch.bool)
            banned[row] = True
            banned[row, list(allowed)] = False
        return scores if banned is None else scores.masked_fill(banned, float("-inf"))


class HFEngine:
    """Batched sampling with ``model.generate`` (left padding, explicit attention mask).

    The engine holds a reference to the RLModule's model, so weights loaded into the
    module are used at once and :meth:`update_weights` has nothing to copy; it
    generates on the device the model's parameters are on.

    Args:
        model: Causal LM (a PEFT model is fine).
        tokenizer: Its tokenizer; ``pad_token_id`` must be set.
        share_prefill: Prefill identical prompts of a call once (see the module docstring).
        trunk_block: Keep the input hidden states of this decoder block in every
            :attr:`Generation.trunk_states` (None: keep none).
        max_padding: Padding a length bucket may add (:func:`length_buckets`; ``float("inf")``:
            one left-padded batch per call).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        share_prefill: bool = True,
        trunk_block: int | None = None,
        max_padding: float = MAX_PADDING,
    ) -> None:
        if not max_padding >= 0:
            raise ValueError(f"max_padding must be >= 0, got {max_padding}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token: left-padded batches need one")
        if trunk_block is not None and not 0 < trunk_block < len(decoder_layers(model)):
            raise ValueError(f"trunk_block must be in [1, {len(decoder_layers(model)) - 1}], got {trunk_block}")
        self.model = model
        self.tokenizer = tokenizer
        self.share_prefill = share_prefill
        self.trunk_block = trunk_block
        self.max_padding = max_padding
        #: Prompt tokens of the last call that a shared prefill did not compute again.
        self.shared_prefill_tokens = 0
        #: Generation stops at the first of these ids (see :func:`stop_token_ids`).
        self.stop_token_ids = stop_token_ids(model, tokenizer)

    def update_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """No-op: the engine reads the module's own parameters."""

    def pause(self) -> None:
        """No-op: the model is the RLModule's, which stays where it is."""

    def _generation_config(self, params: SamplingParams) -> GenerationConfig:
        """Every setting ``generate`` reads; processors left neutral (the engine adds its own)."""
        return GenerationConfig(
            max_new_tokens=params.max_new_tokens,
            do_sample=params.temperature > 0,
            num_beams=1,
            temperature=1.0,
            top_k=0 if params.temperature > 0 else None,
            top_p=1.0,
            eos_token_id=list(self.stop_token_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            use_cache=True,
        )

    @staticmethod
    def _processors(
        params: SamplingParams, choices: AnswerChoices | None, width: int
    ) -> tuple[LogitsProcessorList, _DrawnTokenLogProbs]:
        recorder = _DrawnTokenLogProbs()
        processors = LogitsProcessorList()
        if params.temperature > 0 and params.temperature != 1.0:
            processors.append(TemperatureLogitsWarper(params.temperature))
        if params.temperature > 0 and params.top_p < 1.0:
            processors.append(TopPLogitsWarper(params.top_p))
        processors.append(recorder)
        if choices is not None and any(row is not None for row in choices):
            processors.append(_ChoicePrefixes(choices, width))
        return processors, recorder

    def _left_padded(self, prompts: Sequence[tuple[int, ...]], width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, width) ids and attention mask of ``prompts``, left-padded, on the model's device."""
        input_ids = torch.full((len(prompts), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        device = next(self.model.parameters()).device
        return input_ids.to(device), attention_mask.to(device)

    def _shared_prefill(
        self, prompts: Sequence[tuple[int, ...]], width: int
    ) -> tuple[DynamicCache, torch.Tensor] | None:
        """KV cache of every prompt but its last token, each distinct prompt computed once.

        Returns the cache and, per prompt, its row among the distinct prompts; None when
        all prompts differ (``generate`` then prefills as usual).
        """
        distinct = list(dict.fromkeys(prompts))
        if not self.share_prefill or len(distinct) == len(prompts) or width < 2:
            return None
        ids, mask = self._left_padded(distinct, width)
        cache = DynamicCache()
        self.model(
            input_ids=ids[:, :-1],
            attention_mask=mask[:, :-1],
            position_ids=(mask[:, :-1].cumsum(-1) - 1).clamp(min=0),
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,
        )
        row_of = {prompt: row for row, prompt in enumerate(distinct)}
        rows = torch.as_tensor([row_of[p] for p in prompts], device=ids.device)
        cache.batch_select_indices(rows)
        self.shared_prefill_tokens += sum(len(p) - 1 for p in prompts) - sum(len(p) - 1 for p in distinct)
        return cache, rows

    @staticmethod
    def _trunk_states(calls: Sequence[torch.Tensor], prefill_rows: torch.Tensor | None, width: int) -> torch.Tensor:
        """(B, width + S, D) block inputs of one call, in column order of the left-padded rows.

        ``calls`` are the block's inputs in call order: the shared prefill's
        (distinct prompts, width - 1, D) when ``prefill_rows`` map prompts to them, then
        ``generate``'s prefill (B, width or 1, D) and one (B, 1, D) per decoding step.
        """
        if prefill_rows is not None:
            calls = [calls[0].index_select(0, prefill_rows), *calls[1:]]
        states = torch.cat(list(calls), dim=1)
        if states.shape[1] < width:
            raise RuntimeError(f"captured {states.shape[1]} prompt positions of {width}")
        return states

    @staticmethod
    def _row_trunk(states: torch.Tensor, row: int, prompt_len: int, width: int, num_tokens: int) -> torch.Tensor:
        """(prompt_len + num_tokens - 1, D) fp32 block inputs of one row: its prompt, then its tokens but the last.

        A copy, not a view of the batch: a turn pickled to the learner carries its own rows only.
        """
        end = width + num_tokens - 1
        if states.shape[1] < end:
            raise RuntimeError(f"captured {states.shape[1] - width} decoding steps for {num_tokens} tokens")
        return states[row, width - prompt_len : end].to("cpu", torch.float32, copy=True)

    @torch.no_grad()
    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        choices: AnswerChoices | None = None,
    ) -> list[Generation]:
        """One response per prompt, generated by length bucket; see :class:`Generation` for what each carries.

        Args:
            prompts: Token ids per prompt, unpadded.
            params: How to sample.
            choices: Per prompt, the complete responses (token ids, the stop token
                included) it may give, or None for a free response; None: every response
                is free. A response is drawn token by token from the model's distribution
                restricted to the tokens that continue one of its choices (greedily at
                temperature 0); its reported log-probs are the unrestricted ones.

        Raises:
            ValueError: for an empty prompt, ``choices`` not one entry per prompt, an empty
                or token-less choice list, a choice that does not end with its only stop
                token or is longer than ``max_new_tokens``, or ``choices`` with ``top_p < 1``
                (the nucleus could leave none of them).
        """
        self.shared_prefill_tokens = 0
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt must hold at least one token")
        if choices is not None:
            self._check_choices(choices, len(prompts), params)
        prompts = [tuple(p) for p in prompts]
        device = next(self.model.parameters()).device
        generations: list[Generation | None] = [None] * len(prompts)
        self.model.eval()
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            for bucket in length_buckets([len(p) for p in prompts], self.max_padding):
                bucket_choices = None if choices is None else [choices[i] for i in bucket]
                batch = self._generate_batch([prompts[i] for i in bucket], params, bucket_choices)
                for index, generation in zip(bucket, batch):
                    generations[index] = generation
        return generations

    def _check_choices(self, choices: AnswerChoices, num_prompts: int, params: SamplingParams) -> None:
        if len(choices) != num_prompts:
            raise ValueError(f"choices must hold one entry per prompt: {len(choices)} for {num_prompts} prompts")
        if params.top_p < 1.0:
            raise ValueError(f"choices cannot be combined with top_p={params.top_p}: the nucleus could leave none")
        stops = set(self.stop_token_ids)
        for row in choices:
            if row is None:
                continue
            if not row or any(len(choice) == 0 for choice in row):
                raise ValueError("a prompt's choices must list at least one response, each of at least one token")
            for choice in row:
                if choice[-1] not in stops or stops.intersection(choice[:-1]) or len(choice) > params.max_new_tokens:
                    raise ValueError(
                        f"every choice must end with its only stop token {sorted(stops)} and fit max_new_tokens="
                        f"{params.max_new_tokens}; got {len(choice)} tokens: {list(choice)[:40]}"
                    )

    def _generate_batch(
        self,
        prompts: Sequence[tuple[int, ...]],
        params: SamplingParams,
        choices: AnswerChoices | None = None,
    ) -> list[Generation]:
        """One left-padded ``generate`` call over ``prompts``, drawing from the current random stream."""
        width = max(len(p) for p in prompts)
        input_ids, attention_mask = self._left_padded(prompts, width)
        processors, recorder = self._processors(params, choices, width)
        with self._capture_trunk() as calls:
            shared = self._shared_prefill(prompts, width)
            cache, prefill_rows = shared if shared is not None else (None, None)
            with _no_checkpoint_generation_defaults(self.model):
                output = self.model.generate(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    past_key_values=cache,
                    generation_config=self._generation_config(params),
                    logits_processor=processors,
                )
        states = None if calls is None else self._trunk_states([c.hidden_states for c in calls], prefill_rows, width)
        new_tokens = output[:, width:]
        logprobs = recorder.logprobs(new_tokens).cpu().tolist()
        stops = set(self.stop_token_ids)
        generations = []
        for index, (row, row_logprobs) in enumerate(zip(new_tokens.tolist(), logprobs)):
            end = next((i + 1 for i, token in enumerate(row) if token in stops), None)
            tokens = row if end is None else row[:end]
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            trunk = None if states is None else self._row_trunk(states, index, len(prompts[index]), width, len(tokens))
            generations.append(
                Generation(tuple(tokens), text, end is not None, tuple(row_logprobs[: len(tokens)]), trunk)
            )
        return generations

    def _capture_trunk(self) -> contextlib.AbstractContextManager:
        """Record the inputs of block :attr:`trunk_block` (yields None when it is not set)."""
        if self.trunk_block is None:
            return contextlib.nullcontext()
        return capture_block_input(decoder_layers(_hf_model(self.model))[self.trunk_block])
