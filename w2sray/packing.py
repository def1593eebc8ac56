"""Run packing: short runs of a stage trained one after another by one Ray Train worker group.

Every TorchTrainer.fit() pays Ray Train's start-up (controller, worker processes importing
torch, transformers and DeepSpeed, the process group): seconds per run, where most GT and
transfer runs of small models train for a few seconds (benchmarks/RESULTS.md sections 2 and
10). A pack pays it once. Each run in a pack keeps its own key, model, DeepSpeed engine,
artifacts and failure record (w2sray/train/pack.py); a run that raises fails alone.

What is packed: ground-truth, transfer and features runs with the same resources whose
estimated cost (parameters x training examples x epochs) is at most ``max_cost``, in packs
of at most ``max_runs``, never so few packs that the stage runs fewer trials at once than it
could. Probe runs (a head on cached features, about a second each) go in packs of up to
PROBE_PACK_RUNS whatever the slots: one worker group's start-up instead of several.
Not packed: pretraining runs and runs above ``max_cost`` (long: start-up is a small share),
search trials, and runs of a model of unknown size. With ``max_failures``, a pack whose worker
group dies restarts: its finished runs are skipped and the run in progress resumes from its
own checkpoint (checkpoints carry their run's key; an earlier run's is never loaded).
"""

from __future__ import annotations

import functools
import hashlib
import math

from w2sray.runs import Run
from w2sray.settings import ModelRef
from w2sray.spec import Resources

MAX_RUNS = 4
MAX_COST = 1e11  # e.g. a 17M-parameter encoder on 3,000 examples for 2 epochs is 1e11
# dataflow: the whole sweep as one experiment, one pack per slot (w2sray/dataflow.py)
DEFAULTS = {"max_runs": MAX_RUNS, "max_cost": MAX_COST, "dataflow": True}
PROBE_PACK_RUNS = 64  # probe runs (train.probe) per pack, when packing is on (max_runs > 1)


def model_params(model: ModelRef) -> int | None:
    """The parameter count of a run's model: built-in by formula, else the defaults table, else
    counted from a local folder's config.json; None when unknown."""
    return _params(model.source, model.trust_remote_code)


@functools.lru_cache(maxsize=256)
def _params(source: str, trust_remote_code: bool) -> int | None:
    from w2sray.models.defaults import builtin_params, local_model_defaults, model_defaults
    from w2sray.models.registry import is_builtin

    if is_builtin(source):
        return builtin_params(source)
    d = model_defaults(source) or local_model_defaults(source, trust_remote_code)
    return d.params if d is not None else None


def run_cost(run: Run) -> float | None:
    """Parameters x training examples x epochs (None: model size unknown). A features run:
    a forward pass (a third of a training step) over its three splits. A probe run: 0, a head
    on cached features is cheap whatever the backbone."""
    if run.probe is not None:
        return 0.0
    params = model_params(run.model)
    if params is None:
        return None
    d = run.dataset  # gt, transfer and features runs: a labelled dataset (DataRef)
    if run.kind == "features":
        return float(params) * (d.n_gt + d.n_weak + d.n_test) / 3
    examples = d.n_gt if run.kind == "gt" else d.n_weak
    return float(params) * examples * float(getattr(run.train, "epochs", 1))


def packable(run: Run, max_cost: float) -> bool:
    if run.kind not in ("gt", "transfer", "features"):
        return False
    cost = run_cost(run)
    return cost is not None and cost <= max_cost


def make_packs(
    runs: list[Run], slots: int, max_runs: int = MAX_RUNS, max_cost: float = MAX_COST
) -> list[list[Run]]:
    """Split a stage's runs into trials: packs of packable runs with the same resources, the
    others alone. Pack size: at most ``max_runs``, and small enough that there are at least
    ``slots`` trials while there are that many runs (packing never idles a slot)."""
    singles: list[list[Run]] = []
    groups: dict[Resources, list[Run]] = {}
    probes: dict[Resources, list[Run]] = {}
    for run in runs:
        if max_runs > 1 and run.probe is not None:
            probes.setdefault(run.resources, []).append(run)
        elif max_runs > 1 and packable(run, max_cost):
            groups.setdefault(run.resources, []).append(run)
        else:
            singles.append([run])
    packs: list[list[Run]] = []
    for group in groups.values():
        size = max(1, min(max_runs, math.ceil(len(group) / max(1, slots))))
        packs += [group[i : i + size] for i in range(0, len(group), size)]
    # Probe runs train a head for about a second: a second worker group's start-up costs more
    # than the slot it would fill, so they fill packs of PROBE_PACK_RUNS whatever the slots.
    for group in probes.values():
        packs += [group[i : i + PROBE_PACK_RUNS] for i in range(0, len(group), PROBE_PACK_RUNS)]
    return packs + singles


def pack_key(runs: list[Run]) -> str:
    """A pack's name (its Train run's folder): its runs' keys, hashed."""
    if len(runs) == 1:
        return runs[0].key
    digest = hashlib.sha256(",".join(r.key for r in runs).encode()).hexdigest()
    return f"pack-{digest[:20]}"
