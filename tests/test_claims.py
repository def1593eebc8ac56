"""Run claims (w2sray.claims) on a local store: one owner at a time, expiry and takeover,
renewal, waiting for another claimant's result; and the removal of killed writers' leftovers.
The same protocol against a real S3-compatible server: tests/test_s3_store.py."""

from __future__ import annotations

import os
import threading
import time

import pytest

from w2sray.claims import Lease, Renewer, claim_or_wait, remove_expired
from w2sray.store import DONE, Store, remove_stale

KEY = "gt-0123456789abcdef0123"


def test_one_owner_at_a_time_and_release(tmp_path):
    store = Store(str(tmp_path))
    a, b = Lease(store, KEY, ttl=30), Lease(store, KEY, ttl=30)
    assert a.acquire()
    assert not b.acquire()  # a's claim lives
    assert a.acquire()  # re-acquiring one's own claim is fine
    b.release()  # not b's: nothing happens
    assert store.read_claim(KEY)["owner"] == a.owner
    a.release()
    assert store.read_claim(KEY) is None
    assert b.acquire()
    assert store.read_claim(KEY)["owner"] == b.owner


def test_expired_claim_is_taken_over_and_the_old_owner_learns_it(tmp_path):
    store = Store(str(tmp_path))
    dead = Lease(store, KEY, ttl=0.3)
    assert dead.acquire()
    alive = Lease(store, KEY, ttl=30, settle=0.05)
    assert not alive.acquire()
    time.sleep(0.4)  # dead's driver stopped renewing
    assert alive.acquire()
    assert not dead.renew()  # lost: it must not push its expiry over the new owner's claim
    assert store.read_claim(KEY)["owner"] == alive.owner
    dead.release()  # a late release of a lost claim leaves the new owner's claim alone
    assert store.read_claim(KEY)["owner"] == alive.owner


def test_renewer_keeps_a_short_lease_alive(tmp_path):
    store = Store(str(tmp_path))
    lease = Lease(store, KEY, ttl=0.4)
    assert lease.acquire()
    renewer = Renewer(lease)
    renewer.start()
    try:
        time.sleep(1.2)  # three TTLs: without renewal the claim would have expired
        assert not Lease(store, KEY, settle=0.05).acquire()
        assert not renewer.lost
    finally:
        renewer.stop.set()
        renewer.join()
    time.sleep(0.5)
    assert Lease(store, KEY, settle=0.05).acquire()  # stopped renewing: expired


def race(leases: list[Lease]) -> list[bool]:
    """Every lease's acquire() at once, one thread each; which ones won."""
    won = [False] * len(leases)
    start = threading.Barrier(len(leases))

    def claim(i: int) -> None:
        start.wait()
        won[i] = leases[i].acquire()

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(leases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_concurrent_claimants_one_wins(tmp_path):
    """Eight threads claim a free run at once, then eight race for its expired claim."""
    store = Store(str(tmp_path))
    for phase in ("free", "expired"):
        if phase == "expired":
            assert Lease(store, KEY, ttl=0.1).acquire()
            time.sleep(0.2)
        leases = [Lease(store, KEY, ttl=30, settle=0.5) for _ in range(8)]
        won = race(leases)
        assert sum(won) == 1, (phase, won)
        assert store.read_claim(KEY)["owner"] == leases[won.index(True)].owner
        store.delete_claim(KEY)
    assert [n for n in os.listdir(tmp_path / "claims") if ".tmp-" in n] == []


def test_waiter_gets_the_other_sweeps_result(tmp_path):
    store = Store(str(tmp_path))
    other = Lease(store, KEY, ttl=30)
    assert other.acquire()
    seen: list[dict] = []

    def finish() -> None:
        time.sleep(0.5)
        store.write_run(KEY, {"metrics.json": b'{"acc": 1.0}'})
        other.release()

    t = threading.Thread(target=finish)
    t.start()
    t0 = time.time()
    assert claim_or_wait(store, KEY, poll=0.1, on_wait=seen.append) is None
    t.join()
    assert time.time() - t0 >= 0.4  # it waited rather than training
    assert [c["owner"] for c in seen] == [other.owner]
    assert store.read_claim(KEY) is None


def test_waiter_reports_the_other_sweeps_failure(tmp_path):
    store = Store(str(tmp_path))
    other = Lease(store, KEY, ttl=30)
    assert other.acquire()
    store.record_failure(KEY, {"error": "OldError: an earlier attempt", "time": time.time() - 99})

    def fail() -> None:
        time.sleep(0.5)
        store.record_failure(KEY, {"error": "ValueError: boom", "time": time.time()})
        other.release()

    t = threading.Thread(target=fail)
    t.start()
    with pytest.raises(RuntimeError, match="failed in another sweep.*ValueError: boom"):
        claim_or_wait(store, KEY, poll=0.1)
    t.join()
    # an old failure alone (no live claim) does not stop a new attempt: it claims the run
    lease = claim_or_wait(store, KEY, poll=0.1)
    assert lease is not None and store.read_claim(KEY)["owner"] == lease.owner


def test_free_run_is_claimed_and_complete_run_is_not(tmp_path):
    store = Store(str(tmp_path))
    lease = claim_or_wait(store, KEY, poll=0.1)
    assert lease is not None and store.read_claim(KEY)["owner"] == lease.owner
    lease.release()
    store.write_run(KEY, {"metrics.json": b"{}"})
    assert claim_or_wait(store, KEY, poll=0.1) is None
    assert store.read_claim(KEY) is None


def test_stale_temporaries_removed_by_the_next_writer(tmp_path):
    store = Store(str(tmp_path))
    runs = tmp_path / "runs"
    old_tmp, old_broken, fresh_tmp = (
        runs / f".tmp-{KEY}-dead",
        runs / f".broken-{KEY}-dead",
        runs / f".tmp-{KEY}-live",
    )
    for folder in (old_tmp, old_broken, fresh_tmp):
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text("{}")
    old = time.time() - 7200
    for folder in (old_tmp, old_broken):
        os.utime(folder, (old, old))
    failures = tmp_path / "failures"
    failures.mkdir()
    stale_json = failures / f"{KEY}.json.tmp-dead"
    stale_json.write_text("{")
    os.utime(stale_json, (old, old))

    assert store.write_run("w2s-fedcba9876543210fedc", {"metrics.json": b"{}"})
    assert sorted(os.listdir(runs)) == sorted([f".tmp-{KEY}-live", "w2s-fedcba9876543210fedc"])
    store.record_failure(KEY, {"error": "x"})
    assert os.listdir(failures) == [f"{KEY}.json"]
    assert (runs / "w2s-fedcba9876543210fedc" / DONE).exists()
    # a shorter grace removes the fresh one too; a missing folder is not an error
    assert remove_stale(str(runs), grace=-1) == [f".tmp-{KEY}-live"]
    assert remove_stale(str(tmp_path / "nope")) == []


def test_expired_claims_are_removed_live_ones_kept(tmp_path):
    store = Store(str(tmp_path))
    dead, live = Lease(store, KEY, ttl=0.1), Lease(store, "w2s-fedcba9876543210fedc", ttl=30)
    assert dead.acquire() and live.acquire()
    time.sleep(0.2)
    assert remove_expired(store) == [KEY]
    assert store.claim_keys() == ["w2s-fedcba9876543210fedc"]
