"""A word-level tokenizer for the embedded task, built locally with the `tokenizers` library."""

from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from w2sray.data.synthetic import VOCAB

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]


def build_synthetic_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the synthetic vocabulary; pads on the right by default."""
    vocab = {tok: i for i, tok in enumerate(SPECIALS + VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )
