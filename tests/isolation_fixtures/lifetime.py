"""Isolated tasks that outlive the thread that started their process, for
tests/runtime/test_isolation_lifetime.py."""

from __future__ import annotations

import os
import socket
import time

from stateward import Dag

dag = Dag("lifetime", default_args={"isolation": "process"}, max_active_tasks=2)


@dag.task
def waits_for_release() -> str:
    """Tell the test its pid over $LIFETIME_SOCKET, then wait for the test's word."""
    with socket.socket(socket.AF_UNIX) as conn:
        conn.connect(os.environ["LIFETIME_SOCKET"])
        conn.sendall(f"{os.getpid()}\n".encode())
        return conn.recv(64).decode()


@dag.task
def sleeps(params: dict[str, float]) -> str:
    """Sleep for params['seconds']."""
    time.sleep(params["seconds"])
    return "slept"


@dag.task
def spins(params: dict[str, float]) -> int:
    """Keep a CPU busy for params['seconds']."""
    end, turns = time.monotonic() + params["seconds"], 0
    while time.monotonic() < end:
        turns += 1
    return turns
