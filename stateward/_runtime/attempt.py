"""One attempt of a task instance: its context, its rendered fields, its ``execute``.

:func:`run_attempt` is the one place an attempt is built and run, whichever process
runs it: the runner calls it for an in-process attempt, and a task process
(:mod:`stateward._runtime.child`) calls it for an isolated one. It copies the task for
the attempt (a mapped instance gets its element), resolves the alias inlets, builds the
context (accessors over the client it is given, ``ti``, ``outlet_events``), renders the
template fields from a snapshot of state, reports them, and runs ``execute``: ``async
def`` code in trio's thread, plain functions in a worker thread. When ``execute`` has
returned or raised, the client is ended, so the attempt's accessors refuse every later
call (:class:`~stateward.AttemptEndedError`).

In process, :func:`execute_in_process` applies the task's ``execution_timeout``: an async
task is cancelled; a plain function cannot be interrupted, so it stops at its next state
call (which raises ``trio.Cancelled`` in its thread) or, if it makes none, fails when it
returns. In a task process the parent applies the limit instead, to the whole process.
"""

from __future__ import annotations

import contextvars
import copy
import copyreg
import functools
from collections.abc import Callable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Final, Protocol, TypeVar

import attrs
import trio

from .._assets import Asset, AssetAlias
from .._context.accessors import (
    AssetStateAccessor,
    AssetStateAccessors,
    AssetStateView,
    StateView,
    TaskStateAccessor,
)
from .._context.client import StateClient
from .._context.context import (
    Context,
    OutletEventAccessors,
    TaskInstanceInfo,
    reset_current_context,
    set_current_context,
)
from .._dag import Operator, PythonTask
from .._errors import TaskTimeoutError
from .._protocol import messages as m
from .._records import AssetInfo, instance_label
from .._templates import holds_strings, markers, needs_rendering, warn_unrendered_braces

if TYPE_CHECKING:
    import concurrent.futures

_T = TypeVar("_T")


class AttemptClient(StateClient, Protocol):
    """The client an attempt's accessors use: a :class:`StateClient` that can be ended."""

    def end(self) -> None:
        """Refuse every later request: the attempt is over."""


@attrs.frozen
class AttemptSpec:
    """Which attempt to run, and the runtime's settings it runs with."""

    task: Operator
    run_id: str
    params: Mapping[str, Any]
    #: The instance (-1 unmapped).
    map_index: int
    #: The try, from 1.
    try_number: int
    #: ``retries + 1``.
    max_tries: int
    #: The concrete assets the task declared (refs resolved; alias inlets not yet).
    assets: tuple[AssetInfo, ...]
    #: The runtime's default retentions (``None``: forever).
    task_retention: timedelta | None
    asset_retention: timedelta | None
    #: Unix time now on the supervisor's clock (expiry is computed on it).
    wall_clock: Callable[[], float]

    @property
    def label(self) -> str:
        """How messages name the instance: ``dag.task`` or ``dag.task[3]``."""
        return instance_label(self.task.dag.dag_id, self.task.task_id, self.map_index)


async def run_attempt(
    spec: AttemptSpec,
    client: AttemptClient,
    *,
    on_rendered: Callable[[dict[str, Any]], None],
    enforce_timeout: bool = True,
) -> tuple[Any, OutletEventAccessors]:
    """Build the attempt's context, render its fields and run ``execute``.

    Args:
        spec: The attempt.
        client: Bound to the task instance; the accessors send through it, and it is
            ended once ``execute`` has returned or raised.
        on_rendered: Called with the rendered template fields just before ``execute``.
        enforce_timeout: Apply ``execution_timeout`` here (in process); a task process
            leaves it to its parent, which stops the whole process.

    Returns:
        What ``execute`` returned, and the outlet events it emitted (the caller records
        them if the attempt succeeds).

    Raises:
        TaskTimeoutError: the attempt ran past its ``execution_timeout``.
        Exception: whatever rendering or the task's code raised.
    """
    try:
        return await _run(spec, client, on_rendered, enforce_timeout)
    finally:
        client.end()


async def _run(
    spec: AttemptSpec,
    client: StateClient,
    on_rendered: Callable[[dict[str, Any]], None],
    enforce_timeout: bool,
) -> tuple[Any, OutletEventAccessors]:
    task = spec.task
    instance = _instance(task, spec.map_index)
    resolved: dict[str, tuple[AssetInfo, ...]] = {}
    for alias in (a.name for a in task.inlets if isinstance(a, AssetAlias)):
        resolved[alias] = (await client.request(m.GetAssetsByAlias(alias))).assets
    accessible = tuple(
        dict.fromkeys([*spec.assets, *(a for group in resolved.values() for a in group)])
    )
    outlet_events = OutletEventAccessors(
        tuple(o for o in task.outlets if isinstance(o, Asset | AssetAlias))
    )
    context = _context(spec, instance, client, accessible, resolved, outlet_events)
    rendered = await _render(instance, context, client, accessible, resolved)
    on_rendered(rendered)
    for name, value in rendered.items():
        setattr(instance, name, value)
    token = set_current_context(context)
    try:
        if enforce_timeout:
            result = await execute_in_process(
                instance, context, label=spec.label, try_number=spec.try_number
            )
        else:
            result = await call_execute(instance, context)
    finally:
        reset_current_context(token)
    return result, outlet_events


async def call_execute(instance: Operator, context: Mapping[str, Any]) -> Any:
    """Run ``instance.execute(context)``: on trio, in a worker thread, or on asyncio.

    ``async def`` code runs in trio's thread unless the operator's ``async_library`` is
    ``"asyncio"``: then on an event loop of its own in a worker thread, where its state
    calls go through the sync bridge. Asyncio code run on trio fails; the error gets a
    note saying how to run it.
    """
    if not instance.is_async:
        # The thread is named after the task (trio's default name is made per call).
        return await trio.to_thread.run_sync(
            instance.execute, context, thread_name=instance.task_id, limiter=_threads()
        )
    if instance.async_library == "asyncio":
        return await trio.to_thread.run_sync(
            _on_asyncio, instance.execute, context, thread_name=instance.task_id,
            limiter=_threads(),
        )  # fmt: skip
    try:
        return await instance.execute(context)
    except (RuntimeError, TypeError) as exc:
        if _is_asyncio_on_trio(exc):
            exc.add_note(
                f"task {instance.task_id!r} awaits asyncio code (asyncio.sleep, "
                "asyncio.gather, an asyncio client), but stateward runs async tasks on "
                "trio; set async_library = 'asyncio' on the operator (tasks of Dag files "
                "written for Airflow, through airflow.sdk, run on asyncio already)"
            )
        raise


#: Worker threads attempts may hold at once in a trio run (trio's default for its own).
ATTEMPT_THREADS: Final = 40
_ATTEMPT_THREADS: trio.lowlevel.RunVar[_ThreadSlots] = trio.lowlevel.RunVar("stateward_threads")


class _ThreadSlots:
    """Limits the worker threads of attempts as trio's default limiter would, at a
    fraction of a ``CapacityLimiter``'s cost: a free slot is taken without a schedule
    point (``to_thread.run_sync`` then waits for the thread anyway), and a slot given
    back goes straight to the longest waiter."""

    def __init__(self, total: int) -> None:
        self._free = total
        self._waiting = trio.lowlevel.ParkingLot()

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        if self._free and not self._waiting:
            self._free -= 1
            return
        await self._waiting.park()  # woken holding the slot its releaser gave up

    def release_on_behalf_of(self, borrower: object) -> None:
        if self._waiting:
            self._waiting.unpark()
        else:
            self._free += 1


def _threads() -> Any:
    # Any: trio types the limiter as a CapacityLimiter, and takes any object with
    # these two methods (see trio.to_thread.run_sync).
    try:
        return _ATTEMPT_THREADS.get()
    except LookupError:
        slots = _ThreadSlots(ATTEMPT_THREADS)
        _ATTEMPT_THREADS.set(slots)
        return slots


def _on_asyncio(execute: Callable[[Mapping[str, Any]], Any], context: Mapping[str, Any]) -> Any:
    async def main() -> Any:
        return await execute(context)

    import asyncio  # here: in-process runs of trio and sync tasks never load it

    # A plain selector loop, whatever event loop policy is installed: trio-asyncio's
    # (installed once the PostgreSQL store is imported) would run this loop inside a
    # trio run of its own, where the task's sync state calls are refused.
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        # run_in_executor(None, f) then runs f in a copy of the caller's context, as
        # asyncio.to_thread does: its output lands in the attempt's log.
        runner.get_loop().set_default_executor(_context_copying_executor()())
        return runner.run(main())


@functools.cache
def _context_copying_executor() -> type[concurrent.futures.ThreadPoolExecutor]:
    # Built on first use: in-process runs of trio and sync tasks never load the module.
    from concurrent.futures import ThreadPoolExecutor

    class ContextCopyingExecutor(ThreadPoolExecutor):
        """Runs each call in a copy of the context it was submitted from."""

        def submit(
            self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any
        ) -> concurrent.futures.Future[_T]:
            return super().submit(contextvars.copy_context().run, fn, *args, **kwargs)

    return ContextCopyingExecutor


def _is_asyncio_on_trio(exc: BaseException) -> bool:
    text = str(exc)
    return "event loop" in text or "asyncio" in text


def event_messages(outlet_events: OutletEventAccessors) -> list[m.AddAssetEvent]:
    """The requests that record the events an attempt emitted (sent when it succeeds)."""
    return [
        m.AddAssetEvent(
            event.asset.name,
            event.asset.uri,
            event.extra,
            event.alias.name if event.alias is not None else None,
        )
        for event in outlet_events.emitted()
    ]


# Attributes every attempt shares on purpose: the wiring, and expand()'s lists (large,
# and read only).
_SHARED_ATTRIBUTES = frozenset({"upstream_task_ids", "downstream_task_ids", "expand_kwargs"})


_CONTAINERS = (list, dict, set)
# Values a copy of a container may share: nothing in them can be changed in place.
_ATOMS = frozenset({str, int, float, bool, bytes, type(None)})


def _members(container: list[Any] | dict[Any, Any] | set[Any]) -> Iterator[Any]:
    if type(container) is dict:
        yield from container
        yield from container.values()
    else:
        yield from container


def _instance(task: Operator, map_index: int) -> Operator:
    """The attempt's own copy of ``task``, holding its mapped element.

    Lists, dicts and sets the operator holds are copied deeply (the Dag and its tasks
    inside them stay shared; an empty one, or one holding only strings and numbers, is
    copied without ``copy.deepcopy``), so what one attempt appends is not seen by the next:
    in-memory state must not look durable. Other objects (clients, hooks) are shared.
    """
    instance = _shallow_copy(task)
    memo: dict[int, Any] | None = None
    for name, value in vars(task).items():
        if type(value) not in _CONTAINERS or name in _SHARED_ATTRIBUTES:
            continue
        if not value:
            setattr(instance, name, type(value)())
            continue
        if all(type(item) in _ATOMS for item in _members(value)):
            setattr(instance, name, value.copy())
            continue
        if memo is None:
            memo = {id(other): other for other in task.dag.tasks.values()}
            memo[id(task.dag)] = task.dag
        try:
            setattr(instance, name, copy.deepcopy(value, memo))
        except Exception:
            continue
    if task.is_mapped:
        arguments = task.map_arguments(map_index)
        if isinstance(instance, PythonTask):
            instance.mapped_arguments = arguments
        else:
            for name, value in arguments.items():
                setattr(instance, name, value)
    return instance


def _shallow_copy(task: Operator) -> Operator:
    """``copy.copy(task)``, without its generic reduce protocol for a plain class."""
    cls = type(task)
    plain = _COPIES_PLAINLY.get(cls)
    if plain is None:
        plain = _COPIES_PLAINLY[cls] = _copies_plainly(cls)
    if not plain:
        return copy.copy(task)
    twin: Operator = cls.__new__(cls)
    twin.__dict__.update(task.__dict__)
    return twin


_COPIES_PLAINLY: Final[dict[type, bool]] = {}


def _copies_plainly(cls: type) -> bool:
    """Whether ``copy.copy`` of a ``cls`` is a new object with the same ``__dict__``: no
    copy or pickle hook of its own, no slots."""
    return (
        getattr(cls, "__copy__", None) is None
        and getattr(cls, "__reduce_ex__", None) is object.__reduce_ex__
        and getattr(cls, "__reduce__", None) is object.__reduce__
        and getattr(cls, "__getstate__", object.__getstate__) is object.__getstate__
        and not hasattr(cls, "__setstate__")
        and not any("__slots__" in vars(klass) for klass in cls.__mro__[:-1])
        and cls not in copyreg.dispatch_table
    )


def _context(
    spec: AttemptSpec,
    instance: Operator,
    client: StateClient,
    accessible: tuple[AssetInfo, ...],
    resolved: dict[str, tuple[AssetInfo, ...]],
    outlet_events: OutletEventAccessors,
) -> Context:
    task, dag = spec.task, spec.task.dag
    task_state = TaskStateAccessor._create(
        client, "task_state", spec.task_retention, spec.wall_clock
    )
    context = Context._create(
        dag=dag, task=instance, run_id=spec.run_id, dag_id=dag.dag_id, task_id=task.task_id,
        map_index=spec.map_index, try_number=spec.try_number, params=spec.params,
        inlets=task.inlets, outlets=task.outlets, outlet_events=outlet_events,
        task_state=task_state, task_state_store=task_state,
    )  # fmt: skip
    context["ti"] = context["task_instance"] = TaskInstanceInfo(
        dag_id=dag.dag_id, run_id=spec.run_id, task_id=task.task_id,
        map_index=spec.map_index, try_number=spec.try_number, max_tries=spec.max_tries,
    )  # fmt: skip
    if accessible or resolved:
        context["asset_state"] = context["asset_state_store"] = AssetStateAccessors._create(
            accessible,
            resolved,
            lambda asset: AssetStateAccessor._create(
                client, asset, spec.asset_retention, spec.wall_clock
            ),
            inlets=task.inlets,
        )
    return context


async def _render(
    instance: Operator,
    context: Context,
    client: StateClient,
    accessible: tuple[AssetInfo, ...],
    resolved: dict[str, tuple[AssetInfo, ...]],
) -> dict[str, Any]:
    """The instance's template fields, rendered with a snapshot of the state it reads."""
    fields = instance.template_fields
    if not fields:
        return {}
    dag = instance.dag
    values = {name: getattr(instance, name) for name in fields}
    if not holds_strings(values.values()):  # most often: empty, or numbers
        return values
    if dag.template_syntax == "stateward":
        warn_unrendered_braces(values, task=instance_label(dag.dag_id, instance.task_id))
    opening = markers(dag.template_syntax)
    if not any(needs_rendering(v, instance.template_ext, markers=opening) for v in values.values()):
        return values
    # jinja is loaded by the first attempt that renders, not by every run.
    from .._templates.environment import get_environment
    from .._templates.render import render_fields

    env = get_environment(
        native=dag.render_template_as_native_obj,
        searchpath=dag.template_searchpath,
        syntax=dag.template_syntax,
    )
    # Templates read a snapshot taken now: one request per scope they may read,
    # instead of one per key, and no way to write.
    template_context = Context._create(context)
    template_context["task_state"] = template_context["task_state_store"] = StateView(
        "task_state", (await client.request(m.ListTaskState())).items
    )
    if "asset_state" in context:
        snapshots: dict[str, dict[str, Any]] = {}
        for asset in accessible:
            listed = await client.request(m.ListAssetStateByName(asset.name))
            snapshots[asset.name] = listed.items
        template_context["asset_state"] = template_context["asset_state_store"] = (
            AssetStateAccessors._create(
                accessible,
                resolved,
                lambda asset: AssetStateView(asset, snapshots[asset.name]),
                inlets=instance.inlets,
            )
        )
    label = instance_label(dag.dag_id, instance.task_id, context["map_index"])
    # In template_fields order, each set on the instance before the next is rendered
    # (as Airflow does), so `<< task.out_file >>` reads the rendered path.
    rendered: dict[str, Any] = {}
    for name in fields:
        one = {name: getattr(instance, name)}
        rendered.update(
            render_fields(
                one, template_context, env=env, task=label, template_ext=instance.template_ext
            )
        )
        setattr(instance, name, rendered[name])
    return rendered


async def execute_in_process(
    instance: Operator, context: Mapping[str, Any], *, label: str, try_number: int
) -> Any:
    """Run ``instance.execute(context)`` in this process, within its execution_timeout.

    ``async def`` code runs in trio's thread and is cancelled at the limit; a plain
    function runs in a worker thread, which cannot be interrupted: it stops at its next
    state call, or fails when it returns.

    Raises:
        TaskTimeoutError: the attempt ran past ``instance.execution_timeout``.
    """
    timeout = instance.execution_timeout
    if timeout is None:  # no cancel scope to enter: a tenth of a short attempt's cost
        return await call_execute(instance, context)
    with trio.move_on_after(timeout) as limit:
        result = await call_execute(instance, context)
    if not limit.cancel_called:
        return result
    what = f"{label} try {try_number} ran past its execution_timeout of {timeout:g} s"
    if instance.is_async and instance.async_library == "trio":
        msg = f"{what} and was cancelled"
    elif limit.cancelled_caught:
        msg = (
            f"{what}; it was stopped at its next state call (a plain-function task cannot "
            "be interrupted; isolation='process' stops it at once)"
        )
    else:
        msg = (
            f"{what}; it ran on until it returned, as a plain-function task cannot be "
            "interrupted: use isolation='process' to stop it at the limit"
        )
    raise TaskTimeoutError(msg, task=label, timeout=timeout)
