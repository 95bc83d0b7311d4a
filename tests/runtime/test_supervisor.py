"""The supervisor: group commit, failure isolation, scope, and no request left hanging."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest
import trio
import trio.testing

from stateward import (
    AttemptEndedError,
    ProtocolError,
    RuntimeClosedError,
    StateScopeError,
    StateTypeError,
    StateValueError,
    StoreError,
    UndeclaredAssetError,
)
from stateward._protocol import messages as m
from stateward._records import AssetInfo
from stateward._runtime.client import SupervisorClient
from stateward._runtime.supervisor import Caller, Envelope, Supervisor, ThreadWaiter
from stateward.store import base as ops
from stateward.store.base import TaskScope, Writer
from stateward.store.memory import MemoryStore

T = TaskScope("d", "r", "t", -1)
ORDERS = AssetInfo("orders", "s3://o")


class GatedStore(MemoryStore):
    """A MemoryStore whose first batch waits for a gate, and which records batches."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.batches: list[int] = []
        self.fail_when_key: str | None = None

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        self.batches.append(len(batch))
        if len(self.batches) == 1:
            await self.gate.wait()
        if self.fail_when_key and any(
            getattr(op, "key", None) == self.fail_when_key for op in batch
        ):
            msg = f"disk full while writing {self.fail_when_key!r}"
            raise StoreError(msg)
        return await super().execute(batch, now=now)


class Harness:
    def __init__(self, store: MemoryStore, nursery: trio.Nursery) -> None:
        self.store = store
        self.supervisor = Supervisor(store, wall_clock=lambda: 100.0)
        self.nursery = nursery
        self.token = trio.lowlevel.current_trio_token()

    def client(self, **caller: Any) -> SupervisorClient:
        caller.setdefault("task", T)
        caller.setdefault("writer", Writer("d", "r", "t", -1, 1))
        return SupervisorClient(self.supervisor, Caller(**caller), self.token)


@contextlib.asynccontextmanager
async def serving(store: MemoryStore) -> AsyncIterator[Harness]:
    """``store`` open and a supervisor serving it; closed (its queue drained) on exit."""
    async with store, trio.open_nursery() as nursery:
        h = Harness(store, nursery)
        await nursery.start(h.supervisor.serve)
        yield h
        h.supervisor.close()


async def test_waiting_writes_are_grouped_into_one_transaction() -> None:
    """Requests queued while a batch runs are served together: one transaction for all."""
    store = GatedStore()
    async with serving(store) as h:
        client = h.client()
        results: list[Any] = []

        async def write(i: int) -> None:
            results.append(await client.request(m.SetTaskState(f"k{i}", i)))

        h.nursery.start_soon(write, 0)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 50):
            h.nursery.start_soon(write, i)
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert len(results) == 50
        assert store.batches == [1, 49]
        assert store.write_transactions == 2
        assert h.supervisor.stats.largest_batch == 49
        items = await client.request(m.ListTaskState())
        assert len(items.items) == 50


async def test_no_reply_before_the_batch_commits() -> None:
    """A reader queued behind a write is answered only after that write's batch commits."""
    store = GatedStore()
    async with serving(store) as h:
        client = h.client()
        answered = trio.Event()

        async def write() -> None:
            await client.request(m.SetTaskState("k", 1))
            answered.set()

        h.nursery.start_soon(write)
        await trio.testing.wait_all_tasks_blocked()
        assert not answered.is_set()
        store.gate.set()
        await answered.wait()


async def test_refused_request_does_not_fail_its_batch() -> None:
    """A bad request in a batch gets an error; the others in it succeed."""
    store = GatedStore()
    async with serving(store) as h:
        client = h.client()
        outcomes: dict[str, Any] = {}

        async def send(name: str, request: Any) -> None:
            try:
                outcomes[name] = await client.request(request)
            except Exception as exc:
                outcomes[name] = exc

        h.nursery.start_soon(send, "first", m.SetTaskState("a", 1))
        await trio.testing.wait_all_tasks_blocked()
        h.nursery.start_soon(send, "good", m.SetTaskState("b", 2))
        h.nursery.start_soon(send, "none", m.SetTaskState("c", None))
        h.nursery.start_soon(send, "key", m.GetTaskState(""))
        h.nursery.start_soon(send, "good2", m.IncrementTaskState("n"))
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes["none"], StateValueError)
        assert isinstance(outcomes["key"], StateValueError)
        assert outcomes["good"] == m.OkResponse()
        assert outcomes["good2"] == m.IncrementResult("n", 1)
        assert (await client.request(m.ListTaskState())).items == {"a": 1, "b": 2, "n": 1}


async def test_store_failure_is_isolated_to_the_request_that_caused_it() -> None:
    """If the store fails a batch, each request is retried alone; only the culprit fails."""
    store = GatedStore()
    store.fail_when_key = "poison"
    async with serving(store) as h:
        client = h.client()
        outcomes: dict[str, Any] = {}

        async def send(name: str, request: Any) -> None:
            try:
                outcomes[name] = await client.request(request)
            except Exception as exc:
                outcomes[name] = exc

        h.nursery.start_soon(send, "first", m.GetTaskState("x"))
        await trio.testing.wait_all_tasks_blocked()
        for key in ("a", "poison", "b"):
            h.nursery.start_soon(send, key, m.SetTaskState(key, 1))
        await trio.testing.wait_all_tasks_blocked()
        store.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert isinstance(outcomes["poison"], StoreError)
        assert "disk full while writing 'poison'" in str(outcomes["poison"])
        assert outcomes["a"] == outcomes["b"] == m.OkResponse()
        assert (await client.request(m.ListTaskState())).items == {"a": 1, "b": 1}


async def test_shutdown_answers_every_queued_request() -> None:
    """Cancelling the supervisor answers the batch in flight and fails the queued ones."""
    store = GatedStore()
    async with store, trio.open_nursery() as nursery:
        h = Harness(store, nursery)
        serve_scope = trio.CancelScope()

        async def serve() -> None:
            with serve_scope:
                await h.supervisor.serve()

        nursery.start_soon(serve)
        await trio.testing.wait_all_tasks_blocked()
        caller = Caller(task=T, writer=None)
        envelopes = [Envelope(m.SetTaskState(f"k{i}", i), caller) for i in range(5)]
        h.supervisor.submit(envelopes[0])
        await trio.testing.wait_all_tasks_blocked()
        for envelope in envelopes[1:]:
            h.supervisor.submit(envelope)
        serve_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert not envelopes[0].done.is_set()  # its batch is shielded: it finishes
        store.gate.set()
        await h.supervisor.stopped.wait()
        assert all(e.done.is_set() for e in envelopes)
        assert envelopes[0].response == m.OkResponse()
        for envelope in envelopes[1:]:
            assert envelope.response.error is m.ErrorType.SHUTTING_DOWN
        with pytest.raises(RuntimeClosedError):
            h.supervisor.submit(Envelope(m.GetTaskState("k"), caller))


async def test_close_drains_then_refuses_new_requests() -> None:
    """close() lets queued requests finish, then new ones are refused."""
    store = MemoryStore()
    async with serving(store) as h:
        client = h.client()
        caller = Caller(task=T, writer=None)
        queued = Envelope(m.SetTaskState("k", 1), caller)
        h.supervisor.submit(queued)
        h.supervisor.close()
        await h.supervisor.stopped.wait()
        assert queued.response == m.OkResponse()
        with pytest.raises(RuntimeClosedError, match=r"the runtime is closed"):
            await client.request(m.GetTaskState("k"))


async def test_scope_is_enforced_on_hand_built_messages() -> None:
    """A task client cannot reach undeclared assets or admin requests, whatever it sends."""
    store = MemoryStore()
    async with serving(store) as h:
        admin = h.client(task=None, writer=None, unrestricted=True)
        await admin.request(m.DeclareAssets((ORDERS, AssetInfo("secret", "s3://secret"))))
        await admin.request(m.SetAssetStateByName("secret", "k", "hidden"))
        client = h.client(assets={"orders": ORDERS})
        for request in (
            m.GetAssetStateByName("secret", "k"),
            m.GetAssetStateByUri("s3://secret", "k"),
            m.SetAssetStateByName("secret", "k", "mine"),
            m.ClearAssetStateByUri("s3://secret"),
            m.IncrementAssetStateByName("secret", "n"),
            m.ListAssetStateByName("secret"),
        ):
            with pytest.raises(UndeclaredAssetError, match=r"did not declare the asset with"):
                await client.request(request)
        with pytest.raises(StateScopeError, match=r"may not send ListState"):
            await client.request(m.ListState())
        with pytest.raises(StateScopeError, match=r"may not send CleanupExpired"):
            await client.request(m.CleanupExpired())
        with pytest.raises(StateScopeError, match=r"did not declare AssetAlias\('daily'\)"):
            await client.request(m.GetAssetsByAlias("daily"))
        with pytest.raises(ProtocolError, match=r"does not serve OkResponse"):
            await client.request(m.OkResponse())
        with pytest.raises(ProtocolError, match=r"does not serve str"):
            await client.request("GetTaskState")
        no_task = h.client(task=None, writer=None)
        with pytest.raises(StateScopeError, match=r"bound to no task instance"):
            await no_task.request(m.GetTaskState("k"))
        assert (await admin.request(m.GetAssetStateByName("secret", "k"))).value == "hidden"
        await client.request(m.SetAssetStateByUri("s3://o", "w", 1))
        assert (await client.request(m.GetAssetStateByName("orders", "w"))).value == 1


async def test_task_identity_is_bound_by_the_client_not_the_message() -> None:
    """Two clients sending the same message reach their own task instance only."""
    store = MemoryStore()
    async with serving(store) as h:
        a = h.client(task=TaskScope("d", "r", "a", -1))
        b = h.client(task=TaskScope("d", "r", "b", -1))
        await a.request(m.SetTaskState("k", "from a"))
        assert (await b.request(m.GetTaskState("k"))).value is None
        await b.request(m.ClearTaskState(all_map_indices=True))
        assert (await a.request(m.GetTaskState("k"))).value == "from a"


class Doom(BaseException):
    """Not an Exception: gets past the supervisor's per-batch handling."""


class DoomedStore(MemoryStore):
    """A store whose writes end the supervisor."""

    async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
        if any(ops.is_write(op) for op in batch):
            raise Doom("the disk controller caught fire")
        return await super().execute(batch, now=now)


async def test_supervisor_death_answers_the_batch_in_flight_and_later_calls() -> None:
    """When the supervisor dies mid-batch, that batch and later callers get SupervisorDiedError."""
    from stateward import SupervisorDiedError

    store = DoomedStore()
    async with store:
        h = Harness(store, None)  # type: ignore[arg-type]
        with pytest.RaisesGroup(Doom):
            async with trio.open_nursery() as nursery:
                await nursery.start(h.supervisor.serve)
                client = h.client()
                caught: list[BaseException] = []

                async def write() -> None:
                    try:
                        await client.request(m.SetTaskState("k", 1))
                    except SupervisorDiedError as exc:
                        caught.append(exc)

                nursery.start_soon(write)
        assert len(caught) == 1
        assert "the state supervisor died (Doom: the disk controller caught fire)" in str(caught[0])
        with pytest.raises(SupervisorDiedError, match=r"supervisor died"):
            await client.request(m.GetTaskState("k"))

        def from_thread() -> None:
            client.request_sync(m.GetTaskState("k"), "task_state.get")

        with pytest.raises(SupervisorDiedError, match=r"supervisor died"):
            await trio.to_thread.run_sync(from_thread)


class LateThreadSupervisor(Supervisor):
    """Plays a worker thread that queues its request just after the stopping serve loop
    drained the threads' queue, and looked at ``stopped`` just before it was set."""

    def __init__(self, store: MemoryStore, late: Envelope) -> None:
        super().__init__(store, wall_clock=lambda: 100.0)
        self.late = late

    def _fail_queued(self) -> m.ErrorResponse:
        refusal = super()._fail_queued()
        self._from_threads.append(self.late)
        return refusal


async def test_a_threads_request_queued_as_the_supervisor_stops_is_answered() -> None:
    """No worker thread is left waiting: a request queued in the window between the
    stopping loop's drain and its ``stopped`` flag is refused as the loop ends."""
    store = MemoryStore()
    late = Envelope(m.GetTaskState("k"), Caller(task=T, writer=None), done=None)
    late.waiter = ThreadWaiter()
    async with store, trio.open_nursery() as nursery:
        supervisor = LateThreadSupervisor(store, late)
        await nursery.start(supervisor.serve)
        supervisor.close()
    assert isinstance(late.response, m.ErrorResponse)
    assert late.response.error is m.ErrorType.SHUTTING_DOWN
    assert late.waiter.wait(0)


@pytest.mark.parametrize("expires_at", [float("nan"), float("inf"), float("-inf")])
async def test_non_finite_expiry_is_refused(expires_at: float) -> None:
    """A hand-built request with a NaN or infinite expiry is refused, nothing written."""
    store = MemoryStore()
    async with serving(store) as h:
        client = h.client()
        for request in (
            m.SetTaskState("k", 1, expires_at),
            m.IncrementTaskState("k", 1, expires_at),
            m.CompareAndSetTaskState("k", None, 1, expires_at),
        ):
            with pytest.raises(StateValueError, match=r"expires_at must be a finite Unix time"):
                await client.request(request)
        assert (await client.request(m.ListTaskState())).items == {}


@pytest.mark.parametrize("expires_at", ["tomorrow", True, [1]])
async def test_wrong_typed_expiry_is_a_type_error(expires_at: Any) -> None:
    """A hand-built request whose expiry is not a number is a validation error, not INTERNAL."""
    async with serving(MemoryStore()) as h:
        client = h.client()
        with pytest.raises(StateTypeError, match=r"expires_at must be a Unix time \(an int or "
                           r"float\) or None \(never\), got \w+ .*; pass retention="):  # fmt: skip
            await client.request(m.SetTaskState("k", 1, expires_at))
        assert (await client.request(m.ListTaskState())).items == {}


def test_a_callers_identity_cannot_be_reassigned() -> None:
    """Caller fields are fixed when the runtime makes it (in-process hardening)."""
    import attrs

    caller = Caller(task=T, writer=None)
    for field, value in (("task", TaskScope("d", "r", "other", -1)), ("unrestricted", True)):
        with pytest.raises(attrs.exceptions.FrozenAttributeError):
            setattr(caller, field, value)


async def test_a_lock_timeout_fails_the_batch_at_once_without_retrying_each(
    tmp_path: Any,
) -> None:
    """A lock held past busy_timeout answers every queued write with the lock error from
    one store call, instead of waiting the timeout again for each request alone."""
    import sqlite3

    from stateward import SqliteStore

    class Counting(SqliteStore):
        calls = 0

        async def execute(self, batch: Sequence[ops.Op], *, now: float) -> list[Any]:
            Counting.calls += 1
            return await super().execute(batch, now=now)

    path = tmp_path / "s.db"
    store = Counting(path, busy_timeout=0.05)
    async with store, trio.open_nursery() as nursery:
        supervisor = Supervisor(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        caller = Caller(task=T, writer=None)
        envelopes = [Envelope(m.SetTaskState(f"k{i}", i), caller) for i in range(5)]
        for envelope in envelopes:
            supervisor.submit(envelope)
        await nursery.start(supervisor.serve)
        for envelope in envelopes:
            assert envelope.done is not None
            await envelope.done.wait()
        other.execute("ROLLBACK")
        other.close()
        assert Counting.calls == 1
        assert {e.response.error for e in envelopes} == {m.ErrorType.STORE_FAILURE}
        assert all("database is locked" in e.response.detail for e in envelopes)
        supervisor.close()


class CommitThreadStore(MemoryStore):
    """A store that answers on commit from a thread of its own, and returns from
    ``execute`` only when ``release`` is set (or after ``patience`` seconds)."""

    answers_on_commit = True

    def __init__(self, patience: float = 30.0) -> None:
        super().__init__()
        self.release = threading.Event()
        self.patience = patience
        self.released: list[bool] = []

    async def execute(
        self, batch: Sequence[ops.Op], *, now: float, on_commit: Any = None
    ) -> list[Any]:
        results = await super().execute(batch, now=now)

        def commit_thread() -> None:
            if on_commit is not None:
                on_commit(results)
            if any(isinstance(op, ops.Put) for op in batch):
                self.released.append(self.release.wait(self.patience))

        await trio.to_thread.run_sync(commit_thread)
        return results


async def test_a_sync_caller_is_answered_from_the_store_thread_on_commit() -> None:
    """A worker-thread caller gets its answer when the batch commits, before the store
    hands the results back to trio (the writer thread answers it, not trio's)."""
    store = CommitThreadStore()
    async with serving(store) as h:
        client = h.client()

        def task() -> Any:
            client.request_sync(m.SetTaskState("k", 1))  # answered while execute waits
            store.release.set()
            return client.request_sync(m.GetTaskState("k"))

        result = await trio.to_thread.run_sync(task)
    assert result == m.TaskStateResult("k", 1)
    assert store.released == [True]


class CountingEnvelope(Envelope):
    """An envelope that records every answer given to it."""

    def answer(self, response: Any) -> None:
        self.calls.append(response)
        super().answer(response)


async def test_an_answer_from_the_store_thread_is_given_once() -> None:
    """A sync caller answered on commit is answered once; an async caller in the same
    batch is answered by trio as before."""
    store = CommitThreadStore(patience=0)
    async with serving(store) as h:
        client = h.client()
        envelope = CountingEnvelope(m.SetTaskState("k", 1), client.caller, done=None)
        envelope.calls = []  # type: ignore[attr-defined]
        envelope.waiter = waiter = ThreadWaiter()
        h.supervisor.submit(envelope)
        async_response = await client.request(m.SetTaskState("j", 2))
        assert await trio.to_thread.run_sync(waiter.wait, 30.0)
    assert async_response == m.OkResponse()
    assert envelope.calls == [m.OkResponse()]  # type: ignore[attr-defined]


class NotingSupervisor(Supervisor):
    """Releases ``queued`` once per request a worker thread has queued."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store, wall_clock=lambda: 100.0)
        self.queued = threading.Semaphore(0)

    def submit_from_thread(self, envelope: Envelope) -> bool:
        wake = super().submit_from_thread(envelope)
        self.queued.release()
        return wake


async def test_worker_threads_requests_join_the_next_batch_without_waking_the_loop() -> None:
    """Requests of worker threads queued while a batch runs are served in the next batch
    (one transaction), and nothing wakes the busy serve loop for them."""
    store = GatedStore()
    async with store, trio.open_nursery() as nursery:
        supervisor = NotingSupervisor(store)
        await nursery.start(supervisor.serve)
        token = trio.lowlevel.current_trio_token()
        client = SupervisorClient(supervisor, Caller(task=T, writer=None), token)
        nursery.start_soon(client.request, m.SetTaskState("first", 0))
        await trio.testing.wait_all_tasks_blocked()  # its batch waits at the gate
        wakes: list[bool] = []
        woken = supervisor.wake

        def counting_wake() -> None:
            wakes.append(True)
            woken()

        supervisor.wake = counting_wake  # type: ignore[method-assign]
        for i in range(3):
            nursery.start_soon(
                trio.to_thread.run_sync, client.request_sync, m.SetTaskState(f"k{i}", i)
            )
        for _ in range(3):
            await trio.to_thread.run_sync(supervisor.queued.acquire)
        store.gate.set()
        while len(store.batches) < 2:  # the threads' batch, served once the gate opens
            await trio.testing.wait_all_tasks_blocked()
        items = (await client.request(m.ListTaskState())).items
        supervisor.close()
    assert store.batches[:2] == [1, 3]
    assert wakes == []
    assert items == {"first": 0, "k0": 0, "k1": 1, "k2": 2}


async def test_a_worker_threads_request_queued_as_its_attempt_ends_is_refused() -> None:
    """A thread's write queued before its attempt ended, and taken in after, is refused
    with AttemptEndedError; nothing is written."""
    store = GatedStore()
    async with store, trio.open_nursery() as nursery:
        supervisor = NotingSupervisor(store)
        await nursery.start(supervisor.serve)
        token = trio.lowlevel.current_trio_token()
        writer = Writer("d", "r", "t", -1, 1)
        attempt = SupervisorClient(supervisor, Caller(task=T, writer=writer), token)
        other = SupervisorClient(supervisor, Caller(task=T, writer=None), token)
        nursery.start_soon(other.request, m.SetTaskState("first", 1))
        await trio.testing.wait_all_tasks_blocked()  # its batch waits at the gate
        met: list[BaseException | None] = []

        def late() -> None:
            try:
                attempt.request_sync(m.SetTaskState("late", 2), "task_state.set")
            except AttemptEndedError as exc:
                met.append(exc)
            else:
                met.append(None)

        async with trio.open_nursery() as threads:
            threads.start_soon(trio.to_thread.run_sync, late)
            await trio.to_thread.run_sync(supervisor.queued.acquire)
            attempt.end()
            store.gate.set()
        assert (await other.request(m.GetTaskState("late"))).value is None
        supervisor.close()
    assert len(met) == 1
    assert isinstance(met[0], AttemptEndedError)


@pytest.mark.parametrize("threads", [2, 8])
async def test_worker_threads_requests_are_all_served_as_the_loop_idles_between_them(
    threads: int,
) -> None:
    """Many threads, each waiting for its answer before its next request, so the serve
    loop keeps going idle and being woken: no request is left unanswered (a lost wake-up
    would hang here)."""
    await _requests_from_threads(threads, 200)


@pytest.mark.long
async def test_worker_threads_requests_stress() -> None:
    """The stress version of the test above."""
    for _ in range(5):
        await _requests_from_threads(16, 2000)


async def _requests_from_threads(threads: int, each: int) -> None:
    async with serving(MemoryStore()) as h:
        client = h.client()

        def run(n: int) -> int:
            for i in range(each):
                client.request_sync(m.SetTaskState(f"t{n}", i))
            return int(client.request_sync(m.GetTaskState(f"t{n}")).value)

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                done: list[int] = []

                async def one(n: int) -> None:
                    done.append(await trio.to_thread.run_sync(run, n))

                for n in range(threads):
                    nursery.start_soon(one, n)
        assert done == [each - 1] * threads


def test_a_thread_waiter_is_released_by_its_answer_given_before_or_while_it_waits() -> None:
    """An answer given before the wait ends it at once; none: the wait times out."""
    early = ThreadWaiter()
    early.set()
    assert early.wait(0)
    none = ThreadWaiter()
    assert not none.wait(0)
    late = ThreadWaiter()
    threading.Timer(0.01, late.set).start()
    assert late.wait(30)
