"""How the `latent` task and the pretrained tiny ladder were sized: the whole weak-to-strong
experiment in one process with plain PyTorch (no Ray, no DeepSpeed), fast enough to try settings.

For each setting: pretrain each ladder model with the causal-LM objective on an unlabeled corpus
of the task (another seed of the generator), fine-tune it on split A's ground truth (weak
performance / ceiling), have it label split B, fine-tune each stronger model on each weaker
model's soft labels, and print the GT accuracies, every pair's gap and PGR (xent), the
Bayes-optimal accuracy of the test split and the time of each phase. ``--probe`` also fits a
linear probe (logistic regression) on each pretrained model's frozen features (mean- and
last-token pooled, fitted on split A, scored on test): a quick check that pretraining made the
label linearly decodable. The same model code (w2sray.models), tokenizer, batching
(w2sray.train.loop.Encoded), lr schedule, data order and losses as a sweep's runs, with the
product's defaults (AdamW, weight decay 0, gradient clipping 1.0).

The defaults are the shipped setting (generator defaults of w2sray.data.latent; pretraining
1500 steps per model at lr 3e-3, batch 32, max_length 32, warmup 0.05 on 20000 documents of
corpus seed 1; fine-tuning n_gt/n_weak/n_test 3000/3000/2000, 2 epochs, lr 1e-3, batch 32,
max_length 32, warmup 0.1, last-token pooling). Settings were chosen on seed 0 only (gaps,
probe salience, xent PGR), then seeds 1 and 2 run once as held out. Commands run, in order
(results in the calibration write-up; K = --topics, "disjoint" = --shared 0):

  # disjoint topics (the labels teach each word's class; fine-tuning from scratch: 0.92)
  ... --vocab 2048 --shared 0 --coherence 0.3 --pretrain-steps 0 600 600 600 \
      --models w2s-tiny-1 w2s-tiny-1 w2s-tiny-2 w2s-tiny-3 --probe --no-transfer
  ... --vocab 1024 --shared 0 --coherence 0.5 --pretrain-steps 600 600 600 --probe \
      --no-transfer --pretrain-lr 3e-3   (and 1e-2)
  ... --vocab 1024 --shared 0 --coherence 0.5 --pretrain-steps 1500 1500 1500 --probe
  ... --vocab 1024 --shared 0 --coherence 0.5 --pretrain-steps 300 700 1500 --probe
  ... --vocab 1024 --shared 0 --coherence 0.5 --pretrain-steps 0 0 --models w2s-tiny-1 w2s-tiny-3
  # shared words (labels alone teach nothing)
  ... --vocab 1024 --shared 1 --coherence 0.5 --pretrain-steps 0 0 --models w2s-tiny-1 w2s-tiny-3
  ... --vocab 1024 --shared 1 --coherence 0.5 --pretrain-steps 1500 1500 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.5 --models w2s-tiny-1 w2s-tiny-2 \
      --pretrain-steps 1500 1500 --probe --no-transfer   (and --coherence 0.7; and
      --vocab 1024 --shared 0.5 --coherence 0.5)
  ... --vocab 512 --shared 1 --coherence 0.7 --pretrain-steps 1500 1500 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.6 --pretrain-steps 1500 1500 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.7 --pretrain-steps 600 900 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.6 --pretrain-steps 3000 1000 2500 --probe
  ... --vocab 512 --shared 1 --coherence 0.7 --pretrain-steps 1100 700 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.7 --pretrain-steps 1250 600 1500 --probe
  ... --vocab 512 --shared 1 --coherence 0.7 --n 2000 3000 2000 --epochs 2   (and --epochs 1)
  ... --vocab 512 --shared 1 --coherence 0.7 --probe --seeds 0 1 2  (gaps all < 0.05)
  ... --coherence 0.7 --models w2s-tiny-1 w2s-tiny-2 w2s-tiny-4   (tiny-4: GT 0.74, dropped)
  ... --coherence 0.65 --pretrain-steps 1500 1500 3000   (tiny-3 0.986: gap 2-3 still 0.023)
  ... --coherence 0.7 --words 4 8   (shorter documents: tiny-3 learns nothing in 1500 steps)
  ... --coherence 0.7 --n 1000 3000 2000   (students copy their supervisor: PGR 0 / 0 / 0.12)
  # the shipped setting (coherence 0.65), seed 0 then held-out seeds 1 and 2
  .venv/bin/python benchmarks/latent_calibration.py --probe --seeds 0 1 2
  # widening the tiny-2 -> tiny-3 gap (RESULTS 8c; seed 0 only; none met the targets, so no
  # held-out seeds were run). --epochs per model mirrors a model entry's `train: {epochs}`
  # (its GT and its transfer runs); --cache C = --cache /tmp/calib/cache (pretraining reused)
  ... --models w2s-tiny-2 --pretrain-steps N --probe   for N = 500, 700, 900, 1100
  ... --pretrain-steps 1500 600 3000 --probe   (and 1500 700 3000)
  ... --models w2s-tiny-1 w2s-tiny-2 --pretrain-steps 1500 900 --probe   (and 1500 1100; and
      1500 1500 with --pretrain-lr 3e-3 1e-3, and with --pretrain-lr 3e-3 1.5e-3)
  ... --pretrain-steps 1500 1500 3000 --epochs 2 1 1
  ... --topics 32 --probe C
  ... --coherence 0.7 --pretrain-steps 1500 1500 3000 --epochs 1 1 1 --probe C
  ... --coherence 0.7 --pretrain-steps 1500 1500 3000 --epochs E C   for E = 1.5 1.5 2;
      1.5 2 2; 1.5 1.25 2; 1.25 1.5 2; 1.25 1.25 2
  ... --topics 24 --coherence 0.7 --pretrain-steps 1500 1500 3000 --probe C
  ... --topics 24 --coherence 0.7 --pretrain-steps 1500 1500 3000 --epochs E C   for E =
      3 2 2; 3 1.5 2; 3 1.25 2
  ... --topics 24 --coherence 0.7 --pretrain-steps 1500 N 3000 --epochs 3 2 2 --probe C
      for N = 700, 900, 1100
  ... --topics 24 --coherence 0.7 --pretrain-steps 1500 N 3000 --epochs E C   for (N; E) =
      (700; 4 2 3), (800; 4 2 3), (800; 3 2 3)
  ... --topics 24 --coherence 0.7 --pretrain-steps 1500 1500 3000 --pretrain-lr 3e-3 L 3e-3 \
      --epochs 3 2 2 --probe C   for L = 1e-3, 1.5e-3
  # several latent topics per document (generator params n_facets, label_rule; RESULTS 8d;
  # 13:16-14:12 UTC; seed 0 only, then the chosen row's seeds 1 and 2 once). C8 = --cache
  # /tmp/calib8d/cache; F = --facets 3 --words 24 32 (majority, the default rule)
  ... --facets 2 --rule parity --topics 16 --words 16 24 --coherence 0.8 --probe C8
  ... F --topics 16 --coherence 0.8 --probe C8
  ... F --topics 8 --coherence 0.9 --probe C8   (and --pretrain-steps 1500 3000 3000)
  ... F --topics 6 --coherence 0.9 --pretrain-steps 1500 3000 3000 --probe C8
  ... --topics 24 --words 24 32 --coherence 0.45 --probe C8   (one facet, long documents)
  ... F --topics 6 --coherence 0.97 --pretrain-steps 1500 3000 3000 --probe C8
  ... F --topics 6 --coherence 0.97 --pretrain-steps 4000 3000 3000 --epochs 4 2 2 --probe C8
  ... F --topics 6 --coherence 0.97 --pretrain-steps 4000 3000 3000 --epochs E C8   for E =
      3 2 3; 4 2 3
  ... F --topics 6 --coherence 0.97 --pretrain-steps 3000 3000 6000 --epochs 4 2 3 --probe C8
      (and --epochs 4 2 2)
  ... F --topics 6 --coherence 0.97 --pretrain-steps 3000 3000 4500 --epochs 4 2 3 --probe C8
      (met the target on seed 0), then the same with --seeds 1 2 (seed 1: gap 2-3 0.047)

("..." is ``.venv/bin/python benchmarks/latent_calibration.py``.) Other useful runs:

  .venv/bin/python benchmarks/latent_calibration.py --pretrain-steps 0 0 0  # no pretraining
  .venv/bin/python benchmarks/latent_calibration.py --pooling mean
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import time

import numpy as np
import torch

from w2sray.data.latent import (
    DEFAULTS,
    FACET_DEFAULTS,
    LABEL_RULES,
    latent_bayes_accuracy,
    latent_rows,
)
from w2sray.data.tokenizer import build_corpus_tokenizer
from w2sray.losses import compute_loss
from w2sray.models import W2SClassifier
from w2sray.train.loop import Encoded, _lr_lambda, _order

CPU = torch.device("cpu")


def build(source: str, tok, seed: int, pooling: str) -> W2SClassifier:
    """A built-in ladder model with its LM head, as load_model builds it (same config)."""
    import transformers

    from w2sray.models.registry import BUILTIN_LADDER

    torch.manual_seed(seed)
    cfg = transformers.GPT2Config(
        vocab_size=len(tok), n_positions=512, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, **BUILTIN_LADDER[source],
    )  # fmt: skip
    lm = transformers.GPT2LMHeadModel(cfg)
    return W2SClassifier(lm.transformer, pooling, lm=lm)


def run_steps(model, enc, steps, batch, lr, warmup, seed, loss_fn) -> float:
    """``steps`` AdamW steps (weight decay 0, clip 1.0) on ``enc`` in the product's order;
    returns the mean loss of the last 50 steps."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, warmup))
    order = _order(seed, len(enc.ids), steps * batch)
    losses = []
    for s in range(steps):
        idx = order[s * batch : (s + 1) * batch]
        ids, mask = enc.batch(idx, CPU)
        loss = loss_fn(model, ids, mask, idx, s / steps)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss))
    return float(np.mean(losses[-50:])) if losses else float("nan")


@torch.no_grad()
def predict(model, enc) -> np.ndarray:
    model.eval()
    out = []
    for s in range(0, len(enc.ids), 256):
        ids, mask = enc.batch(np.arange(s, min(s + 256, len(enc.ids))), CPU)
        out.append(torch.softmax(model(ids, mask).float(), -1)[:, 1])
    model.train()
    return torch.cat(out).numpy()


@torch.no_grad()
def features(model, enc, how: str) -> torch.Tensor:
    from w2sray.models.head import pool

    out = []
    for s in range(0, len(enc.ids), 256):
        ids, mask = enc.batch(np.arange(s, min(s + 256, len(enc.ids))), CPU)
        pos = (mask.long().cumsum(-1) - 1).clamp_min(0)
        h = model.body()(input_ids=ids, attention_mask=mask, position_ids=pos).last_hidden_state
        out.append(pool(h, mask, how))
    return torch.cat(out)


def _logreg_acc(x_tr, y_tr, x_te, y_te) -> float:
    """Fit an L2-regularised logistic regression (LBFGS) on standardised features; test acc."""
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mu) / sd, (x_te - mu) / sd
    w = torch.zeros(x_tr.shape[1], requires_grad=True)
    b = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")
    yt = torch.from_numpy(y_tr).float()

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x_tr @ w + b, yt)
        loss = loss + 1e-3 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((x_te @ w + b) > 0).numpy() == (y_te == 1)).mean())


def probe(model, enc_tr, y_tr, enc_te, y_te) -> dict[str, float]:
    """Test accuracy of a logistic regression on frozen pooled features (mean, last)."""
    return {
        how: _logreg_acc(features(model, enc_tr, how), y_tr, features(model, enc_te, how), y_te)
        for how in ("mean", "last")
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = ap.add_argument_group("task (generator params)")
    g.add_argument("--vocab", type=int, default=DEFAULTS["vocab"])
    g.add_argument("--topics", type=int, default=DEFAULTS["n_topics"])
    g.add_argument("--shared", type=float, default=DEFAULTS["shared"])
    g.add_argument("--coherence", type=float, default=DEFAULTS["coherence"])
    g.add_argument("--words", nargs=2, type=int, default=[DEFAULTS["min_words"],
                   DEFAULTS["max_words"]], help="min, max words")  # fmt: skip
    g.add_argument("--task-seed", type=int, default=DEFAULTS["task_seed"])
    g.add_argument("--facets", type=int, default=FACET_DEFAULTS["n_facets"],
                   help="latent topics per document (generator param n_facets)")  # fmt: skip
    g.add_argument("--rule", default=FACET_DEFAULTS["label_rule"], choices=LABEL_RULES,
                   help="how the facets' classes make the label (label_rule)")  # fmt: skip
    g.add_argument("--split-seed", type=int, default=0)
    p = ap.add_argument_group("pretraining (one run per model)")
    p.add_argument("--models", nargs="+", default=["w2s-tiny-1", "w2s-tiny-2", "w2s-tiny-3"])
    p.add_argument("--pretrain-steps", nargs="+", type=int, default=[1500, 1500, 1500])
    p.add_argument("--pretrain-lr", nargs="+", type=float, default=[3e-3])
    p.add_argument("--pretrain-batch", type=int, default=32)
    p.add_argument("--pretrain-max-length", type=int, default=32)
    p.add_argument("--pretrain-warmup", type=float, default=0.05)
    p.add_argument("--corpus", type=int, default=20000, help="unlabeled documents")
    p.add_argument("--corpus-seed", type=int, default=1)
    f = ap.add_argument_group("fine-tuning (GT and transfer runs)")
    f.add_argument("--n", nargs=3, type=int, default=[3000, 3000, 2000], help="A, B, test")
    f.add_argument("--epochs", nargs="+", type=float, default=[2],
                   help="one value, or one per model (a model's GT and transfer runs)")  # fmt: skip
    f.add_argument("--lr", type=float, default=1e-3)
    f.add_argument("--batch", type=int, default=32)
    f.add_argument("--max-length", type=int, default=32)
    f.add_argument("--warmup", type=float, default=0.1)
    f.add_argument("--pooling", default="last", choices=["last", "mean"])
    f.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--probe", action="store_true", help="linear probes on frozen features")
    ap.add_argument("--cache", help="a folder to keep pretrained weights in (reused by recipe)")
    ap.add_argument("--no-transfer", action="store_true", help="pretrain (and probe) only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    task = dict(
        vocab=args.vocab, n_topics=args.topics, shared=args.shared, coherence=args.coherence,
        min_words=args.words[0], max_words=args.words[1], task_seed=args.task_seed,
    )  # fmt: skip
    if args.facets > 1:  # only then: the shipped task's recipes (and cache names) stay as they were
        task.update(n_facets=args.facets, label_rule=args.rule)
    pre_lrs = (
        args.pretrain_lr * len(args.models) if len(args.pretrain_lr) == 1 else args.pretrain_lr
    )
    ft_epochs = dict(
        zip(args.models, args.epochs * len(args.models) if len(args.epochs) == 1 else args.epochs,
            strict=True)
    )  # fmt: skip
    # Splits as w2sray.data.make_splits cuts them.
    n_a, n_b, n_t = args.n
    texts, labels = latent_rows(n_a + n_b + n_t, seed=args.split_seed, **task)
    order = np.random.default_rng(args.split_seed).permutation(len(texts))
    a_i, b_i, t_i = order[:n_a], order[n_a : n_a + n_b], order[n_a + n_b :]
    a_t, b_t, t_t = ([texts[i] for i in ix] for ix in (a_i, b_i, t_i))
    a_y, t_y = np.array(labels)[a_i], np.array(labels)[t_i]
    corpus, _ = latent_rows(args.corpus, seed=args.corpus_seed, **task)
    tok = build_corpus_tokenizer(corpus)
    enc_c = Encoded(tok, corpus, args.pretrain_max_length)
    enc_a, enc_b, enc_t = (Encoded(tok, t, args.max_length) for t in (a_t, b_t, t_t))
    bayes = latent_bayes_accuracy(t_t, list(t_y), **task)
    print(f"task {task}  Bayes-optimal test accuracy {bayes:.3f}  tokenizer {len(tok)}")

    def lm_loss(m, ids, mask, idx, frac):
        return m(ids, mask, lm_loss=True)

    pretrained = {}
    for name, steps, lr in zip(args.models, args.pretrain_steps, pre_lrs, strict=True):
        t0 = time.time()
        m = build(name, tok, 0, args.pooling)
        loss = float("nan")
        recipe = (
            name,
            steps,
            lr,
            args.pretrain_batch,
            args.pretrain_max_length,
            args.pretrain_warmup,
            args.corpus,
            args.corpus_seed,
            sorted(task.items()),
        )
        cached = None
        if args.cache and steps:
            digest = hashlib.sha256(repr(recipe).encode()).hexdigest()[:16]
            cached = os.path.join(args.cache, f"{name}-{steps}-{digest}.pt")
        if cached and os.path.exists(cached):
            state, loss = torch.load(cached)
            m.load_state_dict(state)
        elif steps:
            loss = run_steps(m, enc_c, steps, args.pretrain_batch, lr, args.pretrain_warmup, 0,
                             lm_loss)  # fmt: skip
            if cached:
                os.makedirs(args.cache, exist_ok=True)
                torch.save((m.state_dict(), loss), cached)
        pretrained[name] = {k: v.clone() for k, v in m.state_dict().items()}
        msg = (
            f"pretrain {name}: {steps} steps lr {lr:g}, LM loss {loss:.3f}, {time.time() - t0:.1f}s"
        )
        if args.probe:
            pr = probe(m, enc_a, a_y, enc_t, t_y)
            msg += f"  probe mean {pr['mean']:.3f} last {pr['last']:.3f}"
        print(msg, flush=True)
    if args.no_transfer:
        return

    def finetune(name, enc, targets, seed):
        m = build(name, tok, seed, args.pooling)
        m.load_state_dict(pretrained[name])
        torch.manual_seed(seed)  # a fresh classification head
        torch.nn.init.normal_(m.head.weight, std=0.02)
        torch.nn.init.zeros_(m.head.bias)
        tt = torch.from_numpy(targets)
        steps = int(round(ft_epochs[name] * max(1, len(enc.ids) // args.batch)))

        def cls_loss(m_, ids, mask, idx, frac):
            return compute_loss("xent", m_(ids, mask), tt[idx], frac, {})

        run_steps(m, enc, steps, args.batch, args.lr, args.warmup, seed, cls_loss)
        return m

    for seed in args.seeds:
        gt, weak_p1 = {}, {}
        for name in args.models:
            t0 = time.time()
            m = finetune(name, enc_a, np.stack([1 - a_y, a_y], 1).astype(np.float32), seed)
            gt[name] = float(((predict(m, enc_t) > 0.5) == t_y).mean())
            weak_p1[name] = predict(m, enc_b)
            print(f"  seed {seed} GT {name}: {gt[name]:.3f}  {time.time() - t0:.1f}s", flush=True)
        for w, s in itertools.combinations(args.models, 2):
            t0 = time.time()
            p = weak_p1[w]
            m = finetune(s, enc_b, np.stack([1 - p, p], 1).astype(np.float32), seed)
            acc = float(((predict(m, enc_t) > 0.5) == t_y).mean())
            gap = gt[s] - gt[w]
            pgr = (acc - gt[w]) / gap if gap else float("nan")
            print(f"  seed {seed} {w} -> {s}: w2s {acc:.3f}  gap {gap:+.3f}  PGR {pgr:+.2f}"
                  f"  {time.time() - t0:.1f}s", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
