"""The token ids of a turn: a prompt as a chat user message, a response as the model's reply.

The env runner samples from :func:`prompt_ids`, and supervised warm-up
(:mod:`rllib_proxmo.sft`) trains on ``prompt_ids + response_ids``, so an expert's
turn is tokenised exactly as a sampled one would be: the reply ends with the
tokenizer's end-of-turn token, the stop token sampling ends on.
"""

from __future__ import annotations

from collections.abc import Sequence

from jinja2 import TemplateError
from transformers import PreTrainedTokenizerBase


def prompt_ids(tokenizer: PreTrainedTokenizerBase, prompt: str, system_prompt: str | None = None) -> tuple[int, ...]:
    """``prompt`` as one user message of the tokenizer's chat template, ready for the reply.

    ``system_prompt`` None leaves the system turn to the template (SmolLM2's and Qwen2.5's write
    a default one, 16 tokens for SmolLM2); a string is the system message, ``""`` an empty one.

    Raises:
        ValueError: for a ``system_prompt`` whose chat template refuses a system message (Gemma's).
    """
    if system_prompt is None:
        messages = [{"role": "user", "content": prompt}]
    else:
        messages = [{"role": "system", "content": system_prompt}, {"role": "user", "content": prompt}]
    try:
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    except TemplateError as error:
        if system_prompt is None:
            raise
        raise ValueError(
            f"model_config system_prompt={system_prompt!r}: this model's chat template refuses a system "
            f"message ({error}); set system_prompt None to keep the template's own framing"
        ) from error
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def response_ids(tokenizer: PreTrainedTokenizerBase, response: str) -> tuple[int, ...]:
    """``response`` as the model would emit it: its tokens, then the eos (end-of-turn) token.

    Raises:
        ValueError: for a tokenizer without an eos token.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos token: a reply could not end")
    return (*tokenizer(response, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id)


def answer_ids(
    tokenizer: PreTrainedTokenizerBase, answers: Sequence[str], max_new_tokens: int
) -> tuple[list[tuple[int, ...]], list[tuple[str, int]]]:
    """The :func:`response_ids` of every answer that fits in ``max_new_tokens``, and each one
    left out with its length in tokens: a sampler holding its answers to ``answers`` could
    not write those out.
    """
    fitting, too_long = [], []
    for answer in answers:
        ids = response_ids(tokenizer, answer)
        if len(ids) <= max_new_tokens:
            fitting.append(ids)
        else:
            too_long.append((answer, len(ids)))
    return fitting, too_long
