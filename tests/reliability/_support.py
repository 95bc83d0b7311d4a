"""Helpers the reliability tests share: child processes, store wrappers, thread and task counts."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import trio

from stateward._runtime.supervisor import Envelope, Supervisor
from stateward.store import base as ops
from stateward.store.base import Store

HERE = Path(__file__).parent


class Child:
    """A helper script run in its own Python process, talked to line by line.

    Its stdout is read with blocking ``readline`` (never a sleep); its stderr goes to a
    file so that a chatty child cannot block on a full pipe, and is shown on failure. A
    watchdog kills a child still running after ``deadline`` seconds, so a test that
    waits for a line that never comes fails instead of hanging.
    """

    def __init__(self, script: str, *args: str, stderr_path: Path, deadline: float = 120) -> None:
        self.stderr_path = stderr_path
        self._stderr: IO[str] = stderr_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / script), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.stdin = self.proc.stdin
        self.stdout = self.proc.stdout
        self._watchdog = threading.Timer(deadline, self.proc.kill)
        self._watchdog.daemon = True
        self._watchdog.start()

    def readline(self) -> str:
        """The child's next line; fails the test (with its stderr) if it ended instead."""
        line = self.stdout.readline()
        if not line:
            self.proc.wait()
            msg = f"child exited {self.proc.returncode} early; stderr:\n{self.stderr()}"
            raise AssertionError(msg)
        return line.rstrip("\n")

    def send(self, line: str) -> None:
        """Write one line to the child's stdin."""
        self.stdin.write(line + "\n")
        self.stdin.flush()

    def rest(self) -> list[str]:
        """Every line still in the pipe, up to the end (after the child ended)."""
        return self.stdout.read().splitlines()

    def stderr(self) -> str:
        """What the child wrote to stderr so far."""
        self._stderr.flush()
        return self.stderr_path.read_text()

    def kill(self) -> None:
        """End the child at once (SIGKILL) and reap it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def close(self) -> None:
        """Kill if still running; close the pipes and the stderr file."""
        self._watchdog.cancel()
        self.kill()
        for stream in (self.stdin, self.stdout):
            with contextlib.suppress(OSError):  # a pipe whose reader died
                stream.close()
        self._stderr.close()


class DelegatingStore:
    """A Store that passes everything to another; subclasses intercept ``execute``."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"

    @property
    def write_transactions(self) -> int:
        """The inner store's count."""
        return self.inner.write_transactions

    async def __aenter__(self) -> DelegatingStore:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.inner.__aexit__(t, e, tb)

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        """Run ``batch`` on the inner store."""
        return await self.inner.execute(batch, now=now)


class SubmitLog:
    """Records every Envelope submitted to a supervisor (to check each got an answer),
    from trio's thread (:meth:`Supervisor.submit`) and from worker threads
    (:meth:`Supervisor.submit_from_thread`).

    Installed on the supervisor object, so every client of the runtime goes through it.
    ``when(condition)`` is an event set once the envelopes submitted satisfy
    ``condition``.
    """

    def __init__(self, supervisor: Supervisor) -> None:
        self.envelopes: list[Envelope] = []
        self._original = supervisor.submit
        self._original_from_thread = supervisor.submit_from_thread
        self._token = trio.lowlevel.current_trio_token()
        self._waits: list[tuple[Callable[[list[Envelope]], bool], trio.Event]] = []
        supervisor.submit = self._submit  # type: ignore[method-assign]
        supervisor.submit_from_thread = self._submit_from_thread  # type: ignore[method-assign]

    def _submit(self, envelope: Envelope) -> None:
        self._original(envelope)
        self.envelopes.append(envelope)
        self._check()

    def _submit_from_thread(self, envelope: Envelope) -> bool:
        wake = self._original_from_thread(envelope)
        # Appended before the thread waits for its answer; checked in trio's thread.
        self.envelopes.append(envelope)
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._check)
        return wake

    def _check(self) -> None:
        for condition, event in self._waits:
            if not event.is_set() and condition(list(self.envelopes)):
                event.set()

    def when(self, condition: Callable[[list[Envelope]], bool]) -> trio.Event:
        """An event set once the envelopes submitted so far satisfy ``condition``."""
        event = trio.Event()
        self._waits.append((condition, event))
        self._check()
        return event

    def requests(self, kind: type[Any], key: str) -> int:
        """How many requests of type ``kind`` for ``key`` were submitted."""
        return sum(
            1
            for e in list(self.envelopes)
            if type(e.request) is kind and getattr(e.request, "key", None) == key
        )

    def unanswered(self) -> list[Envelope]:
        """The envelopes that got no response (must be none once things settle)."""
        return [e for e in self.envelopes if e.response is None]

    async def all_answered(self) -> None:
        """Wait until every envelope has its response (a store may still be working on
        one in its thread). Fails, rather than hangs, if one is never answered.

        A worker thread's request has no event to wait on; its thread waited for the
        answer, so once the run that started the thread has returned, it is in.
        """
        with trio.fail_after(30):
            for envelope in list(self.envelopes):
                if envelope.done is not None:
                    await envelope.done.wait()
        assert self.unanswered() == []


def _is_idle_trio_worker(thread: threading.Thread) -> bool:
    # trio caches idle worker threads for 10 s under their default name; a busy one
    # carries the name of the function it runs.
    return thread.name.startswith("Trio thread ")


def threads_left_over(baseline: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``baseline`` that are still at work.

    A stopped store's writer thread is joined first (it ends once its queue is empty);
    trio's idle cached workers do not count: they run nothing.
    """
    for thread in threading.enumerate():
        if thread not in baseline and thread.name.startswith("stateward-"):
            thread.join(timeout=10)
    return [t for t in threading.enumerate() if t not in baseline and not _is_idle_trio_worker(t)]


def busy_thread_count() -> int:
    """``threading.active_count()`` without trio's idle cached worker threads."""
    return threading.active_count() - sum(map(_is_idle_trio_worker, threading.enumerate()))


def live_task_count() -> int:
    """How many trio tasks exist in this run (every nursery's children, recursively)."""
    count = 0
    stack = [trio.lowlevel.current_root_task()]
    while stack:
        task = stack.pop()
        count += 1
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
    return count
