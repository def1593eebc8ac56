"""Autoscaling with Ray's own local autoscaler: a head with no CPUs (only the `w2s_driver`
resource, as in clusters/*.yaml) and one worker node type with min_workers 0, started by
`ray start --head --autoscaling-config` with Ray's fake multi-node provider, which launches
every worker node as real Ray processes on this machine.

A tiny sweep with `max_concurrent_trials: 2` is started the way clusters/README.md tells
`ray submit` users to start one: `ray submit` copies `w2sray/cli.py` to `~/cli.py` on the head and
runs `python ~/cli.py run SPEC --store ... --address auto` there; here the script is copied to
a folder of its own and run the same way. Checked: no worker node before the sweep; the
autoscaler adds worker nodes for the trials' Train workers (two, the most the type allows and
what two concurrent 1-CPU runs need); every planned run is complete in the store, each trained
by a Train worker on a worker node (the head has no CPU to train on); the report is written;
and every worker node is released (terminated as idle) within RELEASE_S after the sweep ends.

`ray.cluster_utils.AutoscalingCluster` is not used: its start() and shutdown() run
`ray stop --force`, which stops every Ray cluster on the machine (other tests' and other
users'), and the example config it reads is not in the installed wheel. This test starts the
same head command itself, on free ports, with its own RAY_TMPDIR (so `--address auto` finds this
cluster and no other), and kills exactly the processes it started (by process group and by its
own token path in their environment), asserting none is left.

The nodes are watched from a subprocess (this file run as a script): a pytest process may hold
one Ray connection, the session's (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time

import yaml
from _procs import free_port, stop_ray_nodes

from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import DONE, Store

BIN = os.path.dirname(sys.executable)
RAY = os.path.join(BIN, "ray")
CLI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "w2sray", "cli.py")
HEAD_TIMEOUT = 180.0  # a loaded 2-core box can take minutes to start a head
SWEEP_TIMEOUT = float(os.environ.get("W2S_AUTOSCALE_TIMEOUT", 600))  # hard limit on the sweep
MAX_WORKERS = 2
IDLE_TIMEOUT_MIN = 0.1  # 6 s: Ray's own fake-cluster example uses fractions of a minute
RELEASE_S = 90.0  # idle timeout + autoscaler ticks + node shutdown, with room for load

SPEC = {
    "name": "autoscale",
    "datasets": [{"name": "synthetic", "n_gt": 128, "n_weak": 128, "n_test": 128}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
    # Set, as the README asks on autoscaling clusters: the head has no CPU when a stage starts.
    "max_concurrent_trials": 2,
}


def _autoscaling_config(gcs_port: int) -> dict:
    """Ray's fake multi-node example config (fake_multi_node/example.yaml in Ray's source) with
    this test's head and a single 1-CPU worker type that starts at zero nodes."""
    return {
        "cluster_name": "w2s-autoscale",
        "max_workers": MAX_WORKERS,
        "provider": {
            "type": "fake_multinode",
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            # The fake provider joins its nodes to 6379 unless told: this head's port instead.
            "gcs_address": f"127.0.0.1:{gcs_port}",
        },
        "available_node_types": {
            "ray.head.default": {
                "resources": {"CPU": 0, "w2s_driver": 100},
                "node_config": {},
                "max_workers": 0,
            },
            "ray.worker.cpu": {
                # A small object store: the default is 30% of the machine's memory per node.
                "resources": {"CPU": 1, "object_store_memory": 100 * 2**20},
                "node_config": {},
                "min_workers": 0,
                "max_workers": MAX_WORKERS,
            },
        },
        "head_node_type": "ray.head.default",
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": IDLE_TIMEOUT_MIN,
        "auth": {},
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


def _observe(out: str, stop: str, gcs_port: str) -> None:
    """In the subprocess: join the cluster, append a sample of its nodes to ``out`` (one JSON
    line each) every 0.5 s until ``stop`` exists, then write the Train workers' nodes."""
    import ray
    from ray.util.state import list_actors

    # This cluster's address as `ray start` recorded it under RAY_TMPDIR: "auto" before that
    # file exists would join any other Ray cluster running on the machine.
    addr_file = os.path.join(os.environ["RAY_TMPDIR"], "ray", "ray_current_cluster")
    deadline = time.time() + HEAD_TIMEOUT
    while not os.path.exists(addr_file):  # the head is still starting
        assert time.time() < deadline, "the head never recorded its address"
        time.sleep(1.0)
    time.sleep(0.5)  # written whole, not half
    with open(addr_file) as fh:
        address = fh.read().strip()
    assert address.endswith(f":{gcs_port}"), address
    ray.init(address=address, log_to_driver=False)
    with open(out + ".samples", "a") as fh:
        while not os.path.exists(stop):
            nodes = [
                {
                    "id": n["NodeID"],
                    "alive": n["Alive"],
                    "head": "node:__internal_head__" in n.get("Resources", {}),
                    "cpu": n.get("Resources", {}).get("CPU", 0.0),
                }
                for n in ray.nodes()
            ]
            fh.write(json.dumps({"t": time.time(), "nodes": nodes}) + "\n")
            fh.flush()
            time.sleep(0.5)
    actors = list_actors(
        filters=[("class_name", "=", "RayTrainWorker")], limit=1000, raise_on_missing_output=False
    )
    with open(out + ".actors", "w") as fh:
        json.dump([{"id": a.actor_id, "node": a.node_id} for a in actors], fh)
    ray.shutdown()


def _samples(path: str) -> list[dict]:
    try:
        with open(path) as fh:
            lines = fh.read().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:  # the last line, half written
            pass
    return out


def _workers_alive(sample: dict) -> set[str]:
    return {n["id"] for n in sample["nodes"] if n["alive"] and not n["head"]}


def _wait_sample(path: str, after: float, timeout: float, what: str, cond=lambda s: True) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for s in reversed(_samples(path)):
            if s["t"] > after and cond(s):
                return s
        time.sleep(0.5)
    raise AssertionError(f"no sample {what} within {timeout:.0f}s; last: {_samples(path)[-1:]}")


def test_sweep_scales_worker_nodes_from_zero_and_releases_them() -> None:
    root = tempfile.mkdtemp(prefix="w2sa", dir="/tmp")  # short: Ray's socket paths are long
    token = os.path.join(root, "auth_token")
    with open(token, "w") as fh:
        fh.write(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=token,  # also the marker that finds this test's processes
        RAY_TMPDIR=root,  # `--address auto` reads this cluster's address from here
        RAY_USAGE_STATS_ENABLED="0",
        RAY_TRAIN_V2_ENABLED="1",
        RAY_raylet_start_wait_time_s="120",  # the box is shared and loaded
        RAY_FAKE_CLUSTER="1",  # the fake multi-node provider refuses to start without it
        AUTOSCALER_UPDATE_INTERVAL_S="1",  # as AutoscalingCluster sets it: decide every second
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PYTHONUNBUFFERED="1",
    )
    gcs = free_port()
    config = os.path.join(root, "autoscaling.yaml")
    with open(config, "w") as fh:
        yaml.safe_dump(_autoscaling_config(gcs), fh)
    store = os.path.join(root, "store")
    spec_path = os.path.join(root, "spec.yaml")
    with open(spec_path, "w") as fh:
        yaml.safe_dump({**SPEC, "storage": store}, fh)
    # What `ray submit` does with the script: a copy of cli.py alone, run from its folder.
    home = os.path.join(root, "home")
    os.makedirs(home)
    script = shutil.copy(CLI, os.path.join(home, "cli.py"))

    procs: list[subprocess.Popen] = []
    logs = []

    def start(cmd: list[str], name: str, cwd: str | None = None) -> subprocess.Popen:
        log = open(os.path.join(root, f"{name}.log"), "w")
        logs.append(log)
        proc = subprocess.Popen(
            cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        procs.append(proc)
        return proc

    def log(name: str) -> str:
        with open(os.path.join(root, f"{name}.log")) as fh:
            return fh.read()

    obs = os.path.join(root, "observed")
    stop = os.path.join(root, "stop")
    try:
        head = start(
            [
                *(RAY, "start", "--head", "--block", "--port", str(gcs)),
                *("--node-ip-address", "127.0.0.1", "--num-cpus", "0"),
                *("--resources", json.dumps({"w2s_driver": 100})),
                *("--object-store-memory", str(200 * 2**20)),
                f"--autoscaling-config={config}",
                *("--include-dashboard", "true", "--dashboard-host", "127.0.0.1"),
                *("--dashboard-port", str(free_port())),
                *("--dashboard-agent-listen-port", str(free_port())),
                *("--ray-client-server-port", str(free_port())),
            ],
            "head",
        )
        observer = start([sys.executable, __file__, obs, stop, str(gcs)], "observer")
        first = _wait_sample(obs + ".samples", 0, HEAD_TIMEOUT, "of the head")
        # A few autoscaler ticks with nothing asked for: min_workers 0 starts no node.
        time.sleep(3.0)
        before = _wait_sample(obs + ".samples", time.time(), 30, "before the sweep")
        head_ids = {n["id"] for n in first["nodes"] if n["head"]}
        assert len(head_ids) == 1 and [n["cpu"] for n in first["nodes"]] == [0.0], first
        assert _workers_alive(before) == set(), before

        t_sweep = time.time()
        sweep = start(
            [sys.executable, script, "run", spec_path, "--store", store, "--address", "auto"],
            "sweep",
            cwd=home,
        )
        try:
            rc = sweep.wait(timeout=SWEEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"sweep not done in {SWEEP_TIMEOUT:.0f}s:\n{log('sweep')[-4000:]}\n"
                f"--- head ---\n{log('head')[-3000:]}"
            ) from None
        t_end = time.time()
        output = log("sweep")
        assert rc == 0, output[-6000:]
        # `--address auto` joined this cluster, not another one on the machine.
        assert re.search(rf"Connecting to existing Ray cluster at address: \S+:{gcs}\b", output)
        assert "trained 3, already complete 0, failed 0" in output, output[-6000:]
        assert os.path.isfile(os.path.join(store, "report", "summary.md"))
        plan = plan_sweep(load_spec(spec_path))
        s = Store(store)
        assert len(plan.all_runs()) == 3
        assert all(s.is_complete(r.key) for r in plan.all_runs())
        last_done = max(
            os.path.getmtime(os.path.join(s.run_dir(r.key), DONE)) for r in plan.all_runs()
        )

        # Released: every worker node is gone again within RELEASE_S of the last run's end
        # (often while the report is written, before the sweep process exits).
        released = _wait_sample(
            obs + ".samples",
            last_done,
            RELEASE_S,  # from now, after the last run: the bound is asserted below
            "with every worker node released",
            cond=lambda s: not _workers_alive(s),
        )
        open(stop, "w").close()
        observer.wait(timeout=60)
        assert observer.returncode == 0, log("observer")[-3000:]
        samples = _samples(obs + ".samples")
        during = [s for s in samples if t_sweep <= s["t"] <= t_end]
        peak = max(len(_workers_alive(s)) for s in during)
        launched = set().union(*(_workers_alive(s) for s in samples))
        assert peak == MAX_WORKERS, f"at most {peak} worker nodes alive during the sweep"
        assert head_ids.isdisjoint(launched)
        # Every worker node seen is dead at the end (not only absent from one sample).
        final = {n["id"]: n for n in released["nodes"]}
        assert all(not final[i]["alive"] for i in launched), released
        assert head.poll() is None, "the head died"

        # Every run trained by a Train worker on a worker node: the head has no CPU for one.
        with open(obs + ".actors") as fh:
            actors = json.load(fh)
        # 2 ground-truth runs + 1 transfer in one dataflow experiment: a pack per slot (2), a
        # worker group of 1 each
        assert len(actors) == 2, actors
        assert {a["node"] for a in actors} <= launched, (actors, launched, head_ids)
        t_released = min(x["t"] for x in samples if x["t"] > last_done and not _workers_alive(x))
        assert t_released - last_done <= RELEASE_S
        print(
            f"\nsweep {t_end - t_sweep:.0f}s, peak {peak} worker nodes, all released "
            f"{t_released - last_done:.0f}s after the last run ended"
        )
    finally:
        left = stop_ray_nodes(procs, token, logs, root)
        assert left == [], f"processes left behind: {left}"


if __name__ == "__main__":
    _observe(*sys.argv[1:4])
