"""Running Dags: retries that reattach, mapping, dependencies, concurrency, injection."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing

from stateward import (
    Dag,
    DagDefinitionError,
    DagRunState,
    MemoryStore,
    Operator,
    Runtime,
    RuntimeClosedError,
    SqliteStore,
    TaskInstanceInfo,
    TaskInstanceResult,
    TaskInstanceState,
    open_runtime,
    run_dag,
)
from stateward._protocol import messages as m
from stateward._protocol.frames import StartFrame
from stateward._records import AttemptRecord
from stateward._runtime.runner import TaskInstanceEvent
from stateward.store.base import RenewLeases, Store, TaskScope, Writer


class ExternalService:
    """A simulated external job service: submissions are counted."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def submit(self) -> str:
        job_id = f"job-{len(self.submitted) + 1}"
        self.submitted.append(job_id)
        return job_id


def resumable_dag(service: ExternalService, log: list[str]) -> Dag:
    dag = Dag("resumable", default_args={"retries": 2, "retry_delay": 0})

    @dag.task
    def run_job(task_state: Any, ti: TaskInstanceInfo) -> str:
        job_id = task_state.get("job_id")
        if job_id is None:
            job_id = service.submit()
            task_state.set("job_id", job_id)
            log.append(f"try {ti.try_number}: submitted {job_id}")
            raise ConnectionError("worker lost while polling")
        log.append(f"try {ti.try_number}: reattached to {job_id}")
        return f"{job_id} done"

    return dag


async def test_retry_reattaches_instead_of_resubmitting(rt: Runtime) -> None:
    """The canonical scenario: try 1 submits and crashes, try 2 reads the id and reattaches."""
    service, log = ExternalService(), []
    result = await rt.run_dag(resumable_dag(service, log), run_id="r1")
    ti = result.ti("run_job")
    assert (result.state, ti.state, ti.try_number, ti.result) == (
        "success", "success", 2, "job-1 done"
    )  # fmt: skip
    assert service.submitted == ["job-1"]
    assert log == ["try 1: submitted job-1", "try 2: reattached to job-1"]
    assert isinstance(ti.attempts[0].error, ConnectionError)
    assert await rt.state.task("resumable", "r1", "run_job").aget("job_id") == "job-1"


async def test_new_run_id_starts_with_empty_state(rt: Runtime) -> None:
    """Task state belongs to one run: a new run_id submits afresh."""
    service, log = ExternalService(), []
    dag = resumable_dag(service, log)
    await rt.run_dag(dag, run_id="r1")
    await rt.run_dag(dag, run_id="r2")
    assert service.submitted == ["job-1", "job-2"]


async def test_task_state_survives_a_runtime_restart(tmp_path: Path) -> None:
    """On a file database, a second runtime sees what the first one wrote."""
    service = ExternalService()
    dag = Dag("resumable")

    @dag.task
    def run_job(task_state: Any) -> str:
        job_id = task_state.get("job_id")
        if job_id is None:
            job_id = service.submit()
            task_state.set("job_id", job_id)
            raise ConnectionError("crash")
        return str(job_id)

    async with open_runtime(tmp_path / "state.db") as rt:
        first = await rt.run_dag(dag, run_id="r1")
    assert first.state == "failed"
    async with open_runtime(tmp_path / "state.db") as rt:
        second = await rt.run_dag(dag, run_id="r1")
    assert (second.state, second.ti("run_job").result) == ("success", "job-1")
    assert service.submitted == ["job-1"]


async def test_mapped_instances_have_separate_namespaces(rt: Runtime) -> None:
    """expand() makes map_index 0..n-1, each with its own task state."""
    dag = Dag("mapped")

    @dag.task
    def shard(x: int, task_state: Any, ti: TaskInstanceInfo) -> Any:
        task_state.set("x", x)
        return [ti.map_index, task_state.get("x")]

    shard.expand(x=[10, 20, 30])
    result = await rt.run_dag(dag, run_id="r")
    assert [ti.result for ti in result.task_instances] == [[0, 10], [1, 20], [2, 30]]
    for index, x in enumerate([10, 20, 30]):
        assert await rt.state.task("mapped", "r", "shard", index).aget("x") == x
    assert await rt.state.task("mapped", "r", "shard").aget("x") is None


async def test_clear_one_index_versus_all_map_indices(rt: Runtime) -> None:
    """clear() empties one instance; clear(all_map_indices=True) the whole fleet."""
    for index in range(3):
        await rt.state.task("d", "r", "t", index).aset("k", index)
    await rt.state.task("d", "r", "t", 0).aclear()
    assert [await rt.state.task("d", "r", "t", i).aget("k") for i in range(3)] == [None, 1, 2]
    await rt.state.task("d", "r", "t", 1).aclear(all_map_indices=True)
    assert [await rt.state.task("d", "r", "t", i).aget("k") for i in range(3)] == [None] * 3


async def test_expand_several_arguments_is_a_cross_product(rt: Runtime) -> None:
    """Two expand() arguments give one instance per combination, as in Airflow."""
    dag = Dag("cross")

    @dag.task
    def pair(a: int, b: str) -> str:
        return f"{a}{b}"

    pair.expand(a=[1, 2], b=["x", "y"])
    result = await rt.run_dag(dag, run_id="r")
    assert [ti.result for ti in result.task_instances] == ["1x", "1y", "2x", "2y"]


async def test_upstream_failure_marks_downstream_upstream_failed(rt: Runtime) -> None:
    """A failed task's downstream tasks do not run; independent tasks still do."""
    dag = Dag("deps")
    ran: list[str] = []

    @dag.task
    def boom() -> None:
        ran.append("boom")
        raise ValueError("no")

    @dag.task
    def after() -> None:
        ran.append("after")

    @dag.task
    def after_after() -> None:
        ran.append("after_after")

    @dag.task
    def independent() -> None:
        ran.append("independent")

    boom >> after >> after_after
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "failed"
    assert sorted(ran) == ["boom", "independent"]
    states = {ti.task_id: (ti.state, ti.try_number) for ti in result.task_instances}
    assert states == {
        "boom": ("failed", 1),
        "after": ("upstream_failed", 0),
        "after_after": ("upstream_failed", 0),
        "independent": ("success", 1),
    }
    assert isinstance(result.ti("boom").error, ValueError)
    assert [ti.task_id for ti in result.failed] == ["boom", "after", "after_after"]


async def test_states_are_enums_that_read_as_their_strings(rt: Runtime) -> None:
    """Run, instance and event states are enum members equal to (and shown as) their str."""
    dag = Dag("states")
    events: list[TaskInstanceEvent] = []

    @dag.task(retries=1, retry_delay=0)
    def boom() -> None:
        raise ValueError("no")

    @dag.task
    def after() -> None:
        pass

    @dag.task
    def fine() -> None:
        pass

    boom >> after
    result = await rt.run_dag(dag, run_id="r", on_event=events.append)
    assert result.state is DagRunState.FAILED
    assert result.state == "failed"
    got = {ti.task_id: ti.state for ti in result.task_instances}
    assert got == {
        "boom": TaskInstanceState.FAILED,
        "after": TaskInstanceState.UPSTREAM_FAILED,
        "fine": TaskInstanceState.SUCCESS,
    }
    assert all(type(state) is TaskInstanceState for state in got.values())
    assert json.dumps(got) == '{"boom": "failed", "after": "upstream_failed", "fine": "success"}'
    assert [f"{e.state}" for e in events if e.task_id == "boom"] == [
        "running",
        "up_for_retry",
        "running",
        "failed",
    ]
    assert all(type(e.state) is TaskInstanceState for e in events)
    assert str(result.ti("fine").state) == "success"


async def test_dependencies_order_execution(rt: Runtime) -> None:
    """a >> [b, c] >> d runs a first and d last."""
    dag = Dag("order")
    ran: list[str] = []

    def make(name: str) -> Operator:
        async def step() -> None:
            ran.append(name)
            await trio.lowlevel.checkpoint()

        return dag.task(task_id=name)(step)

    a, b, c, d = (make(n) for n in "abcd")
    a >> [b, c] >> d
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert (ran[0], sorted(ran[1:3]), ran[-1]) == ("a", ["b", "c"], "d")


async def test_retries_exhausted_fail_the_task(rt: Runtime) -> None:
    """retries=2 makes three attempts, then the task fails with the last error."""
    dag = Dag("flaky")
    tries: list[int] = []

    @dag.task(retries=2)
    def always(ti: TaskInstanceInfo) -> None:
        tries.append(ti.try_number)
        raise RuntimeError(f"attempt {ti.try_number}")

    result = await rt.run_dag(dag, run_id="r")
    ti = result.ti("always")
    assert (ti.state, ti.try_number, tries) == ("failed", 3, [1, 2, 3])
    assert str(ti.error) == "attempt 3"
    assert len(ti.attempts) == 3


async def test_retry_delay_follows_trio_clock(
    make_store: Callable[[], Store], autojump_clock: trio.testing.MockClock
) -> None:
    """A retry delay of hours passes at once under an autojump MockClock."""
    dag = Dag("slow", default_args={"retries": 2, "retry_delay": timedelta(hours=3)})

    @dag.task
    def flaky(ti: TaskInstanceInfo) -> int:
        if ti.try_number < 3:
            raise RuntimeError("again")
        return ti.try_number

    start = trio.current_time()
    async with open_runtime(store=make_store()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    assert result.ti("flaky").result == 3
    assert trio.current_time() - start >= 6 * 3600


class StepCounter(trio.abc.Instrument):
    """Counts the steps trio's tasks take (but those of tasks named with ``ignore``)."""

    def __init__(self, ignore: str = "\0") -> None:
        self.steps = 0
        self.ignore = ignore

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if self.ignore not in task.name:
            self.steps += 1


class CountingRenewals(MemoryStore):
    """A MemoryStore that counts the lease renewals it is asked for."""

    renewals = 0

    async def execute(self, ops_: Any, *args: Any, **kwargs: Any) -> Any:
        self.renewals += sum(isinstance(op, RenewLeases) for op in ops_)
        return await super().execute(ops_, *args, **kwargs)


@pytest.mark.parametrize("call", ["run_dag", "run_task"])
async def test_an_idle_run_has_no_timers_ticking(
    call: str, autojump_clock: trio.testing.MockClock
) -> None:
    """While a run only waits (a retry's delay of a day), the runtime's background
    tasks do not wake every second: the log flusher waits for an attempt to start and
    the lease watcher for an instance to wait for, so a MockClock test does not spin
    through their ticks. The lease renewal still wakes every ten seconds of trio's
    clock, but writes nothing while neither the wall clock nor real time moved (no
    lease came closer to expiring)."""
    dag = Dag("idle", default_args={"retries": 1, "retry_delay": timedelta(days=1)})

    @dag.task
    async def flaky(ti: TaskInstanceInfo) -> int:  # no thread: no real time passes
        if ti.try_number == 1:
            raise RuntimeError("again")
        return ti.try_number

    counter = StepCounter(ignore="LeaseKeeper.keep")
    store = CountingRenewals()
    async with open_runtime(store=store) as rt:  # leases of 30 s
        trio.lowlevel.add_instrument(counter)
        try:
            if call == "run_dag":
                result = (await rt.run_dag(dag, run_id="r")).ti("flaky")
            else:
                result = await rt.run_task(flaky, run_id="r")
        finally:
            trio.lowlevel.remove_instrument(counter)
    assert result.result == 2
    # A tick a second would be 86,400 steps for each ticking task; a renewal every
    # ten seconds of trio's clock, 8,640 renewals.
    assert counter.steps < 2_000
    assert store.renewals <= 2


async def test_the_lease_renewal_follows_trio_clock_when_it_runs_with_the_wall_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A runtime whose wall clock follows trio's (a test of expiry on a MockClock)
    still renews its leases on time: the renewal waits longer only while trio's clock
    runs ahead of the wall clock too, and the leases expire by the wall clock. Ten
    minutes into an attempt (twenty lease timeouts), another runtime finds its
    instance held."""
    dag = Dag("slow")
    release = trio.Event()

    @dag.task
    async def slow() -> str:
        await release.wait()
        return "done"

    start = 1_800_000_000.0
    async with open_runtime(
        store=MemoryStore(), wall_clock=lambda: start + trio.current_time()
    ) as rt:
        results: list[TaskInstanceResult] = []

        async def run_it() -> None:
            results.append(await rt.run_task(slow, run_id="r"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run_it)
            await trio.sleep(600)  # on the MockClock
            other = AttemptRecord(0, "running", start, host="elsewhere", pid=1)
            take = m.AcquireTaskLease("slow", "r", "slow", -1, "another-runtime", 60.0, 0, other)
            answer = (await rt.admin.request(take)).answer
            release.set()
    assert (answer.outcome, answer.holder) == ("held", rt.leases.holder)
    assert (results[0].state, results[0].result) == ("success", "done")


async def test_an_instance_leaves_no_reference_cycle_behind(rt: Runtime) -> None:
    """What a run makes per instance is freed when it is done with, not left in
    reference cycles for the garbage collector: with collection off, the unreachable
    objects two runs leave differ by fewer than one per two instances between 2 x 20
    and 2 x 220 sync and async instances. (An end record's verdict callback held the record
    itself: eleven objects per instance, and the collector's time went with them.)"""
    dag = Dag("cycles", max_active_tasks=16)

    @dag.task
    def sync_part(i: int, task_state: Any) -> int:
        task_state.set("i", i)
        return int(task_state.get("i"))

    @dag.task
    async def async_part(i: int, task_state: Any) -> int:
        await task_state.aset("i", i)
        return int(await task_state.aget("i"))

    async def garbage_of(run_id: str, n: int) -> int:
        sync_part.expand(i=list(range(n)))
        async_part.expand(i=list(range(n)))
        gc.collect()
        gc.disable()
        try:
            result = await rt.run_dag(dag, run_id=run_id)
            assert result.state == "success"
            return gc.collect()
        finally:
            gc.enable()

    await garbage_of("warm-up", 20)  # what a first run caches is not garbage
    few, many = await garbage_of("few", 20), await garbage_of("many", 220)
    assert many - few < 200, (few, many)


async def test_independent_tasks_run_concurrently_up_to_the_limit(rt: Runtime) -> None:
    """max_active_tasks caps how many attempts run at once."""
    dag = Dag("wide", max_active_tasks=3)
    running = 0
    peak = 0
    gate = trio.Event()

    @dag.task
    async def work(i: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        if running == 3:
            gate.set()
        await gate.wait()
        await trio.lowlevel.checkpoint()
        running -= 1

    work.expand(i=list(range(10)))
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    assert peak == 3


async def test_concurrent_writes_share_transactions(rt: Runtime) -> None:
    """Many task actors writing at once land in fewer transactions than requests."""
    dag = Dag("writers", max_active_tasks=64)

    @dag.task
    async def write(i: int, task_state: Any) -> None:
        await task_state.aset("i", i)

    write.expand(i=list(range(64)))
    before_requests = rt.stats.requests
    before_tx = rt.store.write_transactions
    result = await rt.run_dag(dag, run_id="r")
    assert result.state == "success"
    writes = rt.stats.requests - before_requests
    transactions = rt.store.write_transactions - before_tx
    assert writes >= 64
    assert transactions < writes
    assert rt.stats.largest_batch > 1
    for i in (0, 63):
        assert await rt.state.task("writers", "r", "write", i).aget("i") == i


async def test_context_injection_by_name_and_whole_context(rt: Runtime) -> None:
    """Parameters named like context keys are injected; **context gets the rest."""
    dag = Dag("ctx", params={"limit": 5})

    @dag.task(op_kwargs={"label": "fixed"})
    def by_name(label: str, params: dict[str, Any], run_id: str, ti: TaskInstanceInfo) -> Any:
        return [label, params["limit"], run_id, ti.try_number, ti.max_tries]

    @dag.task
    def whole(**context: Any) -> Any:
        return sorted(context)

    result = await rt.run_dag(dag, run_id="r", params={"limit": 9})
    assert result.ti("by_name").result == ["fixed", 9, "r", 1, 1]
    assert result.ti("whole").result == sorted(
        [
            "dag", "dag_id", "task", "task_id", "run_id", "map_index", "try_number", "params",
            "inlets", "outlets", "outlet_events", "task_state", "task_state_store", "ti",
            "task_instance",
        ]
    )  # fmt: skip


async def test_task_instance_identity_is_ordered_dag_run_task_map_index(rt: Runtime) -> None:
    """Every record naming a task instance orders it dag_id, run_id, task_id, map_index."""
    dag = Dag("ids")

    @dag.task
    def show(ti: TaskInstanceInfo) -> Any:
        return repr(ti)

    result = await rt.run_dag(dag, run_id="r")
    assert result.ti("show").result == (
        "TaskInstanceInfo(dag_id='ids', run_id='r', task_id='show', map_index=-1, "
        "try_number=1, max_tries=1)"
    )
    identity = ("dag_id", "run_id", "task_id", "map_index")
    for record in (TaskInstanceInfo, TaskInstanceResult, TaskScope, Writer, StartFrame):
        names = tuple(field.name for field in attrs.fields(record))
        assert identity == tuple(name for name in names if name in identity), record
    ti = TaskInstanceInfo(
        task_id="t", run_id="r", dag_id="d", map_index=0, try_number=1, max_tries=2
    )
    assert (ti.dag_id, ti.run_id, ti.task_id) == ("d", "r", "t")
    with pytest.raises(TypeError):
        TaskInstanceInfo("d", "t", "r", 0, 1, 2)  # type: ignore[misc]


async def test_missing_argument_fails_the_task_clearly(rt: Runtime) -> None:
    """A parameter that nothing provides fails the task with a message naming it."""
    dag = Dag("args")

    @dag.task
    def needs(nothing_provides_this: int) -> None:
        pass

    result = await rt.run_dag(dag, run_id="r")
    assert "needs 'nothing_provides_this', which is neither in op_kwargs" in str(
        result.ti("needs").error
    )


async def test_operator_subclass_sync_and_async(rt: Runtime) -> None:
    """Operators implement execute() sync (worker thread) or async (trio thread)."""
    dag = Dag("ops")

    class Sync(Operator):
        def execute(self, context: Any) -> Any:
            context["task_state"].set("k", 1)
            return trio.lowlevel.in_trio_run()

    class Async(Operator):
        async def execute(self, context: Any) -> Any:
            await context["task_state"].aset("k", 2)
            return trio.lowlevel.in_trio_run()

    Sync(task_id="sync", dag=dag)
    with dag:
        Async(task_id="async")
    result = await rt.run_dag(dag, run_id="r")
    assert (result.ti("sync").result, result.ti("async").result) == (False, True)


async def test_operator_expand_sets_the_attribute(rt: Runtime) -> None:
    """Mapping an operator sets the expanded attribute on each instance's copy."""
    dag = Dag("opmap")

    class Echo(Operator):
        def __init__(self, *, word: str = "", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.word = word

        async def execute(self, context: Any) -> Any:
            return self.word

    echo = Echo(task_id="echo", dag=dag).expand(word=["a", "b"])
    result = await rt.run_dag(dag, run_id="r")
    assert [ti.result for ti in result.task_instances] == ["a", "b"]
    assert echo.word == ""


async def test_an_attempts_changes_to_its_operator_do_not_reach_another_attempt(
    rt: Runtime,
) -> None:
    """Each attempt changes its own copy of the operator's lists, dicts and sets: empty
    ones, ones of plain values, and ones holding other containers."""
    dag = Dag("keep")

    class Keeper(Operator):
        def __init__(self, *, word: str = "", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.word = word
            self.empty: list[str] = []
            self.plain: dict[str, int] = {"seen": 0}
            self.nested: dict[str, list[str]] = {"words": []}
            self.tags: set[str] = {"start"}

        def execute(self, context: Any) -> Any:
            seen = [list(self.empty), dict(self.plain), list(self.nested["words"]), set(self.tags)]
            self.empty.append(self.word)
            self.plain["seen"] += 1
            self.nested["words"].append(self.word)
            self.tags.add(self.word)
            return json.loads(json.dumps(seen, default=sorted))

    keeper = Keeper(task_id="keeper", dag=dag).expand(word=["a", "b", "c"])
    result = await rt.run_dag(dag, run_id="r")
    fresh = [[], {"seen": 0}, [], ["start"]]
    assert [ti.result for ti in result.task_instances] == [fresh] * 3
    assert (keeper.empty, keeper.plain, keeper.nested, keeper.tags) == (
        [],
        {"seen": 0},
        {"words": []},
        {"start"},
    )


async def test_an_operator_with_a_copy_hook_is_copied_through_it(rt: Runtime) -> None:
    """An operator class that defines ``__copy__`` gets each attempt's copy from it; one
    without gets a copy of its attributes (the attempt's copy is not the task)."""
    dag = Dag("hooks")
    copies: list[str] = []

    class Hooked(Operator):
        def __copy__(self) -> Any:
            copies.append(self.task_id)
            twin = object.__new__(type(self))
            twin.__dict__.update(self.__dict__, hooked=True)
            return twin

        def execute(self, context: Any) -> Any:
            return getattr(self, "hooked", False)

    class Plain(Operator):
        def execute(self, context: Any) -> Any:
            return self is not plain and vars(self) == vars(plain)

    hooked = Hooked(task_id="hooked", dag=dag)
    plain = Plain(task_id="plain", dag=dag)
    result = await rt.run_dag(dag, run_id="r")
    assert result.ti("hooked").result is True
    assert copies == ["hooked"]
    assert not hasattr(hooked, "hooked")
    assert result.ti("plain").result is True


async def test_run_task_with_chosen_try_number_and_map_index(rt: Runtime) -> None:
    """run_task runs one instance from a chosen try, ignoring upstream tasks."""
    dag = Dag("one")

    @dag.task
    def first() -> None:
        raise AssertionError("must not run")

    @dag.task(retries=3)
    def second(x: int, ti: TaskInstanceInfo) -> Any:
        return [x, ti.map_index, ti.try_number]

    second.expand(x=[5, 6])
    first >> second
    result = await rt.run_task(second, run_id="r", map_index=1, try_number=3)
    assert result.result == [6, 1, 3]
    with pytest.raises(ValueError, match=r"has no map_index 7; it has 0..1"):
        await rt.run_task(second, run_id="r", map_index=7)
    # A try number below 1 is refused before anything is leased or recorded.
    with pytest.raises(ValueError, match=r"try_number counts from 1, got 0"):
        await rt.run_task(second, run_id="fresh", map_index=0, try_number=0)
    assert await rt.runs.get(dag.dag_id, "fresh") is None
    record = await rt.runs.get(dag.dag_id, "r")
    assert record is not None
    assert [(ti.map_index, ti.try_number) for ti in record.instances] == [(1, 3)]


def test_dag_definition_errors_are_clear() -> None:
    """Bad ids, duplicates, cycles and bad options fail when the Dag is defined."""
    with pytest.raises(DagDefinitionError, match=r"dag_id must be 1 to 250 letters"):
        Dag("has space")
    dag = Dag("d")

    @dag.task
    def a() -> None: ...

    with pytest.raises(DagDefinitionError, match=r"already has a task 'a'"):
        dag.task(task_id="a")(lambda: None)
    with pytest.raises(DagDefinitionError, match=r"retries must be an int >= 0, got -1"):
        dag.task(task_id="b", retries=-1)(lambda: None)
    with pytest.raises(DagDefinitionError, match=r"default_args has unknown options \['retry'\]"):
        Dag("e", default_args={"retry": 1})
    with pytest.raises(
        DagDefinitionError,
        match=r"takes a list or tuple, or an upstream task's result \(TaskOutput\), got 3",
    ):
        a.expand(x=3)  # type: ignore[arg-type]
    with pytest.raises(DagDefinitionError, match=r"a\(\) has no parameter 'x'"):
        a.expand(x=[1])

    @dag.task
    def c() -> None: ...

    a >> c >> a
    with pytest.raises(DagDefinitionError, match=r"has a cycle: (a >> c >> a|c >> a >> c)"):
        dag.topological_order()


def test_operator_needs_a_dag() -> None:
    """An operator made outside a Dag says how to attach it."""
    with pytest.raises(
        DagDefinitionError, match=r"has no Dag; pass dag=\.\.\. or create it inside"
    ):
        Operator(task_id="lonely")


def test_calling_a_task_says_how_tasks_are_wired() -> None:
    """hello() inside `with Dag(...)` (an Airflow TaskFlow habit) explains >> and expand."""
    with Dag("d") as dag:

        @dag.task
        def hello() -> str:
            return "hi"

        with pytest.raises(
            TypeError,
            match=r"^<PythonTask d\.hello> is a task, not a function, and cannot be called; "
            r"wire tasks with >>, e\.g\. 'extract >> hello' runs hello after extract, and map "
            r"one with 'hello\.expand\(x=\[1, 2\]\)'; the runtime calls it when its Dag runs "
            r"\(calls that pass results, Airflow's TaskFlow, are for @task of a file written "
            r"for airflow\.sdk: see docs/airflow\.md\)$",
        ):
            hello()
    with pytest.raises(DagDefinitionError, match=r"@dag\.task decorates a function, got <Py"):
        dag.task(task_id="again")(hello)


async def test_runtime_refuses_use_after_close(make_store: Callable[[], Store]) -> None:
    """A closed runtime says so instead of hanging."""
    dag = Dag("d")
    dag.task(task_id="t")(lambda: None)
    async with open_runtime(store=make_store()) as rt:
        pass
    with pytest.raises(RuntimeClosedError, match=r"the runtime is closed; open a new one"):
        await rt.run_dag(dag)
    with pytest.raises(RuntimeClosedError):
        await rt.state.task("d", "r", "t").aget("k")


def test_sync_run_dag_wrapper(tmp_path: Path) -> None:
    """stateward.run_dag runs a Dag from synchronous code."""
    dag = Dag("sync")

    @dag.task
    def hello(task_state: Any) -> str:
        task_state.set("greeting", "hi")
        return "hi"

    result = run_dag(dag, db=tmp_path / "s.db", run_id="r")
    assert (result.state, result.ti("hello").result) == ("success", "hi")


def test_result_ti_lookup_error_lists_instances(tmp_path: Path) -> None:
    """DagRunResult.ti() of an unknown instance lists the ones there are."""
    dag = Dag("lookup")
    dag.task(task_id="t")(lambda: None)
    result = run_dag(dag, store=MemoryStore(), run_id="r")
    with pytest.raises(KeyError, match=r"has no task instance \('t', 0\); it has \[\('t', -1\)\]"):
        result.ti("t", 0)


async def test_sqlite_store_passed_explicitly(tmp_path: Path) -> None:
    """open_runtime(store=SqliteStore(...)) works like db=...."""
    async with open_runtime(store=SqliteStore(tmp_path / "x.db", synchronous="NORMAL")) as rt:
        await rt.state.task("d", "r", "t").aset("k", 1)
        assert await rt.state.task("d", "r", "t").aget("k") == 1


async def test_clear_state_on_success_per_task_and_runtime_default(
    make_store: Callable[[], Store],
) -> None:
    """Task state is cleared after success when the task (or the runtime default) says so."""
    dag = Dag("clearing")

    def writes(task_state: Any, ti: TaskInstanceInfo) -> None:
        task_state.set("job_id", "J")
        if ti.try_number == 1:
            raise RuntimeError("fail once: state must survive the failed try")

    dag.task(task_id="default", retries=1)(writes)
    dag.task(task_id="clears", retries=1, clear_state_on_success=True)(writes)
    dag.task(task_id="keeps", retries=1, clear_state_on_success=False)(writes)

    async def remaining(rt: Runtime, run_id: str) -> dict[str, Any]:
        return {
            t: await rt.state.task("clearing", run_id, t).aget("job_id")
            for t in ("default", "clears", "keeps")
        }

    async with open_runtime(store=make_store()) as rt:
        await rt.run_dag(dag, run_id="a")
        assert await remaining(rt, "a") == {"default": "J", "clears": None, "keeps": "J"}
    async with open_runtime(store=make_store(), clear_state_on_success=True) as rt:
        await rt.run_dag(dag, run_id="b")
        assert await remaining(rt, "b") == {"default": None, "clears": None, "keeps": "J"}


async def test_failed_task_keeps_its_state_even_with_clear_on_success(rt: Runtime) -> None:
    """A task that fails never clears its state: the next run of the instance needs it."""
    dag = Dag("keep_on_failure")

    @dag.task(clear_state_on_success=True)
    def fails(task_state: Any) -> None:
        task_state.set("job_id", "J")
        raise RuntimeError("no")

    await rt.run_dag(dag, run_id="r")
    assert await rt.state.task("keep_on_failure", "r", "fails").aget("job_id") == "J"


def test_map_arguments_follow_product_order() -> None:
    """map_arguments(i) is the i-th combination of itertools.product, computed directly."""
    import itertools

    dag = Dag("product")

    @dag.task
    def t(a: int, b: str, c: bool) -> None: ...

    lists: dict[str, list[Any]] = {"a": [1, 2, 3], "b": ["x", "y"], "c": [True, False]}
    t.expand(**lists)
    expected = [
        dict(zip(lists, combo, strict=True)) for combo in itertools.product(*lists.values())
    ]
    assert t.map_count() == 12
    assert [t.map_arguments(i) for i in range(12)] == expected
    for outside in (12, 13, 24, 100, -1):
        with pytest.raises(IndexError, match=rf"has no map_index {outside} \(it has 12\)"):
            t.map_arguments(outside)
    t.expand(a=[1, 2], b=[], c=[True])
    with pytest.raises(IndexError, match=r"has no map_index 0 \(it has 0\)"):
        t.map_arguments(0)


async def test_retries_and_failures_are_logged(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """A retry is a WARNING naming the instance and the error; the final failure an ERROR."""
    dag = Dag("logged")

    @dag.task(retries=1)
    def fails() -> None:
        raise RuntimeError("boom")

    with caplog.at_level("WARNING", logger="stateward.runner"):
        await rt.run_dag(dag, run_id="r")
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "logged.fails (run 'r') try 1 of 2 failed, retrying in 0s: RuntimeError: boom"),
        ("ERROR", "logged.fails (run 'r') failed after 2 tries"),
    ]
    assert caplog.records[1].exc_info is not None
