"""Helpers for tests that run real Ray processes: free ports, and killing exactly the processes
a test started (by process group and by a marker in their environment), never by name."""

from __future__ import annotations

import os
import signal
import socket
import time

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def marked(marker: str, value: str) -> list[psutil.Process]:
    """Live processes whose environment has ``marker=value`` (what a test's processes inherit)."""
    out = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get(marker) == value and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except psutil.Error:
            continue
    return out


def in_group(pgid: int) -> list[psutil.Process]:
    out = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                out.append(proc)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def kill_all(pgids: list[int], marker: str, value: str, grace: float = 0.0) -> list[str]:
    """SIGKILL the process groups and every process carrying the marker; return what was still
    alive afterwards (descriptions), which a test asserts empty."""
    if grace:
        time.sleep(grace)
    for _ in range(3):
        for pgid in pgids:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for proc in marked(marker, value):
            try:
                proc.kill()
            except psutil.Error:
                pass
        time.sleep(1.0)
    left = marked(marker, value) + [p for g in pgids for p in in_group(g)]
    out = []
    for proc in left:
        try:
            out.append(f"{proc.pid} {' '.join(proc.cmdline())[:120]}")
        except psutil.Error:
            continue
    return out


def stop_ray_nodes(procs: list, token: str, logs: list, root: str) -> list[str]:
    """Stop `ray start --block` processes (SIGTERM stops a node's processes), kill what is left
    of them and of anything else carrying the test's token path, close the logs and remove the
    test's folder (kept with W2S_KEEP). Returns the processes that survived."""
    import shutil
    import subprocess

    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=5)  # what is left after that is killed below
        except subprocess.TimeoutExpired:
            pass
    left = kill_all([p.pid for p in procs], "RAY_AUTH_TOKEN_PATH", token)
    for p in procs:
        p.wait(timeout=30)
    for fh in logs:
        fh.close()
    if not os.environ.get("W2S_KEEP"):
        shutil.rmtree(root, ignore_errors=True)
    return left
