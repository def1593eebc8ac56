"""Tests for w2sray.store: atomic run folders, DONE.json checksums, failures and manifests."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pandas as pd
import pytest

from w2sray.store import DONE, Store, error_line, parquet_bytes

KEY = "gt-0123456789abcdef0123"


def artifacts(tag: str = "a") -> dict[str, bytes]:
    df = pd.DataFrame({"id": [0, 1, 2], "p1": [0.1, 0.6, 0.9], "tag": [tag] * 3})
    return {
        "config.json": json.dumps({"key": KEY, "tag": tag}).encode(),
        "metrics.json": json.dumps({"acc": 0.75, "tag": tag}).encode(),
        "preds.parquet": parquet_bytes(df),
    }


def snapshot(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def leftovers(store: Store) -> list[str]:
    return [n for n in os.listdir(store.path("runs")) if n.startswith(".tmp-")]


def test_write_then_complete_and_read(tmp_path):
    store = Store(str(tmp_path / "s"))
    assert not store.is_complete(KEY)
    assert store.write_run(KEY, artifacts()) is True
    assert store.is_complete(KEY)
    assert store.run_keys() == [KEY]
    assert store.read_json(KEY, "metrics.json") == {"acc": 0.75, "tag": "a"}
    df = store.read_parquet(KEY, "preds.parquet")
    assert df["p1"].tolist() == [0.1, 0.6, 0.9]
    done = json.loads((Path(store.run_dir(KEY)) / DONE).read_text())
    assert set(done["sha256"]) == {"config.json", "metrics.json", "preds.parquet"}
    assert leftovers(store) == []


def test_store_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rel = Store("rel/store")
    assert rel.root == str(tmp_path / "rel" / "store")  # absolute, for Ray workers
    assert Store(f"file://{tmp_path}/x").root == str(tmp_path / "x")
    assert rel.ray_storage_path() == str(tmp_path / "rel" / "store" / "ray")


def test_truncated_artifact_is_not_complete(tmp_path):
    store = Store(str(tmp_path))
    store.write_run(KEY, artifacts())
    f = Path(store.run_dir(KEY)) / "preds.parquet"
    f.write_bytes(f.read_bytes()[:-10])
    assert not store.is_complete(KEY)


def test_same_length_corruption_is_not_complete(tmp_path):
    store = Store(str(tmp_path))
    store.write_run(KEY, artifacts())
    f = Path(store.run_dir(KEY)) / "metrics.json"
    data = bytearray(f.read_bytes())
    data[-2] ^= 1
    f.write_bytes(bytes(data))
    assert not store.is_complete(KEY)


def test_missing_artifact_or_done_is_not_complete(tmp_path):
    store = Store(str(tmp_path))
    store.write_run(KEY, artifacts())
    (Path(store.run_dir(KEY)) / "config.json").unlink()
    assert not store.is_complete(KEY)

    other = "gt-other"
    store.write_run(other, artifacts())
    (Path(store.run_dir(other)) / DONE).unlink()
    assert not store.is_complete(other)


def test_garbage_done_is_not_complete(tmp_path):
    store = Store(str(tmp_path))
    store.write_run(KEY, artifacts())
    done = Path(store.run_dir(KEY)) / DONE
    for garbage in (b"", b"{not json", b"[]", b'{"sha256": 3}', b'{"other": {}}'):
        done.write_bytes(garbage)
        assert not store.is_complete(KEY), garbage


def test_rewrite_over_corrupt_folder(tmp_path):
    store = Store(str(tmp_path))
    store.write_run(KEY, artifacts("old"))
    f = Path(store.run_dir(KEY)) / "metrics.json"
    f.write_bytes(b'{"acc": 0.99, "tag": "corr')  # truncated, and would read as a better result
    assert not store.is_complete(KEY)
    assert store.write_run(KEY, artifacts("new")) is True
    assert store.is_complete(KEY)
    assert store.read_json(KEY, "metrics.json") == {"acc": 0.75, "tag": "new"}
    assert store.read_json(KEY, "config.json")["tag"] == "new"
    assert store.run_keys() == [KEY]  # the corrupt copy was moved aside, out of the key space
    assert leftovers(store) == []


def test_rewrite_over_folder_without_done(tmp_path):
    store = Store(str(tmp_path))
    d = Path(store.run_dir(KEY))
    d.mkdir(parents=True)
    (d / "metrics.json").write_bytes(b'{"acc": 1.0}')
    assert store.write_run(KEY, artifacts()) is True
    assert store.read_json(KEY, "metrics.json")["acc"] == 0.75


def test_write_over_complete_run_is_refused_and_untouched(tmp_path):
    store = Store(str(tmp_path))
    assert store.write_run(KEY, artifacts("first"))
    before = snapshot(tmp_path)
    assert store.write_run(KEY, artifacts("second")) is False
    assert snapshot(tmp_path) == before
    assert store.read_json(KEY, "config.json")["tag"] == "first"
    assert leftovers(store) == []


def _race(store: Store, n: int = 8) -> tuple[list[bool], list[BaseException]]:
    """Results by writer: results[i] is what writer i (tag ``w{i}``) got from write_run."""
    barrier = threading.Barrier(n)
    results: list[bool] = [False] * n
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        barrier.wait()
        try:
            results[i] = store.write_run(KEY, artifacts(f"w{i}"))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def _consistent(store: Store) -> None:
    """The stored copy is complete and all of it comes from a single writer."""
    assert store.is_complete(KEY)
    tag = store.read_json(KEY, "config.json")["tag"]
    assert store.read_json(KEY, "metrics.json")["tag"] == tag
    assert set(store.read_parquet(KEY, "preds.parquet")["tag"]) == {tag}


def test_concurrent_writers_exactly_one_wins(tmp_path):
    for trial in range(3):
        store = Store(str(tmp_path / f"t{trial}"))
        results, errors = _race(store)
        assert errors == []
        assert sorted(results) == [False] * 7 + [True]
        _consistent(store)
        assert results[int(store.read_json(KEY, "config.json")["tag"][1:])] is True
        assert leftovers(store) == []
        assert store.run_keys() == [KEY]


def test_concurrent_writers_over_corrupt_leftover(tmp_path):
    """With a corrupt leftover in place, every writer ends without error and the stored copy is
    complete and from one writer. (Several may report True here: a writer can still move a
    just-installed finished copy aside before installing its own equivalent one.)"""
    for trial in range(3):
        store = Store(str(tmp_path / f"t{trial}"))
        d = Path(store.run_dir(KEY))
        d.mkdir(parents=True)
        (d / "metrics.json").write_bytes(b"half")
        results, errors = _race(store)
        assert errors == []
        _consistent(store)
        # The writer whose copy is stored was told it succeeded.
        assert results[int(store.read_json(KEY, "config.json")["tag"][1:])] is True
        assert leftovers(store) == []


def test_leftover_moved_aside_by_another_writer_meanwhile(tmp_path):
    """Deterministic interleaving: this writer sees the corrupt leftover, then another writer moves
    it aside before this one does. The write must still succeed (it used to raise
    FileNotFoundError from the second move and leave its .tmp- folder behind)."""
    store = Store(str(tmp_path))
    d = Path(store.run_dir(KEY))
    d.mkdir(parents=True)
    (d / "metrics.json").write_bytes(b"half")
    real = store.is_complete
    calls = []

    def racing_is_complete(key: str) -> bool:
        calls.append(key)
        if len(calls) == 2:  # write_run found the leftover and re-checks it: the other writer acts
            os.rename(store.run_dir(key), store.path("runs", ".broken-by-other"))
        return real(key)

    store.is_complete = racing_is_complete
    assert store.write_run(KEY, artifacts("me")) is True
    assert len(calls) == 2
    assert real(KEY)
    assert store.read_json(KEY, "config.json")["tag"] == "me"
    assert leftovers(store) == []


# ------------------------------------------------------------------------------------------------
# Failures and manifests


def test_failures_recorded_listed_and_cleared(tmp_path):
    store = Store(str(tmp_path))
    assert store.failures() == [] and not store.has_failure(KEY)
    store.record_failure(KEY, {"key": KEY, "error": "OOM", "attempt": 1})
    store.record_failure(KEY, {"key": KEY, "error": "OOM again", "attempt": 2})  # replaces
    store.record_failure("gt-other", {"key": "gt-other", "error": "boom"})
    assert store.has_failure(KEY)
    listed = sorted(store.failures(), key=lambda f: f["key"])
    assert listed == [
        {"key": KEY, "error": "OOM again", "attempt": 2},
        {"key": "gt-other", "error": "boom"},
    ]
    assert not [n for n in os.listdir(store.path("failures")) if ".tmp-" in n]
    assert store.write_run(KEY, artifacts()) is True
    assert not store.has_failure(KEY)
    assert store.failures() == [{"key": "gt-other", "error": "boom"}]


def test_unreadable_failure_is_skipped(tmp_path):
    store = Store(str(tmp_path))
    store.record_failure(KEY, {"key": KEY})
    Path(store.path("failures", "gt-bad.json")).write_bytes(b"{trunc")
    assert store.failures() == [{"key": KEY}]


def test_manifests_round_trip(tmp_path):
    from w2sray.runs import manifest, plan_sweep
    from w2sray.spec import parse_spec

    store = Store(str(tmp_path))
    assert store.manifests() == []
    spec = parse_spec(
        {
            "name": "b-sweep",
            "storage": str(tmp_path),
            "datasets": [{"name": "synthetic", "n_gt": 10, "n_weak": 10, "n_test": 10}],
            "models": ["w2s-tiny-1", "w2s-tiny-2"],
            "methods": ["xent", {"name": "lc", "loss": "logconf", "params": {"alpha_max": 0.5}}],
            "train": {"batch_size": 8},
        }
    )
    real = manifest(spec, plan_sweep(spec))
    store.write_manifest("b-sweep", real)
    store.write_manifest("a-sweep", {"name": "a-sweep", "ladder": ["x", "y"], "runs": []})
    got = store.manifests()
    assert [m["name"] for m in got] == ["a-sweep", "b-sweep"]
    assert got[1] == json.loads(json.dumps(real))
    assert got[1]["ladder"] == ["w2s-tiny-1", "w2s-tiny-2"]
    store.write_manifest("a-sweep", {"name": "a-sweep", "ladder": ["z"], "runs": []})
    assert store.manifests()[0]["ladder"] == ["z"]
    assert sorted(os.listdir(store.path("sweeps"))) == ["a-sweep.json", "b-sweep.json"]


@pytest.mark.parametrize(
    "error, line",
    [
        ("upstream run gt-1 has no result", "upstream run gt-1 has no result"),
        # a run's traceback: its exception, not "Traceback (most recent call last):"
        (
            'Traceback (most recent call last):\n  File "a.py", line 1\n    raise OSError(\n'
            "OSError: no weights\n\n",
            "OSError: no weights",
        ),
        # Ray Train's error as Tune's result holds it: its message, then the worker's exception
        (
            "Training failed due to worker errors:\n[Rank 0 Error Snippet]:\n"
            'ray::ImplicitFunc.train() (pid=1)\n  File "l.py", line 2\n    f()\nValueError: bad',
            "Training failed due to worker errors: ValueError: bad",
        ),
        # ... and as a trial's traceback records it: the worker's exception, not the wrapper's
        (
            'Traceback (most recent call last):\n  File "sweep.py", line 132, in _trial\n'
            "    build_trainer(run).fit()\n"
            "ray.train.WorkerGroupError: Training failed due to worker errors:\n"
            "[Rank 0 Error Snippet]:\nray::ImplicitFunc.train() (pid=1)\n"
            '  File "loop.py", line 273\n    loaded = load_model(\nOSError: no weights\n',
            "OSError: no weights",
        ),
        ("RuntimeError: CUDA out of memory\n  detail", "RuntimeError: CUDA out of memory"),
        # a killed worker: Ray's ActorDiedError lists indented "field: value" lines after it
        (
            'Traceback (most recent call last):\n  File "t.py", line 9, in f\n'
            "ray.exceptions.ActorDiedError: The actor died unexpectedly.\n"
            "\tclass_name: RayTrainWorker\n\tpid: 123\n\tip: 127.0.0.1\n",
            "ray.exceptions.ActorDiedError: The actor died unexpectedly.",
        ),
        # a message over several lines: its first line
        (
            'Traceback (most recent call last):\n  File "t.py", line 2\n'
            "RuntimeError: bad config:\nlr: 0.1\n",
            "RuntimeError: bad config:",
        ),
        # chained: the last traceback's exception, even one without a message
        (
            'Traceback (most recent call last):\n  File "a.py", line 1\nValueError: x\n\n'
            "During handling of the above exception, another exception occurred:\n\n"
            'Traceback (most recent call last):\n  File "b.py", line 5\n    assert ok\n'
            "AssertionError\n",
            "AssertionError",
        ),
        (None, "(no error message)"),
        ("  \n", "(no error message)"),
        ("x" * 400, "x" * 297 + "..."),
    ],
)
def test_error_line_shows_the_exception(error, line):
    assert error_line(error) == line
