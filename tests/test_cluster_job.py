"""A real two-node Ray cluster on loopback, token authentication on, and a sweep submitted
through the Jobs API as clusters/README.md documents (`ray job submit ... -- w2sray run SPEC`).

The head advertises the `w2s_driver` resource and 1 CPU, the second node 1 CPU: the two GT runs
(1 worker each) can only run at once by landing on different nodes, which the test checks from
the Train workers' node ids. Every process of the cluster is killed at the end (by process
group and by the test's own token path in their environment; never `ray stop`, which would
stop every Ray cluster on the machine), and the test asserts none is left.

The job passes no runtime environment of its own: w2sray.sweep.connect() gives the clusters it
joins the Train settings without which a trial's worker group never started here (found by
this test).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time

import pytest
import yaml
from _procs import free_port, stop_ray_nodes

from w2sray.runs import plan_sweep
from w2sray.spec import load_spec
from w2sray.store import Store

BIN = os.path.dirname(sys.executable)
RAY = os.path.join(BIN, "ray")

SPEC = {
    "name": "cluster-job",
    "datasets": [{"name": "synthetic", "n_gt": 256, "n_weak": 256, "n_test": 200}],
    "models": ["w2s-tiny-1", "w2s-tiny-2"],
    "methods": ["xent"],
    "seeds": [0],
    "train": {"epochs": 1, "batch_size": 16, "lr": 1e-3, "max_length": 24},
    "resources": {"workers": 1, "cpus_per_worker": 1},
}


def _ray(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RAY, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def _wait_nodes(env: dict, dash: str, n: int, deadline: float) -> list[dict]:
    nodes: list[dict] = []
    while time.time() < deadline:
        res = _ray(env, "list", "nodes", "--address", dash, "--format", "json", timeout=60)
        if res.returncode == 0:
            try:
                nodes = [x for x in json.loads(res.stdout) if x.get("state") == "ALIVE"]
            except ValueError:
                nodes = []
            if len(nodes) >= n:
                return nodes
        time.sleep(1.0)
    raise AssertionError(f"cluster never had {n} nodes alive: {nodes}")


@pytest.fixture
def two_node_cluster():
    root = tempfile.mkdtemp(prefix="w2sc", dir="/tmp")  # short: Ray's socket paths are long
    token = os.path.join(root, "auth_token")
    with open(token, "w") as fh:
        fh.write(secrets.token_hex(32))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=token,  # also the marker that finds this cluster's processes
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        RAY_USAGE_STATS_ENABLED="0",
    )
    gcs, dash_port = free_port(), free_port()
    common = ["--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    head_cmd = [
        *("start", "--head", "--port", str(gcs), *common),
        *("--resources", json.dumps({"w2s_driver": 100})),
        *("--include-dashboard", "true", "--dashboard-host", "127.0.0.1"),
        *("--dashboard-port", str(dash_port)),
        *("--dashboard-agent-listen-port", str(free_port())),
        *("--ray-client-server-port", str(free_port())),
        *("--temp-dir", os.path.join(root, "head")),
    ]
    worker_cmd = [
        *("start", "--address", f"127.0.0.1:{gcs}", *common),
        *("--dashboard-agent-listen-port", str(free_port())),
        *("--temp-dir", os.path.join(root, "worker")),
    ]
    procs: list[subprocess.Popen] = []
    logs = []

    def start(cmd, name):
        log = open(os.path.join(root, f"{name}.log"), "w")
        logs.append(log)
        procs.append(
            subprocess.Popen(
                [RAY, *cmd], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        )

    dash = f"http://127.0.0.1:{dash_port}"
    try:
        start(head_cmd, "head")
        # the dashboard (and so the Jobs API and state API) answers once the head is up
        _wait_nodes(env, dash, 1, time.time() + 180)
        start(worker_cmd, "worker")
        nodes = _wait_nodes(env, dash, 2, time.time() + 180)
        yield {"root": root, "env": env, "dash": dash, "nodes": nodes}
    finally:
        left = stop_ray_nodes(procs, token, logs, root)
        assert left == [], f"processes left behind: {left}"


def test_sweep_submitted_as_a_job_to_a_two_node_cluster(two_node_cluster):
    c = two_node_cluster
    root, env, dash = c["root"], c["env"], c["dash"]
    job_dir = os.path.join(root, "job")
    os.makedirs(job_dir)
    store = os.path.join(root, "store")  # absolute: the job's working directory is elsewhere
    with open(os.path.join(job_dir, "spec.yaml"), "w") as fh:
        yaml.safe_dump({**SPEC, "storage": store}, fh)

    # Without the token the Jobs API refuses: the cluster really requires it.
    anon = {**env, "RAY_AUTH_MODE": "disabled"}
    anon.pop("RAY_AUTH_TOKEN_PATH")
    refused = _ray(anon, "job", "list", "--address", dash, timeout=60)
    assert refused.returncode != 0, refused.stdout

    job_id = "w2sray-cluster-test"
    log_path = os.path.join(root, "submit.log")
    with open(log_path, "w") as log:  # `ray job submit` follows the job's output until it ends
        sub = subprocess.Popen(
            [RAY, "job", "submit", "--address", dash, "--submission-id", job_id]
            + ["--working-dir", job_dir]
            + ["--", "w2sray", "run", "spec.yaml"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            sub.wait(timeout=float(os.environ.get("W2S_JOB_TIMEOUT", 420)))
        except subprocess.TimeoutExpired:
            sub.kill()
            sub.wait()
    status = _ray(env, "job", "status", "--address", dash, job_id, timeout=60)
    with open(log_path) as fh:
        output = fh.read()
    # `ray job status` prints "Job '<id>' succeeded" (or failed / stopped)
    ok = f"Job '{job_id}' succeeded" in status.stdout
    assert ok, f"{status.stdout}\n--- job output ---\n{output[-6000:]}"
    assert "trained 3, already complete 0, failed 0" in output

    # Both nodes were alive through the job, and the two GT runs' Train workers ran one on each.
    nodes = {n["node_id"] for n in _wait_nodes(env, dash, 2, time.time() + 30)}
    assert nodes == {n["node_id"] for n in c["nodes"]}
    actors = _ray(
        env,
        *("list", "actors", "--address", dash, "--format", "json", "--limit", "1000"),
        *("--filter", "class_name=RayTrainWorker"),
        timeout=60,
    )
    assert actors.returncode == 0, actors.stderr
    worker_nodes = {a["node_id"] for a in json.loads(actors.stdout)}
    assert worker_nodes == nodes, f"Train workers ran on {worker_nodes}, nodes {nodes}"

    spec = load_spec(os.path.join(job_dir, "spec.yaml"))
    plan = plan_sweep(spec)
    s = Store(store)
    assert len(plan.all_runs()) == 3
    assert all(s.is_complete(r.key) for r in plan.all_runs())
    for name in ("summary.md", "results.parquet", "results.csv", "gt.csv", "report.html"):
        assert os.path.isfile(os.path.join(store, "report", name)), name
