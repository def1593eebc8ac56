"""LoRA (low-rank adapters, Hu et al. 2021) on a run's backbone, through ``peft``.

``train.lora: {r, alpha, dropout, target_modules}`` (w2sray/spec.py) freezes the backbone's
weights and trains rank-``r`` adapters on its ``target_modules`` (scaled by alpha / r) plus the
classifier head (w2sray/models/head.py), which always trains in full. The adapters are injected
in place (``peft.inject_adapter_in_model``), so the backbone stays the transformers model the
classifier wraps and DeepSpeed sees one module whose frozen parameters get no gradients and no
optimizer state.

``target_modules: auto`` (the default) takes the model family's list: LORA_TARGETS, by the
defaults table's family (w2sray/models/defaults.py) or the config's ``model_type``; resolved
into the run key where the spec alone tells the family (built-ins, table hub ids, local
folders), otherwise by the worker from the loaded config (and recorded in metrics.json).
"""

from __future__ import annotations

import json
import os
from typing import Any

DEFAULTS: dict[str, Any] = {"r": 8, "alpha": 16.0, "dropout": 0.0, "target_modules": "auto"}

# Module names LoRA adapts per family (defaults-table family or config model_type). Chosen: the
# attention projections (what Hu et al. adapt; their best budget split adapts W_q and W_v), and
# for GPT-2 also the output projections of attention and MLP (``c_proj`` names both).
LORA_TARGETS: dict[str, list[str]] = {
    "gpt2": ["c_attn", "c_proj"],
    "w2s-tiny": ["c_attn", "c_proj"],  # the built-in ladder is GPT-2 shaped
    "gpt_neox": ["query_key_value", "dense"],
    "pythia": ["query_key_value", "dense"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "llama3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen2.5": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "qwen3": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "bert": ["query", "value"],
    "roberta": ["query", "value"],
    "xlm-roberta": ["query", "value"],
    "electra": ["query", "value"],
    "albert": ["query", "value"],
    "mpnet": ["q", "v"],
    "distilbert": ["q_lin", "v_lin"],
    "deberta": ["in_proj"],
    "deberta-v2": ["query_proj", "value_proj"],
    "modernbert": ["Wqkv"],
}

# in + out features of a targeted module, in units of the hidden size (for the planner's count
# of adapter parameters, r * (in + out) each); a module name not listed counts as h -> h (2).
# GPT-2's ``c_proj`` is two modules per layer: attention h -> h (2) and MLP 4h -> h (5).
_SHAPE_UNITS: dict[str, float] = {
    "c_attn": 4,
    "c_proj": 7,
    "c_fc": 5,
    "query_key_value": 4,
    "Wqkv": 4,
    "in_proj": 4,
    "dense_h_to_4h": 5,
    "dense_4h_to_h": 5,
}


def resolved(lora: dict[str, Any], targets: list[str] | None = None) -> dict[str, Any]:
    """``lora`` with its defaults merged; ``target_modules: auto`` replaced by ``targets`` when
    known (else kept "auto", resolved by the worker). Floats as floats, lists sorted."""
    out = {**DEFAULTS, **lora}
    out["alpha"] = float(out["alpha"])
    out["dropout"] = float(out["dropout"])
    if out["target_modules"] == "auto" and targets:
        out["target_modules"] = list(targets)
    if isinstance(out["target_modules"], list):
        out["target_modules"] = sorted(dict.fromkeys(out["target_modules"]))
    return out


def family_targets(source: str) -> list[str] | None:
    """The default target modules of a model source when the spec tells its family: a built-in
    or a defaults-table hub id (its family), a local folder (its config's model_type); None
    for other hub ids (resolved from the config once loaded)."""
    from w2sray.models.defaults import model_defaults
    from w2sray.models.registry import is_builtin

    if is_builtin(source):
        return LORA_TARGETS["w2s-tiny"]
    path = os.path.expanduser(source)
    if os.path.isdir(path):
        try:
            with open(os.path.join(path, "config.json")) as fh:
                kind = json.load(fh).get("model_type")
        except (OSError, ValueError):
            return None
        return LORA_TARGETS.get(kind)
    d = model_defaults(source)
    return LORA_TARGETS.get(d.family) if d is not None else None


def check(lora: Any, where: str) -> list[str]:
    """Problems with a ``train.lora`` mapping, as ``field: message`` strings."""
    if not isinstance(lora, dict):
        return [f"{where}: must be a mapping ({', '.join(DEFAULTS)}), got {lora!r}"]
    problems = [
        f"{where}.{k}: unknown field (known: {', '.join(DEFAULTS)})"
        for k in lora
        if k not in DEFAULTS
    ]
    cfg = {**DEFAULTS, **lora}
    r = cfg["r"]
    if not isinstance(r, int) or isinstance(r, bool) or r < 1:
        problems.append(f"{where}.r: must be a whole number >= 1, got {r!r}")
    alpha = cfg["alpha"]
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        problems.append(f"{where}.alpha: must be a number > 0, got {alpha!r}")
    p = cfg["dropout"]
    if not isinstance(p, (int, float)) or isinstance(p, bool) or not 0 <= p < 1:
        problems.append(f"{where}.dropout: must be in [0, 1), got {p!r}")
    tm = cfg["target_modules"]
    if tm != "auto" and (
        not isinstance(tm, list) or not tm or not all(isinstance(x, str) and x for x in tm)
    ):
        problems.append(
            f"{where}.target_modules: must be auto or a non-empty list of module names, got {tm!r}"
        )
    return problems


def apply_lora(backbone: Any, lora: dict[str, Any], model_type: str) -> list[str]:
    """Inject LoRA adapters into ``backbone`` in place and freeze everything else in it.
    Returns the target modules used. Raises ValueError when the family has no default targets
    or no module matches."""
    from peft import LoraConfig, inject_adapter_in_model

    cfg = resolved(lora)
    targets = cfg["target_modules"]
    if targets == "auto":
        targets = LORA_TARGETS.get(model_type)
        if targets is None:
            raise ValueError(
                f"train.lora.target_modules: no default for model type {model_type!r}; name the "
                "modules to adapt (e.g. [q_proj, v_proj])"
            )
    conv1d = any(
        type(m).__name__ == "Conv1D" and n.rsplit(".", 1)[-1] in targets
        for n, m in backbone.named_modules()
    )
    config = LoraConfig(
        r=cfg["r"],
        lora_alpha=cfg["alpha"],
        lora_dropout=cfg["dropout"],
        target_modules=list(targets),
        fan_in_fan_out=conv1d,  # GPT-2's Conv1D stores its weight transposed
        bias="none",
    )
    for p in backbone.parameters():
        p.requires_grad_(False)
    try:
        inject_adapter_in_model(config, backbone)
    except ValueError as exc:
        raise ValueError(f"train.lora.target_modules {list(targets)}: {exc}") from None
    for name, p in backbone.named_parameters():
        p.requires_grad_("lora_" in name)
    assert any(p.requires_grad for p in backbone.parameters()), "no LoRA parameters injected"
    return list(targets)


def trainable_state(model: Any) -> dict[str, Any]:
    """The trainable parameters of ``model`` (adapters and head) by name, on the CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: Any, state: dict[str, Any]) -> None:
    """Put a trainable_state back into ``model`` (built the same way); every trainable
    parameter must be in ``state``."""
    import torch

    params = dict(model.named_parameters())
    missing = [n for n, p in params.items() if p.requires_grad and n not in state]
    unknown = [n for n in state if n not in params]
    if missing or unknown:
        raise ValueError(f"adapter state does not fit: missing {missing}, unknown {unknown}")
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


def estimate_params(family: str, hidden: int, layers: int, lora: dict[str, Any]) -> int | None:
    """Adapter parameters of a model (for the planner): r * (in + out) per adapted module,
    shapes from _SHAPE_UNITS; None when the targets are unknown."""
    cfg = resolved(lora, LORA_TARGETS.get(family))
    targets = cfg["target_modules"]
    if targets == "auto":
        return None
    units = sum(_SHAPE_UNITS.get(t, 2) for t in targets)
    return int(cfg["r"] * units * hidden * layers)
