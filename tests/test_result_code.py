"""The code behind each versioned part of a run key (w2sray/result_code.py) cannot change
without a decision: bump the version (results change, the runs retrain) or record the
fingerprint again (a refactor). Comments, docstrings and layout are not code."""

from __future__ import annotations

import json
from pathlib import Path

from w2sray import result_code
from w2sray.result_code import GROUPS, NO_RESULT_CODE, PACKAGES, changes, code_digest, fingerprint

RECORDED = Path(__file__).with_name("result_code.json")


def test_the_recorded_fingerprint_matches_the_code():
    problems = changes(json.loads(RECORDED.read_text()), fingerprint())
    assert not problems, (
        "code that decides run results changed; for each group below either bump the version "
        "named or, for a change that leaves results as they were, record the fingerprint: "
        ".venv/bin/python -m w2sray.result_code > tests/result_code.json\n" + "\n".join(problems)
    )


def test_every_module_is_placed_in_a_group_or_declared_free_of_result_code():
    grouped = [f for files in GROUPS.values() for f in files]
    assert len(grouped) == len(set(grouped)) and not set(grouped) & set(NO_RESULT_CODE)
    root = result_code.ROOT
    modules = {str(p.relative_to(root)) for pkg in PACKAGES for p in (root / pkg).glob("*.py")}
    assert modules <= {*grouped, *NO_RESULT_CODE}, sorted(modules - {*grouped, *NO_RESULT_CODE})
    assert all((root / f).is_file() for f in [*grouped, *NO_RESULT_CODE])


SOURCE = '''"""Module docstring."""


def f(x):
    """What f does."""
    # a comment
    return max(x + 1, 0)
'''


def test_the_digest_sees_code_not_comments_docstrings_or_layout(tmp_path):
    def digest(text: str) -> str:
        path = tmp_path / "m.py"
        path.write_text(text)
        return code_digest(path)

    base = digest(SOURCE)
    same = [
        SOURCE.replace("Module docstring.", "Another text.\n\nOver lines."),
        SOURCE.replace("# a comment", "# another comment\n\n    # and one more"),
        SOURCE.replace("max(x + 1, 0)", "max(\n        x + 1,\n        0,\n    )"),
    ]
    assert all(digest(text) == base for text in same)
    changes_ = ("max(x + 2, 0)", "min(x + 1, 0)", "max(0, x + 1)", "max(x + 1, 0, 1)", "max((x,))")
    assert digest(SOURCE.replace("max(x + 1, 0)", "max((x))")) != digest(
        SOURCE.replace("max(x + 1, 0)", "max((x,))")
    )  # a one-element tuple's comma is code
    for changed in changes_:
        assert digest(SOURCE.replace("max(x + 1, 0)", changed)) != base


def test_a_code_change_needs_a_bump_or_a_new_record():
    now = fingerprint()
    old = json.loads(json.dumps(now))
    assert changes(old, now) == []
    old["losses"]["files"]["losses.py"] = "0" * 16
    (line,) = changes(old, now)
    assert line.startswith("losses: code changed in losses.py") and "bump it" in line
    old["losses"]["versions"]["xent"] = 0  # bumped since: the new state must still be recorded
    (line,) = changes(old, now)
    assert line.startswith("losses: versions") and "record it" in line


def test_f_strings_are_one_token_whatever_the_python(tmp_path):
    """Python 3.12 tokenizes an f-string into pieces where 3.11 gives one STRING: the digest
    sees one STRING, its source text, under both (CI's Python need not be this one)."""
    from w2sray.result_code import _tokens

    source = 'x = f"a {b!r:>{w}} {f\'{c}\'}" + "d"\n'
    strings = [text for name, text, _, _ in _tokens(source) if name == "STRING"]
    assert strings == ["f\"a {b!r:>{w}} {f'{c}'}\"", '"d"']
    names = [name for name, *_ in _tokens(source)]
    assert not [n for n in names if n.startswith("FSTRING")]


def test_the_end_of_the_file_does_not_change_the_digest(tmp_path):
    a, b = tmp_path / "a.py", tmp_path / "b.py"
    a.write_text("def f():\n    return 1\n")
    b.write_text("def f():\n    return 1")
    assert code_digest(a) == code_digest(b)
