"""Loss functions for weak-to-strong training, and a registry that names them.

Every loss has the signature ``fn(logits, targets, step_frac, **params) -> scalar tensor``:

* ``logits``: float tensor ``[B, 2]`` from the strong model (any float dtype, bf16 included);
* ``targets``: soft labels ``[B, 2]`` whose rows sum to 1 (weak-model probabilities, or one-hot
  ground truth);
* ``step_frac``: fraction of the training steps already done, in ``[0, 1]``.

All arithmetic is done in float32 so that bf16 training does not lose precision in the
log-softmax, and every loss returns the mean over the batch.

The sweep spec validator calls :func:`validate_loss_params` before any training starts, so a typo
in a parameter name or an out-of-range value fails the sweep up front instead of on a worker.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = [
    "LOSSES",
    "LossSpec",
    "compute_loss",
    "get_loss",
    "harden_to_balance",
    "logconf_alpha",
    "register_loss",
    "resolved_loss_params",
    "validate_loss_params",
]

# Keeps the product-loss normaliser away from zero when p^beta and y^alpha have disjoint support.
_EPS = 1e-12


@dataclass(frozen=True)
class LossSpec:
    """A registered loss: its name, function, parameter defaults, a one-line description and
    its result version (part of every run key that uses it)."""

    name: str
    fn: Callable[..., torch.Tensor]  # fn(logits, targets, step_frac, **params) -> scalar tensor
    defaults: dict[str, float]  # every parameter the loss accepts, with its default
    doc: str
    # Bump when a code change alters results of this entry: only its runs' keys change.
    version: int = 1


LOSSES: dict[str, LossSpec] = {}

# Allowed closed interval per parameter, per loss (validation only, not part of run keys).
_BOUNDS: dict[str, dict[str, tuple[float, float]]] = {}


def register_loss(
    name: str,
    defaults: dict[str, float],
    doc: str,
    *,
    bounds: dict[str, tuple[float, float]] | None = None,
    version: int = 1,
) -> Callable[[Callable[..., torch.Tensor]], Callable[..., torch.Tensor]]:
    """Return a decorator that registers ``fn`` in :data:`LOSSES` under ``name``.

    ``bounds`` optionally maps parameter names to a closed ``(low, high)`` interval that
    :func:`validate_loss_params` enforces. ``version`` is hashed into the key of every run using
    the loss: bump it when a code change alters the loss's results. A duplicate ``name`` raises
    ``ValueError``.
    """
    if name in LOSSES:
        raise ValueError(f"loss {name!r} is already registered")
    bounds = dict(bounds or {})
    stray = sorted(set(bounds) - set(defaults))
    if stray:
        raise ValueError(f"loss {name!r}: bounds given for unknown parameters {stray}")

    def decorator(fn: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        # Checked again here: two decorators could be created before either is applied.
        if name in LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        LOSSES[name] = LossSpec(name=name, fn=fn, defaults=dict(defaults), doc=doc, version=version)
        _BOUNDS[name] = bounds
        return fn

    return decorator


def get_loss(name: str) -> LossSpec:
    """Return the registered loss ``name``; an unknown name raises ``KeyError`` listing all."""
    try:
        return LOSSES[name]
    except KeyError:
        raise KeyError(
            f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}"
        ) from None


def _is_number(value: object) -> bool:
    # bool is an int subclass, but `alpha: true` in a spec is a mistake, not the number 1.
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def validate_loss_params(name: str, params: dict[str, object]) -> list[str]:
    """Return human-readable problems with ``params`` for loss ``name``; an empty list means ok.

    Reports an unknown loss, unknown parameter names (with the accepted ones), non-numeric values,
    non-finite values and values outside each parameter's allowed range.
    """
    if name not in LOSSES:
        return [f"unknown loss {name!r}; known losses: {', '.join(sorted(LOSSES))}"]
    spec = LOSSES[name]
    bounds = _BOUNDS.get(name, {})
    accepted = ", ".join(sorted(spec.defaults)) or "none"
    problems: list[str] = []
    for key, value in params.items():
        if key not in spec.defaults:
            problems.append(
                f"loss {name!r}: unknown parameter {key!r}; accepted parameters: {accepted}"
            )
            continue
        if not _is_number(value):
            problems.append(f"loss {name!r}: parameter {key!r} must be a number, got {value!r}")
            continue
        number = float(value)  # type: ignore[arg-type]
        if not math.isfinite(number):
            problems.append(f"loss {name!r}: parameter {key!r} must be finite, got {value!r}")
            continue
        if key in bounds:
            low, high = bounds[key]
            if not low <= number <= high:
                allowed = f">= {low}" if math.isinf(high) else f"in [{low}, {high}]"
                problems.append(f"loss {name!r}: parameter {key!r} = {value!r} must be {allowed}")
    return problems


def resolved_loss_params(name: str, params: dict[str, object] | None = None) -> dict[str, float]:
    """The parameters loss ``name`` runs with: its registered defaults, overridden by ``params``
    (as floats). What :func:`compute_loss` passes to the loss, and what a run's key hashes, so
    changing a default changes the keys of the runs that rely on it. Unknown loss: KeyError."""
    spec = get_loss(name)
    return {**spec.defaults, **{k: float(v) for k, v in (params or {}).items()}}  # type: ignore[arg-type]


def compute_loss(
    name: str,
    logits: torch.Tensor,
    targets: torch.Tensor,
    step_frac: float,
    params: dict[str, object] | None = None,
) -> torch.Tensor:
    """Compute loss ``name``: merge its defaults with ``params`` and call its function.

    Raises ``KeyError`` for an unknown loss and ``ValueError`` for bad parameters or for
    ``logits``/``targets`` that are not matching ``[B, C]`` tensors.
    """
    spec = get_loss(name)
    params = dict(params or {})
    problems = validate_loss_params(name, params)
    if problems:
        raise ValueError("; ".join(problems))
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be [B, C]; got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    return spec.fn(logits, targets, float(step_frac), **resolved_loss_params(name, params))


# --------------------------------------------------------------------------------------------
# Helpers


def _soft_ce_rows(log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Per-row soft-label cross entropy ``-(t * log p).sum(-1)``."""
    return -(targets * log_probs).sum(dim=-1)


def logconf_alpha(step_frac: float, alpha_max: float, warmup_frac: float) -> float:
    """Weight of the confidence term: a linear ramp from 0 to ``alpha_max`` over ``warmup_frac``.

    The ramp is continuous (no jump at the end of warmup, unlike the original OpenAI code whose
    coefficient was ``step_frac`` during warmup and then jumped to ``aux_coef``).
    ``warmup_frac == 0`` means the full ``alpha_max`` from the first step.
    """
    step_frac = min(max(float(step_frac), 0.0), 1.0)
    if warmup_frac <= 0.0:
        return float(alpha_max)
    return float(alpha_max) * min(1.0, step_frac / float(warmup_frac))


def harden_to_balance(probs_pos: torch.Tensor, balance: float) -> torch.Tensor:
    """Harden class-1 probabilities ``[B]`` to one-hot ``[B, 2]`` so that class 1 gets a
    fraction ``balance`` of the batch.

    This is thresholding at ``quantile(probs_pos, 1 - balance)``, done by rank so that the count
    is exact: the ``k = round(balance * B)`` (halves rounded up) examples with the largest
    ``probs_pos`` become class 1, the rest class 0. Ties are broken by batch position (a stable
    sort: among equal probabilities the earlier example is taken first), so a tied batch still
    gets exactly ``k`` positives rather than all or none of the tied group.
    """
    probs_pos = probs_pos.detach()
    batch = probs_pos.shape[0]
    k = int(math.floor(min(max(float(balance), 0.0), 1.0) * batch + 0.5))
    order = torch.argsort(probs_pos, descending=True, stable=True)
    positive = torch.zeros(batch, dtype=torch.bool, device=probs_pos.device)
    positive[order[:k]] = True
    hard_pos = positive.to(torch.float32)
    return torch.stack([1.0 - hard_pos, hard_pos], dim=-1)


# --------------------------------------------------------------------------------------------
# Losses


@register_loss("xent", {}, "Soft-label cross entropy against the (weak or gold) targets.")
def xent_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float) -> torch.Tensor:
    """Mean over the batch of ``-(t * log_softmax(logits)).sum(-1)``."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    return _soft_ce_rows(log_probs, targets.float()).mean()


@register_loss(
    "logconf",
    {"alpha_max": 0.5, "warmup_frac": 0.2},
    "Auxiliary confidence loss (Burns et al. 2023): (1-a) CE(f, y_weak) + a CE(f, hardened f), "
    "a ramping linearly from 0 to alpha_max over warmup_frac of training.",
    bounds={"alpha_max": (0.0, 1.0), "warmup_frac": (0.0, 1.0)},
)
def logconf_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    step_frac: float,
    alpha_max: float = 0.5,
    warmup_frac: float = 0.2,
) -> torch.Tensor:
    """``(1 - a) CE(f, y_weak) + a CE(f, hardened f)`` with ``a`` from :func:`logconf_alpha`.

    The hardened targets come from the detached predictions, thresholded so that the fraction
    hardened to class 1 matches the weak labels' class balance in this batch.
    """
    if logits.shape[-1] != 2:
        raise ValueError(f"logconf is binary; got {logits.shape[-1]} classes")
    logits = logits.float()
    targets = targets.float()
    log_probs = F.log_softmax(logits, dim=-1)
    alpha = logconf_alpha(step_frac, alpha_max, warmup_frac)
    weak_ce = _soft_ce_rows(log_probs, targets)
    probs_pos = log_probs.detach().exp()[:, 1]
    balance = float(targets[:, 1].mean())
    hardened = harden_to_balance(probs_pos, balance)
    conf_ce = _soft_ce_rows(log_probs, hardened)
    return ((1.0 - alpha) * weak_ce + alpha * conf_ce).mean()


@register_loss(
    "product",
    {"alpha": 1.0, "beta": 1.0},
    "CE against the renormalised product p^beta * y^alpha of the detached predictions p and the "
    "weak labels y.",
    bounds={"alpha": (0.0, math.inf), "beta": (0.0, math.inf)},
)
def product_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    step_frac: float,
    alpha: float = 1.0,
    beta: float = 1.0,
) -> torch.Tensor:
    """``CE(f, normalise(p^beta * y^alpha))`` with ``p = softmax(logits)`` detached."""
    logits = logits.float()
    targets = targets.float()
    log_probs = F.log_softmax(logits, dim=-1)
    probs = log_probs.detach().exp()
    # torch.pow(0, 0) == 1, so alpha == 0 ignores the weak labels entirely, as intended.
    unnormalised = probs.pow(beta) * targets.pow(alpha)
    product = unnormalised / unnormalised.sum(dim=-1, keepdim=True).clamp_min(_EPS)
    return _soft_ce_rows(log_probs, product.detach()).mean()


@register_loss("kl", {}, "KL(y_weak || softmax(f)); equals xent minus the targets' entropy.")
def kl_loss(logits: torch.Tensor, targets: torch.Tensor, step_frac: float) -> torch.Tensor:
    """Mean over the batch of ``sum t (log t - log p)``, with ``0 log 0 = 0``."""
    log_probs = F.log_softmax(logits.float(), dim=-1)
    targets = targets.float()
    # xlogy gives 0 where t == 0, where t * log(t) would give nan.
    return (torch.xlogy(targets, targets) - targets * log_probs).sum(dim=-1).mean()


@register_loss(
    "conf_threshold",
    {"threshold": 0.8},
    "Soft-label CE over only the examples whose weak max-probability is >= threshold.",
    bounds={"threshold": (0.0, 1.0)},
)
def conf_threshold_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    step_frac: float,
    threshold: float = 0.8,
) -> torch.Tensor:
    """Mean soft-label CE over the kept examples; a zero that still carries grad if none are."""
    logits = logits.float()
    targets = targets.float()
    # Compared in float32, so a weak label stored as float32(threshold) counts as confident.
    keep = targets.max(dim=-1).values >= threshold
    if not bool(keep.any()):
        # Keeps the graph connected so backward() and DDP/ZeRO gradient hooks still fire.
        return logits.sum() * 0.0
    log_probs = F.log_softmax(logits[keep], dim=-1)
    return _soft_ce_rows(log_probs, targets[keep]).mean()
