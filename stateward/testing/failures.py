"""Showing a task's failure as the test's: assert_success and the report section."""

from __future__ import annotations

import traceback
from types import TracebackType
from typing import Final, TypeVar

from .._errors import TaskFailedError
from .._records import instance_label
from .._runtime.runner import DagRunResult, TaskInstanceResult
from .._states import DagRunState, TaskInstanceState
from .._tracebacks import trim_to_user_code
from .harness import StateHarness

#: How many of a failed instance's last log lines its test's report shows.
LOG_TAIL_LINES: Final = 20

ResultT = TypeVar("ResultT", TaskInstanceResult, DagRunResult)


def assert_success(result: ResultT) -> ResultT:
    """Return ``result`` if it succeeded, else raise its task's failure.

    ``r = assert_success(await sw.run_task(load))``. The error is raised as
    :class:`~stateward.TaskFailedError` whose ``__cause__`` is the exception the task
    raised, its traceback trimmed to start in the task's own code, so pytest shows the
    task's frames first.

    Args:
        result: A task instance's or a Dag run's result.

    Returns:
        ``result``, unchanged.

    Raises:
        TaskFailedError: the instance (or an instance of the run) did not succeed.
    """
    __tracebackhide__ = True
    if result.state in (TaskInstanceState.SUCCESS, DagRunState.SUCCESS):
        return result
    failed: list[TaskInstanceResult]
    if isinstance(result, TaskInstanceResult):
        failed = [result]
        msg = f"{_describe(result)}; "
    else:
        failed = result.failed
        listed = "; ".join(_describe(ti) for ti in failed)
        msg = f"Dag run {result.run_id!r} of {result.dag_id!r} failed: {listed}; "
    first = next((ti for ti in failed if ti.error is not None), failed[0])
    if first.error is None:
        msg += "no task raised (check the upstream tasks)"
        raise TaskFailedError(msg, task=_label(first))
    msg += f"the traceback of {_label(first)!r} is shown above"
    raise TaskFailedError(msg, task=_label(first)) from trim_to_user_code(first.error)


def _label(ti: TaskInstanceResult) -> str:
    return instance_label(ti.dag_id, ti.task_id, ti.map_index)


def _describe(ti: TaskInstanceResult) -> str:
    if ti.error is None:
        return f"task {_label(ti)!r} is {ti.state}"
    tries = "1 try" if ti.try_number == 1 else f"{ti.try_number} tries"
    error = f"{type(ti.error).__name__}: {ti.error}"
    return f"task {_label(ti)!r} of run {ti.run_id!r} failed after {tries} ({error})"


def failure_report(harnesses: list[StateHarness], shown: set[int]) -> str:
    """Each failed instance's traceback (unless the test's own error shows it), and the
    end of its last try's log."""
    parts: list[str] = []
    for harness in harnesses:
        for ti in harness.results:
            if ti.state == TaskInstanceState.SUCCESS or ti.error is None:
                continue
            if id(ti.error) not in shown:
                lines = traceback.format_exception(trim_to_user_code(ti.error))
                parts.append(f"{_describe(ti)}:\n{''.join(lines)}")
            if ti.log:
                tail = ti.log.splitlines()[-LOG_TAIL_LINES:]
                parts.append(
                    f"the last {len(tail)} lines of the log of {_label(ti)!r} try "
                    f"{ti.try_number}:\n" + "\n".join(tail) + "\n"
                )
    return "\n".join(parts)


def exception_ids(error: BaseException | None) -> set[int]:
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return seen


def collapse(error: BaseException) -> BaseException:
    """A chain of one-exception groups as its leaf, with the groups' frames first.

    As trio's non-strict mode would raise it, less the frames of trio's nurseries and
    pytest-trio's runner; any other exception is returned as it is.
    """
    outer: list[TracebackType] = []
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        tb = error.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            if module.partition(".")[0] not in ("trio", "pytest_trio", "outcome"):
                outer.append(tb)
            tb = tb.tb_next
        error = error.exceptions[0]
    joined = error.__traceback__
    for node in reversed(outer):
        joined = TracebackType(joined, node.tb_frame, node.tb_lasti, node.tb_lineno)
    return error.with_traceback(joined)
