"""Which weights (or rows) a hub model's (or hub dataset's) run trains on: its ``revision``
resolved to a commit at plan time.

A hub id with ``revision: null`` (or a branch or tag) names whatever the hub holds *now*: if the
run key hashed only the id, new weights or rows pushed to ``main`` would silently reuse the old
results. So the planner resolves the revision to its commit sha, the key hashes the commit, and
the workers load exactly that commit. The hub is asked first (it is the truth: a cached ``main``
may be stale), then the local Hugging Face cache's refs (offline machines); when neither
answers, the run stays keyed by the repo's name and revision and the plan says so. Models and
datasets alike (``repo_type``): w2sray/runs.py for models, w2sray/data/hub.py for datasets.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass

SHA = re.compile(r"[0-9a-f]{40}")
HUB_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Resolved:
    commit: str | None  # the 40-hex commit, None when it could not be found
    via: str  # "pinned" (the spec gave a commit), "hub", "cache" or "unresolved"


def _offline() -> bool:
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")
    return env or bool(constants.HF_HUB_OFFLINE)


REPO_TYPES = ("model", "dataset")


def _from_cache(repo: str, ref: str, repo_type: str = "model") -> str | None:
    """The commit the local Hugging Face cache last saw ``ref`` of ``repo`` at (the hub cache's
    layout: ``models--owner--name/refs/<ref>``, ``datasets--owner--name/refs/<ref>``)."""
    from huggingface_hub import constants

    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    path = os.path.join(cache, f"{repo_type}s--" + repo.replace("/", "--"), "refs", ref)
    try:
        with open(path) as fh:
            sha = fh.read().strip()
    except OSError:
        return None
    return sha if SHA.fullmatch(sha) else None


def _from_hub(repo: str, ref: str | None, repo_type: str = "model") -> str | None:
    from huggingface_hub import HfApi

    api = HfApi()
    info = api.dataset_info if repo_type == "dataset" else api.model_info
    try:
        sha = info(repo, revision=ref, timeout=HUB_TIMEOUT_S).sha
    except Exception:  # unreachable, unknown repo, no access: the cache may still know
        return None
    return sha if sha and SHA.fullmatch(sha) else None


# (repo type, repo, revision) -> (when asked, the hub's answer): a plan resolves every run's
# model and dataset, so the hub is asked once per repo and plan, not once per run
_ASKED: dict[tuple[str, str, str | None], tuple[float, str | None]] = {}
HUB_ANSWER_TTL_S = 60.0


def _hub_answer(repo: str, revision: str | None, repo_type: str) -> str | None:
    now = time.monotonic()
    asked = _ASKED.get((repo_type, repo, revision))
    if asked is None or now - asked[0] > HUB_ANSWER_TTL_S:
        answer = _from_hub(repo, revision, repo_type)
        asked = _ASKED[(repo_type, repo, revision)] = (now, answer)
    return asked[1]


def resolve_revision(repo: str, revision: str | None, repo_type: str = "model") -> Resolved:
    """The commit ``revision`` (None: ``main``) of hub repo ``repo`` (a ``model`` or a
    ``dataset``) points at: a commit as given, else the hub's answer (unless HF_HUB_OFFLINE),
    else the local cache's refs."""
    if repo_type not in REPO_TYPES:
        raise ValueError(f"repo_type must be one of {REPO_TYPES}, got {repo_type!r}")
    if revision and SHA.fullmatch(revision):
        return Resolved(revision, "pinned")
    if not _offline():
        sha = _hub_answer(repo, revision, repo_type)
        if sha:
            return Resolved(sha, "hub")
    sha = _from_cache(repo, revision or "main", repo_type)
    return Resolved(sha, "cache") if sha else Resolved(None, "unresolved")
