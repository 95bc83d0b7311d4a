"""TaskFlow at run time: put upstream results where a task holds a :class:`TaskOutput`.

The runner calls :func:`bind_upstream` once per task of a run, when its upstream tasks
have succeeded and before its instances are counted: a task holding no reference is
returned as it is (nothing is copied); otherwise a shallow copy gets the results, so the
Dag itself is never changed and a second run binds afresh. ``expand()`` over a result
becomes the list it was, so the copy maps as one expanded over a literal list would.

Results come from the run as it goes, or from the run's record on resume. A record
keeps a result only when it is JSON (else its repr); a task that needs such a result
fails with :class:`~stateward.UpstreamResultError` saying so.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from .._dag import Operator, PythonTask
from .._errors import UpstreamResultError
from .._taskflow import TaskOutput, references

#: ``(task_id, map_index)`` to what that instance returned.
Outputs = Mapping[tuple[str, int], Any]


def has_references(task: Operator) -> bool:
    """Whether ``task`` takes an upstream result (an argument or an ``expand()``)."""
    if maps_at_run_time(task):
        return True
    return isinstance(task, PythonTask) and any(True for _ in references(task.op_kwargs))


def maps_at_run_time(task: Operator) -> bool:
    """Whether ``task`` is expanded over an upstream result (its length comes later)."""
    return task.maps_at_run_time


def bind_upstream(
    task: Operator, outputs: Outputs, unkept: Mapping[tuple[str, int], str]
) -> Operator:
    """``task``, or a copy of it holding the upstream results it takes.

    Args:
        task: A task whose upstream tasks all succeeded.
        outputs: The run's results so far, by instance.
        unkept: Instances whose result was not JSON and was recorded only as a repr
            (given here): their results cannot be passed on after a resume.

    Raises:
        UpstreamResultError: a result cannot be given (see the module's docstring).
    """
    if not has_references(task):
        return task
    bound = copy.copy(task)
    resolve = _Resolver(task, outputs, unkept)
    if isinstance(bound, PythonTask) and isinstance(task, PythonTask):
        bound.op_kwargs = {}
        bound.upstream_arguments = {}
        for name, value in task.op_kwargs.items():
            if any(True for _ in references(value)):
                bound.upstream_arguments[name] = resolve(value)
            else:
                bound.op_kwargs[name] = value
    if task.expand_kwargs is not None:
        expanded: dict[str, Any] = {}
        for name, values in task.expand_kwargs.items():
            if not isinstance(values, TaskOutput):
                expanded[name] = values
                continue
            value = resolve(values)
            if not isinstance(value, list | tuple):
                msg = (
                    f"task {task.task_id!r} maps over {name}={values!r}, which returned "
                    f"{type(value).__name__} {_short(value)}; expand() needs a list (return "
                    "a list from the upstream task, or select one with ['key'])"
                )
                raise UpstreamResultError(msg, task=task.task_id, upstream=values.operator.task_id)
            expanded[name] = list(value)
        bound.expand_kwargs = expanded
    return bound


class _Resolver:
    __slots__ = ("outputs", "task", "unkept")

    def __init__(
        self, task: Operator, outputs: Outputs, unkept: Mapping[tuple[str, int], str]
    ) -> None:
        self.task = task
        self.outputs = outputs
        self.unkept = unkept

    def __call__(self, value: Any) -> Any:
        if isinstance(value, TaskOutput):
            return self.output(value)
        if isinstance(value, dict):
            return {key: self(item) for key, item in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return type(value)(self(item) for item in value)
        return value

    def output(self, reference: TaskOutput) -> Any:
        upstream = reference.operator
        if upstream.is_mapped:
            keys = sorted(
                (key for key in self.outputs if key[0] == upstream.task_id and key[1] >= 0),
                key=lambda key: key[1],
            )
            value: Any = [self.kept(key, reference) for key in keys]
        else:
            value = self.kept((upstream.task_id, -1), reference)
        try:
            return reference.select(value)
        except (KeyError, IndexError, TypeError) as exc:
            msg = (
                f"task {self.task.task_id!r} takes {reference!r}, but the result "
                f"{_short(value)} has no such item ({type(exc).__name__}: {exc})"
            )
            raise UpstreamResultError(
                msg, task=self.task.task_id, upstream=upstream.task_id
            ) from None

    def kept(self, key: tuple[str, int], reference: TaskOutput) -> Any:
        if key in self.unkept:
            label = key[0] if key[1] < 0 else f"{key[0]}[{key[1]}]"
            msg = (
                f"task {self.task.task_id!r} takes the result of {label!r}, which "
                f"succeeded in an earlier call of this run; its result "
                f"{self.unkept[key]} was not JSON, so the run's record kept only its repr "
                "and cannot pass it on. Return JSON values (str, int, float, bool, list, "
                "dict) from tasks whose results feed others, or run the Dag under a new "
                "run id"
            )
            raise UpstreamResultError(msg, task=self.task.task_id, upstream=key[0])
        return self.outputs.get(key)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
