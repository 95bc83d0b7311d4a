"""Runs task instances: their attempts (:mod:`stateward._runtime.attempt`) and retries.

Every task instance is a task actor: a trio task holding a client bound to its
identity. Independent tasks run concurrently, at most ``max_active_tasks`` attempts of
a run at once; a task starts when all its upstream tasks succeeded, and is
``upstream_failed`` (not run) if one of them did not.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Final

import attrs
import trio

from .._assets import Asset, AssetAlias, AssetNameRef, AssetUriRef, describe
from .._construction import NoPublicConstructor
from .._context.context import OutletEventAccessors
from .._dag import Dag, Operator
from .._errors import (
    RecordedTaskError,
    StatewardError,
    StoreError,
    SupervisorDiedError,
    UndeclaredAssetError,
    UpstreamResultError,
)
from .._items import MappedItem, instance_item
from .._protocol import messages as m
from .._records import AssetInfo, DagRunRecord, Lease, LeaseAnswer, TaskInstanceRecord
from .._states import DagRunState, TaskInstanceState
from ..store.base import TaskScope, Writer
from .arguments import bind_upstream, has_references, maps_at_run_time
from .attempt import AttemptSpec, event_messages, run_attempt
from .capture import AttemptLog, capturing
from .client import SupervisorClient
from .leases import DEFAULT_LEASE_TIMEOUT, Holding, LeaseKeeper
from .recording import Recorder, dag_graph
from .supervisor import Caller, Envelope, Supervisor

if TYPE_CHECKING:
    from .forkserver import ForkServers

#: Retries and failures of task instances are logged here (WARNING and ERROR).
logger = logging.getLogger("stateward.runner")

#: Seconds between records of a running attempt's output (only of attempts that wrote
#: something since the last), so ``stateward logs --follow`` sees it as it comes.
LOG_FLUSH_INTERVAL: Final = 1.0
#: How many bytes a second a running attempt's progress records may cost at most: each
#: carries the whole log so far, so a larger log is recorded less often (a full 1 MiB
#: log every 4 s), however often it grows.
LIVE_LOG_BYTES_PER_SECOND: Final = 256 * 1024

#: The most items of an expansion one record carries (a bigger one is split).
ITEMS_PER_RECORD: Final = 1024
#: A worker whose last instance's attempt took less than this (seconds) asks for its
#: next instance's lease while the current one runs, instead of after it: for such
#: tasks the acquisition's commit is a large part of the instance's time (a third in a
#: 10,000-instance run, whose attempts take 30-55 ms on a loaded 2-core machine). The
#: next instance's lease is then held, and its attempt recorded running, up to this
#: long before its code starts (its end record gives the time it started).
AHEAD_BELOW: Final = 0.25
#: How often (seconds) a mapped task's workers are looked at: an instance taken ahead
#: is handed off once the current attempt has run AHEAD_BELOW, and end records answered
#: meanwhile are settled.
WATCH_INTERVAL: Final = 0.025

#: How long a run call that ends by an error, or a closing runtime, waits for the store
#: to give up its leases (a store that does not answer in time leaves them to expire).
GIVE_UP_SECONDS: Final = 5.0

SUCCESS = TaskInstanceState.SUCCESS
FAILED = TaskInstanceState.FAILED
UPSTREAM_FAILED = TaskInstanceState.UPSTREAM_FAILED


@attrs.frozen
class Attempt:
    """One try of a task instance."""

    try_number: int
    #: Rendered template fields of this try (field name to value).
    rendered: dict[str, Any]
    #: The exception the try raised, or ``None``.
    error: BaseException | None
    #: Seconds the try took.
    duration: float
    #: What the try printed and logged (a command's output too), bounded: see
    #: :class:`~stateward._runtime.capture.AttemptLog`.
    log: str = ""


@attrs.frozen(kw_only=True)
class TaskInstanceResult(metaclass=NoPublicConstructor):
    """How one task instance ended; only the runtime makes one."""

    _how_to_get: ClassVar[str] = (
        "rt.run_task(...) returns one, and a DagRunResult gives each of its instances' "
        "with .ti(task_id, map_index)"
    )

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    #: ``SUCCESS``, ``FAILED`` or ``UPSTREAM_FAILED`` (equal to ``"success"``, ...).
    state: TaskInstanceState
    #: Attempts made, from 1 (0 when the instance never ran).
    try_number: int
    #: What ``execute`` (or the function) returned on success.
    result: Any = None
    #: The last attempt's exception, or ``None``.
    error: BaseException | None = None
    #: The last attempt's rendered template fields.
    rendered: dict[str, Any] = attrs.Factory(dict)
    #: Every attempt, in order.
    attempts: tuple[Attempt, ...] = ()

    @property
    def log(self) -> str:
        """What the last attempt printed and logged (``""`` when the instance never ran)."""
        return self.attempts[-1].log if self.attempts else ""

    @property
    def duration(self) -> float:
        """Seconds spent in all attempts."""
        return sum(a.duration for a in self.attempts)


@attrs.frozen
class DagRunResult(metaclass=NoPublicConstructor):
    """How a Dag run ended: ``.state`` and each instance through :meth:`ti`.

    Only the runtime makes one.
    """

    _how_to_get: ClassVar[str] = "rt.run_dag(...) (or stateward.run_dag(...)) returns one"

    dag_id: str
    run_id: str
    #: ``SUCCESS`` when every task instance succeeded, else ``FAILED`` (equal to
    #: ``"success"``, ``"failed"``).
    state: DagRunState
    task_instances: tuple[TaskInstanceResult, ...]

    def ti(self, task_id: str, map_index: int = -1) -> TaskInstanceResult:
        """The result of one task instance.

        Raises:
            KeyError: no such instance; the message lists the ones there are.
        """
        for ti in self.task_instances:
            if ti.task_id == task_id and ti.map_index == map_index:
                return ti
        known = sorted({(t.task_id, t.map_index) for t in self.task_instances})
        msg = f"run {self.run_id!r} has no task instance ({task_id!r}, {map_index}); it has {known}"
        raise KeyError(msg)

    @property
    def failed(self) -> list[TaskInstanceResult]:
        """The instances that did not succeed."""
        return [ti for ti in self.task_instances if ti.state != SUCCESS]


@attrs.frozen
class TaskInstanceEvent:
    """A progress event: an instance started a try, or finished (for the CLI)."""

    task_id: str
    map_index: int
    #: ``RUNNING``, ``UP_FOR_RETRY``, or a final state.
    state: TaskInstanceState
    try_number: int


@attrs.frozen
class RunSettings:
    """What the runtime fixes for every run."""

    default_task_retention: timedelta | None
    default_asset_retention: timedelta | None
    clear_state_on_success: bool
    max_active_tasks: int | None
    wall_clock: Callable[[], float]
    #: Where attempts of tasks that do not choose run: ``"none"`` or ``"process"``.
    isolation: str = "none"
    #: The runtime's fork servers, which start isolated attempts (None: fresh processes).
    forks: ForkServers | None = None
    #: The runtime's leases (its id, their timeout and renewal).
    leases: LeaseKeeper = attrs.Factory(lambda: LeaseKeeper(DEFAULT_LEASE_TIMEOUT))


def _state_after(attempt: Attempt, try_number: int, max_tries: int) -> str:
    """The instance's state once try ``try_number`` of ``max_tries`` ended as ``attempt``."""
    if attempt.error is None:
        return SUCCESS
    return FAILED if try_number >= max_tries else TaskInstanceState.UP_FOR_RETRY


class Runner:
    """Runs Dags and task instances against one supervisor."""

    def __init__(
        self, supervisor: Supervisor, admin: SupervisorClient, settings: RunSettings
    ) -> None:
        self._supervisor = supervisor
        self._admin = admin
        self._settings = settings
        self._token = trio.lowlevel.current_trio_token()

    # -- a whole Dag ----------------------------------------------------------------------

    async def run_dag(
        self,
        dag: Dag,
        run_id: str,
        params: Mapping[str, Any] | None = None,
        on_event: Callable[[TaskInstanceEvent], None] | None = None,
    ) -> DagRunResult:
        """Run every task of ``dag`` once (with retries) as run ``run_id``."""
        order = dag.topological_order()
        assets = await self._declare(dag)
        run = _Run(dag, run_id, {**dag.params, **(params or {})}, assets, on_event)
        recorder = Recorder(self._admin, self._settings.wall_clock, dag.dag_id, run_id)
        run.recorder = recorder
        earlier = (await self._admin.request(m.GetDagRun(dag.dag_id, run_id))).run
        succeeded, seen = _resume_points(earlier)
        instances = [(t.task_id, i) for t in order for i in _known_indices(t, succeeded)]
        if earlier is not None and all(key in succeeded for key in instances):
            # Every instance succeeded before: nothing to run, nothing to write.
            done_results = [_recorded_result(dag.dag_id, run_id, succeeded[k]) for k in instances]
            return DagRunResult._create(
                dag.dag_id, run_id, DagRunState.SUCCESS, tuple(done_results)
            )
        started_at = self._settings.wall_clock() if earlier is None else earlier.started_at
        await recorder.run("running", started_at, graph=dag_graph(dag))
        limit = min(dag.max_active_tasks, self._settings.max_active_tasks or dag.max_active_tasks)
        run.limiter = trio.CapacityLimiter(limit)
        done = {task.task_id: trio.Event() for task in order}
        outcome: dict[str, TaskInstanceState] = {}

        async def run_task(task: Operator) -> None:
            for upstream in task.upstream_task_ids:
                await done[upstream].wait()
            indices = [-1] if maps_at_run_time(task) else _map_indices(task)
            if any(outcome[up] != SUCCESS for up in task.upstream_task_ids):
                for index in indices:
                    run.results.append(
                        TaskInstanceResult._create(
                            dag_id=dag.dag_id,
                            run_id=run_id,
                            task_id=task.task_id,
                            map_index=index,
                            state=UPSTREAM_FAILED,
                            try_number=0,
                        )
                    )
                    await recorder.not_run(task.task_id, index, UPSTREAM_FAILED)
                    run.emit(task.task_id, index, UPSTREAM_FAILED, 0)
                outcome[task.task_id] = UPSTREAM_FAILED
            else:
                try:
                    task = self._bind_upstream(task, run, succeeded)
                except UpstreamResultError as exc:
                    result = _not_started(dag.dag_id, run_id, task.task_id, exc)
                    run.results.append(result)
                    await recorder.not_run(task.task_id, -1, FAILED)
                    run.emit(task.task_id, -1, FAILED, 0)
                    outcome[task.task_id] = FAILED
                    done[task.task_id].set()
                    return
                indices = _map_indices(task)
                states: list[TaskInstanceState] = []
                if task.is_mapped:
                    to_run = [i for i in indices if (task.task_id, i) not in succeeded]
                    await run.record_items(task, to_run)

                def finish(result: TaskInstanceResult) -> None:
                    run.items.pop((task.task_id, result.map_index), None)  # tries over
                    run.results.append(result)
                    states.append(result.state)

                async def run_one(
                    index: int, nursery: trio.Nursery, previous: _Ending | None,
                    lane: _Lane | None = None, ahead: _Ahead | None = None,
                ) -> _Ending | None:  # fmt: skip
                    """Run instance ``index`` for a worker (``lane``: its next instance,
                    asked for ahead), which settles ``previous`` (its last instance's
                    end record) on the way; return this one's last end record if it is
                    still on its way. ``ahead``: this instance's acquisition, asked for
                    while the worker's last one ran."""
                    before = succeeded.get((task.task_id, index))
                    if before is not None:
                        if previous is not None:
                            await previous.settle()
                        finish(_recorded_result(dag.dag_id, run_id, before))
                        return None
                    seen_try = seen.get((task.task_id, index), 0)
                    found = await self._run_leased(
                        run, task, index, seen_try, previous, ahead=ahead, lane=lane
                    )
                    if isinstance(found, TaskInstanceResult | _Ending) and found.attempts:
                        pace.last = found.attempts[-1].duration
                    if found is None:
                        # Another runtime holds it: waited for in a task of its own,
                        # so this worker goes on with the next instance.
                        nursery.start_soon(wait_for, index, ())
                        return None
                    if isinstance(found, _Ending):
                        found.then = functools.partial(settled, found, nursery)
                        return found
                    finish(found)
                    return None

                async def wait_for(index: int, tried: tuple[Attempt, ...]) -> None:
                    """Run instance ``index`` in a task of its own, waiting for another
                    runtime's attempt at it to end first (``tried``: this call's)."""
                    seen_try = seen.get((task.task_id, index), 0)
                    found = await self._run_leased(run, task, index, seen_try, tried=tried)
                    assert isinstance(found, TaskInstanceResult)
                    finish(found)

                def settled(ending: _Ending, nursery: trio.Nursery, recorded: bool) -> None:
                    result = self._settled(run, task, ending, recorded)
                    if result is not None:
                        finish(result)
                    else:  # the try lost its instance: waited for like a held one
                        nursery.start_soon(wait_for, ending.map_index, ending.attempts[:-1])

                # As many workers as the run has slots take the instances in turn
                # (rather than a task per instance, all waiting for a slot at once).
                pending = iter(self._settings.leases.start_order(indices))

                pace = _Pace()

                def take_ahead() -> _Ahead | None:
                    """The worker's next instance, its acquisition queued now (while
                    the current one runs), if this task's attempts are quick."""
                    if pace.last >= AHEAD_BELOW:
                        return None
                    index = next(pending, None)
                    if index is None:
                        return None
                    if (task.task_id, index) in succeeded:
                        return _Ahead(index, None)  # nothing to acquire
                    keeper = self._settings.leases
                    try:
                        envelope = recorder.submit_acquire(
                            task.task_id, index, keeper.holder, keeper.timeout,
                            seen.get((task.task_id, index), 0), self._settings.wall_clock(),
                        )  # fmt: skip
                    except StatewardError:
                        envelope = None  # closing: acquired in turn, which will say so
                    else:
                        keeper.unnamed = True
                    return _Ahead(index, envelope)

                async def alone(ahead: _Ahead, nursery: trio.Nursery) -> None:
                    """Run an instance a worker asked for ahead, in a task of its own
                    (the worker waits to retry its current one)."""
                    ending = await run_one(ahead.index, nursery, None, None, ahead)
                    if ending is not None:
                        await ending.settle()

                lanes: set[_Lane] = set()
                watching = trio.CancelScope()

                async def worker(nursery: trio.Nursery) -> None:
                    ending = None
                    lane = _Lane(take_ahead, functools.partial(start_alone, nursery=nursery))
                    lanes.add(lane)
                    try:
                        while True:
                            ahead, lane.ahead = lane.ahead, None
                            index = next(pending, None) if ahead is None else ahead.index
                            if index is None:
                                break
                            ending = await run_one(index, nursery, ending, lane, ahead)
                        if ending is not None:
                            await ending.settle()
                    finally:
                        lanes.discard(lane)
                        if not lanes:
                            watching.cancel()

                def start_alone(ahead: _Ahead, nursery: trio.Nursery) -> None:
                    nursery.start_soon(alone, ahead, nursery)

                async def watch_lanes() -> None:
                    """Every WATCH_INTERVAL: hand off the instance a worker took
                    ahead if its current attempt has run longer than that (it was
                    not quick after all), and settle end records answered meanwhile
                    that a worker left to settle after its attempt."""
                    with watching:
                        while True:
                            await trio.sleep(WATCH_INTERVAL)
                            now = trio.current_time()
                            for lane in list(lanes):
                                lane.watch(now)

                async with trio.open_nursery() as nursery:
                    for _ in range(min(len(indices), limit)):
                        nursery.start_soon(worker, nursery)
                    if len(indices) > 1:
                        nursery.start_soon(watch_lanes)
                outcome[task.task_id] = SUCCESS if all(s == SUCCESS for s in states) else FAILED
            done[task.task_id].set()

        def start(nursery: trio.Nursery) -> None:
            for task in order:
                nursery.start_soon(run_task, task)

        await self._watched_run(run, start)
        all_succeeded = all(ti.state == SUCCESS for ti in run.results)
        state = DagRunState.SUCCESS if all_succeeded else DagRunState.FAILED
        await recorder.run(state, started_at, self._settings.wall_clock())
        position = {task.task_id: i for i, task in enumerate(order)}
        ordered = sorted(run.results, key=lambda ti: (position[ti.task_id], ti.map_index))
        return DagRunResult._create(dag.dag_id, run_id, state, tuple(ordered))

    def _bind_upstream(
        self, task: Operator, run: _Run, succeeded: Mapping[tuple[str, int], TaskInstanceRecord]
    ) -> Operator:
        """``task`` with the upstream results it takes (TaskFlow; see ``arguments``)."""
        if not has_references(task):
            return task
        if (task.isolation or self._settings.isolation) == "process":
            msg = (
                f"task {task.task_id!r} takes upstream results (TaskFlow arguments or an "
                "expand() over a task's result), which are not passed to a task process "
                "yet; give it isolation='none'"
            )
            raise UpstreamResultError(msg, task=task.task_id)
        outputs = {(ti.task_id, ti.map_index): ti.result for ti in run.results}
        unkept = {
            key: repr(ti.attempts[-1].result)
            for key, ti in succeeded.items()
            if ti.attempts and not ti.attempts[-1].result_is_json
        }
        return bind_upstream(task, outputs, unkept)

    async def run_task(
        self,
        task: Operator,
        run_id: str,
        map_index: int = -1,
        try_number: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Run one task instance (ignoring its upstream tasks), from try ``try_number``
        (``None``: the try after the recorded one), and record it in run ``run_id``."""
        if has_references(task):
            msg = (
                f"{task!r} takes the results of upstream tasks (TaskFlow), and run_task "
                "runs one instance without them; run the Dag (rt.run_dag), or call the "
                "task's function with the arguments you want to test"
            )
            raise UpstreamResultError(msg, task=task.task_id)
        dag = task.dag
        indices = _map_indices(task)
        if map_index not in indices:
            msg = f"{task!r} has no map_index {map_index}; " + (
                f"it has 0..{len(indices) - 1}" if task.is_mapped else "it is not mapped (-1)"
            )
            raise ValueError(msg)
        if try_number is not None and try_number < 1:
            msg = f"try_number counts from 1, got {try_number!r}"
            raise ValueError(msg)
        assets = await self._declare(dag)
        run = _Run(dag, run_id, {**dag.params, **(params or {})}, assets, None)
        run.limiter = trio.CapacityLimiter(1)
        recorder = Recorder(self._admin, self._settings.wall_clock, dag.dag_id, run_id)
        run.recorder = recorder
        # The run's instances without their attempts: what this needs, at a cost that
        # does not grow with the tries made in the run.
        request = m.GetDagRun(dag.dag_id, run_id, attempts=False)
        earlier = (await self._admin.request(request)).run
        instances = earlier.instances if earlier is not None else ()
        key = (task.task_id, map_index)
        seen_try = next((ti.try_number for ti in instances if (ti.task_id, ti.map_index) == key), 0)
        started_at = self._settings.wall_clock() if earlier is None else earlier.started_at
        await recorder.run("running", started_at, graph=dag_graph(dag))
        results: list[TaskInstanceResult] = []

        async def one() -> None:
            # Leased as a run's instances are: the store numbers the try (unless one
            # is chosen), an attempt of another call or runtime is waited for, and
            # every write of the attempt is fenced.
            found = await self._run_leased(
                run, task, map_index, seen_try, tried=(), again=True, first_try=try_number
            )
            assert isinstance(found, TaskInstanceResult)
            results.append(found)

        def start(nursery: trio.Nursery) -> None:
            nursery.start_soon(one)

        await self._watched_run(run, start)
        result = results[0]
        state: str = DagRunState.FAILED
        if result.state == SUCCESS and not any(maps_at_run_time(t) for t in dag.tasks.values()):
            # Every instance of the Dag is known here: the store decides the run's state
            # from their records, in the transaction that records it.
            instances = tuple((t.task_id, i) for t in dag.tasks.values() for i in _map_indices(t))
            await recorder.ended_run(started_at, instances)
            return result
        if result.state == SUCCESS:
            # The run succeeded only if every instance of the Dag has; otherwise the
            # next run of this run id resumes it ("queued"). The read is served after
            # the records queued so far, so it sees this instance's.
            after = (await self._admin.request(request)).run
            # None: the store refused to record the run (records never fail a run).
            finished = () if after is None else after.instances
            done = {(ti.task_id, ti.map_index) for ti in finished if ti.state == SUCCESS}
            recorded = {(ti.task_id, ti.map_index): ti for ti in finished}
            every = {
                (t.task_id, i) for t in dag.tasks.values() for i in _known_indices(t, recorded)
            }
            state = DagRunState.SUCCESS if every <= done else "queued"
        await recorder.run(state, started_at, self._settings.wall_clock())
        return result

    async def _watched(
        self,
        start: Callable[[trio.Nursery], None],
        background: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Run the tasks ``start`` spawns; cancel them all if the supervisor dies.
        ``background`` runs beside them and is cancelled when they are done."""
        supervisor = self._supervisor
        died = False

        async def watch(scope: trio.CancelScope) -> None:
            nonlocal died
            await supervisor.stopped.wait()
            died = True
            scope.cancel()

        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(watch, outer.cancel_scope)
                if background is not None:
                    outer.start_soon(background)
                async with trio.open_nursery() as inner:
                    start(inner)
                outer.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Task actors that were answered "supervisor died" raise it: report it once,
            # as SupervisorDiedError, not as a group nested per nursery.
            if group.split(SupervisorDiedError)[1] is not None:
                raise
            died = True
        if died:
            raise supervisor.died_error() from supervisor.failure

    async def _watched_run(self, run: _Run, start: Callable[[trio.Nursery], None]) -> None:
        """:meth:`_watched` for a run call, with its log flusher beside it; a call that
        ends by an error gives up the leases it still holds (:meth:`_give_up_leases`)."""
        try:
            await self._watched(start, run.flush_logs)
        except BaseException:
            await self._give_up_leases(run)
            raise

    async def _give_up_leases(self, run: _Run) -> None:
        """Give up the leases a run call that ends by an error (cancelled, the
        supervisor died) still holds, or was taking: no attempt of the call runs any
        more, so its instances are free at once for a resume, in this runtime or
        another, instead of held (and renewed, while the runtime holds other leases)
        until they expire. Their attempts stay recorded ``running``; the acquisition
        that resumes one records it ``abandoned``."""
        keeper = self._settings.leases
        recorder = run.recorder
        assert recorder is not None
        held = keeper.taken_by(run)
        for holding in held:
            keeper.drop(holding)
        given = tuple((*h.lease.instance, h.lease.try_number) for h in held)
        released = False
        with trio.CancelScope(shield=True), trio.move_on_after(GIVE_UP_SECONDS):
            try:
                # Queued at once: the answers to the unclaimed acquisitions may wait
                # behind a slow batch, and this is applied after them, in order.
                first = self._admin.submit(m.ReleaseTaskLeases(keeper.holder, given))
                dag_id, run_id = run.dag.dag_id, run.run_id
                taken = tuple((dag_id, run_id, *t) for t in await recorder.unclaimed())
                if taken:
                    await self._admin.request(m.ReleaseTaskLeases(keeper.holder, taken))
                await self._admin.response(first)
                released = True
            except StatewardError:
                pass  # the store failed, or the runtime is closing or its supervisor died
        if not released:
            keeper.unnamed = True  # closing the runtime gives them up instead

    async def _declare(self, dag: Dag) -> dict[object, AssetInfo]:
        """Register the Dag's assets; return each declared asset-like's concrete asset."""
        concrete: dict[object, AssetInfo] = {}
        for task in dag.tasks.values():
            for item in (*task.inlets, *task.outlets):
                if isinstance(item, Asset):
                    concrete[item] = AssetInfo(item.name, item.uri)
        # Registering writes (and needs the write lock); an asset already registered
        # with the same name and URI needs only a read, so a run can start while another
        # process holds the lock, and its tasks' retry policies apply to what follows.
        unknown = []
        for info in dict.fromkeys(concrete.values()):
            if (await self._admin.request(m.GetAssetByRef(name=info.name))).asset != info:
                unknown.append(info)
        if unknown:
            await self._admin.request(m.DeclareAssets(tuple(unknown)))
        for task in dag.tasks.values():
            for item in (*task.inlets, *task.outlets):
                if isinstance(item, AssetNameRef | AssetUriRef) and item not in concrete:
                    name = item.name if isinstance(item, AssetNameRef) else None
                    uri = item.uri if isinstance(item, AssetUriRef) else None
                    found = (await self._admin.request(m.GetAssetByRef(name, uri))).asset
                    if found is None:
                        msg = (
                            f"task {task.task_id!r} declares {describe(item)}, but no such "
                            "asset is known; declare the Asset itself in some task first"
                        )
                        raise UndeclaredAssetError(msg, asset=item)
                    concrete[item] = found
        return concrete

    # -- one task instance ------------------------------------------------------------------

    async def _run_leased(
        self, run: _Run, task: Operator, map_index: int, seen_try: int,
        previous: _Ending | None = None, tried: tuple[Attempt, ...] | None = None,
        *, ahead: _Ahead | None = None, lane: _Lane | None = None, again: bool = False,
        first_try: int | None = None,
    ) -> TaskInstanceResult | _Ending | None:  # fmt: skip
        """Run a recorded instance's tries while this runtime holds its lease.

        Each try starts by taking the lease (with a slot): the store gives the try
        number, continuing the record's, with a fresh budget of ``retries`` retries. An
        instance another live runtime holds is waited for, without a slot, until it
        finishes (its recorded result is this call's) or its holder's lease expires (it
        is taken over). A try whose end is refused lost the instance to another runtime,
        and is waited for likewise.

        For a worker (``tried`` None) this returns ``None`` at once if the first
        acquisition finds another runtime holding the instance, and the last try's
        end record still on its way (an :class:`_Ending`); ``previous``, the worker's
        last one, is settled once this instance's first acquisition is answered (or,
        if that acquisition was asked for ahead, of its record, once this try's end is
        queued). ``ahead`` is this instance's first acquisition, asked for while the
        worker's last instance ran; the worker's ``lane`` asks for its next one
        once this one's is taken, and hands it off to a task of its own if this
        instance is to wait (a retry, another runtime). For a task waiting for the
        instance (``tried``: the tries made so far), it returns the instance's result.
        ``again`` (``rt.run_task``): the first try runs whatever the instance's record
        says, as try ``first_try`` if given, once no other attempt holds it.
        """
        recorder = run.recorder
        assert recorder is not None
        keeper = self._settings.leases
        label = functools.partial(run.label, task.task_id, map_index)  # made when logged
        defer = tried is None
        attempts = list(tried or ())
        result: Any = None
        max_tries: int | None = None
        unleased = False
        warned = False  # that a one-instance run waits (said once)
        while True:
            async with _Slot(run.limiter):
                started_at = self._settings.wall_clock()
                try:
                    if ahead is not None and ahead.envelope is not None:
                        envelope, ahead = ahead.envelope, None
                        answer = await recorder.acquired(envelope)
                    else:
                        answer = await recorder.acquire(
                            task.task_id, map_index, keeper.holder, keeper.timeout,
                            seen_try, started_at, again=again, try_number=first_try,
                        )  # fmt: skip
                except StoreError as exc:
                    if not exc.affects_all:
                        # The store refuses writes (a read-only file): no runtime can
                        # hold a lease or record anything, so the instance runs as it
                        # did before records existed (its reads may still work).
                        logger.warning("%s runs without a lease: %s", label(), exc)
                        unleased = True
                    else:
                        # Another process held the store's lock past the timeout: not a
                        # verdict on the instance; look again.
                        logger.warning("%s could not take its lease yet: %s", label(), exc)
                    answer = LeaseAnswer("held", 0)
                if previous is not None:
                    if answer.outcome != "acquired" or previous.envelope.response is not None:
                        # Its record was queued before this acquisition (unless that
                        # was asked for ahead): answered by now.
                        await previous.settle()
                    else:  # settled when answered (watched), or after this try
                        assert lane is not None
                        lane.previous = previous
                    previous = None
                if answer.outcome == "acquired":
                    try_number = answer.try_number
                    again, first_try = False, None  # its retries are the next tries
                    if max_tries is None:
                        max_tries = try_number + task.retries
                    holding = keeper.hold(
                        Lease(run.dag.dag_id, run.run_id, task.task_id, map_index,
                              keeper.holder, try_number),
                        owner=run,
                    )  # fmt: skip
                    run.emit(task.task_id, map_index, TaskInstanceState.RUNNING, try_number)
                    if lane is not None and lane.ahead is None:
                        lane.ahead = lane.take()  # its commit overlaps this attempt
                        lane.since = trio.current_time()
                    log = AttemptLog()
                    live = _LiveLog(
                        task.task_id, map_index, try_number, started_at, log, keeper.holder
                    )
                    run.add_live(live)
                    try:
                        attempt, result = await self._attempt(
                            run, task, map_index, try_number, max_tries, log, holding
                        )
                    finally:
                        run.live.discard(live)
                    after = _state_after(attempt, try_number, max_tries)
                    holding.ending = True
                    ending = await recorder.attempt_ended(
                        task.task_id, map_index, after, try_number, started_at,
                        attempt.rendered, attempt.error, result, attempt.log, keeper.holder,
                    )  # fmt: skip
                    if lane is not None:
                        lane.since = None
                        if lane.previous is not None:  # queued before this try's requests
                            left, lane.previous = lane.previous, None
                            await left.settle()
            if unleased:
                first = first_try or seen_try + 1
                return await self._run_instance(run, task, map_index, first, first + task.retries)
            if answer.outcome == "finished":
                assert answer.instance is not None
                logger.debug("%s was finished by another runtime", label())
                done = _recorded_result(run.dag.dag_id, run.run_id, answer.instance)
                run.emit(task.task_id, map_index, done.state, done.try_number)
                return done
            if answer.outcome == "held":
                if defer and not attempts:
                    return None
                if again and answer.holder is not None and not warned:
                    warned = True
                    logger.warning(
                        "%s is being run by another attempt (runtime %s); waiting for it "
                        "to end", label(), answer.holder,
                    )  # fmt: skip
                if lane is not None:
                    lane.hand_off()
                instance = (run.dag.dag_id, run.run_id, task.task_id, map_index)
                await keeper.wait_unheld(instance, seen_try)
                continue
            assert ending is not None
            assert max_tries is not None
            attempts.append(attempt)
            final = attempt.error is None or try_number >= max_tries
            if final and defer:
                # The worker goes on; the next acquisition brings the verdict.
                return _Ending(recorder, ending, holding, tuple(attempts), result)
            if not await recorder.ended(ending):
                self._lost(holding, label())
                attempts.pop()
                max_tries = None
                continue
            if final:
                keeper.drop(holding)
                break
            logger.warning(
                "%s try %d of %d failed, retrying in %gs: %s: %s",
                label(), try_number, max_tries, task.retry_delay,
                type(attempt.error).__name__, attempt.error,
            )  # fmt: skip
            run.emit(task.task_id, map_index, TaskInstanceState.UP_FOR_RETRY, try_number)
            if lane is not None:
                lane.hand_off()
            await trio.sleep(task.retry_delay)
        return self._finished(run, task, map_index, attempts, result)

    def _settled(
        self, run: _Run, task: Operator, ending: _Ending, recorded: bool
    ) -> TaskInstanceResult | None:
        """The result of an instance whose last try's end record (``ending``) was
        answered; ``None`` if it was refused: the try lost the instance."""
        if not recorded:
            self._lost(ending.holding, run.label(task.task_id, ending.map_index))
            return None
        self._settings.leases.drop(ending.holding)
        return self._finished(run, task, ending.map_index, list(ending.attempts), ending.result)

    def _lost(self, holding: Holding, label: str) -> None:
        """Forget the lease of a try whose end record was refused (stale)."""
        self._settings.leases.drop(holding)
        logger.warning(
            "%s try %d lost its lease to another runtime, which runs the instance "
            "now; waiting for it to finish", label, holding.lease.try_number,
        )  # fmt: skip

    def _finished(
        self, run: _Run, task: Operator, map_index: int, attempts: list[Attempt], result: Any
    ) -> TaskInstanceResult:
        """The result of an instance whose tries ended (``attempts``: this call's)."""
        last = attempts[-1]
        try_number = last.try_number
        state = SUCCESS if last.error is None else FAILED
        if last.error is not None:
            logger.error(
                "%s failed after %d %s", run.label(task.task_id, map_index), try_number,
                "try" if try_number == 1 else "tries", exc_info=last.error,
            )  # fmt: skip
        elif logger.isEnabledFor(logging.DEBUG):  # the label is not made for nothing
            logger.debug("%s succeeded on try %d", run.label(task.task_id, map_index), try_number)
        run.emit(task.task_id, map_index, state, try_number)
        return TaskInstanceResult._create(
            dag_id=run.dag.dag_id, run_id=run.run_id, task_id=task.task_id,
            map_index=map_index, state=state, try_number=try_number,
            result=result if state == SUCCESS else None, error=last.error,
            rendered=last.rendered, attempts=tuple(attempts),
        )  # fmt: skip

    async def _run_instance(
        self, run: _Run, task: Operator, map_index: int, first_try: int, max_tries: int
    ) -> TaskInstanceResult:
        """Run tries ``first_try`` .. ``max_tries`` (at least one) until one succeeds."""
        attempts: list[Attempt] = []
        result: Any = None
        try_number = first_try
        while True:
            async with run.limiter:
                run.emit(task.task_id, map_index, TaskInstanceState.RUNNING, try_number)
                recorder = run.recorder
                log = AttemptLog()
                if recorder is not None:
                    started_at = await recorder.attempt_started(task.task_id, map_index, try_number)
                    live = _LiveLog(task.task_id, map_index, try_number, started_at, log)
                    run.add_live(live)
                try:
                    attempt, result = await self._attempt(
                        run, task, map_index, try_number, max_tries, log
                    )
                finally:
                    if recorder is not None:
                        run.live.discard(live)
                if recorder is not None:
                    after = _state_after(attempt, try_number, max_tries)
                    await recorder.attempt_ended(
                        task.task_id, map_index, after, try_number, started_at,
                        attempt.rendered, attempt.error, result, attempt.log,
                    )  # fmt: skip
            attempts.append(attempt)
            if attempt.error is None or try_number >= max_tries:
                break
            logger.warning(
                "%s try %d of %d failed, retrying in %gs: %s: %s",
                run.label(task.task_id, map_index), try_number, max_tries, task.retry_delay,
                type(attempt.error).__name__, attempt.error,
            )  # fmt: skip
            run.emit(task.task_id, map_index, TaskInstanceState.UP_FOR_RETRY, try_number)
            await trio.sleep(task.retry_delay)
            try_number += 1
        return self._finished(run, task, map_index, attempts, result)

    async def _attempt(
        self, run: _Run, task: Operator, map_index: int, try_number: int, max_tries: int,
        log: AttemptLog, holding: Holding | None = None,
    ) -> tuple[Attempt, Any]:  # fmt: skip
        dag = run.dag
        settings = self._settings
        declared = _declared_assets(task, run.assets)
        item = run.items.get((task.task_id, map_index))
        if item is None:
            item = instance_item(task, map_index)
            if map_index >= 0:  # where the item stands now, for access by map index
                record = m.RecordTaskItem(
                    dag.dag_id, run.run_id, task.task_id, map_index, item.key, item.label
                )
                with contextlib.suppress(StatewardError):  # a closing runtime: the attempt says
                    self._admin.submit(record)
        caller = Caller(
            task=TaskScope(dag.dag_id, run.run_id, task.task_id, map_index, item.key),
            writer=Writer(dag.dag_id, run.run_id, task.task_id, map_index, try_number),
            assets={asset.name: asset for asset in declared},
            aliases=frozenset(a.name for a in task.inlets if isinstance(a, AssetAlias)),
            outlet_aliases=frozenset(a.name for a in task.outlets if isinstance(a, AssetAlias)),
            lease=holding,
        )
        # The task's accessors (or its process) speak through a client that ends with
        # the attempt; recording its events and clearing its state use the runner's own.
        task_client = SupervisorClient(self._supervisor, caller, self._token)
        client = SupervisorClient(self._supervisor, caller, self._token)
        spec = AttemptSpec(
            task, run.run_id, run.params, map_index, try_number, max_tries, tuple(declared),
            settings.default_task_retention, settings.default_asset_retention,
            settings.wall_clock,
        )  # fmt: skip
        started = time.perf_counter()
        rendered: dict[str, Any] = {}
        try:
            with capturing(log):
                if (task.isolation or settings.isolation) == "process":
                    # Imported here: an in-process run never loads the task-process
                    # machinery (the wire converter, the fork servers).
                    from .isolation import run_isolated

                    result, outlet_events = await run_isolated(
                        spec, task_client, rendered.update, forks=settings.forks
                    )
                else:
                    result, outlet_events = await run_attempt(
                        spec, task_client, on_rendered=rendered.update
                    )
            await self._after_success(task, client, outlet_events)
        except Exception as exc:
            if isinstance(exc, SupervisorDiedError):
                raise
            duration = time.perf_counter() - started
            return Attempt(try_number, rendered, exc, duration, log.text()), None
        duration = time.perf_counter() - started
        return Attempt(try_number, rendered, None, duration, log.text()), result

    async def _after_success(
        self, task: Operator, client: SupervisorClient, outlet_events: OutletEventAccessors
    ) -> None:
        for request in event_messages(outlet_events):
            await client.request(request)
        clear = task.clear_state_on_success
        if clear is None:
            clear = self._settings.clear_state_on_success
        if clear:
            await client.request(m.ClearTaskState())


@attrs.define(eq=False)
class _Ending:
    """An instance's last try, ended, whose end record is on its way to the store.

    A worker does not wait for the record's commit before it takes its next instance:
    that instance's acquisition follows the record to the supervisor (most often into
    its batch), and requests are served in order, so once the acquisition is answered
    the record's verdict is in (:meth:`settle`).
    """

    recorder: Recorder
    #: The end record (``RecordTaskAttempt`` with the lease's holder).
    envelope: Envelope
    holding: Holding
    #: The instance's tries in this call, this one last.
    attempts: tuple[Attempt, ...]
    #: What the last try returned.
    result: Any
    #: Takes the verdict in: whether the record held (``False``: the try lost its
    #: instance to another runtime). Set by the worker.
    then: Callable[[bool], None] | None = None

    @property
    def map_index(self) -> int:
        return self.holding.lease.map_index

    async def settle(self) -> None:
        """Hand the record's verdict to :attr:`then` (waiting for it if need be)."""
        then = self._take_then()
        then(await self.recorder.ended(self.envelope))

    def settle_now(self) -> None:
        """:meth:`settle`, for a record already answered."""
        self._take_then()(self.recorder.recorded(self.envelope))

    def _take_then(self) -> Callable[[bool], None]:
        """:attr:`then`, dropped from the ending: it refers to the ending, and a cycle
        left behind for every instance costs the garbage collector (see DESIGN.md,
        *Cost per instance*)."""
        then, self.then = self.then, None
        assert then is not None
        return then


@attrs.define(eq=False)
class _Ahead:
    """A worker's next instance, whose acquisition it queued while its current one ran
    (``None``: it succeeded in an earlier call, nothing to acquire)."""

    index: int
    envelope: Envelope | None


@attrs.define(eq=False)
class _Lane:
    """A worker's way to its next instance: asked for ahead by :attr:`take` once the
    current one's lease is taken, and handed off to a task of its own by
    :meth:`hand_off` if the current one is to wait (a retry, another runtime) or runs
    longer than :data:`AHEAD_BELOW` (:meth:`watch`)."""

    take: Callable[[], _Ahead | None]
    #: Runs an instance taken ahead in a task of its own.
    start_alone: Callable[[_Ahead], None]
    ahead: _Ahead | None = None
    #: When the current attempt, which took :attr:`ahead`, started (trio's clock).
    since: float | None = None
    #: The previous instance's end record, queued after the current one's
    #: acquisition: settled once answered (by :meth:`watch`, or after the attempt).
    previous: _Ending | None = None

    def hand_off(self) -> None:
        """Start :attr:`ahead`, if any, in a task of its own."""
        if self.ahead is not None:
            ahead, self.ahead = self.ahead, None
            self.start_alone(ahead)

    def watch(self, now: float) -> None:
        """Hand :attr:`ahead` off if the current attempt has run :data:`AHEAD_BELOW`,
        and settle :attr:`previous` if it is answered."""
        if self.ahead is not None and self.since is not None and now - self.since >= AHEAD_BELOW:
            self.hand_off()
        ending = self.previous
        if ending is not None and ending.envelope.response is not None:
            self.previous = None
            ending.settle_now()


@attrs.define(eq=False)
class _Pace:
    """How long the last attempt of a task's instance took (seconds), in a run."""

    last: float = math.inf


class _Slot:
    """Holds one of ``limiter``'s slots; taken without a checkpoint when one is free and
    nobody waits, so a worker's end record and its next acquisition go to the
    supervisor back to back (a checkpoint between them could let it take the record
    alone into a batch). A cancelled caller stops here, as at ``limiter.acquire()``."""

    __slots__ = ("_limiter",)

    def __init__(self, limiter: trio.CapacityLimiter) -> None:
        self._limiter = limiter

    async def __aenter__(self) -> None:
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self._limiter.acquire_nowait()
        except trio.WouldBlock:
            await self._limiter.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self._limiter.release()


@attrs.define(eq=False)
class _LiveLog:
    """A running attempt whose output is recorded while it runs."""

    task_id: str
    map_index: int
    try_number: int
    started_at: float
    log: AttemptLog
    #: The runtime holding the attempt's lease (its output is fenced); ``None``: none.
    holder: str | None = None
    #: ``log.written`` when its output was last recorded.
    recorded: int = 0
    #: When its output was last recorded (trio's clock).
    recorded_at: float = -math.inf

    def due(self, now: float) -> bool:
        """Whether the log wrote something since its last record, and that record is
        old enough for the log's size (see :data:`LIVE_LOG_BYTES_PER_SECOND`)."""
        interval = max(LOG_FLUSH_INTERVAL, self.log.kept / LIVE_LOG_BYTES_PER_SECOND)
        return self.log.written != self.recorded and now >= self.recorded_at + interval


@attrs.define(eq=False)
class _Run:
    dag: Dag
    run_id: str
    params: dict[str, Any]
    assets: dict[object, AssetInfo]
    on_event: Callable[[TaskInstanceEvent], None] | None
    limiter: trio.CapacityLimiter = attrs.field(default=None)
    #: Writes the run's records (``run_dag`` and ``run_task`` set it; ``None``: none).
    recorder: Recorder | None = None
    results: list[TaskInstanceResult] = attrs.Factory(list)
    #: The attempts running now, whose output :meth:`flush_logs` records.
    live: set[_LiveLog] = attrs.Factory(set)
    #: The items of mapped instances whose expansion :meth:`record_items` recorded.
    items: dict[tuple[str, int], MappedItem] = attrs.Factory(dict)
    #: Set while :meth:`flush_logs` waits for an attempt to start.
    _idle: trio.Event | None = None

    async def record_items(self, task: Operator, indices: list[int]) -> None:
        """Record where the items of ``task``'s instances ``indices`` stand (queued, in
        chunks of :data:`ITEMS_PER_RECORD`): the instances' attempts then need not."""
        recorder = self.recorder
        assert recorder is not None
        task_id = task.task_id
        places = []
        for index in indices:
            item = self.items[(task_id, index)] = instance_item(task, index)
            places.append((index, item.key, item.label))
        for start in range(0, len(places), ITEMS_PER_RECORD):
            await recorder.items(task_id, tuple(places[start : start + ITEMS_PER_RECORD]))

    async def flush_logs(self) -> None:
        """Every :data:`LOG_FLUSH_INTERVAL`, record the output of each running attempt
        that wrote since the last time (one record per such attempt, none otherwise),
        a large log less often (:meth:`_LiveLog.due`)."""
        recorder = self.recorder
        if recorder is None:
            return
        while True:
            if not self.live:
                # Idle until an attempt starts (a retry's delay, instances waited for):
                # no timer ticks meanwhile, which a MockClock with autojump spins through.
                await recorder.flush()
                if not self.live:
                    self._idle = idle = trio.Event()
                    await idle.wait()
            await trio.sleep(LOG_FLUSH_INTERVAL)
            # Answers of records sent so far: they hold logs, which must not pile up.
            await recorder.flush()
            # From here to the last submit nothing checkpoints, so an attempt found
            # running has not sent its end record yet: this record goes before it.
            now = trio.current_time()
            for live in list(self.live):
                if live.due(now):
                    live.recorded, live.recorded_at = live.log.written, now
                    await recorder.attempt_output(
                        live.task_id, live.map_index, live.try_number, live.started_at,
                        live.log.text(), live.holder,
                    )  # fmt: skip

    def add_live(self, live: _LiveLog) -> None:
        """Count ``live`` among the running attempts (waking :meth:`flush_logs`)."""
        self.live.add(live)
        if self._idle is not None:
            self._idle.set()
            self._idle = None

    def label(self, task_id: str, map_index: int) -> str:
        return TaskScope(self.dag.dag_id, self.run_id, task_id, map_index).label

    def emit(self, task_id: str, map_index: int, state: TaskInstanceState, try_number: int) -> None:
        if self.on_event is not None:
            self.on_event(TaskInstanceEvent(task_id, map_index, state, try_number))


def _resume_points(
    earlier: DagRunRecord | None,
) -> tuple[dict[tuple[str, int], TaskInstanceRecord], dict[tuple[str, int], int]]:
    """From a run's record: its succeeded instances, and every instance's try number
    as read now (the store decides from it whether a failed one has ended since, or is
    to run again; see ``AcquireTaskLease``)."""
    succeeded: dict[tuple[str, int], TaskInstanceRecord] = {}
    seen: dict[tuple[str, int], int] = {}
    for ti in () if earlier is None else earlier.instances:
        key = (ti.task_id, ti.map_index)
        if ti.state == SUCCESS:
            succeeded[key] = ti
        seen[key] = ti.try_number
    return succeeded, seen


def _recorded_result(dag_id: str, run_id: str, ti: TaskInstanceRecord) -> TaskInstanceResult:
    """The result of an instance that ended in an earlier call, or in another runtime,
    from its record (succeeded: its result; failed: a RecordedTaskError with the
    recorded error's type and message)."""
    last = ti.attempts[-1] if ti.attempts else None
    state = SUCCESS if ti.state == SUCCESS else FAILED
    error = None
    if state == FAILED and last is not None and last.error_type is not None:
        error = RecordedTaskError(last.error_type, last.error_message or "", last.error_traceback)
    return TaskInstanceResult._create(
        dag_id=dag_id, run_id=run_id, task_id=ti.task_id, map_index=ti.map_index,
        state=state, try_number=ti.try_number,
        result=None if last is None or state != SUCCESS else last.result,
        rendered={} if last is None else dict(last.rendered), error=error,
    )  # fmt: skip


def _known_indices(
    task: Operator, succeeded: Mapping[tuple[str, int], TaskInstanceRecord]
) -> list[int]:
    """The instances of ``task``: for one mapped when the run gets there, those recorded."""
    if not maps_at_run_time(task):
        return _map_indices(task)
    return sorted(i for (task_id, i) in succeeded if task_id == task.task_id) or [-1]


def _not_started(dag_id: str, run_id: str, task_id: str, error: Exception) -> TaskInstanceResult:
    """A task that failed before any attempt: its upstream results cannot be given to it."""
    return TaskInstanceResult._create(
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=-1, state=FAILED,
        try_number=0, error=error,
    )  # fmt: skip


def _map_indices(task: Operator) -> list[int]:
    if not task.is_mapped:
        return [-1]
    return list(range(task.map_count()))


def _declared_assets(task: Operator, concrete: dict[object, AssetInfo]) -> list[AssetInfo]:
    # Outlet aliases are for emitting only; inlet aliases are resolved per attempt.
    found = [concrete[item] for item in (*task.inlets, *task.outlets) if item in concrete]
    return list(dict.fromkeys(found))
