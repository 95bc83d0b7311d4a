"""The exceptions stateward raises.

Every error derives from :class:`StatewardError`. Errors that report a misuse also
derive from the matching builtin, so ``except ValueError`` works as well as
``except StatewardError``. A refusal is not an I/O failure, so
:class:`StateScopeError` and :class:`TemplateWriteError` derive from no ``OSError``
(not even ``PermissionError``): ``except OSError`` around I/O never swallows one::

    StatewardError
    ├── StateValueError (ValueError)        a value or key that cannot be stored
    ├── StateTypeError (TypeError)          a value or key of a type that cannot be stored
    ├── StateScopeError                     a request for state the caller does not own
    ├── UndeclaredAssetError (KeyError)     an asset the task did not declare
    ├── AssetConflictError (ValueError)     one name or URI declared for two assets
    ├── AsyncContextError (RuntimeError)    a sync accessor called from async code
    ├── ProtocolError (ValueError)          a message that cannot be decoded
    ├── StoreError                          the store failed (I/O, locked, full)
    │   └── NotAStatewardDatabaseError      the file is not a stateward database
    ├── RuntimeClosedError (RuntimeError)   the runtime is not open
    ├── SupervisorDiedError (RuntimeError)  the supervisor stopped while tasks ran
    ├── StaleAttemptError (RuntimeError)    a request of an attempt that no longer holds
    │   │                                   its instance (superseded, lease lost, ended)
    │   └── AttemptEndedError               state used by an attempt that has ended
    ├── RunNotFoundError (LookupError)      a run the store has no record of
    ├── DagDefinitionError (ValueError)     a malformed Dag or task
    ├── TaskLoadError (ImportError)         a Dag file that cannot be loaded
    ├── TaskProcessError                    an isolated task's process raised or died
    ├── TaskTimeoutError (TimeoutError)     an attempt ran past its execution_timeout
    ├── TaskFailedError                     a task raised; ``.__cause__`` is its error
    ├── ExternalJobFailedError              a ResumableJobOperator's job ended failed
    ├── ShellCommandError                   a ShellOperator's command failed
    ├── UpstreamResultError (ValueError)    an upstream result a task cannot be given
    └── TemplateError                       a template field cannot be rendered
        ├── TemplateKeyError (KeyError)     a template read a state key that is absent
        └── TemplateWriteError              a template tried to write state

Errors carry structured attributes (``.key``, ``.task``, ``.asset``) where they apply.
"""

from __future__ import annotations

from typing import Any


class StatewardError(Exception):
    """Base class of every error stateward raises."""


class StateValueError(StatewardError, ValueError):
    """A state key or value that cannot be stored (``None``, NaN, too large, bad key)."""

    def __init__(self, message: str, *, key: object = None) -> None:
        super().__init__(message)
        self.key = key


class StateTypeError(StatewardError, TypeError):
    """A state key or value whose type cannot be stored as JSON."""

    def __init__(self, message: str, *, key: object = None, path: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        #: Where in the value the bad type sits, e.g. ``value['when']``.
        self.path = path


class StateScopeError(StatewardError):
    """A request for state outside the caller's task instance or declared assets."""


class UndeclaredAssetError(StatewardError, KeyError):
    """An asset that the task did not declare in its inlets or outlets."""

    def __init__(self, message: str, *, asset: object = None) -> None:
        super().__init__(message)
        self.asset = asset

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message; show it as written.
        return str(self.args[0])


class AssetConflictError(StatewardError, ValueError):
    """Two declarations give one asset name or URI to different assets."""


class AsyncContextError(StatewardError, RuntimeError):
    """A blocking accessor method was called from async code."""


class ProtocolError(StatewardError, ValueError):
    """A message that cannot be decoded, or a request a handler does not know."""


class StoreError(StatewardError):
    """The store failed to read or write (I/O error, lock timeout, disk full)."""

    def __init__(self, message: str, *, affects_all: bool = False) -> None:
        super().__init__(message)
        #: The failure is the store's, not one request's (a lock held past the
        #: timeout, an unresponsive server): every request would meet it alike.
        self.affects_all = affects_all


class NotAStatewardDatabaseError(StoreError):
    """The file exists but is not a stateward database (or is of a newer schema)."""


class RuntimeClosedError(StatewardError, RuntimeError):
    """The runtime (or its supervisor) is not open."""


class SupervisorDiedError(StatewardError, RuntimeError):
    """The supervisor stopped while task instances were still talking to it."""


class StaleAttemptError(StatewardError, RuntimeError):
    """A request of an attempt that no longer holds its task instance's lease: it ended,
    its lease expired and another attempt took the instance over, or its runtime lost
    the lease. Nothing of the request was written.

    Attributes:
        task: The task instance, e.g. ``"etl.load"`` or ``"etl.load[3]"`` (``None`` when
            the refusal came from another process and did not say).
        try_number: The try that was refused (``None`` likewise).
    """

    def __init__(
        self, message: str, *, task: str | None = None, try_number: int | None = None
    ) -> None:
        super().__init__(message)
        self.task = task
        self.try_number = try_number


class AttemptEndedError(StaleAttemptError):
    """An attempt's accessor was used after the attempt ended (a thread it left behind).

    Attributes:
        task: The task instance, e.g. ``"etl.load"`` or ``"etl.load[3]"``.
        try_number: The try that ended.
    """

    def __init__(self, message: str, *, task: str, try_number: int) -> None:
        super().__init__(message, task=task, try_number=try_number)


class RecordedTaskError(StatewardError):
    """The failure of a task instance known from its record only: another runtime
    sharing the run ran it, so there is no exception object here. Its ``str`` is
    ``"TYPE: MESSAGE"`` as recorded.

    Attributes:
        error_type: The recorded exception's type name, e.g. ``"ValueError"``.
        error_message: Its message.
        error_traceback: Its traceback text as recorded (``None`` if none was).
    """

    def __init__(
        self, error_type: str, error_message: str, error_traceback: str | None = None
    ) -> None:
        super().__init__(f"{error_type}: {error_message}")
        self.error_type = error_type
        self.error_message = error_message
        self.error_traceback = error_traceback


class RunNotFoundError(StatewardError, LookupError):
    """A run the store has no record of (``rt.clear`` of a mistyped run id).

    Attributes:
        dag_id: The Dag asked for.
        run_id: The run asked for.
    """

    def __init__(self, message: str, *, dag_id: str, run_id: str) -> None:
        super().__init__(message)
        self.dag_id = dag_id
        self.run_id = run_id


class DagDefinitionError(StatewardError, ValueError):
    """A Dag or task that is malformed (duplicate id, cycle, bad option)."""


class TaskLoadError(StatewardError, ImportError):
    """A Dag file or task that cannot be loaded."""


class TaskProcessError(StatewardError):
    """The process of an isolated task (``isolation="process"``) failed.

    Either the task's code raised in the child process (``remote_type`` and
    ``remote_traceback`` say what; the traceback text is also this error's
    ``__cause__``, so it is printed with it), or the process died before reporting a
    result (``returncode`` says how), or it broke the frame protocol.

    Attributes:
        task: The task instance, as ``dag_id.task_id`` (with ``[map_index]`` when mapped).
        try_number: The attempt whose process failed.
        returncode: The process's exit code; negative when a signal ended it (``-9``
            for SIGKILL); ``None`` when it reported an exception instead of dying.
        remote_type: The type of the exception raised in the child, e.g.
            ``"ValueError"`` or ``"stateward.StateScopeError"``; ``None`` when
            it died without one.
        remote_traceback: The child's formatted traceback; ``""`` when there is none.
    """

    def __init__(
        self,
        message: str,
        *,
        task: str,
        try_number: int,
        returncode: int | None = None,
        remote_type: str | None = None,
        remote_traceback: str = "",
    ) -> None:
        super().__init__(message)
        self.task = task
        self.try_number = try_number
        self.returncode = returncode
        self.remote_type = remote_type
        self.remote_traceback = remote_traceback


class TaskTimeoutError(StatewardError, TimeoutError):
    """An attempt ran longer than its task's ``execution_timeout``; the attempt failed.

    Attributes:
        task: The task instance, as ``dag_id.task_id`` (with ``[map_index]`` when mapped).
        timeout: The limit, in seconds.
    """

    def __init__(self, message: str, *, task: str, timeout: float) -> None:
        super().__init__(message)
        self.task = task
        self.timeout = timeout


class TaskFailedError(StatewardError):
    """Raised by helpers that expect a task to succeed; ``__cause__`` is its error."""

    def __init__(self, message: str, *, task: Any = None) -> None:
        super().__init__(message)
        self.task = task


class ExternalJobFailedError(StatewardError):
    """The external job of a ResumableJobOperator failed; a retry submits a new one."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class ShellCommandError(StatewardError):
    """A :class:`ShellOperator` command failed, or could not be started.

    Attributes:
        task: The task, as ``dag_id.task_id`` (with ``[map_index]`` when mapped).
        command: The rendered command (a str run by the shell, or a list run directly).
        returncode: The exit code; negative when a signal ended the command (``-9``
            for SIGKILL), ``None`` when it could not be started.
        stderr_tail: The end of the command's stderr (its last 20 lines, at most
            2000 characters); ``""`` when it wrote none.
    """

    def __init__(
        self,
        message: str,
        *,
        task: str,
        command: str | list[str],
        returncode: int | None,
        stderr_tail: str = "",
    ) -> None:
        super().__init__(message)
        self.task = task
        self.command = command
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class UpstreamResultError(StatewardError, ValueError):
    """An upstream task's result cannot be passed to a task that takes it (TaskFlow).

    The result was not JSON (a resumed run has only its repr), an ``expand()`` over it
    needs a list, or a ``["key"]`` selection does not apply to it.
    """

    def __init__(
        self, message: str, *, task: str | None = None, upstream: str | None = None
    ) -> None:
        super().__init__(message)
        #: The task that takes the result.
        self.task = task
        #: The upstream task whose result it is.
        self.upstream = upstream


class TemplateError(StatewardError):
    """A template field that cannot be rendered."""

    def __init__(self, message: str, *, task: Any = None, field: str | None = None) -> None:
        super().__init__(message)
        self.task = task
        self.field = field


class TemplateKeyError(TemplateError, KeyError):
    """A template read a state key that does not exist."""

    def __init__(
        self, message: str, *, key: str, task: Any = None, field: str | None = None
    ) -> None:
        super().__init__(message, task=task, field=field)
        self.key = key

    def __str__(self) -> str:
        return str(self.args[0])


class TemplateWriteError(TemplateError):
    """A template tried to call a method that writes state."""
