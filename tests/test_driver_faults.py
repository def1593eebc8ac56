"""Faults of the sweep driver, with real `w2sray run` processes on real local Ray clusters:

1. The sweep driver killed mid-sweep: `w2sray run` on the same spec resumes, runs only what is
   missing, and produces the same metrics for the same seeds as an uninterrupted sweep.
2. Two sweeps sharing one store at the same time: no artifact is written twice or half-written.

Both in one scenario (each costs a Ray cluster and several Ray Train runs, ~40 s each on 2
cores): sweeps X (2 models, xent) and Y (the same plus logconf) run at once on ONE store, each
driver in its own process group with its own RAY_TMPDIR, so each starts its own local Ray
cluster. Run keys are content hashes (sweep names excluded), so X's 3 runs are 3 of Y's 4. As
soon as the first run is complete, Y's driver is SIGKILLed with every process it started
(checked gone); X finishes; then `w2sray run` on Y's spec again must train only what is missing.
A watcher thread records every DONE.json from the moment it appears (inode, mtime, bytes) and
checks it never changes. The run only Y trains (logconf) is compared with the same run trained
uninterrupted in a separate store (from the same weak labels), on the test session's cluster.

A driver whose local Ray cluster does not come up (on a loaded box the raylet aborts when its
dashboard agent is slow to write its ports) failed in `ray.init`, before any run, and is
started again (at most twice). Measured: 915 s under load 10-40 with two such retries.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pandas as pd
import psutil
import yaml
from _procs import in_group, kill_all, marked

from w2sray.artifacts import TEST_PREDICTIONS
from w2sray.runs import Plan, plan_sweep
from w2sray.spec import load_spec
from w2sray.store import DONE, Store
from w2sray.sweep import execute

W2SRAY = os.path.join(os.path.dirname(sys.executable), "w2sray")
MARKER = "W2S_DRIVER_FAULT_TEST"  # in every process a driver starts (its Ray cluster's too)
TIMEOUT = float(os.environ.get("W2S_DRIVER_TIMEOUT", 1500))  # per driver; the box is shared

BASE = {
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}
SPEC_X = {**BASE, "name": "drv-x", "methods": ["xent"]}
SPEC_Y = {
    **BASE,
    "name": "drv-y",
    "methods": ["xent", {"name": "logconf", "loss": "logconf", "params": {"alpha_max": 0.5}}],
}
RAY_START_FAILED = "The current node timed out during startup"
SUMMARY = re.compile(
    r"trained (\d+), already complete (\d+), failed (\d+) in \d+s"
    r"(?: \((\d+) more trained meanwhile by another sweep\))?"
)
CLAIM_TTL_S = 20  # a killed driver's claims are taken over this long after its last renewal


class DoneWatcher(threading.Thread):
    """Polls <store>/runs: records each DONE.json when it first appears (inode, mtime, bytes)
    and every later observation that differs from it (a run written twice)."""

    def __init__(self, runs_dir: str):
        super().__init__(daemon=True)
        self.runs_dir = runs_dir
        self.first: dict[str, tuple[int, int, bytes]] = {}
        self.changes: list[str] = []
        self.hidden_seen: set[str] = set()  # .tmp-* folders seen while being written
        self.first_done = threading.Event()
        self.stop = threading.Event()

    def snapshot(self) -> dict[str, tuple[int, int, bytes]]:
        out = {}
        try:
            names = os.listdir(self.runs_dir)
        except FileNotFoundError:
            return out
        for name in names:
            if name.startswith("."):
                self.hidden_seen.add(name)
                continue
            path = os.path.join(self.runs_dir, name, DONE)
            try:
                st = os.stat(path)
                with open(path, "rb") as fh:
                    data = fh.read()
            except (FileNotFoundError, NotADirectoryError):
                continue
            out[name] = (st.st_ino, st.st_mtime_ns, data)
        return out

    def check(self) -> None:
        for key, seen in self.snapshot().items():
            if key not in self.first:
                self.first[key] = seen
                self.first_done.set()
            elif seen != self.first[key]:
                self.changes.append(f"{key}: DONE.json changed after it appeared")

    def run(self) -> None:
        while not self.stop.is_set():
            self.check()
            time.sleep(0.05)


class Driver:
    """`w2sray run SPEC --no-report` in its own session (process group), with its own Ray temp
    dir (so its local cluster joins no other) and a marker in its environment."""

    def __init__(self, name: str, spec_path: str, root: str):
        self.name, self.spec_path, self.root = name, spec_path, root
        self.value = f"{name}-{uuid.uuid4().hex}"
        self.procs: list[subprocess.Popen] = []  # every attempt's
        self.tmpdirs: list[str] = []
        self.start()

    def start(self) -> None:
        tmpdir = tempfile.mkdtemp(prefix=f"w2s{self.name}", dir="/tmp")  # short socket paths
        self.tmpdirs.append(tmpdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            {
                MARKER: self.value,
                "RAY_TMPDIR": tmpdir,
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_raylet_start_wait_time_s": "120",  # the box is loaded
                "PYTHONUNBUFFERED": "1",
                "W2SRAY_CLAIM_TTL_S": str(CLAIM_TTL_S),
            }
        )
        self.log_path = os.path.join(self.root, f"{self.name}-{len(self.procs)}.log")
        self.t0 = time.time()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [W2SRAY, "run", self.spec_path, "--no-report"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(self.proc)
        self.wall = float("nan")

    def retry_if_ray_did_not_start(self) -> bool:
        """Start again if this attempt ended because its local Ray cluster did not come up (on
        a loaded box the raylet aborts when its dashboard agent is slow to write its ports).
        It failed in `ray.init`, before any run: a retry changes nothing in the store."""
        if self.proc.poll() not in (None, 0) and RAY_START_FAILED in self.output():
            if len(self.procs) < 3:
                print(f"\n{self.name}: Ray did not start (load {os.getloadavg()}); retrying")
                self.start()
                return True
        return False

    def output(self) -> str:
        with open(self.log_path) as fh:
            return fh.read()

    def wait(self, timeout: float) -> int:
        deadline = time.time() + timeout
        while True:
            try:
                rc = self.proc.wait(timeout=max(1.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                raise AssertionError(f"{self.name} timed out:\n{self.output()[-6000:]}") from None
            if not self.retry_if_ray_did_not_start():
                break
        self.wall = time.time() - self.t0
        return rc

    def summary(self) -> tuple[int, int, int, int]:
        """(trained, already complete, failed, trained meanwhile by another sweep)"""
        found = SUMMARY.findall(self.output())
        assert found, f"{self.name} printed no summary:\n{self.output()[-6000:]}"
        return tuple(int(x or 0) for x in found[-1])  # type: ignore[return-value]

    def processes(self) -> dict[int, psutil.Process]:
        """Every live process this driver started: its group, its descendants (the raylet's
        workers, which Ray puts in process groups of their own) and the marked ones."""
        procs = {p.pid: p for p in in_group(self.proc.pid) + marked(MARKER, self.value)}
        try:
            procs.update({p.pid: p for p in psutil.Process(self.proc.pid).children(True)})
        except psutil.Error:
            pass
        return procs

    def cleanup(self) -> list[str]:
        left = kill_all([p.pid for p in self.procs], MARKER, self.value)
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
        if not os.environ.get("W2S_KEEP"):
            for tmpdir in self.tmpdirs:
                shutil.rmtree(tmpdir, ignore_errors=True)
        return left


def _trainings(ray_dir: str) -> dict[str, set[str]]:
    """{run key: the Tune trial folders with a result saying they trained it}, over every
    experiment of the drivers (a trial killed mid-fit has no such result). A run's own Train
    report carries its key and step count, one trial training a pack of runs has one per run;
    a trial that found its run trained by the other sweep says so (trained_elsewhere)."""
    out: dict[str, set[str]] = {}
    for exp in os.listdir(ray_dir):
        if not exp.startswith("drv-"):
            continue
        for trial in os.listdir(os.path.join(ray_dir, exp)):
            path = os.path.join(ray_dir, exp, trial, "result.json")
            if not os.path.exists(path):
                continue
            with open(path) as fh:
                rows = [json.loads(line) for line in fh if line.strip()]
            for row in rows:
                if row.get("run_key") and "steps" in row and not row.get("trained_elsewhere"):
                    out.setdefault(row["run_key"], set()).add(f"{exp}/{trial}")
    return out


def _alive(procs: dict[int, psutil.Process]) -> list[str]:
    out = []
    for proc in procs.values():
        try:
            # is_running() compares the creation time: a reused pid is not the same process
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{proc.pid} {' '.join(proc.cmdline())[:100]}")
        except psutil.Error:
            continue
    return out


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:  # gone meanwhile
        return []


def test_killed_driver_resumes_and_concurrent_sweeps_share_one_store(ray_cluster, tmp_path):
    """Scenario 1 (driver killed mid-sweep: the rerun resumes, trains only what is missing,
    same metrics as an uninterrupted sweep) and scenario 2 (two sweeps sharing one store at
    the same time: no artifact written twice or half-written), with real processes."""
    root = str(tmp_path)
    storage = os.path.join(root, "store")  # absolute: the drivers' Ray workers write here too
    paths = {}
    for raw in (SPEC_X, SPEC_Y):
        paths[raw["name"]] = os.path.join(root, f"{raw['name']}.yaml")
        with open(paths[raw["name"]], "w") as fh:
            yaml.safe_dump({**raw, "storage": storage}, fh)
    spec_x, spec_y = load_spec(paths["drv-x"]), load_spec(paths["drv-y"])
    plan_x, plan_y = plan_sweep(spec_x), plan_sweep(spec_y)
    keys_x = {r.key for r in plan_x.all_runs()}
    keys_y = {r.key for r in plan_y.all_runs()}
    assert len(keys_x) == 3 and len(keys_y) == 4 and keys_x < keys_y  # shared by content
    (only_y,) = keys_y - keys_x
    store = Store(storage)
    runs_dir = os.path.join(storage, "runs")
    watcher = DoneWatcher(runs_dir)
    watcher.start()
    drivers: list[Driver] = []
    timings: dict[str, float] = {}
    t_start = time.time()
    try:
        y = Driver("y", paths["drv-y"], root)
        drivers.append(y)
        x = Driver("x", paths["drv-x"], root)
        drivers.append(x)

        # -- kill Y's driver once a run is complete ------------------------------------------
        deadline = time.time() + TIMEOUT
        while not watcher.first_done.wait(0.2):
            for d in (x, y):
                if not d.retry_if_ray_did_not_start():
                    assert d.proc.poll() is None, f"{d.name} exited early:\n{d.output()[-6000:]}"
            assert time.time() < deadline, f"no run finished:\n{y.output()[-3000:]}"
        timings["first run complete"] = time.time() - t_start
        # Y may still be bringing its own cluster up (a loaded box, or a start retried after
        # Ray missed its deadline): kill it once it has a raylet, i.e. mid-sweep.
        while True:
            procs = y.processes()
            raylets = [p for p in procs.values() if "raylet" in " ".join(_cmdline(p))]
            if raylets or time.time() > deadline or y.proc.poll() is not None:
                break
            time.sleep(0.5)
        assert len(raylets) == 1, (
            f"Y's driver has no local raylet of its own:\n{y.output()[-3000:]}"
        )
        # Everything carrying Y's marker is in Y's process group or descends from its driver
        # (Ray workers live in groups of their own, under Y's raylet).
        group = {p.pid for p in in_group(y.proc.pid)}
        tree = {p.pid for p in psutil.Process(y.proc.pid).children(True)}
        stray = [pid for pid in (p.pid for p in marked(MARKER, y.value)) if pid not in group | tree]
        assert stray == [], f"Y's processes outside its group and tree: {stray}"
        os.killpg(y.proc.pid, signal.SIGKILL)
        for proc in procs.values():  # the workers, in their own groups
            try:
                proc.kill()
            except psutil.Error:
                pass
        assert y.wait(60) == -signal.SIGKILL
        gone_by = time.time() + 60
        while _alive({**procs, **y.processes()}) and time.time() < gone_by:
            time.sleep(0.5)
        left = _alive({**procs, **y.processes()})
        assert left == [], f"Y's processes survived SIGKILL: {left}"
        complete_at_kill = {k for k in keys_y if store.is_complete(k)}
        assert 1 <= len(complete_at_kill) < len(keys_y), complete_at_kill
        print(f"\nkilled Y ({len(procs)} processes) with {len(complete_at_kill)} runs complete")

        # -- X, undisturbed, finishes every run ----------------------------------------------
        assert x.wait(TIMEOUT) == 0, x.output()[-6000:]
        timings["X"] = x.wall
        trained_x, skipped_x, failed_x, waited_x = x.summary()
        assert failed_x == 0 and trained_x + skipped_x + waited_x == 3, x.output()[-3000:]
        print(f"X: trained {trained_x}, waited for Y's result {waited_x}, found {skipped_x}")
        assert all(store.is_complete(k) for k in keys_x)

        # -- Y again: only what is missing ---------------------------------------------------
        watcher.check()
        before = {k: watcher.first[k] for k in keys_y if store.is_complete(k)}
        assert set(before) == keys_x  # X completed the shared runs; only Y's own is missing
        y2 = Driver("y2", paths["drv-y"], root)
        drivers.append(y2)
        assert y2.wait(TIMEOUT) == 0, y2.output()[-6000:]
        timings["Y rerun"] = y2.wall
        want = (len(keys_y) - len(before), len(before), 0, 0)
        assert y2.summary() == want, y2.output()[-3000:]
        assert all(store.is_complete(k) for k in keys_y)
        watcher.stop.set()
        watcher.join(timeout=10)
        watcher.check()
        now = watcher.snapshot()
        for key, seen in before.items():  # complete before the rerun: the very same file
            assert now[key] == seen, key

        # -- no artifact written twice or half-written ---------------------------------------
        assert watcher.changes == [], watcher.changes
        assert set(now) == keys_y and set(watcher.first) == keys_y
        assert {k: now[k] for k in keys_y} == {k: watcher.first[k] for k in keys_y}
        leftovers = [n for n in os.listdir(runs_dir) if n.startswith(".")]
        assert leftovers == [], f"temporary or broken run folders left: {leftovers}"
        assert store.failures() == []
        assert not os.path.exists(os.path.join(storage, "claims")) or not os.listdir(
            os.path.join(storage, "claims")
        ), "claims left behind after every driver finished"

        # -- no run trained twice: every trial that trained a run (its result has the fit's
        # start time) across both drivers' Tune experiments, by run key ----------------------
        trained_by = _trainings(os.path.join(storage, "ray"))
        assert set(trained_by) <= keys_y
        twice = {k: v for k, v in trained_by.items() if len(v) > 1}
        assert twice == {}, f"runs trained by more than one trial: {twice}"

        # -- the resumed run's metrics equal an uninterrupted sweep's -------------------------
        t_ref = time.time()
        target = next(r for r in plan_y.all_runs() if r.key == only_y)
        (weak_gt,) = [r for r in plan_y.gt if r.key == target.upstream[0]]
        clean = Store(os.path.join(root, "clean"))
        # Its weak labels come from the GT run X trained without interruption (copied as is);
        # the run itself trains from scratch, uninterrupted.
        shutil.copytree(os.path.join(runs_dir, weak_gt.key), clean.run_dir(weak_gt.key))
        ref = execute(spec_y, Plan(gt=(weak_gt,), transfer=(target,)), clean, printer=print)
        timings["reference"] = time.time() - t_ref
        assert ref.done == [target.key] and ref.skipped == [weak_gt.key] and ref.failed == {}
        for key in (target.key,):
            got, want = store.read_json(key, "metrics.json"), clean.read_json(key, "metrics.json")
            for name in ("acc", "auc", "train_loss", "weak_label_acc", "steps"):
                assert got[name] == want[name], (key, name, got[name], want[name])
            pd.testing.assert_frame_equal(
                store.read_parquet(key, TEST_PREDICTIONS),
                clean.read_parquet(key, TEST_PREDICTIONS),
                check_exact=True,
            )
        timings["total"] = time.time() - t_start
        print("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
        print(f"load at the end: {os.getloadavg()}")
    finally:
        watcher.stop.set()
        lefts = [d.cleanup() for d in drivers]
        assert all(left == [] for left in lefts), f"processes left behind: {lefts}"
