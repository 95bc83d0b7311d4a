"""Each attempt's output: what its task prints and logs, kept in a bounded log.

Many attempts run at once in one process (``async def`` tasks in trio's thread, plain
functions in worker threads), so output cannot be captured by swapping ``sys.stdout``
per attempt. Instead one process-wide proxy stands in for ``sys.stdout`` and
``sys.stderr`` while a runtime is open (:func:`installed`), and a context variable names
the attempt whose code is running (:func:`capturing`): a write goes to the stream it
always went to (so output is still echoed live) and, when the variable is set, also into
that attempt's :class:`AttemptLog`. Trio gives each task a copy of its parent's context
and ``trio.to_thread.run_sync`` runs the function in a copy of the caller's, so the
variable follows the attempt into its worker thread and into the tasks it starts.

``logging`` records are captured when they are created (a record factory), formatted
one line each, so they are kept whatever handlers are configured; a handler that then
writes the record to a stream does not capture it a second time.

A thread the task starts itself runs in a fresh context: what it prints is echoed, not
captured.
"""

from __future__ import annotations

import codecs
import contextlib
import logging
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, Final, TextIO

#: How much of an attempt's output its log keeps by default: the first and the last
#: this many bytes (UTF-8), 1 MiB in all; a marker line says how much was dropped.
DEFAULT_HEAD_BYTES: Final = 512 * 1024
DEFAULT_TAIL_BYTES: Final = 512 * 1024

#: How a logging record reads in an attempt's log.
LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class AttemptLog:
    """The output of one attempt: its first and last bytes, and how many were dropped.

    Thread-safe: the attempt's worker thread and trio's thread may write at once.
    """

    __slots__ = (
        "_dropped", "_head", "_head_limit", "_lock", "_midline", "_tail", "_tail_limit",
        "_written",
    )  # fmt: skip

    def __init__(
        self, head_bytes: int = DEFAULT_HEAD_BYTES, tail_bytes: int = DEFAULT_TAIL_BYTES
    ) -> None:
        if head_bytes < 0 or tail_bytes < 0:
            msg = (
                f"an attempt log keeps a head and a tail of >= 0 bytes, got "
                f"head_bytes={head_bytes!r} and tail_bytes={tail_bytes!r}"
            )
            raise ValueError(msg)
        self._head_limit = head_bytes
        self._tail_limit = tail_bytes
        self._head = bytearray()
        self._tail = bytearray()
        self._dropped = 0
        self._written = 0
        #: Whether the last write ended without a newline.
        self._midline = False
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        """Append ``text``: to the head while it has room, then to the bounded tail."""
        data = text.encode("utf-8", errors="replace")
        with self._lock:
            self._append(data)

    def write_line(self, line: str) -> None:
        """Append ``line`` and a newline, on a line of its own: after a partial line
        (a ``print(..., end="")``), a newline first."""
        data = (line + "\n").encode("utf-8", errors="replace")
        with self._lock:
            self._append(b"\n" + data if self._midline else data)

    def _append(self, data: bytes) -> None:
        if data:
            self._midline = not data.endswith(b"\n")
            self._written += len(data)
        room = self._head_limit - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if not data:
            return
        self._tail += data
        # Trimmed once the tail holds twice its limit, so a long stream of small
        # writes costs amortised O(1) each, not a move of the whole tail per write.
        excess = len(self._tail) - self._tail_limit
        if excess > self._tail_limit:
            del self._tail[:excess]
            self._dropped += excess

    @property
    def written(self) -> int:
        """How many bytes were written in all (kept or not): it changes with every write."""
        return self._written

    @property
    def kept(self) -> int:
        """How many bytes :meth:`text` holds (less its marker line)."""
        with self._lock:
            return len(self._head) + min(len(self._tail), self._tail_limit)

    @property
    def dropped(self) -> int:
        """How many bytes between the head and the tail were dropped."""
        with self._lock:
            return self._dropped + max(0, len(self._tail) - self._tail_limit)

    def text(self) -> str:
        """The kept output; where bytes were dropped, a marker line says how many."""
        with self._lock:
            excess = max(0, len(self._tail) - self._tail_limit)
            head, tail = bytes(self._head), bytes(self._tail[excess:])
            dropped = self._dropped + excess
        text = head.decode("utf-8", errors="replace")
        if dropped:
            newline = "" if not text or text.endswith("\n") else "\n"
            text += (
                f"{newline}[stateward: {dropped} bytes of output dropped here; an attempt's "
                f"log keeps its first {self._head_limit} and last {self._tail_limit} bytes]\n"
            )
        return text + tail.decode("utf-8", errors="replace")


#: Characters of a line without its end that a :class:`LineSplitter` holds back.
LINE_LIMIT: Final = 64 * 1024


class LineSplitter:
    """Decodes a pipe's bytes as UTF-8 (bad bytes replaced) into whole lines: the other
    pipe's lines, written to the same log, must not split one. A line longer than
    :data:`LINE_LIMIT` goes out in pieces, so memory stays bounded."""

    __slots__ = ("_decoder", "_pending")

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes | bytearray) -> str:
        """The whole lines ``chunk`` completes (``""``: none yet)."""
        pending = self._pending + self._decoder.decode(chunk)
        if len(pending) > LINE_LIMIT:
            self._pending = ""
            return pending
        lines, newline, self._pending = pending.rpartition("\n")
        return lines + newline

    def end(self) -> str:
        """What is left once the pipe is closed: a last line without its end."""
        rest, self._pending = self._pending + self._decoder.decode(b"", final=True), ""
        return rest


_current: ContextVar[AttemptLog | None] = ContextVar("stateward_attempt_log", default=None)


def capturing(log: AttemptLog) -> _Capturing:
    """Capture into ``log`` what the code run within (and the tasks and worker threads it
    starts) prints and logs."""
    return _Capturing(log)


class _Capturing:
    # A class, not a generator: every attempt enters one (a third of the cost).
    __slots__ = ("_log", "_token")

    def __init__(self, log: AttemptLog) -> None:
        self._log = log

    def __enter__(self) -> AttemptLog:
        self._token = _current.set(self._log)
        return self._log

    def __exit__(self, *exc_info: object) -> None:
        _current.reset(self._token)


@contextlib.contextmanager
def not_captured() -> Iterator[None]:
    """Capture nothing within: for output the caller has already written to the log."""
    token = _current.set(None)
    try:
        yield
    finally:
        _current.reset(token)


class _TaskProcess:
    """Whether this process is a task process, whose runtime keeps its stdout as the
    attempt's log (set once, by :func:`forward_output_to_stdout`)."""

    forwards = False


def forward_output_to_stdout() -> None:
    """In a task process: :func:`write_output` writes to stdout, which the runtime
    reads into the attempt's log (the task process has no log of its own)."""
    _TaskProcess.forwards = True


def write_output(text: str) -> None:
    """Write ``text`` to the current attempt's log only (not echoed); outside an attempt,
    do nothing. For output that reached the process otherwise (a command's pipes). In a
    task process, to its stdout: its runtime keeps that as the attempt's log."""
    log = _current.get()
    if log is not None:
        log.write(text)
    elif _TaskProcess.forwards:
        sys.stdout.write(text)
        sys.stdout.flush()


# -- the process-wide proxy ------------------------------------------------------------------

_CALL_HANDLERS: Final = logging.Logger.callHandlers.__code__


def _in_logging_handler() -> bool:
    # A handler writing a record to the stream: the record was captured when made.
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code is _CALL_HANDLERS:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False


class _StreamProxy:
    """Stands in for ``sys.stdout`` or ``sys.stderr``: writes go to the stream it
    replaced, and also to the current attempt's log."""

    def __init__(self, target: TextIO | None) -> None:
        #: ``None`` where the process has no such stream (pythonw): output is only kept.
        self._target = target

    def write(self, text: str) -> int:
        log = _current.get()
        if log is not None and not _in_logging_handler():
            log.write(text)
        if self._target is None:
            return len(text)
        return self._target.write(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if self._target is not None:
            self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


_lock = threading.Lock()
_users = 0
_Factory = Callable[..., logging.LogRecord]
#: The proxies, the record factory replaced and ours, while installed.
_installed: tuple[_StreamProxy, _StreamProxy, _Factory, _Factory] | None = None


#: How a log record is written to an attempt's log (made once: it does not change).
_formatter = logging.Formatter(LOG_FORMAT)


def _record_factory(previous: _Factory) -> _Factory:
    formatter = _formatter

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        log = _current.get()
        if log is not None:
            try:
                text = formatter.format(record)
            except Exception as exc:  # as a handler would, never fail the logging call
                text = (
                    f"{record.levelname} {record.name}: {record.msg!r} % {record.args!r} "
                    f"could not be formatted ({type(exc).__name__}: {exc})"
                )
            log.write_line(text)
        return record

    return make


def _install() -> None:
    global _users, _installed
    with _lock:
        _users += 1
        if _users > 1:
            return
        out, err = _StreamProxy(sys.stdout), _StreamProxy(sys.stderr)
        previous = logging.getLogRecordFactory()
        factory = _record_factory(previous)
        sys.stdout, sys.stderr = out, err
        logging.setLogRecordFactory(factory)
        _installed = (out, err, previous, factory)


def _uninstall() -> None:
    global _users, _installed
    with _lock:
        _users -= 1
        if _users > 0 or _installed is None:
            return
        out, err, previous, factory = _installed
        # Something that replaced a stream after us keeps it (it restores ours later).
        if sys.stdout is out:
            sys.stdout = out._target
        if sys.stderr is err:
            sys.stderr = err._target
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)
        _installed = None


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """Install the stream proxy and the record factory while within (counted: the last
    runtime to close removes them)."""
    _install()
    try:
        yield
    finally:
        _uninstall()
