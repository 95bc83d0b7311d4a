"""Dags and tasks: ``Dag``, the ``@dag.task`` decorator, ``Operator``, ``>>``, ``expand``."""

from __future__ import annotations

import contextvars
import inspect
import logging
import math
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, ClassVar, Final, NoReturn, Self, TypeVar, overload

from ._assets import Asset, AssetAlias, AssetLike, AssetNameRef, AssetUriRef
from ._context_keys import AIRFLOW_ONLY_KEYS
from ._errors import DagDefinitionError
from ._items import MapKey
from ._taskflow import TaskOutput, references

_logger = logging.getLogger("stateward.dag")
_TASK_ID: Final = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")
_current_dag: contextvars.ContextVar[Dag | None] = contextvars.ContextVar(
    "stateward_current_dag", default=None
)
# The Dags made while a Dag file loads (see collecting_dags).
_made_dags: contextvars.ContextVar[list[Dag] | None] = contextvars.ContextVar(
    "stateward_made_dags", default=None
)
#: Template syntaxes a Dag may choose (see docs/templates.md).
TEMPLATE_SYNTAXES: Final = ("stateward", "airflow")
#: Task options a Dag's ``default_args`` may set.
TASK_OPTIONS: Final = frozenset(
    {"retries", "retry_delay", "clear_state_on_success", "isolation", "execution_timeout"}
)
#: Where a task's attempts run: ``"none"`` in the runtime's process (trio's thread or a
#: worker thread), ``"process"`` in a child process of their own.
ISOLATION_MODES: Final = ("none", "process")

F = TypeVar("F", bound=Callable[..., Any])


def current_dag() -> Dag | None:
    """The Dag of the innermost ``with Dag(...):`` block, or ``None`` outside one."""
    return _current_dag.get()


@contextmanager
def collecting_dags() -> Iterator[list[Dag]]:
    """Collect every Dag made inside the block, in the order they are made.

    The loader uses it so that a Dag file's Dags are found whatever name they are
    bound to (or none: ``with Dag(...):`` without ``as``, a ``@dag`` function's Dag).
    """
    made: list[Dag] = []
    token = _made_dags.set(made)
    try:
        yield made
    finally:
        _made_dags.reset(token)


def as_operator(item: object) -> object:
    """``item``'s task if it is a :class:`TaskOutput`, else ``item``."""
    return item.operator if isinstance(item, TaskOutput) else item


def _items(other: object) -> list[object]:
    return [as_operator(item) for item in (other if isinstance(other, list | tuple) else [other])]


def _as_task(item: object, other: Operator) -> Operator:
    if not isinstance(item, Operator):
        msg = f"{item!r} >> {other!r}: only tasks can be dependencies"
        raise DagDefinitionError(msg)
    return item


def _check_id(kind: str, value: object) -> str:
    if not isinstance(value, str) or not _TASK_ID.match(value):
        msg = f"{kind} must be 1 to 250 letters, digits, '_', '.' or '-', got {value!r}"
        raise DagDefinitionError(msg)
    return value


def _as_delay(task_id: str, value: object) -> float:
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        msg = f"task {task_id!r}: retry_delay must be seconds or a timedelta, got {value!r}"
        raise DagDefinitionError(msg)
    if seconds < 0:
        msg = f"task {task_id!r}: retry_delay must not be negative, got {value!r}"
        raise DagDefinitionError(msg)
    return seconds


def _as_timeout(task_id: str, value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        msg = (
            f"task {task_id!r}: execution_timeout must be seconds, a timedelta or None, "
            f"got {value!r}"
        )
        raise DagDefinitionError(msg)
    if not 0 < seconds < math.inf:
        msg = f"task {task_id!r}: execution_timeout must be positive and finite, got {value!r}"
        raise DagDefinitionError(msg)
    return seconds


def _as_isolation(task_id: str, value: object) -> str | None:
    if value is not None and value not in ISOLATION_MODES:
        msg = (
            f"task {task_id!r}: isolation must be one of {list(ISOLATION_MODES)} or None "
            f"(the runtime's default), got {value!r}"
        )
        raise DagDefinitionError(msg)
    return value


def _as_assets(task_id: str, kind: str, values: Iterable[object]) -> tuple[AssetLike, ...]:
    if isinstance(values, str | Asset | AssetAlias):
        msg = f"task {task_id!r}: {kind} must be a list, e.g. {kind}=[Asset('orders')]"
        raise DagDefinitionError(msg)
    result: list[AssetLike] = []
    for value in values:
        if not isinstance(value, Asset | AssetNameRef | AssetUriRef | AssetAlias):
            msg = (
                f"task {task_id!r}: {kind} holds {value!r}; use Asset(...), "
                "Asset.ref(name=...|uri=...) or AssetAlias(...)"
            )
            raise DagDefinitionError(msg)
        if value not in result:
            result.append(value)
    return tuple(result)


class Dag:
    """A set of tasks and their dependencies, run together as one Dag run.

    Args:
        dag_id: The Dag's id (letters, digits, ``_ . -``).
        params: Values the tasks see as ``context["params"]`` (a run may override them).
        default_args: Default task options (``retries``, ``retry_delay``,
            ``clear_state_on_success``, ``isolation``, ``execution_timeout``).
        max_active_tasks: How many task instances of a run execute at once.
        render_template_as_native_obj: Render template fields to Python objects
            instead of strings.
        template_searchpath: Folders where ``template_ext`` files are looked up.
        description: Shown by ``stateward dags``.
        template_syntax: ``"stateward"`` (default: ``<< value >>``, ``<% statement %>``)
            or ``"airflow"`` (``{{ value }}``, ``{% statement %}``, for templates
            written for Airflow; ``{{ }}`` meant for a shell or for Jinja run by the
            command itself must then be escaped).

    Attributes:
        fileloc: The file that defines the Dag (the module that called ``Dag(...)``),
            ``None`` when it was built outside a file (a REPL, ``exec``). Isolated
            tasks are loaded from it in their child process; set it when a factory in
            another module builds the Dag.
    """

    # The only methods templates may call: the others change the Dag.
    _template_methods: ClassVar[frozenset[str]] = frozenset({"get_task", "topological_order"})

    def __init__(
        self,
        dag_id: str,
        *,
        params: Mapping[str, Any] | None = None,
        default_args: Mapping[str, Any] | None = None,
        max_active_tasks: int = 16,
        render_template_as_native_obj: bool = False,
        template_searchpath: str | Sequence[str] | None = None,
        description: str | None = None,
        template_syntax: str = "stateward",
    ) -> None:
        self.dag_id = _check_id("dag_id", dag_id)
        if template_syntax not in TEMPLATE_SYNTAXES:
            msg = (
                f"Dag {dag_id!r}: template_syntax must be one of {list(TEMPLATE_SYNTAXES)}, "
                f"got {template_syntax!r}"
            )
            raise DagDefinitionError(msg)
        self.template_syntax = template_syntax
        self.params: dict[str, Any] = dict(params or {})
        unknown = set(default_args or {}) - TASK_OPTIONS
        if unknown:
            msg = (
                f"Dag {dag_id!r}: default_args has unknown options {sorted(unknown)}; "
                f"known: {sorted(TASK_OPTIONS)}"
            )
            raise DagDefinitionError(msg)
        self.default_args: dict[str, Any] = dict(default_args or {})
        if not isinstance(max_active_tasks, int) or max_active_tasks < 1:
            msg = f"Dag {dag_id!r}: max_active_tasks must be an int >= 1, got {max_active_tasks!r}"
            raise DagDefinitionError(msg)
        self.max_active_tasks = max_active_tasks
        self.render_template_as_native_obj = render_template_as_native_obj
        if isinstance(template_searchpath, str):
            template_searchpath = [template_searchpath]
        self.template_searchpath: tuple[str, ...] = tuple(template_searchpath or ())
        self.description = description
        self.tasks: dict[str, Operator] = {}
        self._token: contextvars.Token[Dag | None] | None = None
        # The caller's module file, as Airflow's fileloc: cheap (no inspect.stack()).
        defined_in = sys._getframe(1).f_globals.get("__file__")
        self.fileloc: str | None = (
            os.path.abspath(defined_in) if isinstance(defined_in, str) else None
        )
        made = _made_dags.get()
        if made is not None:
            made.append(self)

    def __repr__(self) -> str:
        return f"<Dag {self.dag_id!r}: {len(self.tasks)} tasks>"

    def __enter__(self) -> Self:
        self._token = _current_dag.set(self)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            _current_dag.reset(self._token)
            self._token = None

    def add_task(self, task: Operator) -> None:
        """Add ``task`` (operators call this from their constructor).

        Raises:
            DagDefinitionError: another task has the same id.
        """
        if task.task_id in self.tasks and self.tasks[task.task_id] is not task:
            msg = f"Dag {self.dag_id!r} already has a task {task.task_id!r}; task ids are unique"
            raise DagDefinitionError(msg)
        self.tasks[task.task_id] = task

    def get_task(self, task_id: str) -> Operator:
        """Return the task with ``task_id``.

        Raises:
            KeyError: no such task; the message lists the Dag's tasks.
        """
        try:
            return self.tasks[task_id]
        except KeyError:
            msg = f"Dag {self.dag_id!r} has no task {task_id!r}; it has {sorted(self.tasks)}"
            raise KeyError(msg) from None

    def topological_order(self) -> list[Operator]:
        """The tasks, each after all its upstream tasks.

        Raises:
            DagDefinitionError: the dependencies form a cycle (named in the message).
        """
        order: list[Operator] = []
        state: dict[str, int] = {}  # 1: visiting, 2: done

        def visit(task: Operator, path: list[str]) -> None:
            if state.get(task.task_id) == 2:
                return
            if state.get(task.task_id) == 1:
                cycle = " >> ".join([*path[path.index(task.task_id) :], task.task_id])
                msg = f"Dag {self.dag_id!r} has a cycle: {cycle}"
                raise DagDefinitionError(msg)
            state[task.task_id] = 1
            for upstream in sorted(task.upstream_task_ids):
                visit(self.get_task(upstream), [*path, task.task_id])
            state[task.task_id] = 2
            order.append(task)

        for task in self.tasks.values():
            visit(task, [])
        return order

    @overload
    def task(self, fn: F, /) -> PythonTask: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        task_id: str | None = None,
        retries: int | None = None,
        retry_delay: float | timedelta | None = None,
        inlets: Iterable[AssetLike] = (),
        outlets: Iterable[AssetLike] = (),
        op_kwargs: Mapping[str, Any] | None = None,
        clear_state_on_success: bool | None = None,
        isolation: str | None = None,
        execution_timeout: float | timedelta | None = None,
    ) -> Callable[[Callable[..., Any]], PythonTask]: ...
    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        task_id: str | None = None,
        retries: int | None = None,
        retry_delay: float | timedelta | None = None,
        inlets: Iterable[AssetLike] = (),
        outlets: Iterable[AssetLike] = (),
        op_kwargs: Mapping[str, Any] | None = None,
        clear_state_on_success: bool | None = None,
        isolation: str | None = None,
        execution_timeout: float | timedelta | None = None,
    ) -> PythonTask | Callable[[Callable[..., Any]], PythonTask]:
        """Make a function a task of this Dag: ``@dag.task`` or ``@dag.task(retries=2)``.

        Parameters named like context keys (``task_state``, ``asset_state``, ``ti``,
        ``params``, ``run_id``, ``outlet_events``, ...) are injected; ``**context``
        receives the whole context; ``op_kwargs`` are templated and passed by name.
        ``async def`` functions run in trio's thread, plain ones in a worker thread.
        """

        def decorate(function: Callable[..., Any]) -> PythonTask:
            return PythonTask(
                function,
                task_id=task_id or function.__name__,
                dag=self,
                retries=retries,
                retry_delay=retry_delay,
                inlets=inlets,
                outlets=outlets,
                op_kwargs=op_kwargs,
                clear_state_on_success=clear_state_on_success,
                isolation=isolation,
                execution_timeout=execution_timeout,
            )

        return decorate(fn) if fn is not None else decorate


class Operator:
    """The base of every task: subclass it and implement ``execute(self, context)``.

    ``execute`` may be a plain method (run in a worker thread; use the sync accessors)
    or ``async def`` (run in trio's thread; await the ``a``-prefixed accessors).
    Attributes named in ``template_fields`` are rendered with the context just before
    each attempt; a value ending in one of ``template_ext`` names a template file.

    Args:
        task_id: The task's id, unique in its Dag.
        dag: The Dag (or create the operator inside ``with Dag(...):``).
        retries: How many times a failed attempt is tried again.
        retry_delay: Seconds (or a timedelta) to wait before a retry.
        inlets: Assets (and aliases) the task reads.
        outlets: Assets (and aliases) the task writes.
        clear_state_on_success: Delete the task instance's task state when it
            succeeds (default: the runtime's setting).
        isolation: ``"process"`` runs each attempt in a child process of its own
            (see docs/isolation.md), ``"none"`` in the runtime's process; ``None``
            (default): the runtime's ``isolation``.
        execution_timeout: Seconds (or a timedelta) an attempt's ``execute`` may run
            before it is stopped and fails with :class:`~stateward.TaskTimeoutError`.
    """

    template_fields: ClassVar[Sequence[str]] = ()
    template_ext: ClassVar[Sequence[str]] = ()
    #: The event loop an ``async def execute`` runs on: ``"trio"`` (trio's thread) or
    #: ``"asyncio"`` (a loop of its own in a worker thread, for asyncio code such as
    #: ``asyncio.gather``; Airflow's operators and ``@task`` default to it).
    async_library: ClassVar[str] = "trio"
    # The only methods templates may call: the others change the Dag or run task code.
    _template_methods: ClassVar[frozenset[str]] = frozenset({"map_count", "map_arguments"})

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse a plain ``def execute`` over an inherited ``async def execute``.

        ``super().execute(context)`` would then return a coroutine that nothing awaits.

        Raises:
            DagDefinitionError: the class overrides an async ``execute`` with a sync one.
        """
        super().__init_subclass__(**kwargs)
        execute = cls.__dict__.get("execute")
        if execute is None or inspect.iscoroutinefunction(execute):
            return
        for base in cls.__mro__[1:]:
            inherited = base.__dict__.get("execute")
            if inherited is None:
                continue
            if inspect.iscoroutinefunction(inherited):
                msg = (
                    f"{cls.__name__}.execute is a plain def, but {base.__name__}.execute "
                    "is async, so super().execute(context) would return a coroutine nobody "
                    "awaits; define it as 'async def execute(self, context): ... "
                    "return await super().execute(context)'"
                )
                raise DagDefinitionError(msg)
            return

    def __init__(
        self,
        *,
        task_id: str,
        dag: Dag | None = None,
        retries: int | None = None,
        retry_delay: float | timedelta | None = None,
        inlets: Iterable[AssetLike] = (),
        outlets: Iterable[AssetLike] = (),
        clear_state_on_success: bool | None = None,
        isolation: str | None = None,
        execution_timeout: float | timedelta | None = None,
    ) -> None:
        self.task_id = _check_id("task_id", task_id)
        dag = dag if dag is not None else _current_dag.get()
        if dag is None:
            msg = f"task {task_id!r} has no Dag; pass dag=... or create it inside 'with Dag(...):'"
            raise DagDefinitionError(msg)
        self.dag = dag
        defaults = dag.default_args
        retries = defaults.get("retries", 0) if retries is None else retries
        if not isinstance(retries, int) or isinstance(retries, bool) or retries < 0:
            msg = f"task {task_id!r}: retries must be an int >= 0, got {retries!r}"
            raise DagDefinitionError(msg)
        self.retries: int = retries
        delay = defaults.get("retry_delay", 0.0) if retry_delay is None else retry_delay
        self.retry_delay: float = _as_delay(task_id, delay)
        self.inlets = _as_assets(task_id, "inlets", inlets)
        self.outlets = _as_assets(task_id, "outlets", outlets)
        if clear_state_on_success is None:
            clear_state_on_success = defaults.get("clear_state_on_success")
        self.clear_state_on_success: bool | None = clear_state_on_success
        if isolation is None:
            isolation = defaults.get("isolation")
        self.isolation: str | None = _as_isolation(task_id, isolation)
        if execution_timeout is None:
            execution_timeout = defaults.get("execution_timeout")
        self.execution_timeout: float | None = _as_timeout(task_id, execution_timeout)
        self.upstream_task_ids: set[str] = set()
        self.downstream_task_ids: set[str] = set()
        #: Argument name to its list, or to an upstream task's :class:`TaskOutput`
        #: (mapped when the Dag runs); ``None`` when the task is not mapped.
        self.expand_kwargs: dict[str, Any] | None = None
        #: The key function naming each mapped item (``expand(map_key=...)``).
        self.map_key: MapKey | None = None
        dag.add_task(self)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.dag.dag_id}.{self.task_id}>"

    def __call__(self, *args: Any, **kwargs: Any) -> NoReturn:
        """Tasks are wired, not called: say how (TaskFlow calls are airflow.sdk's ``@task``)."""
        name = self.task_id
        msg = (
            f"{self!r} is a task, not a function, and cannot be called; wire tasks with "
            f">>, e.g. 'extract >> {name}' runs {name} after extract, and map one with "
            f"'{name}.expand(x=[1, 2])'; the runtime calls it when its Dag runs (calls "
            "that pass results, Airflow's TaskFlow, are for @task of a file written for "
            "airflow.sdk: see docs/airflow.md)"
        )
        raise TypeError(msg)

    def execute(self, context: Mapping[str, Any]) -> Any:
        """Do the task's work; the return value becomes the instance's ``result``."""
        msg = f"{type(self).__name__} must implement execute(self, context)"
        raise NotImplementedError(msg)

    @property
    def is_async(self) -> bool:
        """Whether ``execute`` is a coroutine function (run in trio's thread)."""
        return inspect.iscoroutinefunction(self.execute)

    @property
    def log(self) -> logging.Logger:
        """A logger named after the operator's class, as Airflow's ``self.log``.

        Its records go to the attempt's log and, under ``stateward run``, to the
        terminal (``stateward.task.<module>.<class>``, below the CLI's ``stateward``
        logger, which shows INFO).
        """
        cls = type(self)
        return logging.getLogger(f"stateward.task.{cls.__module__}.{cls.__qualname__}")

    @property
    def is_mapped(self) -> bool:
        """Whether :meth:`expand` made this task one instance per element."""
        return self.expand_kwargs is not None

    @property
    def maps_at_run_time(self) -> bool:
        """Whether :meth:`expand` maps over an upstream result (counted when it runs)."""
        return self.expand_kwargs is not None and any(
            isinstance(values, TaskOutput) for values in self.expand_kwargs.values()
        )

    # -- dependencies -----------------------------------------------------------------------

    def set_downstream(self, other: Operator | Sequence[Operator]) -> None:
        """Make ``other`` run after this task (``self >> other``)."""
        for task in _items(other):
            if not isinstance(task, Operator):
                msg = f"{self!r} >> {task!r}: only tasks can be dependencies"
                raise DagDefinitionError(msg)
            if task.dag is not self.dag:
                msg = f"{self!r} >> {task!r}: the tasks belong to different Dags"
                raise DagDefinitionError(msg)
            self.downstream_task_ids.add(task.task_id)
            task.upstream_task_ids.add(self.task_id)

    def __rshift__(self, other: Any) -> Any:
        self.set_downstream(other)
        return other

    def __lshift__(self, other: Any) -> Any:
        for task in _items(other):
            _as_task(task, self).set_downstream(self)
        return other

    def __rrshift__(self, other: Any) -> Self:
        for task in _items(other):
            _as_task(task, self).set_downstream(self)
        return self

    def __rlshift__(self, other: Any) -> Self:
        self.set_downstream(other)
        return self

    # -- mapping ------------------------------------------------------------------------------

    def expand(self, *, map_key: MapKey | None = None, **kwargs: Sequence[Any]) -> Self:
        """Run one instance per element (per combination, for several arguments).

        Instance ``i`` (``map_index`` 0..n-1) gets element ``i`` of each argument, as a
        function argument for ``@dag.task`` tasks and as the attribute of that name for
        operators. Several arguments give their cross product, as in Airflow.

        An instance's task state belongs to its *item*, identified by its arguments'
        canonical JSON, so it follows the item when the list changes (a resume, a
        cleared run). ``map_key`` names items instead: it gets an instance's arguments
        as a dict and returns a str or int (needed for arguments that are not JSON,
        which are otherwise kept by position).

        Raises:
            DagDefinitionError: a value is not a list or tuple, or names no attribute;
                ``map_key`` is not callable.
        """
        if map_key is not None and not callable(map_key):
            msg = f"{self!r}.expand(map_key=...) takes a function of the arguments, got {map_key!r}"
            raise DagDefinitionError(msg)
        if not kwargs:
            msg = f"{self!r}.expand() needs at least one argument, e.g. expand(x=[1, 2])"
            raise DagDefinitionError(msg)
        expand_kwargs: dict[str, Any] = {}
        for name, values in kwargs.items():
            if isinstance(values, TaskOutput):
                values.operator >> self
                expand_kwargs[name] = values
            elif isinstance(values, list | tuple):
                expand_kwargs[name] = list(values)
            else:
                msg = (
                    f"{self!r}.expand({name}=...) takes a list or tuple, or an upstream "
                    f"task's result (TaskOutput), got {values!r}"
                )
                raise DagDefinitionError(msg)
            self._check_expandable(name)
        self.expand_kwargs = expand_kwargs
        self.map_key = map_key
        return self

    def _check_expandable(self, name: str) -> None:
        if not hasattr(self, name):
            msg = f"{self!r}.expand({name}=...): the operator has no attribute {name!r}"
            raise DagDefinitionError(msg)

    def map_count(self) -> int:
        """How many instances :meth:`expand` makes (0 when not mapped)."""
        if self.expand_kwargs is None:
            return 0
        for name, values in self.expand_kwargs.items():
            if isinstance(values, TaskOutput):
                msg = (
                    f"{self!r} maps over {name}={values!r}, whose length is known only "
                    "when the Dag runs; run the Dag (rt.run_dag) rather than one instance"
                )
                raise DagDefinitionError(msg)
        return math.prod(len(values) for values in self.expand_kwargs.values())

    def map_arguments(self, map_index: int) -> dict[str, Any]:
        """The arguments of mapped instance ``map_index``.

        The order is that of ``itertools.product`` over the expanded lists (the last
        argument varies fastest), computed directly rather than by listing them all.
        """
        arguments: dict[str, Any] = {}
        rest = map_index
        if self.expand_kwargs is not None and map_index >= 0:
            # No map_count() first: it walks every list again, once per instance of a
            # large expansion. map_index is in range when nothing is left over.
            for name, values in reversed(self.expand_kwargs.items()):
                if isinstance(values, TaskOutput):
                    self.map_count()  # raises: the length is known only at run time
                if not values:
                    break
                rest, position = divmod(rest, len(values))
                arguments[name] = values[position]
            else:
                if rest == 0:
                    return dict(reversed(arguments.items()))
        msg = f"{self!r} has no map_index {map_index} (it has {self.map_count()})"
        raise IndexError(msg)


class PythonTask(Operator):
    """A task that calls a Python function (made by ``@dag.task``)."""

    template_fields: ClassVar[Sequence[str]] = ("op_kwargs",)

    def __init__(
        self,
        python_callable: Callable[..., Any],
        *,
        op_kwargs: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> None:
        if not callable(python_callable) or isinstance(python_callable, Operator):
            msg = f"@dag.task decorates a function, got {python_callable!r}"
            raise DagDefinitionError(msg)
        self.python_callable = python_callable
        self.op_kwargs: dict[str, Any] = dict(op_kwargs or {})
        self.signature = inspect.signature(python_callable)
        super().__init__(**options)
        for reference in references(self.op_kwargs):
            reference.operator >> self
        for name, parameter in self.signature.parameters.items():
            if name in AIRFLOW_ONLY_KEYS and parameter.default is not parameter.empty:
                _logger.warning(
                    "task %r: %s() takes %r, which is not a stateward context key, so it "
                    "always gets its default %r (%s)",
                    self.task_id, python_callable.__name__, name, parameter.default,
                    AIRFLOW_ONLY_KEYS[name],
                )  # fmt: skip
        #: Arguments of this instance from expand(); set on the per-attempt copy.
        self.mapped_arguments: dict[str, Any] = {}
        #: Upstream results given as arguments (TaskFlow), set when the Dag runs in
        #: place of the op_kwargs holding a TaskOutput; never rendered as templates.
        self.upstream_arguments: dict[str, Any] = {}

    @property
    def is_async(self) -> bool:
        """Whether the function is ``async def``."""
        return inspect.iscoroutinefunction(self.python_callable)

    def _check_expandable(self, name: str) -> None:
        parameters = self.signature.parameters
        takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        if name not in parameters and not takes_any:
            function = self.python_callable.__name__
            msg = f"{self!r}.expand({name}=...): {function}() has no parameter {name!r}"
            raise DagDefinitionError(msg)

    def arguments(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments to call the function with in ``context``."""
        given = {**self.op_kwargs, **self.upstream_arguments, **self.mapped_arguments}
        kwargs: dict[str, Any] = {}
        for name, parameter in self.signature.parameters.items():
            if parameter.kind is parameter.VAR_KEYWORD:
                kwargs.update({k: v for k, v in context.items() if k not in kwargs})
                kwargs.update(given)
                return kwargs
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.POSITIONAL_ONLY):
                continue
            if name in given:
                kwargs[name] = given[name]
            elif name in context:
                kwargs[name] = context[name]
            elif parameter.default is parameter.empty:
                msg = (
                    f"task {self.task_id!r}: {self.python_callable.__name__}() needs "
                    f"{name!r}, which is neither in op_kwargs, an expand() argument, nor "
                    f"a context key ({', '.join(sorted(context))})"
                )
                raise TypeError(msg)
        return kwargs

    def execute(self, context: Mapping[str, Any]) -> Any:
        """Call the function with its arguments (awaitable if it is ``async def``)."""
        return self.python_callable(**self.arguments(context))
