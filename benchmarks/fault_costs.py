"""What faults cost: (a) a training worker SIGKILLed mid-run, (b) a sweep driver killed mid-sweep.

(a) One GT run (w2s-tiny-2, 256 steps, max_failures 1, checkpoint_every 64) trained in-process
    through `execute` twice: once uninterrupted, once with its Ray Train worker SIGKILLed after
    its second checkpoint (as tests/test_faults.py does). Ray Train restarts the worker group
    and the run resumes from its last checkpoint. Time lost = wall(killed) - wall(clean); also
    the steps redone (step at the kill - step resumed from) and the restart's fixed cost.
    `--ckpt-baseline` adds the same run with max_failures 0 (no checkpoints): the cost of
    checkpointing itself.
(b) A 3-run sweep (tiny-1, tiny-2, xent: 2 GT runs, then 1 transfer) by `w2sray run` as a
    user runs it: a full sweep in a fresh store; then a sweep in another fresh store whose
    driver (its process group and every process its Ray cluster started) is SIGKILLed as soon
    as K runs are complete, then `w2sray run` again: resume wall time vs the full sweep's.

Each `w2sray run` gets its own process group and RAY_TMPDIR (its own local Ray cluster); only
processes this script started are killed (never `ray stop`).

    .venv/bin/python benchmarks/fault_costs.py [--k 2] [--ckpt-baseline] [--skip-a] [--skip-b]
"""

from __future__ import annotations

import argparse
import glob
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

import psutil
import yaml

W2SRAY = os.path.join(os.path.dirname(sys.executable), "w2sray")
MARKER = "W2S_FAULT_COSTS"
RAY_START_FAILED = "The current node timed out during startup"
SUMMARY = re.compile(r"trained (\d+), already complete (\d+), failed (\d+)")
SWEEP = {
    "name": "fault-costs",
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}
ONE_RUN = {
    "name": "worker-kill",
    "datasets": [{"name": "synthetic", "n_gt": 4096, "n_weak": 256, "n_test": 200}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],  # a spec needs a ladder; only tiny-2's GT run runs
    "methods": ["xent"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "max_failures": 1, "checkpoint_every": 64},
}


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# -- (b) the driver ---------------------------------------------------------------------------
class Sweep:
    """`w2sray run SPEC --no-report` in its own session with its own Ray temp dir."""

    def __init__(self, spec_path: str, log_path: str):
        self.spec_path, self.log_path = spec_path, log_path
        self.value = uuid.uuid4().hex
        self.attempts: list[subprocess.Popen] = []
        self.tmpdirs: list[str] = []
        self.start()

    def start(self) -> None:
        tmpdir = tempfile.mkdtemp(prefix="w2sfc", dir="/tmp")
        self.tmpdirs.append(tmpdir)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
        env.update(
            {
                MARKER: self.value,
                "RAY_TMPDIR": tmpdir,
                "RAY_USAGE_STATS_ENABLED": "0",
                "RAY_raylet_start_wait_time_s": "120",
            }
        )
        self.t0 = time.time()
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(
                [W2SRAY, "run", self.spec_path, "--no-report"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.attempts.append(self.proc)

    def retried(self) -> bool:
        """Start again (at most twice) if Ray did not come up: it failed before any run, and
        the wall time counts from the new start."""
        if self.proc.poll() not in (None, 0) and RAY_START_FAILED in open(self.log_path).read():
            if len(self.attempts) < 3:
                print(f"Ray did not start ({load()}); retrying", flush=True)
                self.start()
                return True
        return False

    def mine(self) -> list[psutil.Process]:
        out = []
        for proc in psutil.process_iter():
            try:
                if proc.environ().get(MARKER) == self.value:
                    out.append(proc)
            except psutil.Error:
                continue
        return out

    def kill(self) -> None:
        for _ in range(3):
            for attempt in self.attempts:
                try:
                    os.killpg(attempt.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for proc in self.mine():
                try:
                    proc.kill()
                except psutil.Error:
                    pass
            time.sleep(1.0)
        for attempt in self.attempts:
            attempt.wait(timeout=60)
        left = [p for p in self.mine() if p.status() != psutil.STATUS_ZOMBIE]
        for tmpdir in self.tmpdirs:
            shutil.rmtree(tmpdir, ignore_errors=True)
        if left:
            raise SystemExit(f"processes survived: {[p.pid for p in left]}")

    def finish(self) -> tuple[float, tuple[int, ...]]:
        while True:
            rc = self.proc.wait()
            if not self.retried():
                break
        wall = time.time() - self.t0
        self.kill()  # anything the exiting driver's cluster left behind
        text = open(self.log_path).read()
        if rc != 0:
            raise SystemExit(f"w2sray run exited {rc}:\n{text[-4000:]}")
        return wall, tuple(int(x) for x in SUMMARY.findall(text)[-1])


def driver_kill(root: str, k: int) -> dict:
    spec_path = os.path.join(root, "sweep.yaml")
    out: dict = {"load_start": load()}
    with open(spec_path, "w") as fh:
        yaml.safe_dump({**SWEEP, "storage": os.path.join(root, "full")}, fh)
    full, summary = Sweep(spec_path, os.path.join(root, "full.log")).finish()
    out["full"] = {"wall_s": round(full, 1), "trained_skipped_failed": summary}
    out["load_after_full"] = load()

    with open(spec_path, "w") as fh:
        yaml.safe_dump({**SWEEP, "storage": os.path.join(root, "resumed")}, fh)
    runs = os.path.join(root, "resumed", "runs")
    sweep = Sweep(spec_path, os.path.join(root, "killed.log"))
    while len(glob.glob(os.path.join(runs, "*", "DONE.json"))) < k:
        if sweep.proc.poll() is not None and not sweep.retried():
            raise SystemExit("the sweep ended before it could be killed")
        time.sleep(0.05)
    killed_after = time.time() - sweep.t0
    sweep.kill()
    out["killed"] = {"after_s": round(killed_after, 1), "runs_complete": k}
    resume, summary = Sweep(spec_path, os.path.join(root, "resume.log")).finish()
    out["resume"] = {"wall_s": round(resume, 1), "trained_skipped_failed": summary}
    out["saved_s_vs_starting_over"] = round(full - resume, 1)
    out["resume_over_full"] = round(resume / full, 2)
    out["killed_part_plus_resume_s"] = round(killed_after + resume, 1)
    out["load_end"] = load()
    return out


# -- (a) the worker ---------------------------------------------------------------------------
def _kill_worker(train_dir: str, found: dict, deadline: float) -> None:
    while time.time() < deadline:
        if len(glob.glob(os.path.join(train_dir, "checkpoint_*"))) >= 2:
            for proc in psutil.Process().children(recursive=True):
                try:
                    if "RayTrainWorker" in " ".join(proc.cmdline()):
                        os.kill(proc.pid, signal.SIGKILL)
                        found["killed_at"] = time.time()
                        return
                except psutil.Error:
                    continue
        time.sleep(0.05)


def worker_kill(root: str, ckpt_baseline: bool) -> dict:
    from w2sray.runs import Plan, plan_sweep
    from w2sray.spec import load_spec
    from w2sray.store import Store
    from w2sray.sweep import connect, execute

    out: dict = {"load_start": load()}
    for attempt in range(3):  # Ray's start-up can time out on a loaded box
        try:
            connect()
            break
        except Exception as exc:
            if RAY_START_FAILED not in str(exc) or attempt == 2:
                raise
            import ray

            ray.shutdown()

    def one(name: str, raw: dict, kill: bool) -> dict:
        path = os.path.join(root, f"{name}.yaml")
        with open(path, "w") as fh:
            yaml.safe_dump({**raw, "storage": os.path.join(root, name)}, fh)
        spec = load_spec(path)
        run = plan_sweep(spec).gt[1]
        assert run.model.name == "w2s-tiny-2"
        plan = Plan(gt=(run,), transfer=())
        found: dict = {}
        if kill:
            train_dir = os.path.join(spec.storage, "ray", "train", run.key)
            args = (train_dir, found, time.time() + 1200)
            threading.Thread(target=_kill_worker, args=args, daemon=True).start()
        t0 = time.time()
        res = execute(spec, plan, Store(spec.storage), printer=lambda s: None)
        wall = time.time() - t0
        if res.failed or not res.done:
            raise SystemExit(f"{name}: {res.failed}")
        m = Store(spec.storage).read_json(run.key, "metrics.json")
        row = {
            "wall_s": round(wall, 1),
            "steps": m["steps"],
            "train_s_last_attempt": round(m["train_seconds"], 1),
            "resumed_from_step": m["resumed_from_step"],
            "acc": m["acc"],
            "load": load(),
        }
        if kill:
            if "killed_at" not in found:
                raise SystemExit("the worker was never killed")
            # the restarted worker's process start: time from the kill to training again
            row["kill_to_new_worker_s"] = round(m["t_process_start"] - found["killed_at"], 1)
            row["kill_to_training_again_s"] = round(m["t_train_start"] - found["killed_at"], 1)
        return row

    out["clean"] = one("clean", ONE_RUN, kill=False)
    out["killed"] = one("killed", ONE_RUN, kill=True)
    out["time_lost_s"] = round(out["killed"]["wall_s"] - out["clean"]["wall_s"], 1)
    if ckpt_baseline:
        raw = {**ONE_RUN, "resources": {"workers": 1, "max_failures": 0}}
        out["no_checkpoints"] = one("nockpt", raw, kill=False)
    import ray

    ray.shutdown()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--k", type=int, default=2, help="(b): kill the driver after K runs complete")
    p.add_argument("--ckpt-baseline", action="store_true")
    p.add_argument("--skip-a", action="store_true")
    p.add_argument("--skip-b", action="store_true")
    args = p.parse_args()
    root = tempfile.mkdtemp(prefix="w2s-faultcost-")
    results: dict = {"cpus": os.cpu_count()}
    try:
        if not args.skip_b:
            results["b_driver_kill"] = driver_kill(root, args.k)
            print(json.dumps(results["b_driver_kill"], indent=2), flush=True)
        if not args.skip_a:
            results["a_worker_kill"] = worker_kill(root, args.ckpt_baseline)
            print(json.dumps(results["a_worker_kill"], indent=2), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
