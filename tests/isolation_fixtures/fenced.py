"""A Dag whose task runs in a task process and writes after its instance was taken
over, for tests/runtime/test_leases.py (loaded by path, as the child does)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from stateward import Dag, StaleAttemptError

fenced = Dag("fenced", default_args={"isolation": "process"})


@fenced.task
def late_write(task_state: Any) -> str:
    """Writes, says it started (a file), waits until the test took its instance over
    (another file), writes again: that write must be refused."""
    folder = Path(os.environ["STATEWARD_TEST_FENCE_DIR"])
    task_state.set("before", 1)
    (folder / "started").touch()
    deadline = time.monotonic() + 60
    while not (folder / "taken").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("the test never took the instance over")
        time.sleep(0.02)
    try:
        task_state.set("after", 1)
    except StaleAttemptError:
        (folder / "refused").touch()
        raise
    return "mine"
