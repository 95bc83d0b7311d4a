"""The names of Airflow 3.3's ``airflow.sdk`` a Dag file uses, made of stateward's objects.

A Dag file written for Airflow imports ``DAG``, ``dag``, ``task``, ``Asset``,
``BaseOperator``, ... from ``airflow.sdk``; in a file stateward loads (and only when
Airflow itself is not installed), :mod:`stateward._airflow` resolves those imports to
this module's names. What it builds is an ordinary stateward :class:`~stateward.Dag`:

- ``DAG(...)`` / ``@dag`` take Airflow's arguments. Those that schedule or describe
  runs in Airflow's UI (``schedule``, ``start_date``, ``catchup``, ``tags``, ...) are
  accepted and ignored, with one DEBUG line naming them; an argument Airflow does not
  have is refused, as Airflow refuses it. Templates use Airflow's ``{{ }}``.
- ``@task`` functions are called inside the Dag to make their task, as in Airflow:
  ``load(extract())`` wires ``extract >> load`` and passes ``extract``'s result;
  ``.expand()`` / ``.partial()`` map over lists or over an upstream result. Their
  ``async def`` code runs on asyncio, as in Airflow.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final

from .._assets import Asset as _Asset
from .._assets import AssetAlias as _AssetAlias
from .._context.accessors import NEVER_EXPIRE
from .._context.context import current_context
from .._dag import TASK_OPTIONS, Dag, Operator, PythonTask, current_dag
from .._errors import DagDefinitionError
from .._jobs import ResumableJobMixin
from .._taskflow import TaskOutput, references

__all__ = [
    "DAG",
    "NEVER_EXPIRE",
    "Asset",
    "AssetAlias",
    "BaseOperator",
    "Context",
    "ResumableJobMixin",
    "chain",
    "dag",
    "get_current_context",
    "task",
]

logger = logging.getLogger("stateward.airflow")

#: Airflow's context type: a mapping of names to values (a plain dict here).
Context = dict

_PACKAGE_DIR: Final = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "")

#: ``DAG`` arguments of Airflow 3.3 that stateward accepts and has no use for.
IGNORED_DAG_ARGUMENTS: Final = frozenset({
    "schedule", "start_date", "end_date", "catchup", "tags", "doc_md", "max_active_runs",
    "max_consecutive_failed_dag_runs", "dagrun_timeout", "on_success_callback",
    "on_failure_callback", "sla_miss_callback", "access_control", "is_paused_upon_creation",
    "jinja_environment_kwargs", "template_undefined", "user_defined_macros",
    "user_defined_filters", "owner_links", "auto_register", "fail_fast", "dag_display_name",
    "disable_bundle_versioning", "deadline", "allowed_run_types", "concurrency",
})  # fmt: skip
#: Operator and ``@task`` arguments of Airflow that stateward accepts and ignores.
IGNORED_TASK_ARGUMENTS: Final = frozenset({
    "owner", "email", "email_on_retry", "email_on_failure", "depends_on_past",
    "wait_for_downstream", "pool", "pool_slots", "queue", "priority_weight", "weight_rule",
    "trigger_rule", "sla", "max_retry_delay", "retry_exponential_backoff", "on_failure_callback",
    "on_success_callback", "on_retry_callback", "on_execute_callback", "on_skipped_callback",
    "executor", "executor_config", "do_xcom_push", "multiple_outputs", "doc", "doc_md",
    "doc_rst", "doc_json", "doc_yaml", "task_display_name", "map_index_template",
    "max_active_tis_per_dag", "max_active_tis_per_dagrun", "run_as_user", "resources",
    "task_concurrency", "start_date", "end_date", "ignore_first_depends_on_past",
    "wait_for_past_depends_before_skipping", "logger_name", "allow_nested_operators",
    "show_return_value_in_logs", "owner_links", "params", "retry_policy",
})  # fmt: skip


def _ignored(what: str, names: Iterable[str]) -> None:
    names = sorted(names)
    if names:
        logger.debug("%s: stateward ignores the Airflow argument(s) %s", what, ", ".join(names))


def _refuse_unknown(what: str, names: Iterable[str], known: Iterable[str]) -> None:
    unknown = sorted(names)
    if unknown:
        msg = (
            f"{what} got argument(s) Airflow does not have: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known))}"
        )
        raise TypeError(msg)


def _caller_file() -> str | None:
    """The first file up the stack outside stateward: the Dag file, or its helper."""
    frame = sys._getframe(1)
    while frame is not None:
        file = frame.f_globals.get("__file__")
        if isinstance(file, str) and not os.path.abspath(file).startswith(_PACKAGE_DIR):
            return os.path.abspath(file)
        frame = frame.f_back  # type: ignore[assignment]
    return None


class _Delegating(type):
    # isinstance(x, Asset) holds for stateward's assets, which Asset(...) returns.
    _target: type

    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, cls._target)


class Asset(metaclass=_Delegating):
    """Airflow's ``Asset(name, uri, *, group=..., extra=..., watchers=...)``.

    Returns a :class:`stateward.Asset`; ``group``, ``extra`` and ``watchers`` are ignored.
    """

    _target = _Asset
    ref = staticmethod(_Asset.ref)

    def __new__(  # type: ignore[misc]
        cls, name: str | None = None, uri: str | None = None, **airflow_args: Any
    ) -> _Asset:
        _refuse_unknown("Asset()", set(airflow_args) - {"group", "extra", "watchers"}, ())
        _ignored(f"Asset({name or uri!r})", airflow_args)
        return _Asset(name, uri)


class AssetAlias(metaclass=_Delegating):
    """Airflow's ``AssetAlias(name, group=...)``; returns a :class:`stateward.AssetAlias`."""

    _target = _AssetAlias

    def __new__(cls, name: str, group: str | None = None) -> _AssetAlias:  # type: ignore[misc]
        return _AssetAlias(name)


def _task_options(what: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Split Airflow task arguments: stateward's options, the ignored, the refused."""
    native = {key: kwargs.pop(key) for key in list(kwargs) if key in _NATIVE_TASK_ARGUMENTS}
    _refuse_unknown(what, set(kwargs) - IGNORED_TASK_ARGUMENTS, _NATIVE_TASK_ARGUMENTS)
    _ignored(what, kwargs)
    for kind in ("inlets", "outlets"):
        value = native.get(kind)
        if value is not None and not isinstance(value, list | tuple):
            native[kind] = [value]  # Airflow takes one asset as well as a list
        elif value is None:
            native.pop(kind, None)
    return native


_NATIVE_TASK_ARGUMENTS: Final = frozenset(
    {"task_id", "retries", "retry_delay", "inlets", "outlets", "execution_timeout"}
)


class DAG(Dag):
    """Airflow's ``DAG``: a stateward :class:`~stateward.Dag` that takes Airflow's arguments.

    ``default_args`` keeps the task options stateward has (``retries``, ``retry_delay``,
    ``execution_timeout``, ...); the rest (``owner``, ``email``, ...) are ignored.
    Templates use ``{{ }}`` unless ``template_syntax="stateward"`` is given.
    """

    def __init__(
        self, dag_id: str | None = None, description: str | None = None, **kwargs: Any
    ) -> None:
        if dag_id is None:
            msg = "DAG() needs a dag_id, e.g. DAG(dag_id='my_dag')"
            raise TypeError(msg)
        native: dict[str, Any] = {
            key: kwargs.pop(key)
            for key in (
                "params", "max_active_tasks", "render_template_as_native_obj",
                "template_searchpath", "template_syntax",
            )
            if key in kwargs
        }  # fmt: skip
        native.setdefault("template_syntax", "airflow")
        default_args = dict(kwargs.pop("default_args", None) or {})
        _refuse_unknown(f"DAG({dag_id!r})", set(kwargs) - IGNORED_DAG_ARGUMENTS, ())
        _ignored(f"DAG({dag_id!r})", kwargs)
        _ignored(f"DAG({dag_id!r}) default_args", set(default_args) - TASK_OPTIONS)
        super().__init__(
            dag_id,
            description=description,
            default_args={k: v for k, v in default_args.items() if k in TASK_OPTIONS},
            **native,
        )
        self.fileloc = _caller_file()


def dag(dag_id: Any = None, /, **kwargs: Any) -> Any:
    """Airflow's ``@dag``: calling the decorated function builds its Dag and returns it.

    Used bare (``@dag``) or with ``DAG``'s arguments (``@dag(schedule=None)``); the Dag
    id is the function's name unless ``dag_id=`` is given. The function is called
    inside ``with DAG(...)``, with the arguments given to the call.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., DAG]:
        @functools.wraps(function)
        def build(*args: Any, **call_kwargs: Any) -> DAG:
            options = dict(kwargs)
            name = options.pop("dag_id", None) or function.__name__
            with DAG(name, **options) as made:
                function(*args, **call_kwargs)
            return made

        return build

    if callable(dag_id):
        return decorate(dag_id)
    if dag_id is not None:
        kwargs["dag_id"] = dag_id
    return decorate


class _AirflowTask(PythonTask):
    """A ``@task`` function's task: its ``async def`` code runs on asyncio, as in Airflow."""

    async_library = "asyncio"


class _TaskFunction:
    """What ``@task`` makes of a function: call it inside a Dag to make its task."""

    def __init__(
        self,
        function: Callable[..., Any],
        options: Mapping[str, Any],
        partial: Mapping[str, Any] | None = None,
    ) -> None:
        self.function = function
        self.options = dict(options)
        self.partial_kwargs = dict(partial or {})
        self.signature = inspect.signature(function)
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<@task {self.function.__qualname__}>"

    def __call__(self, *args: Any, **kwargs: Any) -> TaskOutput:
        """Make the task in the enclosing Dag; its arguments may be upstream results."""
        return TaskOutput(self._make(self._bind(args, kwargs)))

    def override(self, **options: Any) -> _TaskFunction:
        """The same function with other task options (``.override(task_id="x")``)."""
        merged = {**self.options, **_task_options("@task.override()", dict(options))}
        return _TaskFunction(self.function, merged, self.partial_kwargs)

    def partial(self, **kwargs: Any) -> _TaskFunction:
        """Fix arguments shared by every mapped instance; then call :meth:`expand`."""
        return _TaskFunction(self.function, self.options, {**self.partial_kwargs, **kwargs})

    def expand(self, **mapped: Any) -> TaskOutput:
        """Make a task with one instance per element of ``mapped``'s lists (or results)."""
        task = self._make(dict(self.partial_kwargs))
        task.expand(**mapped)
        return TaskOutput(task)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        try:
            bound = self.signature.bind_partial(*args, **{**self.partial_kwargs, **kwargs})
        except TypeError as exc:
            msg = f"{self.function.__name__}(): {exc}"
            raise TypeError(msg) from None
        arguments: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            parameter = self.signature.parameters[name]
            if parameter.kind is parameter.VAR_KEYWORD:
                arguments.update(value)
            elif parameter.kind is parameter.VAR_POSITIONAL:
                msg = (
                    f"{self.function.__name__}(*{name}): stateward passes task arguments "
                    "by name; give the function named parameters"
                )
                raise TypeError(msg)
            else:
                arguments[name] = value
        return arguments

    def _make(self, arguments: dict[str, Any]) -> _AirflowTask:
        made_in = current_dag()
        if made_in is None:
            msg = (
                f"{self.function.__name__}() was called outside a Dag; call @task "
                "functions inside 'with DAG(...):' or a @dag function"
            )
            raise DagDefinitionError(msg)
        options = dict(self.options)
        base = options.pop("task_id", None) or self.function.__name__
        task_id, n = base, 0
        while task_id in made_in.tasks:  # Airflow's rule for a function called twice
            n += 1
            task_id = f"{base}__{n}"
        task = _AirflowTask(
            self.function, task_id=task_id, dag=made_in, op_kwargs=arguments, **options
        )
        for reference in references(arguments):
            reference.operator >> task
        return task


def task(python_callable: Callable[..., Any] | None = None, /, **kwargs: Any) -> Any:
    """Airflow's ``@task`` / ``@task(retries=2, ...)`` for TaskFlow functions.

    Raises:
        TypeError: an argument Airflow's ``@task`` does not take.
    """
    options = _task_options("@task", kwargs)

    def decorate(function: Callable[..., Any]) -> _TaskFunction:
        return _TaskFunction(function, options)

    return decorate(python_callable) if python_callable is not None else decorate


class BaseOperator(Operator):
    """Airflow's ``BaseOperator``: a stateward :class:`~stateward.Operator` taking Airflow's
    arguments (ignoring those about scheduling, pools, callbacks, ...).

    Subclasses implement ``execute(self, context)`` and may list ``template_fields``,
    rendered with ``{{ }}`` in the Dag's order, each field seeing those before it.
    """

    async_library = "asyncio"

    def __init__(self, *, task_id: str, dag: Dag | None = None, **kwargs: Any) -> None:
        options = _task_options(f"{type(self).__name__}({task_id!r})", kwargs)
        super().__init__(task_id=task_id, dag=dag, **options)

    @classmethod
    def partial(cls, **kwargs: Any) -> _PartialOperator:
        """Airflow's mapped operator: ``MyOperator.partial(task_id=...).expand(x=[...])``.

        The operator is built once, given each mapped argument's list (or upstream
        result) as it stands; every instance then gets its element as the attribute of
        that name, so ``__init__`` must store mapped arguments as they are.
        """
        return _PartialOperator(cls, kwargs)


class _PartialOperator:
    """An operator class with its shared arguments, waiting for :meth:`expand`."""

    def __init__(self, cls: type[BaseOperator], kwargs: dict[str, Any]) -> None:
        self.cls = cls
        self.kwargs = kwargs

    def expand(self, **mapped: Any) -> TaskOutput:
        """Make the operator with one instance per element of ``mapped``'s values."""
        task = self.cls(**self.kwargs, **mapped)
        task.expand(**mapped)
        return TaskOutput(task)


def chain(*tasks: Any) -> None:
    """Airflow's ``chain(a, b, [c, d], e)``: each after the one before it."""
    for upstream, downstream in itertools.pairwise(tasks):
        upstream >> downstream


def get_current_context() -> Any:
    """The running task's context (Airflow's ``get_current_context``).

    Raises:
        RuntimeError: called outside a running task.
    """
    return current_context()
