"""Model registry: the built-in tiny ladder, hub names and local paths, all behind one loader."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

# Built-in ladder for the embedded offline task: GPT-2 shaped causal LMs of growing size, built
# from configs (random init, seeded), so the quickstart needs no download.
BUILTIN_LADDER: dict[str, dict[str, int]] = {
    "w2s-tiny-1": dict(n_layer=1, n_embd=16, n_head=1),
    "w2s-tiny-2": dict(n_layer=2, n_embd=48, n_head=2),
    "w2s-tiny-3": dict(n_layer=2, n_embd=96, n_head=4),
    "w2s-tiny-4": dict(n_layer=4, n_embd=160, n_head=4),
}

# Encoder families pool their first ([CLS]) token; everything else is treated as a causal LM and
# pools its last real token.
ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "deberta",
    "deberta-v2",
    "distilbert",
    "electra",
    "albert",
    "mpnet",
    "modernbert",
}


@dataclass
class Loaded:
    backbone: torch.nn.Module
    tokenizer: object  # a transformers PreTrainedTokenizer(Fast)
    pooling: str  # last | first | mean
    lm: torch.nn.Module | None = None  # the causal LM around ``backbone`` (lm_head=True)


def is_builtin(source: str) -> bool:
    return source in BUILTIN_LADDER


def resolve_model_source(source: str, check_only: bool = False) -> str | None:
    """Return a problem with ``source`` (for spec validation) or None when it looks loadable.

    Hub ids cannot be checked offline; local paths must exist and hold a config.json.
    """
    if is_builtin(source):
        return None
    if source.startswith("w2s-tiny"):
        return f"unknown built-in model {source!r} (built-ins: {', '.join(BUILTIN_LADDER)})"
    looks_local = source.startswith(("/", "./", "../", "~")) or os.path.exists(source)
    if looks_local:
        path = os.path.expanduser(source)
        if not os.path.isdir(path):
            return f"local model directory {source!r} does not exist"
        if not os.path.exists(os.path.join(path, "config.json")):
            return f"local model directory {source!r} has no config.json"
    return None


def load_model(
    source: str,
    seed: int,
    revision: str | None = None,
    pooling: str = "auto",
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
    corpus: list[str] | None = None,
    lm_head: bool | str = False,
) -> Loaded:
    """Load a backbone and its tokenizer: built-in (from config), hub id or local path.

    Built-in models get a word-level tokenizer: over ``corpus`` (the dataset's split A texts)
    when given, else over the synthetic task's vocabulary.

    ``lm_head`` loads the causal LM (its language-modelling head included, for generative
    fine-tuning and causal-LM pretraining); ``backbone`` is then its base model, sharing its
    parameters. Encoders raise. ``lm_head="mlm"`` loads an encoder with its masked-LM head
    (masked-LM pretraining); built-in models (decoders) and causal LMs raise.

    ``dtype`` applies to hub and local models (built-ins are always float32); None loads them
    in float32. Pass it explicitly: transformers >= 5 otherwise loads the checkpoint's own dtype
    (bf16 for most recent models), which an fp32 run must not train in.
    """
    # Import the model modules before any deepspeed.zero.Init context (see DESIGN.md).
    import transformers
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    if is_builtin(source):
        from w2sray.data.tokenizer import build_corpus_tokenizer, build_synthetic_tokenizer

        tok = build_corpus_tokenizer(corpus) if corpus else build_synthetic_tokenizer()
        cfg = transformers.GPT2Config(
            vocab_size=len(tok),
            n_positions=512,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            resid_pdrop=0.0,
            embd_pdrop=0.0,
            attn_pdrop=0.0,
            **BUILTIN_LADDER[source],
        )
        if lm_head == "mlm":
            raise ValueError(
                f"{source!r} is a built-in decoder: masked-LM pretraining needs an encoder"
            )
        lm = transformers.GPT2LMHeadModel(cfg) if lm_head else None
        backbone = lm.transformer if lm is not None else transformers.GPT2Model(cfg)
        model_type = "gpt2"
    else:
        from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

        path = os.path.expanduser(source)
        kw = dict(revision=revision, trust_remote_code=trust_remote_code)
        tok = AutoTokenizer.from_pretrained(path, **kw)
        cfg = AutoConfig.from_pretrained(path, **kw)
        model_type = cfg.model_type
        lm = None
        if lm_head == "mlm":
            if model_type not in ENCODER_TYPES or tok.mask_token_id is None:
                raise ValueError(
                    f"masked-LM pretraining needs an encoder with a mask token; {source!r} is "
                    f"a {model_type} model: use objective clm"
                )
            lm = AutoModelForMaskedLM.from_pretrained(path, dtype=dtype or torch.float32, **kw)
            backbone = lm.base_model
        elif lm_head:
            if model_type in ENCODER_TYPES:
                raise ValueError(
                    f"generative fine-tuning needs a causal LM; {source!r} is a {model_type} "
                    "encoder: drop `generative` from the method or use a causal LM"
                )
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or torch.float32, **kw)
            backbone = lm.base_model
        else:
            backbone = AutoModel.from_pretrained(path, dtype=dtype or torch.float32, **kw)
        if tok.pad_token is None:  # GPT-2 style tokenizers ship without one
            tok.pad_token = tok.eos_token or tok.unk_token
    if pooling == "auto":
        pooling = "first" if model_type in ENCODER_TYPES else "last"
    return Loaded(backbone=backbone, tokenizer=tok, pooling=pooling, lm=lm)


def enable_gradient_checkpointing(backbone: torch.nn.Module, name: str) -> None:
    """Turn on gradient (activation) checkpointing in a transformers backbone: its layers'
    activations are recomputed in the backward pass instead of stored. Raise ValueError naming
    ``name`` when the model does not support it."""
    if not getattr(backbone, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"model {name!r} ({type(backbone).__name__}) does not support gradient "
            "checkpointing: set train.gradient_checkpointing to false for it"
        )
    # Non-reentrant torch checkpointing: also correct when the layer inputs need no grad.
    kwargs = {"use_reentrant": False}
    if hasattr(backbone, "activation_checkpointing_enable"):  # the name since transformers 5.x
        backbone.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if getattr(backbone.config, "use_cache", False):  # a KV cache is useless here, and warns
        backbone.config.use_cache = False
