"""Masked-LM pretraining of encoders (``pretrain.objective: mlm``): the masking, the spec's
checks and keys, and a real run through Tune -> Train -> DeepSpeed on a tiny BERT saved with
save_pretrained, whose stored folder the model's ground-truth run then starts from."""

from __future__ import annotations

import math
import os

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoModelForMaskedLM, BertConfig, BertModel, PreTrainedTokenizerFast

from w2sray.artifacts import MODEL_DIR
from w2sray.models import load_model
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import SpecError, parse_spec
from w2sray.store import Store
from w2sray.sweep import execute
from w2sray.train.pretrain import mask_tokens

WORDS = [f"w{i}" for i in range(30)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    """A tiny BERT with a word-level tokenizer that has a mask token."""
    path = tmp_path_factory.mktemp("mlm_bert")
    tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(SPECIALS + WORDS)}, "[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    names = ("pad", "unk", "cls", "sep", "mask")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, **{f"{n}_token": s for n, s in zip(names, SPECIALS, strict=True)}
    )
    torch.manual_seed(0)
    cfg = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )
    BertModel(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    """Documents repeating one word (w3 w3 w3 ...): a masked word is given away by any other
    word of its document, not by word frequencies (uniform: ln 30 = 3.40 nats)."""
    path = tmp_path_factory.mktemp("mlm_corpus") / "corpus.txt"
    g = torch.Generator().manual_seed(0)
    lines = []
    for _ in range(400):
        start, n = torch.randint(30, (1,), generator=g).item(), 6 + (len(lines) % 6)
        lines.append(" ".join([WORDS[start]] * n))
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def spec_raw(source: str, corpus: str, **recipe) -> dict:
    return {
        "name": "mlm",
        "storage": "unused",
        "datasets": [{"name": "synthetic", "n_gt": 64, "n_weak": 32, "n_test": 64}],
        "models": [
            {"name": "raw", "source": source},  # the same encoder without pretraining
            {
                "name": "enc",
                "source": source,
                "pretrain": {
                    "corpus": {"path": corpus},
                    "objective": "mlm",
                    "steps": 150,
                    "lr": 1e-2,
                    "batch_size": 16,
                    "max_length": 16,
                    **recipe,
                },
            },
        ],
        "methods": ["xent"],
        "train": {"epochs": 1, "batch_size": 16, "max_length": 16},
        "resources": {"workers": 1, "cpus_per_worker": 1},
    }


def test_masking_targets_only_real_ordinary_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 35, (64, 20))
    ids[:, 0] = 2  # [CLS]
    mask = torch.ones_like(ids)
    mask[:, 15:] = 0  # padding
    ids[:, 15:] = 0
    inputs, labels = mask_tokens(ids, mask, 0.3, 4, 35, [0, 1, 2, 3, 4], g)
    target = labels != -100
    assert not target[:, 0].any() and not target[:, 15:].any()  # specials and pads never
    assert torch.equal(labels[target], ids[target])  # targets are the original tokens
    assert torch.equal(inputs[~target], ids[~target])  # everything else unchanged
    share = target[:, 1:15].float().mean().item()
    assert 0.25 < share < 0.35
    masked = (inputs[target] == 4).float().mean().item()
    kept = (inputs[target] == ids[target]).float().mean().item()
    assert 0.72 < masked < 0.88 and 0.04 < kept < 0.2  # 80% [MASK], ~10% kept (+ chance)
    # a batch too short to draw a target still gets one (HF's loss is NaN without)
    few = torch.tensor([[2, 7, 3]])
    _, labels = mask_tokens(few, torch.ones_like(few), 1e-9, 4, 35, [0, 1, 2, 3, 4], g)
    assert labels.tolist() == [[-100, 7, -100]]


def test_spec_checks_the_objective_against_the_architecture(bert_dir, corpus_file, tmp_path):
    parse_spec(spec_raw(bert_dir, corpus_file))  # an encoder: fine
    gpt2 = tmp_path / "gpt2"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text('{"model_type": "gpt2"}')
    cases = [
        (spec_raw("w2s-tiny-1", corpus_file), "pretrain.objective", "built-in decoder"),
        (spec_raw(str(gpt2), corpus_file), "models[1].pretrain", "mlm needs an encoder"),
        (spec_raw(bert_dir, corpus_file, objective="clm"), "models[1].pretrain", "causal LM"),
        (spec_raw(bert_dir, corpus_file, mask_prob=1.0), "pretrain.mask_prob", "(0, 1)"),
    ]
    for raw, field, words in cases:
        with pytest.raises(SpecError) as err:
            parse_spec(raw)
        assert any(field in p and words in p for p in err.value.problems), err.value.problems


def test_mask_prob_is_in_the_mlm_key_only(bert_dir, corpus_file):
    def key(**recipe) -> str:
        (pre,) = plan_sweep(parse_spec(spec_raw(bert_dir, corpus_file, **recipe))).pretrain
        return pre.key

    assert key() == key(mask_prob=0.15)  # the default, written or not
    assert key(mask_prob=0.3) != key()
    assert key(objective="mlm") != key(mask_prob=0.2)


def test_mlm_pretraining_run_trains_and_the_model_starts_from_it(
    ray_cluster, bert_dir, corpus_file, tmp_path
):
    raw = {**spec_raw(bert_dir, corpus_file), "storage": str(tmp_path / "store")}
    spec = parse_spec(raw)
    full = plan_sweep(spec)
    (pre,) = full.pretrain
    (gt,) = [r for r in full.gt if r.model.name == "enc"]
    plan = Plan(pretrain=(pre,), gt=(gt,), transfer=())  # the pretrained model's runs only
    store = Store(spec.storage)
    out = execute(spec, plan, store, printer=print)
    assert out.failed == {} and sorted(out.done) == sorted([pre.key, gt.key])

    m = store.read_json(pre.key, "metrics.json")
    assert m["objective"] == "mlm" and m["steps"] == 150
    # far below the frequencies' entropy: the model learned to read the context
    assert m["lm_loss"] < math.log(30) - 1.0 < m["lm_loss_start"], m
    folder = store.local_folder(pre.key, MODEL_DIR)
    mlm = AutoModelForMaskedLM.from_pretrained(folder)  # the head was saved with it
    before = BertModel.from_pretrained(bert_dir).state_dict()
    # what a ground-truth run of the model loads: the pretrained encoder, not the original
    loaded = load_model(folder, seed=0)
    after = loaded.backbone.state_dict()
    assert loaded.pooling == "first"
    name = "embeddings.word_embeddings.weight"
    assert torch.equal(after[name], mlm.bert.state_dict()[name])
    assert not torch.allclose(after[name], before[name])
    assert store.read_json(gt.key, "config.json")["model"]["pretrain"] == pre.key
    assert 0 <= store.read_json(gt.key, "metrics.json")["acc"] <= 1
    assert os.path.exists(os.path.join(folder, "tokenizer.json"))
