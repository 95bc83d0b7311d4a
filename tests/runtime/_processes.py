"""Helpers the process-isolation tests share."""

from __future__ import annotations

import os
import select


def wait_for_exit(pid: int, timeout_ms: int = 10_000) -> None:
    """Block until process ``pid`` has ended (its pidfd becomes readable), at most
    ``timeout_ms``; fail the test if it still runs then."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        assert poller.poll(timeout_ms), f"process {pid} still runs"
    finally:
        os.close(fd)
