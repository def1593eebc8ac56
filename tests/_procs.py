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
