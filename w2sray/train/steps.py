"""The mechanics of a run's steps, the same for every run kind: tokenised batches, sharded
predictions, optimisation steps (classification and language modelling), the global example
order and the learning-rate schedule. Used by the fine-tuning and pretraining loops and by the
benchmarks that compare them with a plain loop."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from w2sray.losses import compute_loss


def _lr_lambda(total: int, warmup_frac: float, before: int = 0, before_scale: float = 1.0):
    """Linear warmup then cosine decay over ``total`` steps. With ``before`` > 0 (generative
    fine-tuning first) the same shape runs over those steps first, scaled by ``before_scale``
    (its lr over the run's), then restarts for the ``total`` classification steps."""

    def shape(step: int, n: int) -> float:
        warm = int(n * warmup_frac)
        if warm and step < warm:
            return (step + 1) / warm
        progress = (step - warm) / max(1, n - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    def f(step: int) -> float:
        if step < before:
            return before_scale * shape(step, before)
        return shape(step - before, total)

    return f


class Encoded:
    """Tokenised texts, truncated to max_length (and counted), padded per batch."""

    def __init__(self, tokenizer: Any, texts: list[str], max_length: int):
        enc = tokenizer(texts, truncation=False, padding=False)["input_ids"]
        self.truncated = sum(len(ids) > max_length for ids in enc)
        self.ids = [ids[:max_length] for ids in enc]
        self.pad = tokenizer.pad_token_id
        self.left = getattr(tokenizer, "padding_side", "right") == "left"

    def batch(self, idx: np.ndarray, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.ids[i] for i in idx]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for j, r in enumerate(rows):
            sl = slice(width - len(r), width) if self.left else slice(0, len(r))
            ids[j, sl] = torch.tensor(r)
            mask[j, sl] = 1
        return ids.to(device), mask.to(device)


@torch.no_grad()
def predict(engine: Any, enc: Encoded, batch_size: int, rank: int, world: int, device) -> Any:
    """Class-1 probabilities for every example, computed sharded and gathered on all ranks.

    Every rank runs the same number of forward passes (shards padded by repetition), which
    ZeRO-3's parameter gathering requires.
    """
    import torch.distributed as dist

    n = len(enc.ids)
    per_rank = math.ceil(n / world)
    mine = np.arange(rank, n, world)
    padded = np.concatenate([mine, np.full(per_rank - len(mine), mine[-1] if len(mine) else 0)])
    engine.eval()
    probs = []
    for s in range(0, per_rank, batch_size):
        ids, mask = enc.batch(padded[s : s + batch_size], device)
        probs.append(torch.softmax(engine(ids, mask).float(), dim=-1)[:, 1].cpu())
    engine.train()
    p = torch.cat(probs).numpy()[: len(mine)] if probs else np.zeros(0)
    if world == 1:
        return p
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, (mine, p))
    out = np.zeros(n, dtype=np.float32)
    for idx, vals in gathered:
        out[idx] = vals
    return out


def _my_slice(order: np.ndarray, step: int, batch_size: int, rank: int, world: int) -> np.ndarray:
    """This worker's share of global batch ``step`` of ``order``."""
    micro = batch_size // world
    batch = order[step * batch_size : (step + 1) * batch_size]
    return batch[rank * micro : (rank + 1) * micro]


def train_steps(
    engine: Any,
    enc: Encoded,
    targets: torch.Tensor,
    order: np.ndarray,
    total_steps: int,
    batch_size: int,
    rank: int,
    world: int,
    device: torch.device,
    loss_name: str,
    loss_params: dict[str, Any],
    start_step: int = 0,
    on_step: Any = None,
) -> tuple[list[float], int]:
    """The optimisation steps from ``start_step``. Every worker walks the same global ``order``;
    worker ``rank`` takes its slice of each global batch. ``on_step(step_done, losses, tokens)``
    runs after each step (checkpoints). Returns per-step losses and this worker's tokens."""
    losses, tokens = [], 0
    for step in range(start_step, total_steps):
        mine = _my_slice(order, step, batch_size, rank, world)
        ids, mask = enc.batch(mine, device)
        tokens += int(mask.sum())
        logits = engine(ids, mask)
        loss = compute_loss(
            loss_name, logits, targets[mine].to(device), step / total_steps, loss_params
        )
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step + 1, losses, tokens)
    return losses, tokens


def lm_steps(
    engine: Any,
    enc: Encoded,
    order: np.ndarray,
    total_steps: int,
    batch_size: int,
    rank: int,
    world: int,
    device: torch.device,
    masker: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> list[float]:
    """``total_steps`` steps of the language-modelling loss on the texts of ``enc`` (no
    labels), sharded like train_steps: causal by default; with ``masker`` (ids, mask) ->
    (inputs, labels), run on CPU batches, a masked LM's."""
    losses = []
    for step in range(total_steps):
        idx = _my_slice(order, step, batch_size, rank, world)
        if masker is None:
            ids, mask = enc.batch(idx, device)
            loss = engine(ids, mask, lm_loss=True)
        else:
            ids, mask = enc.batch(idx, torch.device("cpu"))
            inputs, labels = masker(ids, mask)
            loss = engine(
                inputs.to(device), mask.to(device), lm_loss=True, labels=labels.to(device)
            )
        engine.backward(loss)
        engine.step()
        losses.append(float(loss.detach()))
    return losses


def _order(seed: int, n: int, length: int) -> np.ndarray:
    """A global example order: whole permutations of ``n`` drawn from ``seed`` (all workers
    draw the same one)."""
    rng = np.random.default_rng(seed)
    order: list[int] = []
    while len(order) < length:
        order.extend(rng.permutation(n).tolist())
    return np.asarray(order)
