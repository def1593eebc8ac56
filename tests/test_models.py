"""Tests for w2sray.models: pooling, the classifier head, and the model registry/loader."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import BertConfig, BertModel, GPT2Config, GPT2Model, PreTrainedTokenizerFast

from w2sray.data.synthetic import VOCAB
from w2sray.losses import compute_loss
from w2sray.models import (
    W2SClassifier,
    enable_gradient_checkpointing,
    load_model,
    pool,
    resolve_model_source,
)

# ------------------------------------------------------------------------------------------------
# pool()


def hidden_and_masks():
    hidden = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    right = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    left = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    return hidden, right, left


def test_pool_last():
    hidden, right, left = hidden_and_masks()
    torch.testing.assert_close(
        pool(hidden, right, "last"), torch.stack([hidden[0, 2], hidden[1, 4]])
    )
    torch.testing.assert_close(
        pool(hidden, left, "last"), torch.stack([hidden[0, 4], hidden[1, 4]])
    )


def test_pool_first():
    hidden, right, left = hidden_and_masks()
    torch.testing.assert_close(
        pool(hidden, right, "first"), torch.stack([hidden[0, 0], hidden[1, 0]])
    )
    torch.testing.assert_close(
        pool(hidden, left, "first"), torch.stack([hidden[0, 2], hidden[1, 0]])
    )


def test_pool_mean():
    hidden, right, left = hidden_and_masks()
    torch.testing.assert_close(
        pool(hidden, right, "mean"), torch.stack([hidden[0, :3].mean(0), hidden[1].mean(0)])
    )
    torch.testing.assert_close(
        pool(hidden, left, "mean"), torch.stack([hidden[0, 2:].mean(0), hidden[1].mean(0)])
    )


def test_pool_pad_id_is_irrelevant():
    """Pooling follows the mask, not token values: a hidden state equal to 0 is still pooled."""
    hidden = torch.zeros(1, 4, 2)
    hidden[0, 1] = torch.tensor([5.0, -1.0])
    mask = torch.tensor([[1, 1, 0, 0]])
    torch.testing.assert_close(pool(hidden, mask, "last"), torch.tensor([[5.0, -1.0]]))


def test_pool_unknown():
    hidden, right, _ = hidden_and_masks()
    with pytest.raises(ValueError, match="unknown pooling"):
        pool(hidden, right, "max")


# ------------------------------------------------------------------------------------------------
# W2SClassifier: left and right padding give the same logits


def pad_batch(seqs: list[list[int]], pad: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for j, s in enumerate(seqs):
        sl = slice(width - len(s), width) if left else slice(0, len(s))
        ids[j, sl] = torch.tensor(s)
        mask[j, sl] = 1
    return ids, mask


def assert_padding_invariant(clf: W2SClassifier, seqs: list[list[int]], pad: int) -> None:
    clf.eval()
    with torch.no_grad():
        right = clf(*pad_batch(seqs, pad, left=False))
        left = clf(*pad_batch(seqs, pad, left=True))
        alone = torch.cat([clf(*pad_batch([s], pad, left=False)) for s in seqs])
    assert right.shape == (len(seqs), 2)
    torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=1e-4)


def test_builtin_classifier_left_right_padding_identical():
    loaded = load_model("w2s-tiny-2", seed=0)
    assert loaded.pooling == "last"
    tok = loaded.tokenizer
    clf = W2SClassifier(loaded.backbone, loaded.pooling)
    seqs = [tok("w3 good1 . not bad2 . very good4 .")["input_ids"], tok("bad5 .")["input_ids"]]
    assert len(seqs[0]) != len(seqs[1])
    assert_padding_invariant(clf, seqs, tok.pad_token_id)


@pytest.mark.parametrize("pooling", ["first", "mean"])
def test_builtin_classifier_other_poolings_padding_invariant(pooling):
    loaded = load_model("w2s-tiny-1", seed=1)
    tok = loaded.tokenizer
    clf = W2SClassifier(loaded.backbone, pooling)
    seqs = [tok("good1 . not bad2 . w1 .")["input_ids"], tok("not good3 .")["input_ids"]]
    assert_padding_invariant(clf, seqs, tok.pad_token_id)


def test_classifier_backbone_without_position_ids():
    """A backbone whose forward takes no position_ids is called without them."""

    class Stub(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = GPT2Config(n_embd=4)
            self.emb = torch.nn.Embedding(10, 4)

        def forward(self, input_ids, attention_mask):
            class Out:
                last_hidden_state = self.emb(input_ids)

            return Out()

    clf = W2SClassifier(Stub(), "last")
    assert not clf.takes_position_ids
    assert clf(torch.tensor([[1, 2, 0]]), torch.tensor([[1, 1, 0]])).shape == (1, 2)
    assert W2SClassifier(load_model("w2s-tiny-1", seed=0).backbone, "last").takes_position_ids


def test_builtin_models_seeded():
    a = load_model("w2s-tiny-1", seed=3).backbone.state_dict()
    b = load_model("w2s-tiny-1", seed=3).backbone.state_dict()
    c = load_model("w2s-tiny-1", seed=4).backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# Gradient checkpointing and precision


def _loss_and_grads(checkpointing: bool) -> tuple[torch.Tensor, dict[str, torch.Tensor], int]:
    """One train-mode forward/backward of a built-in model; also how often block 0's attention
    started (a pre-hook: torch stops a recompute early, before later forward hooks fire)."""
    loaded = load_model("w2s-tiny-2", seed=0)
    if checkpointing:
        enable_gradient_checkpointing(loaded.backbone, "w2s-tiny-2")
    torch.manual_seed(0)  # the head's init
    clf = W2SClassifier(loaded.backbone, loaded.pooling).train()
    calls = []
    loaded.backbone.h[0].attn.register_forward_pre_hook(lambda *a: calls.append(1))
    tok = loaded.tokenizer
    texts = ["w3 good1 . not bad2 . very good4 .", "bad5 .", "not not good2 . w1 w2 ."]
    ids, mask = pad_batch([tok(t)["input_ids"] for t in texts], tok.pad_token_id, left=False)
    targets = torch.tensor([[0.2, 0.8], [0.9, 0.1], [0.4, 0.6]])
    loss = compute_loss("xent", clf(ids, mask), targets, 0.0, {})
    loss.backward()
    grads = {n: p.grad.clone() for n, p in clf.named_parameters() if p.grad is not None}
    return loss.detach(), grads, len(calls)


def test_gradient_checkpointing_same_loss_and_gradients():
    loss_off, grads_off, calls_off = _loss_and_grads(False)
    loss_on, grads_on, calls_on = _loss_and_grads(True)
    assert (calls_off, calls_on) == (1, 2)  # checkpointing really recomputed block 0
    torch.testing.assert_close(loss_on, loss_off, atol=1e-5, rtol=0)
    assert grads_on.keys() == grads_off.keys() and len(grads_on) > 10
    for name, g in grads_off.items():
        torch.testing.assert_close(grads_on[name], g, atol=1e-5, rtol=0, msg=name)


def test_gradient_checkpointing_unsupported_names_the_model():
    with pytest.raises(ValueError, match=r"model 'my/model' \(Linear\) does not support gradient"):
        enable_gradient_checkpointing(torch.nn.Linear(2, 2), "my/model")


def test_classifier_head_float32_on_bf16_backbone():
    """A bf16 backbone (as loaded on GPU) under a float32 head gives float32 logits."""
    loaded = load_model("w2s-tiny-1", seed=0)
    clf = W2SClassifier(loaded.backbone.to(torch.bfloat16), "mean")
    ids, mask = pad_batch([[3, 4, 5], [6, 7]], loaded.tokenizer.pad_token_id, left=False)
    logits = clf(ids, mask)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


# ------------------------------------------------------------------------------------------------
# Local checkpoints: tiny GPT-2 and BERT saved with save_pretrained, loaded through load_model


def word_tokenizer(specials: list[str], **special_kwargs: str) -> PreTrainedTokenizerFast:
    vocab = {t: i for i, t in enumerate(specials + VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", **special_kwargs)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_gpt2")
    # GPT-2 style: no pad token in the tokenizer, load_model must set one.
    tok = word_tokenizer(["[UNK]", "<|endoftext|>"], eos_token="<|endoftext|>")
    assert tok.pad_token is None
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(tok), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2Model(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny_bert")
    tok = word_tokenizer(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]"],
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        pad_token_id=tok.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_load_local_gpt2(gpt2_dir):
    loaded = load_model(str(gpt2_dir), seed=0)
    assert loaded.backbone.config.model_type == "gpt2"
    assert loaded.pooling == "last"
    assert loaded.tokenizer.pad_token == "<|endoftext|>"
    assert loaded.tokenizer.pad_token_id is not None
    assert load_model(str(gpt2_dir), seed=0, pooling="mean").pooling == "mean"
    tok = loaded.tokenizer
    clf = W2SClassifier(loaded.backbone, loaded.pooling)
    seqs = [tok("good1 . not bad2 . w4 w5 .")["input_ids"], tok("bad3 .")["input_ids"]]
    assert_padding_invariant(clf, seqs, tok.pad_token_id)


def test_load_local_bert(bert_dir):
    loaded = load_model(str(bert_dir), seed=0)
    assert loaded.backbone.config.model_type == "bert"
    assert loaded.pooling == "first"
    assert loaded.tokenizer.pad_token == "[PAD]"
    tok = loaded.tokenizer
    clf = W2SClassifier(loaded.backbone, loaded.pooling)
    cls = tok.cls_token_id
    seqs = [[cls, *tok("good1 . not bad2 . w4 .")["input_ids"]], [cls, *tok("bad3 .")["input_ids"]]]
    assert_padding_invariant(clf, seqs, tok.pad_token_id)


def test_load_dtype(tmp_path, gpt2_dir):
    """float32 unless bf16 is asked for, even from a bf16 checkpoint (transformers >= 5 would
    otherwise load the checkpoint's own dtype)."""
    assert next(load_model(str(gpt2_dir), seed=0).backbone.parameters()).dtype == torch.float32
    bf16 = load_model(str(gpt2_dir), seed=0, dtype=torch.bfloat16).backbone
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    bf16.save_pretrained(tmp_path)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / f).write_bytes((gpt2_dir / f).read_bytes())
    again = load_model(str(tmp_path), seed=0).backbone
    assert all(p.dtype == torch.float32 for p in again.parameters())


def test_saved_weights_are_loaded(gpt2_dir):
    """Weights come from the checkpoint, not from the seed."""
    a = load_model(str(gpt2_dir), seed=0).backbone.state_dict()
    b = load_model(str(gpt2_dir), seed=99).backbone.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------------------------
# resolve_model_source


def test_resolve_builtin_and_hub_ids():
    assert resolve_model_source("w2s-tiny-1") is None
    assert "unknown built-in model" in resolve_model_source("w2s-tiny-0")
    assert resolve_model_source("some-org/some-model") is None  # hub ids are not checked offline


def test_resolve_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    problem = resolve_model_source(str(missing), check_only=True)
    assert problem == f"local model directory {str(missing)!r} does not exist"
    assert "does not exist" in resolve_model_source("./definitely/not/here")


def test_resolve_dir_without_config(tmp_path):
    (tmp_path / "weights.bin").write_bytes(b"")
    problem = resolve_model_source(str(tmp_path))
    assert problem == f"local model directory {str(tmp_path)!r} has no config.json"
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert resolve_model_source(str(tmp_path)) is None


def test_resolve_file_not_dir(tmp_path):
    f = tmp_path / "config.json"
    f.write_text("{}")
    assert "does not exist" in resolve_model_source(str(f))


def test_resolve_saved_checkpoints(gpt2_dir, bert_dir):
    assert resolve_model_source(str(gpt2_dir)) is None
    assert resolve_model_source(str(bert_dir)) is None


def test_generative_loads_the_causal_lm_around_the_checkpoint(gpt2_dir):
    """lm_head=True (generative fine-tuning) loads AutoModelForCausalLM; its base model holds the
    same checkpoint weights the classifier would load, and the LM head is tied to them."""
    loaded = load_model(str(gpt2_dir), seed=0, lm_head=True)
    assert loaded.lm is not None and loaded.lm.base_model is loaded.backbone
    plain = load_model(str(gpt2_dir), seed=0).backbone.state_dict()
    got = loaded.backbone.state_dict()
    assert got.keys() == plain.keys()
    assert all(torch.equal(got[k], plain[k]) for k in plain)
    assert loaded.lm.get_output_embeddings().weight is loaded.backbone.wte.weight


def test_encoders_refuse_generative_finetuning(bert_dir):
    with pytest.raises(ValueError, match="generative fine-tuning needs a causal LM"):
        load_model(str(bert_dir), seed=0, lm_head=True)
