"""Word-level tokenizers for the built-in ladder, built locally with the `tokenizers` library.

With no corpus the vocabulary is the synthetic task's; with one (a dataset's split A texts, the
same for every model of a sweep) it is that corpus's most frequent lower-cased words and
punctuation, so the built-in models can train on any local text without a hub tokenizer.
"""

from __future__ import annotations

import re
from collections import Counter

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from w2sray.data.synthetic import VOCAB

SPECIALS = ["[PAD]", "[UNK]", "[BOS]", "[EOS]"]
# The same split as tokenizers' Whitespace pre-tokenizer, so counted words are the words it sees.
_WORDS = re.compile(r"\w+|[^\w\s]+")


def _wrap(vocab: dict[str, int], lowercase: bool) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
    else:
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        bos_token="[BOS]",
        eos_token="[EOS]",
    )


def build_synthetic_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the synthetic vocabulary; pads on the right."""
    return _wrap({tok: i for i, tok in enumerate(SPECIALS + VOCAB)}, lowercase=False)


def build_corpus_tokenizer(texts: list[str], max_vocab: int = 8000) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over the ``max_vocab`` most frequent words of ``texts``.

    Deterministic: ties in frequency are broken alphabetically.
    """
    counts = Counter(w for t in texts for w in _WORDS.findall(t.lower()))
    words = sorted(counts, key=lambda w: (-counts[w], w))[: max_vocab - len(SPECIALS)]
    return _wrap({tok: i for i, tok in enumerate(SPECIALS + words)}, lowercase=True)
