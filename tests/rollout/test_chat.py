"""The chat framing of a turn, on the embedded SmolLM2-135M-Instruct tokenizer."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from rllib_proxmo.algorithm.torch.model_loading import resolve_model_path
from rllib_proxmo.experiments.scale import CPU_MODEL
from rllib_proxmo.rollout import chat

PROMPT = "Task: put some mug in fridge.\nObservation: You arrive at fridge 1. The fridge 1 is closed."


def test_a_system_prompt_replaces_the_chat_templates_default_one():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(CPU_MODEL))
    default, empty, custom = (chat.prompt_ids(tokenizer, PROMPT, system) for system in (None, "", "Be brief."))
    turn = f"<|im_start|>user\n{PROMPT}<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.decode(default) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n" + turn
    )
    assert tokenizer.decode(empty) == "<|im_start|>system\n<|im_end|>\n" + turn
    assert tokenizer.decode(custom) == "<|im_start|>system\nBe brief.<|im_end|>\n" + turn
    # The CPU default's saving per turn: the default system message is 16 tokens.
    assert len(default) - len(empty) == 16
    # The user turn and the reply's opening are tokenised alike whatever comes before them.
    assert default[-20:] == empty[-20:] == custom[-20:]


def test_a_template_that_refuses_a_system_message_fails_naming_the_setting():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(CPU_MODEL))
    tokenizer.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{{ m['content'] }}{% endfor %}"
    )
    with pytest.raises(ValueError, match=r"system_prompt='': this model's chat template refuses .*System role not"):
        chat.prompt_ids(tokenizer, PROMPT, "")
    assert tokenizer.decode(chat.prompt_ids(tokenizer, PROMPT)) == PROMPT
