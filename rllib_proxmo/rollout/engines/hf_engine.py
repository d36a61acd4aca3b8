"""Generation with Hugging Face ``generate`` on a model shared with an RLModule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rllib_proxmo.rollout.engines.base import Generation, SamplingParams


class HFEngine:
    """Batched sampling with ``model.generate`` (left padding, explicit attention mask).

    The engine holds a reference to the RLModule's model, so weights loaded into the
    module are used at once and :meth:`update_weights` has nothing to copy.
    """

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.model = model
        self.tokenizer = tokenizer

    def update_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """No-op: the engine reads the module's own parameters."""

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams) -> list[Generation]:
        if not prompts:
            return []
        if any(len(p) == 0 for p in prompts):
            raise ValueError("every prompt must hold at least one token")
        pad_id = self.tokenizer.pad_token_id
        eos_id = self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):
            input_ids[row, width - len(prompt) :] = torch.as_tensor(prompt, dtype=torch.long)
            attention_mask[row, width - len(prompt) :] = 1
        device = next(self.model.parameters()).device
        greedy = params.temperature == 0
        sampling_kwargs = {} if greedy else {"temperature": params.temperature, "top_p": params.top_p, "top_k": 0}
        self.model.eval()
        with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
            if params.seed is not None:
                torch.manual_seed(params.seed)
            output = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                do_sample=not greedy,
                max_new_tokens=params.max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=eos_id,
                **sampling_kwargs,
            )
        generations = []
        for row in output[:, width:].tolist():
            stopped = eos_id in row
            tokens = row[: row.index(eos_id) + 1] if stopped else row
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            generations.append(Generation(tuple(tokens), text, stopped))
        return generations
