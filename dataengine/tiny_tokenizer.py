"""Byte-level BPE tokenizers trained in-process, for the tiny random models (no downloads)."""

from __future__ import annotations


def train_byte_bpe(corpus: list[str], vocab_size: int, special_tokens: list[str]):
    """A `tokenizers.Tokenizer` (byte-level BPE) trained on `corpus`; deterministic for a corpus."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=special_tokens, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tk
