"""Tests for w2sray.losses.

Each loss is checked against its formula written out again here in plain Python (float64, one row
at a time), so that a shared helper bug in the module cannot make both sides agree.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import replace

import pytest
import torch

from w2sray import losses
from w2sray.losses import (
    LOSSES,
    LossSpec,
    compute_loss,
    get_loss,
    harden_to_balance,
    register_loss,
    resolved_loss_params,
    validate_loss_params,
)

TOL = 1e-5
ALL_LOSSES = ["xent", "logconf", "product", "kl", "conf_threshold"]


# ------------------------------------------------------------------------------------------------
# Independent reference formulas (plain Python, float64)


def ref_log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def ref_ce(log_p: list[float], t: list[float]) -> float:
    return -sum(ti * li for ti, li in zip(t, log_p, strict=True))


def ref_xent(logits: list[list[float]], targets: list[list[float]]) -> float:
    rows = [ref_ce(ref_log_softmax(z), t) for z, t in zip(logits, targets, strict=True)]
    return sum(rows) / len(rows)


def ref_kl(logits: list[list[float]], targets: list[list[float]]) -> float:
    total = 0.0
    for z, t in zip(logits, targets, strict=True):
        log_p = ref_log_softmax(z)
        total += sum(ti * (math.log(ti) - li) for ti, li in zip(t, log_p, strict=True) if ti > 0)
    return total / len(logits)


def ref_product(logits, targets, alpha: float, beta: float) -> float:
    total = 0.0
    for z, t in zip(logits, targets, strict=True):
        log_p = ref_log_softmax(z)
        p = [math.exp(li) for li in log_p]
        num = [pi**beta * ti**alpha for pi, ti in zip(p, t, strict=True)]  # Python: 0.0 ** 0 == 1.0
        s = max(sum(num), 1e-12)
        total += ref_ce(log_p, [x / s for x in num])
    return total / len(logits)


def ref_conf_threshold(logits, targets, threshold: float) -> float:
    kept = [
        ref_ce(ref_log_softmax(z), t)
        for z, t in zip(logits, targets, strict=True)
        if max(t) >= threshold
    ]
    return sum(kept) / len(kept) if kept else 0.0


def ref_hardened(logits, targets) -> list[list[float]]:
    """One-hot targets: the round(b * B) rows with the largest p1 are class 1 (ties: earlier)."""
    n = len(logits)
    p1 = [math.exp(ref_log_softmax(z)[1]) for z in logits]
    b = sum(t[1] for t in targets) / n
    k = math.floor(b * n + 0.5)
    order = sorted(range(n), key=lambda i: -p1[i])  # Python's sort is stable
    positive = set(order[:k])
    return [[0.0, 1.0] if i in positive else [1.0, 0.0] for i in range(n)]


def ref_alpha(step_frac: float, alpha_max: float, warmup_frac: float) -> float:
    if warmup_frac == 0:
        return alpha_max
    return alpha_max * min(1.0, step_frac / warmup_frac)


def ref_logconf(logits, targets, step_frac, alpha_max, warmup_frac) -> float:
    a = ref_alpha(step_frac, alpha_max, warmup_frac)
    hard = ref_hardened(logits, targets)
    total = 0.0
    for z, t, h in zip(logits, targets, hard, strict=True):
        log_p = ref_log_softmax(z)
        total += (1 - a) * ref_ce(log_p, t) + a * ref_ce(log_p, h)
    return total / len(logits)


# ------------------------------------------------------------------------------------------------
# Data


def make_batch(
    seed: int, batch: int = 16, scale: float = 2.0, one_hot_rows: int = 3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random logits and soft targets (rows sum to 1), some rows one-hot like ground truth."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, 2, generator=g) * scale
    q = torch.rand(batch, generator=g)
    q[:one_hot_rows] = (torch.rand(one_hot_rows, generator=g) > 0.5).float()
    targets = torch.stack([1 - q, q], dim=-1)
    return logits, targets


def as_lists(logits: torch.Tensor, targets: torch.Tensor):
    return logits.double().tolist(), targets.double().tolist()


SEEDS = [0, 1, 2]


# ------------------------------------------------------------------------------------------------
# Values against the reference formulas


@pytest.mark.parametrize("seed", SEEDS)
def test_xent_matches_formula(seed):
    logits, targets = make_batch(seed)
    got = compute_loss("xent", logits, targets, 0.5, {})
    assert got.item() == pytest.approx(ref_xent(*as_lists(logits, targets)), abs=TOL, rel=TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_kl_matches_formula(seed):
    logits, targets = make_batch(seed)  # includes one-hot rows, exercising 0 log 0 = 0
    got = compute_loss("kl", logits, targets, 0.5, {})
    assert torch.isfinite(got)
    assert got.item() == pytest.approx(ref_kl(*as_lists(logits, targets)), abs=TOL, rel=TOL)


def test_kl_is_zero_when_prediction_equals_targets():
    targets = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    got = compute_loss("kl", targets.log(), targets, 0.0, {})
    assert got.item() == pytest.approx(0.0, abs=TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (0.0, 1.0), (1.0, 0.0), (2.0, 0.3)])
def test_product_matches_formula(seed, alpha, beta):
    logits, targets = make_batch(seed)
    got = compute_loss("product", logits, targets, 0.5, {"alpha": alpha, "beta": beta})
    want = ref_product(*as_lists(logits, targets), alpha, beta)
    assert got.item() == pytest.approx(want, abs=TOL, rel=TOL)


def test_product_beta_zero_is_xent():
    logits, targets = make_batch(4)
    got = compute_loss("product", logits, targets, 0.5, {"alpha": 1.0, "beta": 0.0})
    assert got.item() == pytest.approx(compute_loss("xent", logits, targets, 0.5, {}).item())


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("threshold", [0.0, 0.6, 0.8, 0.95])
def test_conf_threshold_matches_formula(seed, threshold):
    logits, targets = make_batch(seed)
    got = compute_loss("conf_threshold", logits, targets, 0.5, {"threshold": threshold})
    want = ref_conf_threshold(*as_lists(logits, targets), threshold)
    assert got.item() == pytest.approx(want, abs=TOL, rel=TOL)


def test_conf_threshold_keeps_exact_boundary_and_means_over_kept():
    logits = torch.tensor([[0.5, -0.5], [1.0, 2.0], [-1.0, 0.0]])
    targets = torch.tensor([[0.8, 0.2], [0.5, 0.5], [0.1, 0.9]])
    got = compute_loss("conf_threshold", logits, targets, 0.0, {"threshold": 0.8})
    want = ref_xent(logits[[0, 2]].double().tolist(), targets[[0, 2]].double().tolist())
    assert got.item() == pytest.approx(want, abs=TOL)


def test_conf_threshold_none_kept_is_zero_with_grad():
    logits = torch.randn(4, 2, requires_grad=True)
    targets = torch.full((4, 2), 0.5)
    loss = compute_loss("conf_threshold", logits, targets, 0.0, {"threshold": 0.9})
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert logits.grad is not None
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("step_frac", [0.0, 0.05, 0.1, 0.2, 0.7, 1.0])
@pytest.mark.parametrize("alpha_max,warmup_frac", [(0.5, 0.2), (1.0, 0.0), (0.75, 1.0)])
def test_logconf_matches_formula(seed, step_frac, alpha_max, warmup_frac):
    logits, targets = make_batch(seed)
    params = {"alpha_max": alpha_max, "warmup_frac": warmup_frac}
    got = compute_loss("logconf", logits, targets, step_frac, params)
    want = ref_logconf(*as_lists(logits, targets), step_frac, alpha_max, warmup_frac)
    assert got.item() == pytest.approx(want, abs=TOL, rel=TOL)


# ------------------------------------------------------------------------------------------------
# logconf: the alpha ramp and the hardening


def recovered_alpha(logits, targets, step_frac, alpha_max, warmup_frac) -> float:
    """Solve L = (1 - a) CE_weak + a CE_hard for a, with CE_hard from the reference hardening."""
    lg, tg = as_lists(logits, targets)
    ce_weak = ref_xent(lg, tg)
    ce_hard = ref_xent(lg, ref_hardened(lg, tg))
    assert abs(ce_hard - ce_weak) > 0.1, "batch must separate the two terms"
    params = {"alpha_max": alpha_max, "warmup_frac": warmup_frac}
    loss = compute_loss("logconf", logits, targets, step_frac, params).item()
    return (loss - ce_weak) / (ce_hard - ce_weak)


@pytest.fixture
def separating_batch():
    # Confident logits and unsure weak labels: the hardened term is far from the weak term.
    logits, targets = make_batch(7, batch=32, scale=4.0, one_hot_rows=0)
    targets = torch.stack([0.3 + 0.4 * targets[:, 0], 0.7 - 0.4 * targets[:, 0]], dim=-1)
    return logits, targets


@pytest.mark.parametrize("alpha_max,warmup_frac", [(0.5, 0.2), (1.0, 0.4), (0.3, 1.0)])
def test_logconf_ramp_values(separating_batch, alpha_max, warmup_frac):
    logits, targets = separating_batch
    points = {
        0.0: 0.0,
        warmup_frac / 2: alpha_max / 2,
        warmup_frac: alpha_max,
        1.0: alpha_max,
    }
    for step_frac, want in points.items():
        got = recovered_alpha(logits, targets, step_frac, alpha_max, warmup_frac)
        assert got == pytest.approx(want, abs=1e-4), step_frac


def test_logconf_ramp_is_linear_and_never_jumps(separating_batch):
    logits, targets = separating_batch
    alpha_max, warmup_frac = 0.5, 0.2
    steps = [i / 200 for i in range(201)]
    alphas = [recovered_alpha(logits, targets, s, alpha_max, warmup_frac) for s in steps]
    for s, a in zip(steps, alphas, strict=True):
        assert a == pytest.approx(ref_alpha(s, alpha_max, warmup_frac), abs=1e-4), s
    slope = alpha_max / warmup_frac
    for (s0, a0), (s1, a1) in itertools.pairwise(zip(steps, alphas, strict=True)):
        assert a1 >= a0 - 1e-4, "alpha must not decrease"
        # The old OpenAI schedule (step_frac, then aux_coef) would jump by 0.3 at s = 0.2.
        assert a1 - a0 <= slope * (s1 - s0) + 1e-4, f"jump between {s0} and {s1}"
    # Either side of the end of warmup.
    before = recovered_alpha(logits, targets, warmup_frac - 1e-6, alpha_max, warmup_frac)
    after = recovered_alpha(logits, targets, warmup_frac + 1e-6, alpha_max, warmup_frac)
    assert after - before == pytest.approx(0.0, abs=1e-4)


def test_logconf_warmup_zero_is_full_alpha_from_start(separating_batch):
    logits, targets = separating_batch
    assert recovered_alpha(logits, targets, 0.0, 0.6, 0.0) == pytest.approx(0.6, abs=1e-4)


def test_logconf_alpha_helper():
    assert losses.logconf_alpha(0.0, 0.5, 0.2) == 0.0
    assert losses.logconf_alpha(0.1, 0.5, 0.2) == pytest.approx(0.25)
    assert losses.logconf_alpha(0.2, 0.5, 0.2) == pytest.approx(0.5)
    assert losses.logconf_alpha(1.0, 0.5, 0.2) == pytest.approx(0.5)
    assert losses.logconf_alpha(0.0, 0.5, 0.0) == 0.5


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("step_frac", [0.0, 0.1, 1.0])
def test_logconf_alpha_max_zero_is_xent(seed, step_frac):
    logits, targets = make_batch(seed)
    got = compute_loss("logconf", logits, targets, step_frac, {"alpha_max": 0.0})
    want = compute_loss("xent", logits, targets, step_frac, {})
    assert got.item() == pytest.approx(want.item(), abs=TOL)


@pytest.mark.parametrize("batch", [1, 7, 16, 33])
@pytest.mark.parametrize("balance", [0.0, 0.1, 0.25, 0.5, 0.62, 0.9, 1.0])
def test_hardened_fraction_matches_balance(batch, balance):
    g = torch.Generator().manual_seed(batch)
    probs = torch.rand(batch, generator=g)
    hard = harden_to_balance(probs, balance)
    assert hard.shape == (batch, 2)
    assert torch.equal(hard.sum(-1), torch.ones(batch))
    n_pos = int(hard[:, 1].sum())
    assert n_pos == math.floor(balance * batch + 0.5)
    assert abs(n_pos / batch - balance) <= 0.5 / batch + 1e-9
    # Positives are exactly the most confident examples.
    pos, neg = probs[hard[:, 1] == 1], probs[hard[:, 1] == 0]
    if len(pos) and len(neg):
        assert pos.min() >= neg.max()


def test_hardened_fraction_from_weak_balance_in_logconf():
    # Weak balance 0.25 over 8 rows -> exactly 2 rows hardened to class 1 inside logconf.
    logits, _ = make_batch(3, batch=8)
    targets = torch.tensor([[1.0, 0.0]] * 6 + [[0.0, 1.0]] * 2)
    assert sum(h[1] for h in ref_hardened(*as_lists(logits, targets))) == 2
    params = {"alpha_max": 1.0, "warmup_frac": 0.0}  # loss is then CE against hardened alone
    got = compute_loss("logconf", logits, targets, 0.5, params)
    lg, tg = as_lists(logits, targets)
    assert got.item() == pytest.approx(ref_xent(lg, ref_hardened(lg, tg)), abs=TOL)


def test_hardening_ties_give_exact_count_earliest_first():
    probs = torch.full((10,), 0.5)
    hard = harden_to_balance(probs, 0.3)
    assert hard[:, 1].tolist() == [1.0] * 3 + [0.0] * 7


# ------------------------------------------------------------------------------------------------
# Gradients, dtypes and edge inputs

LOSS_PARAMS = {
    "xent": {},
    "logconf": {"alpha_max": 0.5, "warmup_frac": 0.2},
    "product": {"alpha": 1.0, "beta": 1.0},
    "kl": {},
    "conf_threshold": {"threshold": 0.6},
}


@pytest.mark.parametrize("name", ALL_LOSSES)
@pytest.mark.parametrize("scale", [1.0, 50.0, 1e3])
def test_gradients_flow_and_are_finite(name, scale):
    logits, targets = make_batch(11, scale=scale)
    logits.requires_grad_(True)
    loss = compute_loss(name, logits, targets, 0.3, LOSS_PARAMS[name])
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    loss.backward()
    assert logits.grad is not None
    assert torch.isfinite(logits.grad).all()
    if scale == 1.0:
        assert logits.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ALL_LOSSES)
def test_bf16_logits_are_computed_in_float32(name):
    logits, targets = make_batch(12)
    lb = logits.to(torch.bfloat16).requires_grad_(True)
    loss = compute_loss(name, lb, targets.to(torch.bfloat16), 0.3, LOSS_PARAMS[name])
    assert loss.dtype == torch.float32
    want = compute_loss(
        name, lb.detach().float(), targets.to(torch.bfloat16).float(), 0.3, LOSS_PARAMS[name]
    )
    assert loss.item() == pytest.approx(want.item(), abs=TOL)
    loss.backward()
    assert lb.grad is not None and lb.grad.dtype == torch.bfloat16
    assert torch.isfinite(lb.grad.float()).all()


def test_product_disjoint_support_is_finite():
    # p underflows to exactly [0, 1] in float32 while the label is [1, 0]: normaliser is 0.
    logits = torch.tensor([[-200.0, 200.0], [0.0, 0.0]], requires_grad=True)
    targets = torch.tensor([[1.0, 0.0], [0.5, 0.5]])
    loss = compute_loss("product", logits, targets, 0.0, {"alpha": 1.0, "beta": 1.0})
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_compute_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="must both be"):
        compute_loss("xent", torch.zeros(4, 2), torch.zeros(3, 2), 0.0, {})


# ------------------------------------------------------------------------------------------------
# Registry and parameter validation


def test_registry_has_all_losses_with_complete_defaults():
    assert set(ALL_LOSSES) <= set(LOSSES)
    expected = {
        "xent": {},
        "logconf": {"alpha_max": 0.5, "warmup_frac": 0.2},
        "product": {"alpha": 1.0, "beta": 1.0},
        "kl": {},
        "conf_threshold": {"threshold": 0.8},
    }
    for name, defaults in expected.items():
        spec = get_loss(name)
        assert isinstance(spec, LossSpec)
        assert spec.name == name and spec.doc
        assert spec.defaults == defaults
        # defaults must name exactly the keyword parameters fn takes after the three inputs.
        extra = list(inspect.signature(spec.fn).parameters)[3:]
        assert set(extra) == set(defaults)


def test_resolved_params_are_what_compute_loss_runs_with(monkeypatch):
    """Defaults are merged in one place (resolved_loss_params, also hashed into run keys), read
    from the registry when called: a changed default changes both the loss and the key."""
    assert resolved_loss_params("xent", None) == {}
    assert resolved_loss_params("logconf", {"alpha_max": 1}) == {
        "alpha_max": 1.0,
        "warmup_frac": 0.2,
    }
    with pytest.raises(KeyError, match="nope"):
        resolved_loss_params("nope", {})
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(8, 2, generator=gen)
    targets = torch.softmax(torch.randn(8, 2, generator=gen), dim=-1)

    def loss(params: dict) -> torch.Tensor:
        return compute_loss("logconf", logits, targets, 1.0, params)

    default, strong = loss({}), loss({"alpha_max": 1.0})
    assert torch.equal(default, loss(resolved_loss_params("logconf", {})))
    assert not torch.equal(default, strong)
    spec = get_loss("logconf")
    monkeypatch.setitem(
        LOSSES, "logconf", replace(spec, defaults={**spec.defaults, "alpha_max": 1.0})
    )
    assert torch.equal(loss({}), strong)
    assert resolved_loss_params("logconf", {})["alpha_max"] == 1.0


def test_get_loss_unknown_lists_known_names():
    with pytest.raises(KeyError) as info:
        get_loss("nope")
    message = str(info.value)
    assert "nope" in message
    for name in ALL_LOSSES:
        assert name in message


def test_compute_loss_unknown_name_raises_keyerror():
    with pytest.raises(KeyError, match="xent"):
        compute_loss("nope", torch.zeros(2, 2), torch.full((2, 2), 0.5), 0.0, {})


def test_register_loss_adds_and_rejects_duplicates():
    name = "_test_only_loss"
    try:

        @register_loss(name, {"scale": 2.0}, "test loss")
        def _fn(logits, targets, step_frac, scale=2.0):
            return logits.float().sum() * scale

        assert get_loss(name).fn is _fn and get_loss(name).version == 1
        got = compute_loss(name, torch.ones(2, 2), torch.full((2, 2), 0.5), 0.0, {})
        assert got.item() == pytest.approx(8.0)
        with pytest.raises(ValueError, match="already registered"):
            register_loss(name, {}, "again")
    finally:
        LOSSES.pop(name, None)
        losses._BOUNDS.pop(name, None)
    with pytest.raises(ValueError, match="already registered"):
        register_loss("xent", {}, "duplicate of a built-in")


def test_validate_accepts_good_params():
    assert validate_loss_params("xent", {}) == []
    assert validate_loss_params("logconf", {"alpha_max": 1, "warmup_frac": 0.0}) == []
    assert validate_loss_params("product", {"alpha": 0.0, "beta": 7.5}) == []
    assert validate_loss_params("conf_threshold", {"threshold": 1.0}) == []


def test_validate_unknown_param_lists_accepted():
    problems = validate_loss_params("logconf", {"aux_coef": 0.5})
    assert len(problems) == 1
    assert "aux_coef" in problems[0]
    assert "alpha_max" in problems[0] and "warmup_frac" in problems[0]
    problems = validate_loss_params("xent", {"alpha": 1.0})
    assert len(problems) == 1 and "alpha" in problems[0]


@pytest.mark.parametrize(
    "name,params",
    [
        ("logconf", {"alpha_max": 1.5}),
        ("logconf", {"alpha_max": -0.1}),
        ("logconf", {"warmup_frac": 1.01}),
        ("logconf", {"warmup_frac": -0.5}),
        ("conf_threshold", {"threshold": 2.0}),
        ("conf_threshold", {"threshold": -0.01}),
        ("product", {"alpha": -1.0}),
        ("product", {"beta": -0.5}),
        ("product", {"alpha": float("nan")}),
        ("product", {"beta": float("inf")}),
    ],
)
def test_validate_out_of_range(name, params):
    problems = validate_loss_params(name, params)
    assert len(problems) == 1
    assert next(iter(params)) in problems[0]


@pytest.mark.parametrize("value", ["0.5", None, True, [0.5]])
def test_validate_non_numeric(value):
    problems = validate_loss_params("conf_threshold", {"threshold": value})
    assert len(problems) == 1 and "number" in problems[0]


def test_validate_reports_every_problem_and_unknown_loss():
    problems = validate_loss_params("product", {"alpha": -1, "beta": "x", "gamma": 1})
    assert len(problems) == 3
    unknown = validate_loss_params("nope", {})
    assert len(unknown) == 1 and "xent" in unknown[0]


def test_compute_loss_merges_defaults_and_rejects_bad_params():
    logits, targets = make_batch(5)
    default = compute_loss("logconf", logits, targets, 0.05, {})
    explicit = compute_loss("logconf", logits, targets, 0.05, {"alpha_max": 0.5})
    direct = get_loss("logconf").fn(logits, targets, 0.05, alpha_max=0.5, warmup_frac=0.2)
    assert default.item() == pytest.approx(explicit.item()) == pytest.approx(direct.item())
    with pytest.raises(ValueError, match="alpha_max"):
        compute_loss("logconf", logits, targets, 0.05, {"alpha_max": 3.0})
    with pytest.raises(ValueError, match="accepted"):
        compute_loss("logconf", logits, targets, 0.05, {"aux_coef": 0.5})
