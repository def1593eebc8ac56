"""Generative fine-tuning (a method's ``generative:``): before the weak-to-strong step, the
student trains with its language-modelling objective on the texts of split B, without labels,
so what it knows about the task's texts is closer to the surface; then on the weak labels.

Everything about the method is here: its spec section and checks, what a transfer run
carries (``run_fields``: ``Run.generative``, hashed into the key with VERSION), its phase in the
worker loop (w2sray/train/loop.py calls ``steps``, ``lr``, ``train`` and ``metrics``), and what
the report compares (``report_pairs``: each variant against itself without the phase).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, replace
from typing import Any

VERSION = 1  # bump when a change here alters the results of runs that use it


@dataclass(frozen=True)
class GenerativeSpec:
    """Generative fine-tuning before the weak-to-strong step: the student first trains with its
    language-modelling objective on the texts of split B (no labels), then on the weak labels."""

    epochs: float = 1.0  # passes over split B's texts
    lr: float | None = None  # None: the run's train.lr


def check(chk: Any, raw: Any, where: str) -> GenerativeSpec | None:
    """A method's ``generative`` value (true, false, null or a mapping) as a GenerativeSpec,
    None when off; problems go to ``chk`` (spec._Checker) under ``where``."""
    if raw is True:
        return GenerativeSpec()
    if raw is False or raw is None:
        return None
    if not isinstance(raw, dict):
        chk.bad(where, f"must be true, false or a mapping, got {raw!r}")
        return None
    gen = chk.dataclass_from(GenerativeSpec, raw, where)
    if gen is not None:
        if gen.epochs <= 0:
            chk.bad(f"{where}.epochs", f"must be > 0, got {gen.epochs!r}")
        if gen.lr is not None and gen.lr <= 0:
            chk.bad(f"{where}.lr", f"must be > 0, got {gen.lr!r}")
    return gen


def check_part(chk: Any, method: Any, ctx: Any, where: str) -> Any:
    """The registry's check (w2sray/methods/__init__.py): the method's ``generative`` parsed,
    and refused beside LoRA or probe students, which do not train the whole backbone."""
    gen = check(chk, method.generative, f"{where}.generative")
    if gen is not None and ctx.lora_models:
        chk.bad(
            f"{where}.generative",
            "generative fine-tuning cannot be combined with train.lora (set for "
            f"{', '.join(ctx.lora_models)}): LoRA trains the classifier's backbone only; drop "
            "one of them",
        )
    probed = ctx.probe_students(method)
    if gen is not None and probed:
        chk.bad(
            f"{where}.generative",
            "generative fine-tuning trains the backbone, which train.probe freezes (set for "
            f"students {', '.join(probed)}): drop generative, or probe: null for them",
        )
    return replace(method, generative=gen)


def run_fields(method: Any) -> dict[str, Any]:
    """The registry's plan hook: a transfer run of ``method`` carries its generative settings
    (``Run.generative``, hashed into the key; empty when off, as before the method existed)."""
    return {"generative": asdict(method.generative) if method.generative else {}}


def steps(gen: dict[str, Any], steps_per_epoch: int) -> int:
    """Optimizer steps of the generative phase (0 when the run has none)."""
    return max(1, int(round(gen["epochs"] * steps_per_epoch))) if gen else 0


def lr(gen: dict[str, Any], train_lr: float) -> float:
    """The generative phase's peak learning rate: its own, else the run's."""
    return (gen.get("lr") or train_lr) if gen else train_lr


def train(
    run: dict[str, Any], engine: Any, enc: Any, n_steps: int, start_step: int, w: Any
) -> tuple[list[float], float]:
    """The phase itself: ``n_steps`` language-modelling steps on the run's training texts
    (``enc``), in their own seeded order; skipped when a restarted attempt resumes past it.
    Returns (per-step losses, seconds)."""
    from w2sray.train.steps import _order, lm_steps

    t0 = time.time()
    losses: list[float] = []
    if n_steps and start_step < n_steps:
        batch = run["train"]["batch_size"]
        order = _order(run["seed"] + 1, len(enc.ids), n_steps * batch)
        losses = lm_steps(engine, enc, order, n_steps, batch, w.rank, w.world, w.device)
    return losses, time.time() - t0


def metrics(n_steps: int, loss: float, losses: list[float], seconds: float) -> dict[str, Any]:
    """What metrics.json records about the phase. ``gen_loss`` is None when a restart resumed
    after the phase (its losses were not kept)."""
    return {"gen_steps": n_steps, "gen_loss": loss if losses else None, "gen_seconds": seconds}


def report_pairs(results: Any) -> list[tuple[str, str]]:
    """The report's comparison of this method (``results``: the long table), as (without,
    with) variant pairs: each generative variant and the variant of the same loss and
    hyper-parameters trained without generative fine-tuning, where both ran."""
    if results is None or results.empty or "generative" not in results.columns:
        return []
    cols = [c for c in ("dataset", "loss", "hparams") if c in results.columns]
    out = []
    is_gen = results["generative"].eq(True)  # NaN (a row from before the column) is not
    direct = results["chain_length"].eq(2) if "chain_length" in results.columns else True
    gen, plain = results[is_gen], results[~is_gen & direct]
    for _, g in gen.drop_duplicates("variant").iterrows():
        match = plain
        for c in cols:
            match = match[match[c] == g[c]]
        for base in sorted(set(match["variant"])):
            out.append((base, g["variant"]))
    return list(dict.fromkeys(out))
