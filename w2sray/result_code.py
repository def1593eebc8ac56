"""Which code determines which results, and a fingerprint that tells when it changed.

A run key hashes version numbers besides settings (w2sray/runs.py): ``RESULT_VERSION`` for the
training loop, ``PART_VERSIONS`` per run kind and method feature, and each loss's and dataset's
registry ``version``. A change to the code behind one of them must either bump it (the change
alters results: the affected runs retrain) or be declared a refactor (it does not). Nothing
enforced that; ``tests/test_result_code.py`` now does: it compares ``fingerprint()`` with the
one recorded in ``tests/result_code.json`` and fails, naming the group, the files and the
version to bump, until one of the two is done and the fingerprint recorded again:

    .venv/bin/python -m w2sray.result_code > tests/result_code.json

The digest covers code only: comments, docstrings, blank lines and line breaks inside brackets
are not in it (Python's tokens, not its AST, normalised so that Python 3.11, 3.12 and 3.13
agree; parentheses a formatter adds around a wrapped expression are tokens: record again then).
"""

from __future__ import annotations

import ast
import hashlib
import io
import json
import tokenize
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent

# group -> the modules (relative to w2sray/) whose code decides the results its version keys
GROUPS: dict[str, tuple[str, ...]] = {
    # RESULT_VERSION: every fine-tuning run (gt, transfer, search trial)
    "training": (
        "train/loop.py", "train/steps.py", "train/tasks.py", "train/worker.py", "train/zero.py",
        "train/select.py", "train/checkpoint.py", "models/__init__.py", "models/head.py",
        "models/registry.py", "models/lora.py", "models/defaults.py", "data/__init__.py",
        "data/tokenizer.py", "data/sampling.py",
    ),
    "pretrain": ("train/pretrain.py", "data/corpus.py"),  # PART_VERSIONS["pretrain"]
    "features": ("train/features.py",),  # PART_VERSIONS["features"]
    "probe": ("train/probe.py",),  # PART_VERSIONS["probe"]
    "generative": ("methods/generative.py",),  # PART_VERSIONS["generative"]
    "search": ("methods/search_trial.py",),  # PART_VERSIONS["search"]
    "losses": ("losses.py",),  # each loss's registry version
    "datasets": (  # each dataset's registry version
        "data/latent.py", "data/synthetic.py", "data/hub.py", "data/local.py",
        "data/formatters.py",
    ),
}  # fmt: skip

# Modules of the packages above that decide no result (orchestration, planning: what they decide
# is hashed into run keys as settings). Every module of those packages is in a group or here, so
# a new one has to be placed (tests/test_result_code.py).
PACKAGES = ("train", "models", "data", "methods")
NO_RESULT_CODE = (
    "train/__init__.py", "train/entries.py", "train/pack.py", "train/trainer.py",
    "train/gpu_share.py",  # a memory cap: a run that fits trains the same
    "models/revisions.py",  # which commit: keyed
    "methods/__init__.py", "methods/bootstrap.py", "methods/search.py",
    "methods/search_tune.py",  # which runs exist and their settings: keyed
)  # fmt: skip


def versions(group: str) -> Any:
    """The version number(s) a change to ``group``'s code bumps."""
    from w2sray.data import DATASETS
    from w2sray.losses import LOSSES
    from w2sray.runs import PART_VERSIONS, RESULT_VERSION

    if group == "training":
        return {"RESULT_VERSION": RESULT_VERSION}
    if group == "losses":
        return {name: spec.version for name, spec in sorted(LOSSES.items())}
    if group == "datasets":
        return {name: entry.version for name, entry in sorted(DATASETS.items())}
    return {f"PART_VERSIONS[{group!r}]": PART_VERSIONS[group]}


def _docstring_lines(source: str) -> set[int]:
    """Line numbers of module, class and function docstrings."""
    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    lines.update(range(body[0].lineno, (body[0].end_lineno or 0) + 1))
    return lines


def _tokens(source: str) -> list[tuple[str, str, tuple[int, int], tuple[int, int]]]:
    """(type name, text, start, end) of ``source``'s tokens, the same under Python 3.11 and
    3.12+: 3.12 splits an f-string into FSTRING_START / MIDDLE / END and the tokens of its
    fields, where 3.11 gives one STRING; here it is one STRING again, its source text."""
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))

    def at(pos: tuple[int, int]) -> int:
        return offsets[pos[0] - 1] + pos[1]

    out: list[tuple[str, str, tuple[int, int], tuple[int, int]]] = []
    depth, start = 0, (0, 0)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        name = tokenize.tok_name[tok.type]
        if name == "FSTRING_START":
            depth, start = depth + 1, tok.start if depth == 0 else start
            continue
        if name == "FSTRING_END":
            depth -= 1
            if depth == 0:
                out.append(("STRING", source[at(start) : at(tok.end)], start, tok.end))
            continue
        if depth == 0:
            out.append((name, tok.string, tok.start, tok.end))
    return out


def code_digest(path: Path) -> str:
    """sha256 of a module's code tokens: comments, docstrings, blank lines, line breaks inside
    brackets and a formatter's trailing commas left out; the same under every Python 3.11+."""
    source = path.read_text(encoding="utf-8")
    skip = _docstring_lines(source)
    toks = _tokens(source)
    drop = {"COMMENT", "NL", "ENCODING", "ENDMARKER"}
    kept = []
    for i, (name, text, start, _) in enumerate(toks):
        if name in drop or start[0] in skip:
            continue
        if text == ",":  # a formatter's trailing comma: a line break, then the bracket
            rest = [t for t in toks[i + 1 :] if t[0] != "COMMENT"]
            if len(rest) > 1 and rest[0][0] == "NL" and rest[1][1] in (")", "]", "}"):
                continue
        # NEWLINE and DEDENT: their text differs between tokenizers (end of file, '' or '\n')
        kept.append(name if name in ("NEWLINE", "DEDENT", "INDENT") else f"{name}:{text}")
    return hashlib.sha256("\n".join(kept).encode()).hexdigest()[:16]


def fingerprint() -> dict[str, Any]:
    """{group: {"versions": ..., "files": {module: digest}}} for every group."""
    return {
        group: {
            "versions": versions(group),
            "files": {f: code_digest(ROOT / f) for f in files},
        }
        for group, files in GROUPS.items()
    }


def changes(recorded: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between a recorded fingerprint and the code's, one line per group."""
    out = []
    for group, cur in now.items():
        old = recorded.get(group)
        if old is None:
            out.append(f"{group}: not recorded yet")
            continue
        files = sorted(
            f for f in {*cur["files"], *old["files"]} if cur["files"].get(f) != old["files"].get(f)
        )
        bumped = cur["versions"] != old["versions"]
        if files and not bumped:
            out.append(
                f"{group}: code changed in {', '.join(files)} with {cur['versions']} unchanged: "
                "if results change, bump it (the runs it keys retrain); if not (a refactor), "
                "record the fingerprint again"
            )
        elif files or bumped:
            out.append(f"{group}: versions {old['versions']} -> {cur['versions']}: record it")
    out += [f"{group}: recorded but no longer a group" for group in recorded if group not in now]
    return out


if __name__ == "__main__":
    print(json.dumps(fingerprint(), indent=2, sort_keys=True))
