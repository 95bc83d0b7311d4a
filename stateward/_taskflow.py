"""TaskFlow references: what calling a task in a Dag returns, read when the Dag runs.

``load(extract())`` makes ``extract``'s :class:`TaskOutput` an argument of ``load``: the
dependency is wired when the Dag is built, and the runner puts ``extract``'s result in
its place just before ``load`` runs (``stateward._runtime.arguments``). A reference may
select part of the result (``extract()["rows"]``) and may be expanded over
(``process.expand(table=get_tables())``): the mapping then happens at run time, one
instance per element of the upstream's result.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._dag import Operator


class TaskOutput:
    """The result of a task, as an argument of another (Airflow's ``XComArg``).

    Attributes:
        operator: The task whose result this is.
        path: Keys or indices selecting part of the result, applied in order.
    """

    __slots__ = ("operator", "path")

    def __init__(self, operator: Operator, path: tuple[Any, ...] = ()) -> None:
        self.operator = operator
        self.path = path

    def __repr__(self) -> str:
        selected = "".join(f"[{step!r}]" for step in self.path)
        return f"<TaskOutput of {self.operator.dag.dag_id}.{self.operator.task_id}{selected}>"

    def __getitem__(self, key: Any) -> TaskOutput:
        return TaskOutput(self.operator, (*self.path, key))

    def __iter__(self) -> Iterator[Any]:
        # Without this, Python would iterate by calling __getitem__ with 0, 1, ... forever.
        msg = (
            f"{self!r} is known only when the Dag runs, so it cannot be iterated while "
            "the Dag is built; map over it with .expand(name=...) instead"
        )
        raise TypeError(msg)

    def select(self, value: Any) -> Any:
        """Apply :attr:`path` to the task's ``value``."""
        for step in self.path:
            value = value[step]
        return value

    # Dependencies go to the task itself, so `extract() >> load()` wires them.
    def __rshift__(self, other: Any) -> Any:
        return self.operator >> other

    def __lshift__(self, other: Any) -> Any:
        return self.operator << other

    def __rrshift__(self, other: Any) -> TaskOutput:
        self.operator.__rrshift__(other)
        return self

    def __rlshift__(self, other: Any) -> TaskOutput:
        self.operator.__rlshift__(other)
        return self


def references(value: Any) -> Iterator[TaskOutput]:
    """Every :class:`TaskOutput` in ``value``, walking lists, tuples, sets and dict values."""
    if isinstance(value, TaskOutput):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from references(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from references(item)
