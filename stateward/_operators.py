"""Ready-made operators: :class:`ShellOperator` runs a templated shell command.

``command`` and ``env`` are template fields, rendered once per attempt with the
attempt's context, so a command can read state::

    ShellOperator(
        task_id="load",
        command="load --since << asset_state.watermark >>",
        outlets=[ORDERS],
    )
"""

from __future__ import annotations

import functools
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Final

import trio

from ._dag import Operator
from ._errors import DagDefinitionError, ShellCommandError
from ._records import instance_label
from ._runtime.capture import LineSplitter, not_captured, write_output

#: A succeeding command's stderr is logged here, a line per record (INFO).
logger = logging.getLogger("stateward.operators")

__all__ = ["ShellCommandError", "ShellOperator"]

#: How much of stderr a :class:`ShellCommandError` keeps: its last lines, at most
#: this many characters.
STDERR_TAIL_LINES: Final = 20
STDERR_TAIL_CHARS: Final = 2000
#: How much of stdout the result keeps: all of it up to this many bytes, else its
#: last bytes up to this many, from the start of a line where they hold one (a record
#: keeps no more).
RESULT_BYTES: Final = 64 * 1024
#: Seconds a cancelled command has between SIGTERM and SIGKILL.
CANCEL_GRACE_PERIOD: Final = 5.0
# Commands shown in error messages are cut to this many characters.
_SHOWN_COMMAND_CHARS: Final = 200
# The end of stderr kept for the error (its tail is cut from it): a few times the tail's
# characters, as UTF-8 bytes.
_STDERR_KEPT_BYTES: Final = 16 * 1024


class ShellOperator(Operator):
    """Run a shell command; its stdout becomes the task's result.

    ``command`` and ``env`` are template fields. A ``command`` ending in ``.sh`` or
    ``.bash`` names a template file, looked up in the Dag's ``template_searchpath``,
    whose rendered text is the script run; end the string with a space to run a
    script path as it is (``"./run.sh "``). Items of a list command are rendered the
    same way, so an item ending in ``.sh`` is a template file name too.

    A str command runs through ``bash -c`` (``sh -c`` where bash is missing); a list
    runs the program directly, without a shell. The command runs in its own process
    group with an empty stdin; cancelling the task sends SIGTERM to the whole group,
    then SIGKILL if the command is still running 5 seconds later. It sees the
    variables ``STATEWARD_DAG_ID``, ``STATEWARD_TASK_ID``, ``STATEWARD_RUN_ID``,
    ``STATEWARD_MAP_INDEX`` and ``STATEWARD_TRY_NUMBER``.

    Args:
        task_id: The task's id, unique in its Dag.
        command: A shell command line (str) or a program and its arguments (list).
        env: Environment variables for the command (values are templated).
        append_env: Merge ``env`` over the runtime's own environment (default);
            ``False`` gives the command only ``env`` (and the ``STATEWARD_*``
            variables). Without ``env`` the command inherits the environment.
        cwd: The folder the command runs in (default: the current one).
        **options: The task options of :class:`~stateward.Operator` (``dag``,
            ``retries``, ``retry_delay``, ``inlets``, ``outlets``,
            ``clear_state_on_success``, ``isolation``, ``execution_timeout``).

    Raises:
        DagDefinitionError: ``command`` is empty or not a str or list of str, or
            ``env`` is not a mapping of str to str.
    """

    template_fields: ClassVar[Sequence[str]] = ("command", "env")
    template_ext: ClassVar[Sequence[str]] = (".sh", ".bash")

    def __init__(
        self,
        *,
        task_id: str,
        command: str | Sequence[str],
        env: Mapping[str, str] | None = None,
        append_env: bool = True,
        cwd: str | os.PathLike[str] | None = None,
        **options: Any,
    ) -> None:
        self.command: str | list[str] = _check_command(task_id, command)
        self.env: dict[str, str] | None = _check_env(task_id, env)
        self.append_env = append_env
        self.cwd: str | None = None if cwd is None else os.fspath(cwd)
        super().__init__(task_id=task_id, **options)

    async def execute(self, context: Mapping[str, Any]) -> str:
        """Run the rendered command and return its stdout.

        The command's stdout and stderr are read as they come, each line kept in the
        attempt's log when it arrives (lines of the two pipes in the order they are
        read). Each line it writes to stderr is also logged at INFO on the
        ``stateward.operators`` logger (``stateward run`` shows them); on failure its
        end is in the :class:`ShellCommandError`. Only the ends of the pipes are held
        in memory.

        Args:
            context: The attempt's context.

        Returns:
            The command's stdout, decoded as UTF-8, without its final newline; past
            :data:`RESULT_BYTES`, its last bytes up to that many, from a line's start
            where they hold one.

        Raises:
            ShellCommandError: The command exited with a non-zero code, was killed by
                a signal, or could not be started.
        """
        task = _task_label(context)
        command = _rendered_command(task, self.command)
        argv = [_shell(), "-c", command] if isinstance(command, str) else command
        env = self._environment(task, command, context)
        stdout, stderr = _Output(RESULT_BYTES), _Output(_STDERR_KEPT_BYTES, task)
        run = functools.partial(
            trio.run_process,
            argv,
            stdin=b"",
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
            env=env,
            cwd=self.cwd,
            deliver_cancel=_terminate_group,
            start_new_session=True,
        )
        try:
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(run)
                nursery.start_soon(stdout.read, process.stdout)
                nursery.start_soon(stderr.read, process.stderr)
        except BaseExceptionGroup as group:
            # A command that cannot start: run_process's OSError, alone in the group.
            sole = group.exceptions[0] if len(group.exceptions) == 1 else None
            if isinstance(sole, OSError):
                raise _start_failure(task, command, self.cwd, sole) from sole
            raise
        code = process.returncode  # set: run_process has waited for the command
        if code:
            raise _exit_failure(task, command, code, _tail(stderr.kept()))
        return _result(stdout)

    def _environment(
        self, task: str, command: str | list[str], context: Mapping[str, Any]
    ) -> dict[str, str]:
        given = _rendered_env(task, command, self.env)
        base = dict(os.environ) if self.append_env or given is None else {}
        identity = {
            "STATEWARD_DAG_ID": str(context["dag_id"]),
            "STATEWARD_TASK_ID": str(context["task_id"]),
            "STATEWARD_RUN_ID": str(context["run_id"]),
            "STATEWARD_MAP_INDEX": str(context["map_index"]),
            "STATEWARD_TRY_NUMBER": str(context["try_number"]),
        }
        return {**base, **identity, **(given or {})}


# -- checking arguments ----------------------------------------------------------------------


def _check_command(task_id: str, command: object) -> str | list[str]:
    if isinstance(command, str):
        if not command.strip():
            msg = f"task {task_id!r}: command is empty; give a shell command line, e.g. 'ls -l'"
            raise DagDefinitionError(msg)
        return command
    if isinstance(command, list | tuple):
        if not command:
            msg = f"task {task_id!r}: command is an empty list; give a program, e.g. ['ls', '-l']"
            raise DagDefinitionError(msg)
        if not all(isinstance(item, str | os.PathLike) for item in command):
            msg = f"task {task_id!r}: every item of a command list must be a str, got {command!r}"
            raise DagDefinitionError(msg)
        return [os.fspath(item) for item in command]
    msg = (
        f"task {task_id!r}: command must be a str (run by the shell) or a list of str "
        f"(a program and its arguments), got {type(command).__name__} {command!r}"
    )
    raise DagDefinitionError(msg)


def _check_env(task_id: str, env: object) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        msg = f"task {task_id!r}: env must be a mapping of str to str, got {env!r}"
        raise DagDefinitionError(msg)
    bad = {key: value for key, value in env.items() if not isinstance(key, str) or not key}
    bad |= {key: value for key, value in env.items() if not isinstance(value, str)}
    if bad:
        msg = f"task {task_id!r}: env must map non-empty str names to str values, got {bad!r}"
        raise DagDefinitionError(msg)
    return dict(env)


def _as_argument(value: object) -> str | None:
    # Native rendering may turn "<< task_state.count >>" into an int.
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _rendered_command(task: str, command: object) -> str | list[str]:
    text = _as_argument(command)
    if text is not None:
        if not text.strip():
            msg = (
                f"task {task!r}: the command rendered to an empty string, so there is "
                f"nothing to run; check the template of the 'command' field"
            )
            raise ShellCommandError(msg, task=task, command=text, returncode=None)
        return text
    if isinstance(command, list | tuple) and command:
        argv = [_as_argument(item) for item in command]
        if all(item is not None for item in argv):
            return [item for item in argv if item is not None]
    msg = (
        f"task {task!r}: the command must render to a str or a non-empty list of str, "
        f"got {type(command).__name__} {command!r}"
    )
    raise ShellCommandError(msg, task=task, command=repr(command), returncode=None)


def _rendered_env(
    task: str, command: str | list[str], env: Mapping[str, object] | None
) -> dict[str, str] | None:
    if env is None:
        return None
    rendered: dict[str, str] = {}
    for key, value in env.items():
        text = _as_argument(value)
        if text is None:
            msg = (
                f"task {task!r}: env[{key!r}] rendered to {type(value).__name__} {value!r}, "
                f"but environment variables are strings; make the template give a str"
            )
            raise ShellCommandError(msg, task=task, command=command, returncode=None)
        rendered[key] = text
    return rendered


# -- running ----------------------------------------------------------------------------------


def _task_label(context: Mapping[str, Any]) -> str:
    return instance_label(context["dag_id"], context["task_id"], context["map_index"])


def _shell() -> str:
    return shutil.which("bash") or "sh"


class _Output:
    """One of a command's pipes, read as it comes.

    Each whole line goes to the attempt's log as it arrives (so the two pipes' lines
    interleave in the order they are read, and ``stateward logs --follow`` shows them
    while the command runs); a stderr line is also logged at INFO for ``task``. Only the
    pipe's last ``keep`` bytes stay in memory.
    """

    def __init__(self, keep: int, task: str | None = None) -> None:
        self._keep = keep
        #: Set for stderr: its lines are logged on behalf of this task.
        self._task = task
        self._end = bytearray()
        #: Whether bytes before :attr:`_end` were dropped.
        self.cut = False

    async def read(self, pipe: trio.abc.ReceiveStream | None) -> None:
        if pipe is None:
            return
        lines = LineSplitter()
        async with pipe:
            while chunk := await pipe.receive_some():
                self._remember(chunk)
                self._write(lines.feed(chunk))
        self._write(lines.end())

    def kept(self) -> str:
        """The pipe's output, or its last ``keep`` bytes where it wrote more."""
        return self._end[-self._keep :].decode("utf-8", errors="replace")

    def _remember(self, chunk: bytes | bytearray) -> None:
        self._end += chunk
        # Trimmed at twice its bound: a stream of small reads costs O(1) each.
        excess = len(self._end) - self._keep
        if excess > self._keep:
            del self._end[:excess]
        if excess > 0:
            self.cut = True

    def _write(self, text: str) -> None:
        if not text:
            return
        write_output(text)
        if self._task is not None:
            # Kept above already: the records only show the lines as they come.
            with not_captured():
                for line in text.splitlines():
                    logger.info("%s stderr: %s", self._task, line)


def _result(stdout: _Output) -> str:
    text = stdout.kept()
    if stdout.cut:
        # Cut from the start of a line (a record keeps no more than this).
        _, newline, rest = text.partition("\n")
        text = rest if newline and rest else text
    return text.removesuffix("\n")


async def _terminate_group(process: trio.Process) -> None:
    # The command runs in a process group of its own, so a shell's children are
    # stopped with it instead of being left running.
    try:
        os.killpg(process.pid, signal.SIGTERM)
        await trio.sleep(CANCEL_GRACE_PERIOD)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        return


def _shown(command: str | list[str]) -> str:
    text = command if isinstance(command, str) else shlex.join(command)
    if len(text) > _SHOWN_COMMAND_CHARS:
        text = text[: _SHOWN_COMMAND_CHARS - 3] + "..."
    return repr(text)


def _tail(text: str) -> str:
    text = text.rstrip()
    tail = "\n".join(text.splitlines()[-STDERR_TAIL_LINES:])
    if len(tail) > STDERR_TAIL_CHARS:
        tail = "..." + tail[-(STDERR_TAIL_CHARS - 3) :]
    return tail


def _exit_failure(task: str, command: str | list[str], code: int, tail: str) -> ShellCommandError:
    if code < 0:
        try:
            how = f"was killed by {signal.Signals(-code).name} (exit code {code})"
        except ValueError:
            how = f"was killed by signal {-code} (exit code {code})"
    else:
        how = f"exited with code {code}"
    if tail:
        shown = "\n".join(f"  {line}" for line in tail.splitlines())
        end = f"; the end of its stderr:\n{shown}"
    else:
        end = "; it wrote nothing to stderr"
    msg = f"task {task!r}: the command {_shown(command)} {how}{end}"
    return ShellCommandError(msg, task=task, command=command, returncode=code, stderr_tail=tail)


def _start_failure(
    task: str, command: str | list[str], cwd: str | None, exc: OSError
) -> ShellCommandError:
    if cwd is not None and not os.path.isdir(cwd):
        why = f"its working folder cwd={cwd!r} does not exist; create it or fix cwd"
    elif isinstance(command, list) and isinstance(exc, FileNotFoundError):
        why = (
            f"the program {command[0]!r} was not found; give its full path or make "
            f"sure it is on PATH"
        )
    elif isinstance(exc, PermissionError):
        why = f"permission denied ({exc.strerror}); check that the program is executable"
    else:
        why = f"{type(exc).__name__}: {exc}"
    msg = f"task {task!r}: the command {_shown(command)} could not be started: {why}"
    return ShellCommandError(msg, task=task, command=command, returncode=None)
