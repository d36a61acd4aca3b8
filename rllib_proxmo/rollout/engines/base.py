"""The engine interface used by env runners for LLM generation.

An engine takes already-tokenised prompts (so the token ids the learner trains on
are exactly the ones that were sampled, with no re-tokenisation drift) and returns
the sampled response token ids with their log-probabilities under the distribution
they were drawn from. :mod:`~rllib_proxmo.rollout.engines.factory` builds the
Hugging Face or the vLLM engine, both implementing :class:`InferenceEngine`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

#: Per prompt of a ``generate`` call: None (a free response) or the complete responses it may
#: give, as token ids ending with a stop token.
AnswerChoices = Sequence[Sequence[Sequence[int]] | None]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one batch of responses: everything the sampler applies, nothing else.

    Attributes:
        max_new_tokens: Cap on generated tokens per response (the stop token counts).
        temperature: Softmax temperature; 0 means greedy decoding.
        top_p: Nucleus sampling mass (1.0 disables it).
        seed: Seed of the sampling RNG for this call (None: engine's own RNG state).
    """

    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True)
class Generation:
    """One sampled response.

    Attributes:
        token_ids: Generated token ids, including the stop token when the model
            emitted one; never includes padding.
        text: ``token_ids`` decoded with special tokens removed.
        stopped: True if the model emitted a stop (eos) token, False if
            ``max_new_tokens`` cut the response.
        logprobs: One log-probability per entry of ``token_ids``: the log-softmax of
            the logits divided by the temperature, renormalised over the nucleus when
            ``top_p < 1``, i.e. of the distribution the token was drawn from. Greedy
            decoding (temperature 0) reports the temperature-1 log-probs of the
            greedy tokens. A response held to listed choices reports the same,
            unrestricted log-probs. Empty when the engine does not compute them.
        trunk_states: (P + T - 1, D) fp32 CPU tensor: the input hidden states of the
            policy's lowest trained decoder block at the P prompt positions and the
            first T - 1 response positions (the last token is never fed), when the
            engine was asked to keep them; else None.
    """

    token_ids: tuple[int, ...]
    text: str
    stopped: bool
    logprobs: tuple[float, ...] = ()
    trunk_states: torch.Tensor | None = None


class InferenceEngine(Protocol):
    """Batched generation for env runners."""

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: SamplingParams,
        choices: AnswerChoices | None = None,
    ) -> list[Generation]:
        """Sample one response per prompt (prompts are token ids, unpadded).

        ``choices``: per prompt None or the complete responses (token ids) it may give;
        engines that cannot restrict a response refuse them.
        """

    def update_weights(self, state: Mapping[str, torch.Tensor]) -> None:
        """Load new policy weights (names as in the RLModule's inference-only state)."""

    def pause(self) -> None:
        """No sampling until the next :meth:`update_weights`: free what can be freed meanwhile."""
