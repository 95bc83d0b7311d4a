"""Dags whose isolated tasks fork, detach, close their streams or crash, for
tests/runtime/test_forkserver.py. Loaded by path, as the fork server loads it."""

from __future__ import annotations

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from stateward import Dag

rogues = Dag("rogues", default_args={"isolation": "process"})

_SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


@rogues.task
def forks_children(task_state: Any) -> None:
    """Fork a child that outlives this process unless something kills it, then die."""
    pid = os.fork()
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    task_state.set("pid", pid)
    os._exit(3)


@rogues.task
def closes_streams() -> None:
    """Close stdin, stdout and stderr with output still buffered, then fail."""
    print("buffered, never written")
    for fd in (0, 1, 2):
        os.close(fd)
    raise ValueError("the standard streams are closed")


@rogues.task
def exits_at_shutdown() -> None:
    """Ask the interpreter to shut down, with an exit handler that would exit again."""
    atexit.register(os._exit, 5)
    sys.exit(2)


@rogues.task
def segfaults() -> None:
    ctypes.string_at(0)


@rogues.task
def starts_a_session(task_state: Any) -> str:
    """Start a process in a session of its own, and succeed while it runs."""
    task_state.set("pid", subprocess.Popen(_SLEEPER, start_new_session=True).pid)
    return "started"


@rogues.task
def starts_a_session_then_dies(task_state: Any) -> None:
    """Start a process in a session of its own, then get killed."""
    task_state.set("pid", subprocess.Popen(_SLEEPER, start_new_session=True).pid)
    os.kill(os.getpid(), signal.SIGKILL)


@rogues.task
def daemonizes(task_state: Any) -> str:
    """The classic daemon: fork, setsid, fork again, the middle process exits."""
    read, write = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        daemon = os.fork()
        if daemon == 0:
            time.sleep(60)
            os._exit(0)
        os.write(write, str(daemon).encode())
        os._exit(0)
    os.waitpid(middle, 0)
    task_state.set("pid", int(os.read(read, 64)))
    return "daemonized"


@rogues.task
def where_am_i() -> list[int]:
    return [os.getpid(), os.getppid()]


@rogues.task
def exits_from_a_daemon_thread() -> None:
    """A daemon thread ends the process with os._exit while the task waits for it."""
    threading.Thread(target=os._exit, args=(4,), daemon=True).start()
    threading.Event().wait(60)


@rogues.task
def stops_its_template() -> list[int]:
    """Stop the template (SIGSTOP) and succeed: the attempt must end without it."""
    template = os.getppid()
    os.kill(template, signal.SIGSTOP)
    return [os.getpid(), template]
