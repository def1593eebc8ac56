"""Run claims: a lease in the store that says "this run is being trained", so two sweeps sharing
a store never train the same run at once.

A claim is ``<root>/claims/<key>.json``: its owner and an expiry, renewed by a thread while the
run trains. A trial that finds a live claim of another owner waits for the run's result instead
of training it; a claim past its expiry (its driver was killed) is taken over.

Taking a claim: on a local disk a free claim is created with an exclusive link (atomic). An
expired claim, and any claim on an object store (which has no create-if-absent through pyarrow),
is written, left to settle, and read back: of several writers only the last one reads its own
owner back. Two claimants both win only if one of them takes longer than the settle time
between reading the old claim and writing its own; the worst case is then a run trained twice,
never a corrupt result (a run's folder is committed once: store.write_run). Expiry compares the
writer's wall clock with the reader's: keep the machines' clocks within a fraction of the TTL.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from w2sray.store import Store, error_line

# A killed driver's runs are taken over this long after its last renewal.
TTL_S = float(os.environ.get("W2SRAY_CLAIM_TTL_S", 120))
# How long a claim written over another is left before it is read back (see above).
SETTLE_S = float(os.environ.get("W2SRAY_CLAIM_SETTLE_S", 1.0))


def new_owner() -> str:
    """A claim owner id: unique per claimant, readable in a claim file."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def is_live(claim: dict[str, Any] | None, now: float | None = None) -> bool:
    return bool(claim) and float(claim.get("expires", 0)) > (now or time.time())


@dataclass
class Lease:
    """One claimant's claim on run ``key`` in ``store``."""

    store: Store
    key: str
    owner: str = field(default_factory=new_owner)
    ttl: float = TTL_S
    settle: float = SETTLE_S

    def _record(self) -> dict[str, Any]:
        now = time.time()
        return {
            "owner": self.owner,
            "key": self.key,
            "renewed_at": now,
            "expires": now + self.ttl,
            "ttl": self.ttl,
        }

    def holder(self) -> dict[str, Any] | None:
        """The claim on the run now, if any (live or expired)."""
        return self.store.read_claim(self.key)

    def acquire(self) -> bool:
        """Take the claim if it is free or expired; False while another owner's claim lives."""
        current = self.holder()
        if current is not None and current.get("owner") != self.owner and is_live(current):
            return False
        if current is None and self.store.local:
            return self.store.create_claim(self.key, self._record())
        self.store.write_claim(self.key, self._record())
        time.sleep(self.settle)
        current = self.holder()
        return current is not None and current.get("owner") == self.owner

    def take(self) -> None:
        """Write the claim whatever holds it now: for a name only this claimant uses (a
        dataflow pack's lease, where a claim found is a killed earlier attempt's)."""
        self.store.write_claim(self.key, self._record())

    def renew(self) -> bool:
        """Push the expiry forward; False if the claim was lost (taken over after expiring)."""
        current = self.holder()
        if current is None or current.get("owner") != self.owner:
            return False
        self.store.write_claim(self.key, self._record())
        return True

    def release(self) -> None:
        """Drop the claim if it is still ours."""
        current = self.holder()
        if current is not None and current.get("owner") == self.owner:
            self.store.delete_claim(self.key)


class Renewer(threading.Thread):
    """Renews a lease every ttl/4 until stopped; records whether it was lost on the way."""

    def __init__(self, lease: Lease):
        super().__init__(daemon=True, name=f"claim-{lease.key}")
        self.lease = lease
        self.stop = threading.Event()
        self.lost = False

    def run(self) -> None:
        while not self.stop.wait(self.lease.ttl / 4):
            try:
                if not self.lease.renew():
                    self.lost = True
                    return
            except OSError:  # a store hiccup: try again at the next tick, before expiry
                continue


@contextlib.contextmanager
def renewed(leases: list[Lease]) -> Iterator[None]:
    """Hold ``leases`` for the duration: each renewed by its own thread, all released after."""
    renewers = [Renewer(lease) for lease in leases]
    for r in renewers:
        r.start()
    try:
        yield
    finally:
        for r in renewers:
            r.stop.set()
            r.join()
        for lease in leases:
            lease.release()


def claim_or_wait(
    store: Store,
    key: str,
    poll: float = 2.0,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> Lease | None:
    """Claim run ``key``, waiting while another owner's live claim holds it.

    Returns the held lease, or None when the run became complete (another sweep trained it).
    Raises RuntimeError when the other owner released its claim after recording a failure for
    the run while this one waited: that sweep's error is the run's result.
    """
    lease = Lease(store, key)
    waited_since = None
    while True:
        if store.is_complete(key):
            return None
        if waited_since is not None:
            failure = store.read_failure(key)
            if (
                failure
                and float(failure.get("time", 0)) >= waited_since
                and not is_live(lease.holder())
            ):
                raise RuntimeError(
                    f"run {key} failed in another sweep sharing the store: "
                    f"{error_line(failure.get('error'))}"
                )
        if lease.acquire():
            return lease
        if waited_since is None:
            waited_since = time.time()
            current = lease.holder()
            if on_wait and current:
                on_wait(current)
        time.sleep(poll)


def remove_expired(store: Store) -> list[str]:
    """Delete expired claims (a killed driver's, on runs it finished or nobody retried since);
    return their keys. An expired claim carries nothing: whoever claims the run next would
    overwrite it anyway."""
    removed = []
    for key in store.claim_keys():
        claim = store.read_claim(key)
        if claim is not None and not is_live(claim):
            store.delete_claim(key)
            removed.append(key)
    return removed
