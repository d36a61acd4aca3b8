"""Build a tiny randomly initialised chat LM on disk, for tests and smoke runs.

The tokenizer is word-level over a caller-given vocabulary (plus special tokens) and
carries a minimal chat template, so the whole RLModule / engine / learner path runs
exactly as with a real model, in milliseconds per step on a CPU.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

SPECIAL_TOKENS = ("<pad>", "<unk>", "<bos>", "<eos>", "<user>", "<assistant>")

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}<user> {{ m['content'] }} <eos> "
    "{% else %}<assistant> {{ m['content'] }} <eos> {% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<assistant> {% endif %}"
)


def build_tiny_chat_model(
    directory: str | Path,
    words: Iterable[str],
    *,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
) -> Path:
    """Save a tiny Llama model and a word-level tokenizer to ``directory``.

    Args:
        directory: Output directory (created).
        words: Vocabulary; text is split on whitespace and punctuation, unknown
            words map to ``<unk>``. Words holding punctuation (e.g. ``"<action>"``)
            become added tokens, matched before splitting.
        hidden_size, num_layers, num_heads: Llama shape.
        seed: Seed of the random initialisation.

    Returns:
        The directory, loadable with ``from_pretrained``.
    """
    vocab_words = sorted(set(words) - set(SPECIAL_TOKENS))
    if not vocab_words:
        raise ValueError("words must hold at least one non-special word")
    vocab = {token: index for index, token in enumerate((*SPECIAL_TOKENS, *vocab_words))}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    backend.decoder = decoders.WordPiece(prefix="##")
    backend.add_special_tokens(list(SPECIAL_TOKENS))
    backend.add_tokens([w for w in vocab_words if not w.isalnum()])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<bos>",
        eos_token="<eos>",
        padding_side="left",
    )
    tokenizer.chat_template = CHAT_TEMPLATE

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=1024,
        pad_token_id=vocab["<pad>"],
        bos_token_id=vocab["<bos>"],
        eos_token_id=vocab["<eos>"],
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )
    model = LlamaForCausalLM(config)
    directory = Path(directory)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
