"""``open_runtime()``: a supervisor and a runner under one nursery, and ``run_dag``."""

from __future__ import annotations

import enum
import os
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Final

import trio

from .._assets import Asset
from .._construction import NoPublicConstructor
from .._context.accessors import DEFAULT_TASK_RETENTION, AssetStateAccessor, TaskStateAccessor
from .._dag import ISOLATION_MODES, Dag, Operator
from .._errors import RunNotFoundError, RuntimeClosedError, StatewardError
from .._items import mapped_item
from .._nursery import raise_sole
from .._protocol import messages as m
from .._records import AssetEvent, AssetInfo, DagRunRecord, StateEntry, TaskInstanceRecord
from .._values import DEFAULT_MAX_VALUE_BYTES
from ..store import open_store
from ..store.base import DEFAULT_HISTORY, Store, TaskScope
from .capture import installed
from .client import SupervisorClient
from .forkserver import ForkServers
from .leases import DEFAULT_LEASE_TIMEOUT, LeaseKeeper, check_lease_timeout
from .runner import (
    GIVE_UP_SECONDS,
    DagRunResult,
    Runner,
    RunSettings,
    TaskInstanceEvent,
    TaskInstanceResult,
)
from .supervisor import Caller, Supervisor, SupervisorStats, local_writer

#: What ``open_runtime(out_of_band_writer=...)`` accepts.
OUT_OF_BAND_WRITERS = ("api", "cli", "test")

#: How long the records of ended runs are kept by ``stateward cleanup`` by default.
DEFAULT_RUN_RETENTION: Final = timedelta(days=30)

#: Where ``open_runtime()`` and the CLI keep state when no database is named.
DEFAULT_DB = "stateward.db"


def default_db() -> str:
    """``$STATEWARD_DB``, else ``./stateward.db``."""
    return os.environ.get("STATEWARD_DB") or DEFAULT_DB


def new_run_id() -> str:
    """A run id for a manual run, as Airflow makes them: ``manual__<UTC time>``."""
    return f"manual__{datetime.now(UTC).isoformat(timespec='microseconds')}"


class RuntimeState(enum.Enum):
    """Where a runtime is in its life."""

    UNOPENED = "unopened"
    OPEN = "open"
    CLOSED = "closed"


class StateAdmin:
    """``rt.state``: out-of-band access to any task's or asset's state.

    For the CLI, admin tools and tests (to seed state before a run and read it after).
    The accessors it returns are the same classes tasks get, without scope limits:
    use the async methods from trio code and the sync ones from other threads.
    Out-of-band writes are recorded as such in the provenance.
    """

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    def task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        *,
        arguments: Mapping[str, Any] | None = None,
        map_key: str | int | None = None,
    ) -> TaskStateAccessor:
        """The task state of one task instance.

        A mapped instance's state belongs to its item: by ``map_index``, this is the
        item that stood there in the run's latest expansion. To reach an item wherever
        it stands (or one a later expansion dropped), give its expansion ``arguments``
        (``{"item": "b"}``) or, for a task expanded with a key function, the ``map_key``
        it returned.
        """
        rt = self._runtime
        item = None
        if arguments is not None or map_key is not None:
            if arguments is not None and map_key is not None:
                msg = "rt.state.task() takes arguments= or map_key=, not both"
                raise TypeError(msg)
            found = (
                mapped_item(arguments)
                if arguments is not None
                else mapped_item({}, lambda _: map_key)  # type: ignore[arg-type,return-value]
            )
            if found is None:
                msg = (
                    f"arguments={arguments!r} are not JSON, so that task's state is kept by "
                    "position: give map_index= instead"
                )
                raise TypeError(msg)
            item = found.key
        scope = TaskScope(dag_id, run_id, task_id, map_index, item)
        client = rt.client(Caller(task=scope, writer=None, unrestricted=True))
        return TaskStateAccessor._create(
            client, "task_state", rt.default_task_retention, rt.wall_clock
        )

    def asset(
        self, asset: Asset | str | None = None, *, name: str | None = None, uri: str | None = None
    ) -> AssetStateAccessor:
        """The state of one asset: ``asset(ORDERS)``, ``asset(name=...)`` or ``asset(uri=...)``.

        An asset no Dag has declared yet is registered on the first write by what was
        given: a name alone binds no URI (nor a URI a name) until a declaration
        completes it; until then it reads with the missing side taking the other's value.
        """
        if isinstance(asset, Asset):
            name, uri = asset.name, asset.uri
        elif isinstance(asset, str):
            name = asset
        if name is None and uri is None:
            msg = "rt.state.asset() needs an Asset, name= or uri="
            raise TypeError(msg)
        rt = self._runtime
        info = AssetInfo(name or uri or "", uri or name or "")
        # Given both, a first write registers the asset with both, not name as URI.
        declared = {info.name: info} if name is not None and uri is not None else {}
        client = rt.client(Caller(task=None, writer=None, assets=declared, unrestricted=True))
        return AssetStateAccessor._create(
            client, info, rt.default_asset_retention, rt.wall_clock, by_uri=name is None
        )

    async def asset_events(
        self,
        asset: Asset | str | None = None,
        *,
        name: str | None = None,
        uri: str | None = None,
        limit: int = 100,
    ) -> list[AssetEvent]:
        """The events emitted to one asset (``asset_events(ORDERS)``, ``name=`` or
        ``uri=``), newest first, at most ``limit``, each with the task instance and try
        that emitted it; an asset the store does not know has none."""
        if isinstance(asset, Asset):
            name, uri = asset.name, None
        elif isinstance(asset, str):
            name = asset
        if name is None and uri is None:
            msg = "rt.state.asset_events() needs an Asset, name= or uri="
            raise TypeError(msg)
        self._runtime._check_open()
        response = await self._runtime.admin.request(m.ListAssetEvents(name, uri, limit))
        return list(response.events)

    async def list(
        self,
        *,
        scope: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int | None = None,
        asset_name: str | None = None,
        include_expired: bool = False,
        key: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[StateEntry]:
        """Every stored key matching the filters, with its provenance.

        ``key``: only that key. ``limit``/``offset``: one page of the listing (by
        instance, then key; by asset, then key), read as a page from the store; a page
        needs ``scope`` (``"task"`` or ``"asset"``).
        """
        if (limit is not None or offset) and scope not in ("task", "asset"):
            msg = 'a page (limit=, offset=) is of one scope: give scope="task" or "asset"'
            raise TypeError(msg)
        request = m.ListState(
            scope, dag_id, run_id, task_id, map_index, asset_name, include_expired,
            key, limit, offset,
        )  # fmt: skip
        response = await self._runtime.admin.request(request)
        return list(response.entries)

    async def count(
        self,
        *,
        scope: str | None = None,
        dag_id: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        map_index: int | None = None,
        asset_name: str | None = None,
        include_expired: bool = False,
    ) -> int:
        """How many stored keys :meth:`list` with these filters lists (counted by the
        store, not read)."""
        request = m.ListState(
            scope, dag_id, run_id, task_id, map_index, asset_name, include_expired
        )
        response = await self._runtime.admin.request(m.CountState(request))
        count: int = response.count
        return count


class RunsAdmin:
    """``rt.runs``: the records of runs, their task instances and attempts."""

    def __init__(self, runtime: Runtime) -> None:
        self._runtime = runtime

    async def list(
        self, dag_id: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[DagRunRecord]:
        """Recorded runs (without instances), newest start first, at most ``limit``.

        Args:
            dag_id: Only this Dag's runs.
            state: Only runs in this state (``running``, ``success`` or ``failed``).
            limit: How many at most.
        """
        self._runtime._check_open()
        response = await self._runtime.admin.request(m.ListDagRuns(dag_id, state, limit))
        return list(response.runs)

    async def get(self, dag_id: str, run_id: str) -> DagRunRecord | None:
        """One run's record with its task instances and their attempts; ``None`` if the
        store has no record of it."""
        self._runtime._check_open()
        response = await self._runtime.admin.request(m.GetDagRun(dag_id, run_id))
        run: DagRunRecord | None = response.run
        return run

    async def items(self, dag_id: str, run_id: str) -> dict[tuple[str, int], str | None]:
        """Each mapped instance's item label, by ``(task_id, map_index)``: the item that
        stands there in the run's latest expansion (``None``: kept by position)."""
        self._runtime._check_open()
        response = await self._runtime.admin.request(m.ListTaskItems(dag_id, run_id))
        return {(place.task_id, place.map_index): place.label for place in response.items}

    async def get_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> TaskInstanceRecord | None:
        """One task instance's record with its attempts (and their logs); ``None`` if
        the store has no record of it. Cheaper than :meth:`get` for one instance."""
        self._runtime._check_open()
        request = m.GetTaskInstanceRecord(dag_id, run_id, task_id, map_index)
        instance: TaskInstanceRecord | None = (await self._runtime.admin.request(request)).instance
        return instance

    async def cleanup(
        self, older_than: timedelta | float = DEFAULT_RUN_RETENTION, *, dry_run: bool = False
    ) -> int:
        """Delete the records of runs that ended (``success`` or ``failed``) more than
        ``older_than`` ago, with their instances, attempts and logs; return how many
        runs (or would be, on a dry run). Running and queued runs are kept.

        Args:
            older_than: A ``timedelta`` or seconds (default 30 days).
            dry_run: Only count them.
        """
        rt = self._runtime
        rt._check_open()
        seconds = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            msg = f"older_than must be a timedelta or seconds >= 0, got {older_than!r}"
            raise ValueError(msg)
        request = m.CleanupDagRuns(rt.wall_clock() - seconds, dry_run)
        deleted: int = (await rt.admin.request(request)).deleted
        return deleted


class Runtime(metaclass=NoPublicConstructor):
    """An open stateward runtime: run Dags and tasks, reach state, clean up.

    Made by :func:`open_runtime`; calling the class raises ``TypeError``.
    """

    _how_to_get: ClassVar[str] = "open one with 'async with open_runtime(...) as rt:'"

    def __init__(
        self,
        store: Store,
        *,
        default_task_retention: timedelta | None,
        default_asset_retention: timedelta | None,
        max_value_bytes: int,
        max_active_tasks: int | None,
        clear_state_on_success: bool,
        wall_clock: Callable[[], float],
        isolation: str = "none",
        out_of_band_writer: str = "api",
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> None:
        self.store = store
        self.default_task_retention = default_task_retention
        self.default_asset_retention = default_asset_retention
        self.max_value_bytes = max_value_bytes
        self.max_active_tasks = max_active_tasks
        self.clear_state_on_success = clear_state_on_success
        self.wall_clock = wall_clock
        self.isolation = isolation
        #: This runtime's leases on task instances; ``.holder`` is its id in the store.
        self.leases = LeaseKeeper(lease_timeout, wall_clock=wall_clock)
        self.status = RuntimeState.UNOPENED
        self.supervisor = Supervisor(
            store,
            max_value_bytes=max_value_bytes,
            wall_clock=wall_clock,
            out_of_band=local_writer(out_of_band_writer),
        )
        self.state = StateAdmin(self)
        self.runs = RunsAdmin(self)
        self._token: trio.lowlevel.TrioToken | None = None
        self._runner: Runner | None = None
        self.admin: SupervisorClient

    def __repr__(self) -> str:
        return f"<Runtime {self.status.value} on {self.store!r}>"

    @property
    def stats(self) -> SupervisorStats:
        """Request, batch and transaction counters of the supervisor."""
        return self.supervisor.stats

    def client(self, caller: Caller) -> SupervisorClient:
        """A client for ``caller`` (the runtime binds every identity)."""
        if self._token is None:
            msg = "the runtime is not open yet; use 'async with open_runtime(...) as rt:'"
            raise RuntimeClosedError(msg)
        return SupervisorClient(self.supervisor, caller, self._token)

    def _start(self, forks: ForkServers | None = None) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self.status = RuntimeState.OPEN
        self.admin = self.client(Caller(task=None, writer=None, unrestricted=True))
        settings = RunSettings(
            default_task_retention=self.default_task_retention,
            default_asset_retention=self.default_asset_retention,
            clear_state_on_success=self.clear_state_on_success,
            max_active_tasks=self.max_active_tasks,
            wall_clock=self.wall_clock,
            isolation=self.isolation,
            forks=forks,
            leases=self.leases,
        )
        self._runner = Runner(self.supervisor, self.admin, settings)

    def _check_open(self) -> Runner:
        if self.status is RuntimeState.UNOPENED:
            msg = "the runtime is not open yet; use 'async with open_runtime(...) as rt:'"
            raise RuntimeClosedError(msg)
        if self.status is RuntimeState.CLOSED:
            msg = "the runtime is closed; open a new one with open_runtime(...)"
            raise RuntimeClosedError(msg)
        assert self._runner is not None
        return self._runner

    async def run_dag(
        self,
        dag: Dag,
        *,
        run_id: str | None = None,
        params: Mapping[str, Any] | None = None,
        on_event: Callable[[TaskInstanceEvent], None] | None = None,
    ) -> DagRunResult:
        """Run every task of ``dag`` as one Dag run.

        Args:
            dag: The Dag.
            run_id: The run's id (its task state namespace); default: a new one.
            params: Overrides of the Dag's params for this run.
            on_event: Called (in trio's thread) as instances start, retry and end.

        Returns:
            The run's result; it does not raise when tasks fail (see ``.state``).

        Raises:
            AssetConflictError: two declarations clash on an asset's name or URI.
            SupervisorDiedError: the supervisor died; every task actor was cancelled.
        """
        runner = self._check_open()
        return await runner.run_dag(dag, run_id or new_run_id(), params, on_event)

    async def run_task(
        self,
        task: Operator,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Run one task instance, ignoring its upstream tasks, with its retries, and
        record it in run ``run_id`` (as ``airflow tasks test`` runs one).

        Args:
            task: The task.
            run_id: The run whose task state the instance uses; default: a new one.
            map_index: Which mapped instance (-1 for an unmapped task).
            try_number: The first try's number (to test what a retry does); default:
                the try after the one recorded for this instance, else 1.
            params: Overrides of the Dag's params.
        """
        runner = self._check_open()
        return await runner.run_task(task, run_id or new_run_id(), map_index, try_number, params)

    async def clear(
        self,
        dag_id: str,
        run_id: str,
        task_ids: Iterable[str] | None = None,
        *,
        failed_only: bool = False,
        keep_task_state: bool = False,
    ) -> list[tuple[str, int]]:
        """Mark recorded task instances of a run to run again when the run is next run
        (resumed), as Airflow's clear does; in one transaction.

        A cleared instance's record reads ``cleared`` (its try number kept: the next try
        continues from it, with a fresh retry budget), its task state is deleted unless
        ``keep_task_state``, and the run's record reads ``queued``. Instances downstream
        of a cleared one are not cleared: name their tasks too.

        Args:
            dag_id: The Dag.
            run_id: The run.
            task_ids: Only instances (every map index) of these tasks; default: all.
            failed_only: Only instances that ``failed`` or are ``upstream_failed``.
            keep_task_state: Keep the cleared instances' task state.

        Returns:
            The ``(task_id, map_index)`` of each instance cleared, sorted.

        Raises:
            RunNotFoundError: the store has no record of the run.
        """
        self._check_open()
        if isinstance(task_ids, str):
            msg = f"task_ids is a list of task ids, got the string {task_ids!r}; use [{task_ids!r}]"
            raise TypeError(msg)
        chosen = None if task_ids is None else tuple(task_ids)
        request = m.ClearDagRun(dag_id, run_id, chosen, failed_only, keep_task_state)
        cleared = (await self.admin.request(request)).cleared
        if cleared is None:
            msg = (
                f"no run {run_id!r} of Dag {dag_id!r} is recorded, so there is nothing to "
                "clear; rt.runs.list(dag_id=...) lists its runs"
            )
            raise RunNotFoundError(msg, dag_id=dag_id, run_id=run_id)
        return list(cleared)

    async def cleanup(self, *, dry_run: bool = False) -> int:
        """Delete expired state rows; return how many (or would be, on a dry run).

        Each removed key gets a tombstone in its history; every key's history is cut to
        the runtime's ``history`` versions, and a task instance with no state left whose
        last change is older than the default task retention loses its history.
        """
        self._check_open()
        retention = self.default_task_retention
        orphans_before = (
            None if retention is None else self.wall_clock() - retention.total_seconds()
        )
        response = await self.admin.request(m.CleanupExpired(dry_run, orphans_before))
        deleted: int = response.deleted
        return deleted


@asynccontextmanager
async def open_runtime(
    db: str | os.PathLike[str] | None = None,
    *,
    store: Store | None = None,
    synchronous: str | None = None,
    busy_timeout: float | None = None,
    default_task_retention: timedelta | None = DEFAULT_TASK_RETENTION,
    default_asset_retention: timedelta | None = None,
    max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
    max_active_tasks: int | None = None,
    clear_state_on_success: bool = False,
    wall_clock: Callable[[], float] = time.time,
    isolation: str = "none",
    history: int = DEFAULT_HISTORY,
    out_of_band_writer: str = "api",
    lease_timeout: float | timedelta = DEFAULT_LEASE_TIMEOUT,
) -> AsyncIterator[Runtime]:
    """Open a runtime: its store, its supervisor, and a runner.

    Args:
        db: The store's URL or path, opened by :func:`stateward.store.open_store`:
            an SQLite file (default ``$STATEWARD_DB``, then ``./stateward.db``) or
            ``sqlite:///path``; ``"memory:"`` (or ``":memory:"``) for a MemoryStore; a
            ``postgresql://user:password@host/db`` URL for a PostgresStore
            (``pip install 'stateward[postgres]'``).
        store: A store object instead of ``db`` (e.g. ``MemoryStore()``).
        synchronous: SQLite durability: ``"FULL"`` (the default), ``"NORMAL"``, ...
            (SQLite only).
        busy_timeout: Seconds to wait for another process's write lock (SQLite only;
            default 5).
        default_task_retention: How long task state is kept when ``set`` gives no
            retention (30 days; None: forever).
        default_asset_retention: Likewise for asset state (default: forever).
        max_value_bytes: The largest value accepted, JSON-encoded (64 KiB).
        max_active_tasks: A cap on concurrent attempts in every run (the Dag's own
            ``max_active_tasks`` applies too).
        clear_state_on_success: Default for tasks that do not set it.
        wall_clock: Unix time now (expiry, ``updated_at``); tests may replace it.
        isolation: Where attempts of tasks that do not choose run: ``"none"`` (in
            this process, the default) or ``"process"`` (each in a child process; see
            docs/isolation.md).
        history: How many versions of each task-state and asset-state key to keep
            (``acc.history(key)``, rollback); 0 keeps none.
        out_of_band_writer: What history names as the writer of ``rt.state`` changes
            (with the OS user and host): ``"api"`` (the default), ``"cli"`` or ``"test"``.
        lease_timeout: How long this runtime keeps a task instance it runs once it
            stops renewing its leases (they are renewed every third of it), in seconds
            or as a ``timedelta``; another runtime on the same run then takes the
            instance over (see docs/runs.md). Default 30 seconds.

    Yields:
        The open :class:`Runtime`. Leaving the block waits for nothing: runs are
        awaited inside it. The store is closed on exit.
    """
    if not isinstance(max_value_bytes, int) or max_value_bytes < 1:
        msg = f"max_value_bytes must be a positive int, got {max_value_bytes!r}"
        raise ValueError(msg)
    if isolation not in ISOLATION_MODES:
        msg = f"isolation must be one of {list(ISOLATION_MODES)}, got {isolation!r}"
        raise ValueError(msg)
    lease_seconds = check_lease_timeout(lease_timeout)
    if store is not None and db is not None:
        msg = "open_runtime() takes db= or store=, not both"
        raise TypeError(msg)
    if type(history) is not int or history < 0:
        msg = f"history must be an int >= 0 (versions kept per key; 0: none), got {history!r}"
        raise ValueError(msg)
    if out_of_band_writer not in OUT_OF_BAND_WRITERS:
        msg = (
            f"out_of_band_writer must be one of {list(OUT_OF_BAND_WRITERS)}, "
            f"got {out_of_band_writer!r}"
        )
        raise ValueError(msg)
    if store is None:
        given: dict[str, Any] = {"synchronous": synchronous, "busy_timeout": busy_timeout}
        options = {name: value for name, value in given.items() if value is not None}
        store = open_store(db if db is not None else default_db(), **options)
    runtime = Runtime._create(
        store,
        default_task_retention=default_task_retention,
        default_asset_retention=default_asset_retention,
        max_value_bytes=max_value_bytes,
        max_active_tasks=max_active_tasks,
        clear_state_on_success=clear_state_on_success,
        wall_clock=wall_clock,
        isolation=isolation,
        out_of_band_writer=out_of_band_writer,
        lease_timeout=lease_seconds,
    )
    store.history = history  # type: ignore[attr-defined]  # every stateward store has it
    try:
        # Attempts' output is captured while the runtime is open (see .capture).
        with installed():
            async with store, trio.open_nursery() as nursery:
                await nursery.start(_serve_quietly, runtime.supervisor)
                forks = ForkServers(nursery)
                runtime._start(forks)
                runtime.leases.keep_when_needed(nursery, runtime.admin)
                try:
                    yield runtime
                finally:
                    runtime.status = RuntimeState.CLOSED
                    await forks.aclose()
                    runtime.leases.stop()
                    await _release_leases(runtime)
                    runtime.supervisor.close()
    except BaseExceptionGroup as group:
        # The supervisor never raises into the nursery, so a group holds the error of
        # the caller's own block: give it back as it was raised.
        raise_sole(group)
    if runtime.supervisor.failure is not None:
        raise runtime.supervisor.died_error() from runtime.supervisor.failure


async def _release_leases(runtime: Runtime) -> None:
    """Give up the leases of attempts the closing runtime left (cancelled, or a run the
    caller abandoned), so a resume need not wait for them to expire."""
    if not runtime.leases.holding:
        return
    # A store that fails here leaves them to expire.
    with (
        trio.CancelScope(shield=True),
        trio.move_on_after(GIVE_UP_SECONDS),
        suppress(StatewardError),
    ):
        await runtime.admin.request(m.ReleaseTaskLeases(runtime.leases.holder))


async def _serve_quietly(
    supervisor: Supervisor, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    # A supervisor that dies is reported by the runs it stops and on leaving the
    # runtime, as SupervisorDiedError; it must not cancel the caller's own code.
    try:
        await supervisor.serve(task_status=task_status)
    except (trio.Cancelled, KeyboardInterrupt, SystemExit):
        raise
    except BaseException:
        return


def run_dag(
    dag: Dag,
    *,
    db: str | os.PathLike[str] | None = None,
    store: Store | None = None,
    run_id: str | None = None,
    params: Mapping[str, Any] | None = None,
    **runtime_options: Any,
) -> DagRunResult:
    """Run ``dag`` once, synchronously, in a runtime of its own (for scripts).

    Takes the arguments of :func:`open_runtime` and :meth:`Runtime.run_dag`.
    """

    async def main() -> DagRunResult:
        async with open_runtime(db, store=store, **runtime_options) as rt:
            return await rt.run_dag(dag, run_id=run_id, params=params)

    return trio.run(main)
