"""The fork server of isolated attempts: ``python -m stateward._runtime.template``.

The runtime (:mod:`stateward._runtime.forkserver`) starts one template per Dag file. It
imports stateward and the task process's machinery, loads the Dag file once (importing
what the file imports), reports the files it loaded, rehearses one attempt of a
built-in task (:mod:`.rehearsal`: warm caches that every task process then shares), and
then forks one task process per attempt. It holds no thread and, once rehearsed, runs
no event loop, so forking is safe. It keeps one spare task process forked ahead (waiting,
on a socket pair of its own, for an attempt's descriptors; killed on ``retire``), so that
an attempt does not wait for a fork. It serves one control socket (``SOCK_SEQPACKET``,
one JSON object per message):

======= =========== =============================================================
op      direction   fields
======= =========== =============================================================
files   to runtime  ``files``: ``[path, mtime_ns, size, inode]`` of the Dag file and
                    the modules it imported, outside the standard library and
                    site-packages (in several messages if there are many)
ready   to runtime  ``pid``, ``forkable`` and ``why`` (the file started a thread:
                    forking would copy a process whose threads are gone)
fork    to template ``id``; the task process's socket end, then its stdout and
                    stderr (pipes the runtime reads), travel as SCM_RIGHTS
forked  to runtime  ``id``, ``pid`` of the new task process; a pidfd of it travels
                    as SCM_RIGHTS
refused to runtime  ``id``, ``why``: the fork failed
exited  to runtime  ``pid``, ``status``: the raw wait status (exit code or signal)
retire  to template stop forking, kill the spare; exit once every task process has
                    ended
======= =========== =============================================================

The template dies with the runtime: it waits on a pidfd of the runtime's process, and
an end of stream on the control socket means the same. Either way it kills every task
process (and what they started) and exits. Each task process gets SIGKILL when the
template dies (``PR_SET_PDEATHSIG``, sound here because the template's only thread is
the one that forks).

The template is a child subreaper: what a task process started and left behind when it
died (a grandchild that called ``setsid()``, say) is adopted by the template, which
kills it.
"""

from __future__ import annotations

import argparse
import contextlib
import faulthandler
import gc
import json
import os
import selectors
import signal
import socket
import sys
import sysconfig
import threading
import traceback
from collections.abc import Mapping, Sequence
from typing import Any, Final, NoReturn

from .._dag import Dag
from .._errors import TaskLoadError
from .._loader import load_dags
from .._protocol import converter
from .._protocol.frames import StartFrame
from .._protocol.messages import GetTaskState
from .._records import AssetInfo
from . import child
from .descendants import become_subreaper, children, kill_descendants, kill_tree
from .forkserver import identity
from .rehearsal import rehearse

#: Exit status of a forked task process whose start failed before it could report.
EXIT_FORK_FAILED: Final = 70
_MAX_MESSAGE: Final = 4096
# Files reported per message, so that each stays far below the socket's buffer.
_FILES_PER_MESSAGE: Final = 100


def warm_up() -> None:
    """Build the converter's lazily generated hooks here, once: otherwise every task
    process would generate and compile them again (measured: ~40% of a forked
    attempt's CPU time)."""
    converter.generate_hooks()
    start = StartFrame(
        dag_file="/",
        dag_id="d",
        run_id="r",
        task_id="t",
        map_index=-1,
        try_number=1,
        max_tries=1,
        params={},
        assets=(AssetInfo("a", "a"),),
        task_retention=1.0,
        asset_retention=None,
        clock_offset=0.0,
    )
    converter.decode_frame(converter.encode_frame(start))
    converter.decode(converter.encode(GetTaskState("k")))


def watched_files(before: set[str], first: list[Any]) -> list[list[Any]]:
    """The Dag file (``first``: as it was before loading) and the modules loaded since
    ``before`` that are not installed packages or the standard library, each as
    ``[path, mtime_ns, size, inode]``."""
    installed = {
        os.path.realpath(path)
        for key in ("stdlib", "platstdlib", "purelib", "platlib")
        if (path := sysconfig.get_paths().get(key))
    }
    paths = []
    for name, module in list(sys.modules.items()):
        where = getattr(module, "__file__", None)
        if name in before or not isinstance(where, str):
            continue
        real = os.path.realpath(where)
        if not any(real.startswith(prefix + os.sep) for prefix in installed):
            paths.append(real)
    files = [first]
    for path in dict.fromkeys(paths):
        if path == first[0]:
            continue
        files.append(identity(path))
    return files


class Spare:
    """A task process forked ahead: its pid, a pidfd of it, and the socket on which it
    waits for the attempt's descriptors."""

    def __init__(self, pid: int, pidfd: int, channel: socket.socket) -> None:
        self.pid = pid
        self.pidfd = pidfd
        self.channel = channel


def redirect(output: Sequence[int]) -> None:
    """Make ``output`` (two descriptors) this process's stdout and stderr."""
    for fd, target in zip(output, (1, 2), strict=True):
        os.dup2(fd, target)
        os.close(fd)


def wait_as_spare(channel: socket.socket, dags: Mapping[str, Dag] | None) -> NoReturn:
    """In a spare task process: wait for the attempt's socket, stdout and stderr, then
    serve the attempt; exit if the template goes away first (an end of stream)."""
    _, fds, _, _ = socket.recv_fds(channel, 16, 3)
    channel.close()
    if len(fds) != 3:
        os._exit(0)
    redirect(fds[1:])
    child.serve_forked(socket.socket(fileno=fds[0]), dags)


class Template:
    """The template's state: its control socket, the runtime it serves, its children."""

    def __init__(
        self, control: socket.socket, runtime_pidfd: int, dags: Mapping[str, Dag] | None
    ) -> None:
        self.control = control
        self.runtime_pidfd = runtime_pidfd
        self.dags = dags
        self.selector = selectors.DefaultSelector()
        self.selector.register(control, selectors.EVENT_READ, "control")
        self.selector.register(runtime_pidfd, selectors.EVENT_READ, "runtime")
        #: pidfd -> pid, of the task processes forked and not yet reaped.
        self.attempts: dict[int, int] = {}
        #: pidfd -> pid, of orphans adopted and killed, not yet reaped.
        self.adopted: dict[int, int] = {}
        #: The spare task process, forked ahead and waiting for an attempt (its pidfd
        #: is in :attr:`adopted` until it gets one).
        self.spare: Spare | None = None
        self.retiring = False

    def send(self, fds: Sequence[int] = (), **message: Any) -> None:
        try:
            socket.send_fds(self.control, [json.dumps(message).encode()], fds)
        except OSError:
            self.shut_down()

    def serve(self) -> NoReturn:
        """Fork, reap and report until retired with no task process left, or shut down."""
        while not (self.retiring and not self.attempts):
            for key, _ in self.selector.select():
                if key.data == "runtime":
                    self.shut_down()
                elif key.data == "control":
                    self.on_control()
                else:
                    self.on_exit(key.fd)
        os._exit(0)

    def on_control(self) -> None:
        try:
            data, fds, _, _ = socket.recv_fds(self.control, _MAX_MESSAGE, 3)
        except OSError:
            self.shut_down()
        if not data:
            self.shut_down()  # the runtime closed its end: it is closing or gone
        message = json.loads(data)
        if message["op"] == "retire":
            self.retiring = True
            self.discard_spare()
        elif message["op"] == "fork" and len(fds) == 3:
            if not self.hand_to_spare(message["id"], fds):
                self.fork(message["id"], fds[0], (fds[1], fds[2]))
            if not self.retiring:
                self.fork_spare()
        else:
            for fd in fds:
                os.close(fd)
            self.send(op="refused", id=message.get("id"), why=f"unknown request {message!r}")

    def fork(self, request_id: int, attempt_fd: int, output: tuple[int, int]) -> None:
        parent = os.getpid()
        # What the template buffered is its own: a child must not write it again.
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError as exc:
            for fd in (attempt_fd, *output):
                os.close(fd)
            self.send(op="refused", id=request_id, why=f"fork() failed: {exc}")
            return
        if pid == 0:  # never returns: nothing may unwind into the template's loop
            try:
                self.become_attempt(output)
                child.run_forked(socket.socket(fileno=attempt_fd), parent=parent, dags=self.dags)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(EXIT_FORK_FAILED)
        for fd in (attempt_fd, *output):
            os.close(fd)
        pidfd = os.pidfd_open(pid)
        self.attempts[pidfd] = pid
        self.selector.register(pidfd, selectors.EVENT_READ, "exit")
        # The runtime gets a pidfd too: it sees the exit without waiting for this
        # process to be scheduled, reap and report (only how it ended needs that).
        self.send(op="forked", id=request_id, pid=pid, fds=[pidfd])

    def become_attempt(self, output: tuple[int, int]) -> None:
        """In the forked child: write stdout and stderr to ``output`` (the runtime reads
        them into the attempt's log), drop the template's own descriptors."""
        redirect(output)
        self.drop_own()

    def drop_own(self) -> None:
        """In a forked child: close the template's descriptors, restore Ctrl-C."""
        own = [
            self.selector.fileno(),
            self.control.fileno(),
            self.runtime_pidfd,
            *self.attempts,
            *self.adopted,
        ]
        if self.spare is not None:
            own.append(self.spare.channel.fileno())
        for fd in own:
            with contextlib.suppress(OSError):
                os.close(fd)
        # Ctrl-C is the runtime's to handle; the task process gets Python's default.
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def fork_spare(self) -> None:
        """Fork the next attempt's task process ahead (unless there is one): it waits
        for its socket and output, so that the fork is not on the next attempt's path.

        It is forked from this template, so it runs what the template loaded; when the
        runtime finds the Dag file changed it retires the template, which kills the
        spare (:meth:`discard_spare`)."""
        if self.spare is not None:
            return
        parent = os.getpid()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        sys.stdout.flush()
        sys.stderr.flush()
        try:
            pid = os.fork()
        except OSError:
            ours.close()
            theirs.close()
            return  # the next attempt is forked when asked for
        if pid == 0:  # never returns: nothing may unwind into the template's loop
            try:
                ours.close()
                self.drop_own()
                child.become_forked(parent)
                wait_as_spare(theirs, self.dags)
            except BaseException:
                with contextlib.suppress(BaseException):
                    traceback.print_exc()
            finally:
                os._exit(EXIT_FORK_FAILED)
        theirs.close()
        pidfd = os.pidfd_open(pid)
        self.spare = Spare(pid, pidfd, ours)
        self.adopted[pidfd] = pid
        self.selector.register(pidfd, selectors.EVENT_READ, "spare")

    def hand_to_spare(self, request_id: int, fds: Sequence[int]) -> bool:
        """Give the spare task process the attempt's descriptors ``fds``; whether it
        took them (else the caller forks)."""
        spare, self.spare = self.spare, None
        if spare is None:
            return False
        try:
            socket.send_fds(spare.channel, [b"go"], fds)
        except OSError:  # it died: reaped as an orphan when its pidfd says so
            spare.channel.close()
            return False
        spare.channel.close()
        for fd in fds:
            os.close(fd)
        del self.adopted[spare.pidfd]
        self.attempts[spare.pidfd] = spare.pid
        self.send(op="forked", id=request_id, pid=spare.pid, fds=[spare.pidfd])
        return True

    def discard_spare(self) -> None:
        """Kill the spare task process (it would run what this template loaded) and
        reap it."""
        spare, self.spare = self.spare, None
        if spare is None:
            return
        spare.channel.close()
        with contextlib.suppress(OSError):
            os.kill(spare.pid, signal.SIGKILL)
        self.selector.unregister(spare.pidfd)
        del self.adopted[spare.pidfd]
        os.close(spare.pidfd)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(spare.pid, 0)

    def on_exit(self, pidfd: int) -> None:
        self.selector.unregister(pidfd)
        pid = self.attempts.pop(pidfd, None)
        adopted = pid is None
        if adopted:
            pid = self.adopted.pop(pidfd)
        os.close(pidfd)
        assert pid is not None
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:  # pragma: no cover - reaped elsewhere: should not happen
            status = signal.SIGKILL
        if not adopted:
            self.send(op="exited", pid=pid, status=status)
        elif self.spare is not None and self.spare.pid == pid:  # died waiting
            self.spare.channel.close()
            self.spare = None
        self.kill_orphans()

    def kill_orphans(self) -> None:
        """Kill each child that is not a task process: what a dead one left behind."""
        known = {*self.attempts.values(), *self.adopted.values()}
        for pid in children():
            if pid in known:
                continue
            kill_tree(pid)
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:  # pragma: no cover - already reaped
                continue
            self.adopted[pidfd] = pid
            self.selector.register(pidfd, selectors.EVENT_READ, "adopted")

    def shut_down(self) -> NoReturn:
        """Kill every task process and everything they started; exit."""
        kill_descendants()
        os._exit(0)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Load the Dag file, report, then serve the runtime until it closes or dies."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {__name__}", description="stateward's fork server (started by it)"
    )
    parser.add_argument("--fd", type=int, required=True, help="the control socket")
    parser.add_argument("--runtime-pid", type=int, required=True, help="the runtime's pid")
    parser.add_argument("--dag-file", required=True, help="the Dag file to preload")
    args = parser.parse_args(argv)
    os.set_inheritable(args.fd, False)
    control = socket.socket(fileno=args.fd)
    try:
        runtime_pidfd = os.pidfd_open(args.runtime_pid)
    except ProcessLookupError:
        os._exit(child.EXIT_PARENT_GONE)
    if os.getppid() != args.runtime_pid:  # it died before the pidfd was open
        os._exit(child.EXIT_PARENT_GONE)
    become_subreaper()
    before = set(sys.modules)
    first = identity(os.path.realpath(args.dag_file))
    dags: dict[str, Dag] | None
    try:
        dags = load_dags(args.dag_file)
    except TaskLoadError:
        dags = None  # each task process loads the file and reports why it cannot
    files = watched_files(before, first)
    threads = [thread.name for thread in threading.enumerate()]
    forkable = len(threads) == 1
    why = "" if forkable else f"loading the Dag file started threads {threads[1:]}"
    warm_up()
    rehearse()
    faulthandler.enable()  # a crash in native code prints the Python stack to stderr
    # Objects loaded so far are never collected in a task process: its garbage
    # collector does not walk them, so their pages stay shared with the template.
    gc.collect()
    gc.freeze()
    template = Template(control, runtime_pidfd, dags)
    for chunk in range(0, len(files), _FILES_PER_MESSAGE):
        template.send(op="files", files=files[chunk : chunk + _FILES_PER_MESSAGE])
    template.send(op="ready", pid=os.getpid(), forkable=forkable, why=why)
    if not forkable:
        os._exit(0)
    template.fork_spare()
    template.serve()


if __name__ == "__main__":
    main()
