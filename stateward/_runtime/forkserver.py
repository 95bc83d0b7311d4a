"""Starting task processes by forking a warm template: the runtime's side of the fork server.

A fresh interpreter per isolated attempt spends about a quarter of a second importing
Python, trio and stateward before the task's first line. A runtime instead keeps one
**template** process per Dag file (:mod:`stateward._runtime.template`): started at the
first isolated attempt of a task from that file, it has imported stateward and loaded
the file, and it forks each attempt's task process, which then runs exactly as a
freshly started one would (:func:`stateward._runtime.child.run_forked`).

A template serves only while what it loaded is what is on disk: before each fork the
runtime compares the files it loaded (the Dag file and the modules the file imported,
outside the standard library and site-packages), the environment and the working
folder with what they were when it started. On any change a new template is started
and the old one is retired: it exits once its task processes have ended.

Why not ``multiprocessing``'s forkserver: its children are its own, so the exit status
and the parent's death would have to be relayed anyway; it pickles the target and its
arguments; ``start()`` blocks the calling thread; and its bootstrap costs ~12 ms per
child (measured), most of the 15 ms budget. The template here is a small module with no
pickling: the task's socket end and its stdout and stderr (pipes the runtime reads) cross
as SCM_RIGHTS, the rest as JSON.

Linux only (pidfds, ``SOCK_SEQPACKET``, ``PR_SET_PDEATHSIG``):
:func:`fork_server_available` says whether it is used; elsewhere each attempt starts
``python -m stateward._runtime.child`` as before.
"""

from __future__ import annotations

import array
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from typing import Any, Final

import trio

#: The module the template runs (``python -m``).
TEMPLATE_MODULE: Final = "stateward._runtime.template"
#: Seconds a template has to exit once closed, before it is killed.
CLOSE_GRACE_SECONDS: Final = 10.0
#: The most templates a runtime keeps (one per Dag file): the least recently used
#: beyond this are retired.
MAX_TEMPLATES: Final = 8
#: Set to False to start every task process as a fresh interpreter (for comparison).
ENABLED = True


def fork_server_available() -> bool:
    """Whether task processes are forked from a template on this platform."""
    return ENABLED and sys.platform == "linux" and hasattr(os, "pidfd_open")


def identity(path: str) -> list[Any]:
    """``[path, mtime_ns, size, inode]`` of the file at ``path`` (``-1`` each if absent)."""
    try:
        stat = os.stat(path)
    except OSError:
        return [path, -1, -1, -1]
    return [path, stat.st_mtime_ns, stat.st_size, stat.st_ino]


def child_env() -> dict[str, str]:
    """The environment of task processes: the runtime's, with its ``sys.path``."""
    # The child imports what the parent can: the same stateward, the same sys.path.
    env = dict(os.environ)
    entries = [entry for entry in sys.path if entry]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(entries))
    return env


#: Room for the file descriptors one control message may carry (a pidfd).
_FDS_SPACE: Final = socket.CMSG_SPACE(array.array("i").itemsize)


def _received_fds(ancillary: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    for fd in fds:  # received without close-on-exec: no process the runtime starts gets it
        os.set_inheritable(fd, False)
    return list(fds)


class ForkedProcess:
    """A task process forked by a template: what :func:`run_isolated` uses of a
    ``trio.Process`` (``pid``, ``returncode``, ``wait``, ``send_signal``), and
    :meth:`exited`.

    Args:
        pid: The task process's pid.
        pidfd: A pidfd of it, sent by the template with its pid (``None``: none came).
    """

    def __init__(self, pid: int, pidfd: int | None = None) -> None:
        self.pid = pid
        #: As ``subprocess`` gives it: the exit code, or minus the signal that killed it.
        self.returncode: int | None = None
        self._pidfd = pidfd
        self._exited = trio.Event()

    def __repr__(self) -> str:
        return f"<ForkedProcess {self.pid} returncode={self.returncode}>"

    def _exit(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
        self._exited.set()
        self._close()

    def _close(self) -> None:
        if self._pidfd is not None:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = None

    async def wait(self) -> int:
        """Wait until the process has exited (the template reaped it); its returncode."""
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def exited(self) -> None:
        """Wait until the process has exited, without waiting for the template to reap
        it and report how (``returncode`` may still be ``None``): a task process that
        reported its outcome is done once it has exited, whether or not its template
        has been scheduled since."""
        if self._pidfd is not None and self.returncode is None:
            # The kernel makes a pidfd readable when its process has exited; closed
            # here when the template's report came first.
            with contextlib.suppress(trio.ClosedResourceError):
                await trio.lowlevel.wait_readable(self._pidfd)
            return
        await self._exited.wait()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the process, unless it has been reaped."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


class _Pending:
    """A fork request waiting for the template's answer."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.process: ForkedProcess | None = None
        self.why = ""


class Template:
    """The runtime's handle on one template process."""

    def __init__(self, dag_file: str, env: dict[str, str], cwd: str) -> None:
        self.dag_file = dag_file
        self.env = env
        self.cwd = cwd
        self.files: list[list[Any]] = []
        self.forkable = False
        #: Why it cannot fork (it died, or its Dag file started threads).
        self.why = "it has not started"
        self.alive = False
        self._ready = trio.Event()
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._processes: dict[int, ForkedProcess] = {}
        self._control: trio.socket.SocketType | None = None
        self._process: trio.Process | None = None

    def __repr__(self) -> str:
        return f"<Template for {self.dag_file!r} alive={self.alive}>"

    @property
    def busy(self) -> bool:
        """Whether task processes it forked are still running."""
        return bool(self._processes or self._pending)

    def current(self, env: dict[str, str], cwd: str) -> bool:
        """Whether a task process it forks would be what a fresh start would give."""
        return (
            (self.alive or not self.forkable)
            and env == self.env
            and cwd == self.cwd
            and all(identity(entry[0]) == entry for entry in self.files)
        )

    async def start(self, nursery: trio.Nursery) -> None:
        """Start the template and wait until it has loaded the Dag file."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fd = theirs.fileno()
            self._process = await trio.lowlevel.open_process(
                [sys.executable, "-m", TEMPLATE_MODULE, "--fd", str(fd),
                 "--runtime-pid", str(os.getpid()), "--dag-file", self.dag_file],
                pass_fds=(fd,), env=self.env, cwd=self.cwd, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._control = trio.socket.from_stdlib_socket(ours)
        self.alive = True
        nursery.start_soon(self._read)
        try:
            await self._ready.wait()
        except BaseException:
            await self.aclose()
            raise

    async def _read(self) -> None:
        assert self._control is not None
        try:
            while True:
                data, ancillary, _, _ = await self._control.recvmsg(65536, _FDS_SPACE)
                fds = _received_fds(ancillary)
                if not data:
                    break
                self._on(json.loads(data), fds)
        except (OSError, trio.ClosedResourceError):
            pass
        except (ValueError, KeyError, TypeError):  # not what a template sends: end it
            assert self._process is not None
            self._process.kill()
        finally:
            self._died()
        # It exits after its stream ends (retired, or killed): reap it.
        assert self._process is not None
        await self._process.wait()

    def _on(self, message: dict[str, Any], fds: list[int]) -> None:
        op = message["op"]
        if op != "forked":
            for fd in fds:
                os.close(fd)
        if op == "files":
            self.files.extend(message["files"])
        elif op == "ready":
            self.forkable = message["forkable"]
            self.why = message["why"]
            self._ready.set()
        elif op == "forked":
            pending = self._pending.pop(message["id"])
            process = ForkedProcess(message["pid"], fds[0] if fds else None)
            for extra in fds[1:]:
                os.close(extra)
            pending.process = self._processes[message["pid"]] = process
            pending.done.set()
        elif op == "refused":
            pending = self._pending.pop(message["id"])
            pending.why = message["why"]
            pending.done.set()
        elif op == "exited":
            process = self._processes.pop(message["pid"])
            process._exit(os.waitstatus_to_exitcode(message["status"]))

    def _died(self) -> None:
        """The template is gone: so is every task process it forked (PR_SET_PDEATHSIG)."""
        if self.forkable:
            self.why = "its fork server exited"
        self.alive = False
        self._ready.set()
        for pending in self._pending.values():
            pending.why = "the fork server exited before it forked the task process"
            pending.done.set()
        self._pending.clear()
        for process in self._processes.values():
            process._exit(-signal.SIGKILL)
        self._processes.clear()

    async def fork(self, sock: socket.socket, output: tuple[int, int]) -> ForkedProcess:
        """Fork a task process connected to ``sock``, its stdout and stderr the file
        descriptors ``output`` (the caller then closes its copies).

        Raises:
            OSError: the template is gone or refused; the message says why.
        """
        assert self._control is not None
        request_id = next(self._ids)
        pending = self._pending[request_id] = _Pending()
        message = json.dumps({"op": "fork", "id": request_id}).encode()
        fds = array.array("i", [sock.fileno(), *output])
        try:
            await self._control.sendmsg([message], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
        except (OSError, trio.ClosedResourceError) as exc:
            self._pending.pop(request_id, None)
            self.alive = False  # not current any more: the next fork starts another
            msg = f"the fork server for {self.dag_file!r} is gone: {exc}"
            raise OSError(msg) from exc
        # Once asked, the process is forked whatever happens here: wait for its pid, so
        # that a cancelled attempt can still kill it.
        with trio.CancelScope(shield=True):
            await pending.done.wait()
        if pending.process is None:
            msg = f"the fork server for {self.dag_file!r} could not fork: {pending.why}"
            raise OSError(msg)
        return pending.process

    async def retire(self) -> None:
        """Ask the template to exit once its task processes have ended."""
        if self._control is not None and self.alive:
            with contextlib.suppress(OSError, trio.ClosedResourceError):
                await self._control.send(json.dumps({"op": "retire"}).encode())

    async def aclose(self) -> None:
        """Close the template: it kills its task processes and exits; reap it."""
        with trio.CancelScope(shield=True):
            if self._control is not None:
                self._control.close()
            if self._process is not None:
                with trio.move_on_after(CLOSE_GRACE_SECONDS):
                    await self._process.wait()
                if self._process.returncode is None:
                    self._process.kill()
                    await self._process.wait()


class ForkServers:
    """The templates of one runtime, one per Dag file, started on first use."""

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._templates: dict[str, Template] = {}
        self._retired: list[Template] = []
        self._locks: dict[str, trio.Lock] = {}
        self._closed = False

    async def fork(
        self, dag_file: str, sock: socket.socket, output: tuple[int, int]
    ) -> ForkedProcess | None:
        """Fork a task process for a task of ``dag_file``, connected to ``sock``, its
        stdout and stderr the file descriptors ``output``.

        Returns:
            The process, or ``None`` when this Dag file cannot be forked from (the
            caller starts a fresh interpreter instead).

        Raises:
            OSError: the template died or could not fork.
        """
        if self._closed:
            return None
        try:
            return await self._fork(dag_file, sock, output)
        except OSError:
            # A template that died since it was last used: start another, once.
            return await self._fork(dag_file, sock, output)

    async def _fork(
        self, dag_file: str, sock: socket.socket, output: tuple[int, int]
    ) -> ForkedProcess | None:
        env, cwd = child_env(), os.getcwd()
        lock = self._locks.setdefault(dag_file, trio.Lock())
        async with lock:
            template = self._templates.get(dag_file)
            if template is not None and not template.current(env, cwd):
                del self._templates[dag_file]
                await self._retire(template)
                template = None
            if template is None:
                template = Template(dag_file, env, cwd)
                self._templates[dag_file] = template
                try:
                    await template.start(self._nursery)
                except BaseException:
                    del self._templates[dag_file]
                    raise
                await self._limit(keep=dag_file)
            else:  # the most recently used last
                self._templates[dag_file] = self._templates.pop(dag_file)
        if not template.forkable:
            return None
        return await template.fork(sock, output)

    async def _limit(self, *, keep: str) -> None:
        """Retire the least recently used templates beyond :data:`MAX_TEMPLATES`."""
        for dag_file in list(self._templates)[: max(0, len(self._templates) - MAX_TEMPLATES)]:
            if dag_file != keep:
                await self._retire(self._templates.pop(dag_file))

    async def _retire(self, template: Template) -> None:
        if template.busy:
            await template.retire()
            self._retired = [t for t in self._retired if t.alive]
            self._retired.append(template)
        else:
            await template.aclose()

    async def aclose(self) -> None:
        """Close every template (each kills what it forked) and reap them."""
        self._closed = True
        for template in [*self._templates.values(), *self._retired]:
            await template.aclose()
        self._templates.clear()
        self._retired.clear()
