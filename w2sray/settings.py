"""Typed run settings, from spec to worker: what a run (w2sray/runs.py ``Run``) carries about
its model (ModelRef), its data (DataRef; a pretraining run's CorpusRef) and how it trains (the
spec's TrainSettings for fine-tuning, ProbeTrain, PretrainSettings, FeatureSettings), beside its
layout (the spec's Resources). The planner builds them and hashes their ``as_dict()`` into the
run key; ``Run.to_config()`` writes those dicts to config.json, and the workers read them back
with ``from_dict`` instead of string keys with fallbacks.

``as_dict`` is exactly the dict the run key has always hashed: optional fields a run does not
have (``OPTIONAL``) are left out, not written as null, so keys stay as they were
(tests/test_keys.py golden keys; tests/test_settings.py round trips).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


def _known(cls: type, d: dict[str, Any]) -> dict[str, Any]:
    """``d``'s entries that are fields of ``cls`` (a config written by a newer planner may carry
    more; a missing one takes its default)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}


class KeyedSettings:
    """``from_dict`` (a run config's dict) and ``as_dict`` (what the run key hashes) of a
    settings dataclass. Fields named in ``OPTIONAL`` are left out of the dict when None: runs
    without them were keyed before they existed."""

    OPTIONAL: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        return cls(**_known(cls, d))

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in d.items() if not (k in self.OPTIONAL and v is None)}


@dataclass(frozen=True)
class ModelRef(KeyedSettings):
    """Which model a run trains, as planned: a built-in (with its architecture), a local folder
    (keyed by its files' digest), or a hub id (keyed by the commit its revision points at), and
    the pretraining run whose weights it starts from, if any."""

    name: str  # the spec's display name (not keyed)
    source: str  # built-in name, absolute local folder or hub id
    revision: str | None = None  # as the spec wrote it
    trust_remote_code: bool = False
    pooling: str | None = "auto"  # None: a pretraining run's model (no classifier head)
    builtin: dict[str, Any] | None = None  # a built-in's architecture
    sha256: str | None = None  # a local folder's digest (w2sray/digests.py)
    commit: str | None = None  # a hub model's resolved commit (w2sray/models/revisions.py)
    pretrain: str | None = None  # key of the pretraining run whose weights it starts from

    OPTIONAL = ("pooling", "builtin", "sha256", "commit", "pretrain")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelRef:
        return cls(**{"pooling": None, **_known(cls, d)})

    @property
    def load_revision(self) -> str | None:
        """What a worker loads: the commit the plan resolved, else the spec's revision."""
        return self.commit or self.revision


@dataclass(frozen=True)
class DataRef(KeyedSettings):
    """A labelled dataset as a run carries it: the registry entry, its loader's params with
    their defaults merged, the split sizes and seed, and what keys its content: a local file's
    sha256 (and its test files'), a hub dataset's resolved commit."""

    name: str
    params: dict[str, Any]
    n_gt: int
    n_weak: int
    n_test: int
    split_seed: int
    sha256: str | None = None
    test_sha256: list[str] | None = None
    commit: str | None = None

    OPTIONAL = ("sha256", "test_sha256", "commit")


@dataclass(frozen=True)
class CorpusRef(KeyedSettings):
    """A pretraining run's unlabeled texts (w2sray/data/corpus.py): a registered dataset's,
    drawn with ``seed``, or a local file's (``name`` "file", keyed by its sha256)."""

    name: str
    params: dict[str, Any]
    n: int  # documents
    seed: int | None = None  # a dataset's draw; a file has none
    sha256: str | None = None
    commit: str | None = None

    OPTIONAL = ("seed", "sha256", "commit")


@dataclass(frozen=True)
class PretrainSettings(KeyedSettings):
    """A pretraining run's optimisation (the spec's PretrainSpec less its corpus, which is the
    run's dataset, its seed, the run's seed, and mask_prob, the mlm loss's parameter)."""

    objective: str  # clm | mlm: also the run's loss
    steps: int
    lr: float
    batch_size: int
    max_length: int
    warmup_frac: float
    weight_decay: float
    grad_clip: float

    @classmethod
    def of(cls, pre: Any) -> PretrainSettings:
        """From a spec.PretrainSpec."""
        return cls(**_known(cls, asdict(pre)))


@dataclass(frozen=True)
class FeatureSettings(KeyedSettings):
    """A features run's: what its probes' features are computed with."""

    max_length: int
    dtype: str
    eval_batch_size: int


@dataclass(frozen=True)
class ProbeSettings(KeyedSettings):
    """A probe run's head and its optimisation, defaults merged (w2sray/train/probe.py
    ``resolved``): ``batch_size`` None is full-batch (logreg's L-BFGS)."""

    head: str
    epochs: float
    lr: float
    weight_decay: float
    batch_size: int | None = None


@dataclass(frozen=True)
class ProbeTrain(KeyedSettings):
    """A probe run's ``train``: its probe, and only the fine-tuning settings a probe uses
    (``max_length`` and ``dtype``: what its features were computed with; ``select``), so the
    other fine-tuning settings never retrain it."""

    probe: ProbeSettings
    max_length: int
    dtype: str
    select: dict[str, Any] | None = None

    OPTIONAL = ("select",)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeTrain:
        return cls(**{**_known(cls, d), "probe": ProbeSettings.from_dict(d["probe"])})
