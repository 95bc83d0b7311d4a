"""Leases and fencing on every store: one live attempt per task instance.

A negative timeout makes a lease that has already expired, on every store's clock
(PostgreSQL's is the server's), so expiry needs no waiting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from stateward import StaleAttemptError
from stateward._records import AttemptRecord, Lease
from stateward.store import base as ops
from stateward.store.base import Store, TaskScope, Writer

SCOPE = TaskScope("d", "r", "t", 3)
START = AttemptRecord(0, "running", 10.0, host="h", pid=7)


@pytest.fixture
async def store(make_store: Callable[[], Store]) -> AsyncIterator[Store]:
    """An open store of each kind."""
    async with make_store() as opened:
        yield opened


async def run(store: Store, *batch: ops.Op) -> list[Any]:
    return await store.execute(list(batch), now=100.0)


def acquire(holder: str, timeout: float = 60.0, seen_try: int = 0) -> ops.AcquireLease:
    return ops.AcquireLease("d", "r", "t", 3, holder, timeout, seen_try, START)


def lease(holder: str, try_number: int) -> Lease:
    return Lease("d", "r", "t", 3, holder, try_number)


def put(holder: str, try_number: int, key: str, value: str = "1") -> ops.Fenced:
    writer = Writer("d", "r", "t", 3, try_number)
    return ops.Fenced(lease(holder, try_number), ops.Put(SCOPE, key, value, None, writer))


def ended(holder: str, try_number: int, state: str = "success") -> ops.RecordAttempt:
    attempt = AttemptRecord(try_number, state, 10.0, 11.0, result=5)
    return ops.RecordAttempt("d", "r", "t", 3, state, attempt, holder)


async def attempts(store: Store) -> list[tuple[int, str]]:
    (record,) = await run(store, ops.GetRun("d", "r"))
    return [(a.try_number, a.state) for a in record.instances[0].attempts]


@pytest.fixture
async def recorded(store: Store) -> Store:
    """A store with a run record (GetRun needs one)."""
    await run(store, ops.RecordRun("d", "r", "running", 1.0))
    return store


async def test_first_acquire_takes_try_1_and_others_find_it_held(recorded: Store) -> None:
    """The first acquisition gets try 1, recorded running; another runtime finds the
    lease held (by whom), and so does a second call of the same runtime."""
    (got,) = await run(recorded, acquire("A"))
    assert (got.outcome, got.try_number) == ("acquired", 1)
    assert await attempts(recorded) == [(1, "running")]
    held, again = await run(recorded, acquire("B"), acquire("A"))
    assert (held.outcome, held.holder, held.try_number) == ("held", "A", 1)
    assert held.expires_at is not None
    assert (again.outcome, again.holder) == ("held", "A")


def again(holder: str, try_number: int | None = None) -> ops.AcquireLease:
    """An acquisition to run the instance again (rt.run_task)."""
    return ops.AcquireLease("d", "r", "t", 3, holder, 60.0, 0, START, True, try_number)


async def test_an_acquisition_again_runs_a_finished_instance_unless_it_is_held(
    recorded: Store,
) -> None:
    """Acquiring ``again`` (a one-instance run): a new instance at the chosen try (or
    1), one held by another live runtime is held, and one that finished, a success
    included, is taken as the next try (or the chosen one), not reported finished."""
    (first,) = await run(recorded, again("A", 3))
    assert (first.outcome, first.try_number) == ("acquired", 3)
    (held,) = await run(recorded, again("B"))
    assert (held.outcome, held.holder, held.try_number) == ("held", "A", 3)
    await run(recorded, ended("A", 3))
    (finished,) = await run(recorded, acquire("B", seen_try=3))
    assert (finished.outcome, finished.try_number) == ("finished", 3)
    (next_try,) = await run(recorded, again("B"))
    assert (next_try.outcome, next_try.try_number) == ("acquired", 4)
    await run(recorded, ended("B", 4, "failed"))
    (chosen,) = await run(recorded, again("A", 2))
    assert (chosen.outcome, chosen.try_number) == ("acquired", 2)
    (stale,) = await run(recorded, put("B", 4, "k"))
    assert isinstance(stale, StaleAttemptError)
    assert await attempts(recorded) == [(2, "running"), (3, "success"), (4, "failed")]


async def test_fenced_writes_of_the_holder_pass_and_of_others_are_refused(
    recorded: Store,
) -> None:
    """A write fenced with the current lease is applied; one fenced with another try's
    or runtime's lease is refused with StaleAttemptError and writes nothing."""
    await run(recorded, acquire("A"))
    ok, stale_try, stale_holder = await run(
        recorded, put("A", 1, "k"), put("A", 2, "x"), put("B", 1, "y")
    )
    assert ok is None
    assert isinstance(stale_try, StaleAttemptError)
    assert isinstance(stale_holder, StaleAttemptError)
    assert (stale_try.task, stale_try.try_number) == ("d.t[3]", 2)
    assert "no longer holds the instance" in str(stale_try)
    assert await run(recorded, ops.Items(SCOPE)) == [{"k": 1}]


async def test_fencing_covers_every_kind_of_write(recorded: Store) -> None:
    """Delete, clear, increment, compare-and-set and asset writes are fenced alike."""
    await run(recorded, acquire("A"))
    await run(recorded, ops.Put(SCOPE, "k", "1", None, None))
    gone = lease("A", 9)
    asset = ops.AssetScope("a", "s3://a")
    refused = await run(
        recorded,
        ops.Fenced(gone, ops.Delete(SCOPE, "k")),
        ops.Fenced(gone, ops.Clear(SCOPE)),
        ops.Fenced(gone, ops.Increment(SCOPE, "k", 1, None, None)),
        ops.Fenced(gone, ops.CompareAndSet(SCOPE, "k", 1, "2", None, None)),
        ops.Fenced(gone, ops.Put(asset, "k", "1", None, None)),
    )
    assert all(isinstance(r, StaleAttemptError) for r in refused)
    assert await run(recorded, ops.Items(SCOPE), ops.Get(asset, "k")) == [{"k": 1}, None]


async def test_an_expired_lease_is_taken_over_as_the_next_try(recorded: Store) -> None:
    """Once the holder's lease expired, another runtime acquires the next try; the
    first attempt, left running, is recorded abandoned; the first holder's writes and
    its end record are refused and write nothing."""
    await run(recorded, acquire("A", timeout=-1.0))
    (got,) = await run(recorded, acquire("B"))
    assert (got.outcome, got.try_number) == ("acquired", 2)
    assert await attempts(recorded) == [(1, "abandoned"), (2, "running")]
    late_put, late_end = await run(recorded, put("A", 1, "late"), ended("A", 1))
    assert isinstance(late_put, StaleAttemptError)
    assert isinstance(late_end, StaleAttemptError)
    assert await attempts(recorded) == [(1, "abandoned"), (2, "running")]
    assert await run(recorded, ops.Items(SCOPE)) == [{}]


async def test_a_final_end_gives_the_lease_up_and_the_instance_reads_finished(
    recorded: Store,
) -> None:
    """A successful end releases the lease: others then find the instance finished,
    with its record and last attempt (its result)."""
    await run(recorded, acquire("A"))
    assert await run(recorded, ended("A", 1)) == [None]
    (got,) = await run(recorded, acquire("B"))
    assert (got.outcome, got.try_number) == ("finished", 1)
    assert got.instance.state == "success"
    assert got.instance.attempts[-1].result == 5


async def test_a_failed_instance_is_finished_unless_the_caller_saw_that_try(
    recorded: Store,
) -> None:
    """A failed instance is finished for a runtime that read an earlier try number (it
    ended while that runtime waited), and runs again for one that saw its last try
    (a resume)."""
    await run(recorded, acquire("A"))
    await run(recorded, ended("A", 1, "failed"))
    waited, resumed = await run(recorded, acquire("B", seen_try=0), acquire("C", seen_try=1))
    assert (waited.outcome, waited.instance.state) == ("finished", "failed")
    assert (resumed.outcome, resumed.try_number) == ("acquired", 2)


async def test_a_retry_keeps_the_lease_for_the_next_try(recorded: Store) -> None:
    """An end that is not final (up for retry) keeps the lease: another runtime finds
    it held, the holder acquires the next try, and the previous try is fenced out."""
    await run(recorded, acquire("A"))
    await run(recorded, ended("A", 1, "up_for_retry"))
    other, mine = await run(recorded, acquire("B"), acquire("A"))
    assert (other.outcome, mine.outcome, mine.try_number) == ("held", "acquired", 2)
    (old,) = await run(recorded, put("A", 1, "k"))
    assert isinstance(old, StaleAttemptError)


async def test_renewal_extends_a_holders_leases_in_one_write(recorded: Store) -> None:
    """Renewing returns every lease the holder still has, and extends them (an expired
    one too, while no one took it); a lease taken over is not returned."""
    await run(recorded, acquire("A", timeout=-1.0))
    (renewed,) = await run(recorded, ops.RenewLeases("A", 60.0))
    assert [tuple(r) for r in renewed] == [("d", "r", "t", 3, 1)]
    (held,) = await run(recorded, acquire("B"))
    assert held.outcome == "held"
    await run(recorded, ops.RenewLeases("A", -1.0))
    await run(recorded, acquire("B"))
    assert await run(recorded, ops.RenewLeases("A", 60.0)) == [()]


async def test_release_frees_every_lease_and_the_next_taker_abandons_the_attempt(
    recorded: Store,
) -> None:
    """Releasing a holder's leases (its runtime closes) lets another take the instance
    at once; the attempt left running is recorded abandoned."""
    await run(recorded, acquire("A"))
    assert await run(recorded, ops.ReleaseLeases("A")) == [1]
    (got,) = await run(recorded, acquire("B"))
    assert (got.outcome, got.try_number) == ("acquired", 2)
    assert await attempts(recorded) == [(1, "abandoned"), (2, "running")]


async def test_releasing_given_leases_gives_up_only_those_still_held_as_given(
    recorded: Store,
) -> None:
    """A cancelled run call gives up the leases it took: each only if the instance's
    lease is still that holder's at that try; the same holder's own acquisition then
    takes the instance as the next try."""
    other = ops.AcquireLease("d", "r", "u", -1, "A", 60.0, 0, START)
    await run(recorded, acquire("A"), other)
    stale = ("d", "r", "t", 3, 2)  # not the try A holds
    missing = ("d", "r", "nothing", -1, 1)
    assert await run(recorded, ops.ReleaseLeases("A", (stale, missing))) == [0]
    assert await run(recorded, ops.ReleaseLeases("B", (("d", "r", "t", 3, 1),))) == [0]
    assert await run(recorded, ops.ReleaseLeases("A", ())) == [0]
    assert await run(recorded, ops.ReleaseLeases("A", (("d", "r", "t", 3, 1),))) == [1]
    (got,) = await run(recorded, acquire("A"))
    assert (got.outcome, got.try_number) == ("acquired", 2)
    assert await attempts(recorded) == [(1, "abandoned"), (2, "running")]
    (renewed,) = await run(recorded, ops.RenewLeases("A", 60.0))
    assert sorted(renewed) == [("d", "r", "t", 3, 2), ("d", "r", "u", -1, 1)]


async def test_a_fence_is_checked_again_after_a_lease_changes_in_the_batch(
    recorded: Store,
) -> None:
    """Within one batch, a write after its attempt's final end record is refused."""
    await run(recorded, acquire("A"))
    first, end, late = await run(recorded, put("A", 1, "a"), ended("A", 1), put("A", 1, "b"))
    assert (first, end) == (None, None)
    assert isinstance(late, StaleAttemptError)
    assert await run(recorded, ops.Items(SCOPE)) == [{"a": 1}]


async def test_a_fence_right_after_an_acquisition_in_the_batch_is_its_lease(
    recorded: Store,
) -> None:
    """Within one batch, the writes of the attempt that just acquired the instance land;
    another try's or runtime's are refused, and an acquisition that found the instance
    held lets no write of its own through."""
    got, other_try, other_holder, mine = await run(
        recorded, acquire("A"), put("A", 2, "b"), put("B", 1, "c"), put("A", 1, "a")
    )
    assert (got.outcome, got.try_number, mine) == ("acquired", 1, None)
    assert isinstance(other_try, StaleAttemptError)
    assert isinstance(other_holder, StaleAttemptError)
    held, refused = await run(recorded, acquire("B"), put("B", 2, "d"))
    assert held.outcome == "held"
    assert isinstance(refused, StaleAttemptError)
    assert await run(recorded, ops.Items(SCOPE)) == [{"a": 1}]


async def test_find_unheld_answers_for_many_instances_in_one_operation(
    recorded: Store,
) -> None:
    """FindUnheld tells, for each instance asked, whether an acquisition by the asker
    would find it held: a live lease of another runtime is held; no record, an expired
    lease, a success and a failure past the asker's seen try (finished), or at it (to run again) are not."""

    def at(index: int, holder: str, timeout: float = 60.0) -> ops.AcquireLease:
        return ops.AcquireLease("d", "r", "t", index, holder, timeout, 0, START)

    await run(recorded, at(0, "A"), at(1, "A", timeout=-1.0), at(2, "A"), at(4, "A"))
    await run(
        recorded,
        ops.RecordAttempt("d", "r", "t", 2, "success", AttemptRecord(1, "success", 1.0, 2.0), "A"),
        ops.RecordAttempt("d", "r", "t", 4, "failed", AttemptRecord(1, "failed", 1.0, 2.0), "A"),
    )
    asked = (*(("d", "r", "t", i, 0) for i in range(5)), ("d", "r", "t", 4, 1))
    assert await run(recorded, ops.FindUnheld("B", asked)) == [(1, 2, 3, 4, 5)]
    assert await run(recorded, ops.FindUnheld("B", ())) == [()]


async def test_clearing_a_held_instance_gives_its_lease_up_and_fences_its_attempt(
    recorded: Store,
) -> None:
    """Clearing an instance a live runtime holds releases the lease: the running
    attempt is recorded abandoned, its writes and its end record are refused, and the
    next acquisition (any runtime's) runs it again as the next try."""
    await run(recorded, acquire("A"))
    (cleared,) = await run(recorded, ops.ClearRun("d", "r", None))
    assert cleared == [("t", 3)]
    write, end = await run(recorded, put("A", 1, "late"), ended("A", 1))
    assert isinstance(write, StaleAttemptError)
    assert isinstance(end, StaleAttemptError)
    assert await run(recorded, ops.Items(SCOPE)) == [{}]
    (got,) = await run(recorded, acquire("B"))
    assert (got.outcome, got.try_number) == ("acquired", 2)
    assert await attempts(recorded) == [(1, "abandoned"), (2, "running")]


async def test_a_stale_write_in_a_batch_of_fresh_ones_writes_nothing_of_its_own(
    recorded: Store,
) -> None:
    """Only the stale attempt's write of a batch is refused: its key keeps the holder's
    value and its history gains no version; the holder's writes around it land."""
    await run(recorded, acquire("A"))
    await run(recorded, put("A", 1, "k", "1"))
    fresh, stale, other = await run(
        recorded, put("A", 1, "k", "2"), put("B", 1, "k", "99"), put("A", 1, "j", "3")
    )
    assert (fresh, other) == (None, None)
    assert isinstance(stale, StaleAttemptError)
    items, history = await run(recorded, ops.Items(SCOPE), ops.History(SCOPE, "k"))
    assert items == {"k": 2, "j": 3}
    assert [(v.version, v.value) for v in history] == [(2, 2), (1, 1)]


async def test_a_fence_that_held_in_one_batch_is_checked_again_after_a_takeover(
    recorded: Store,
) -> None:
    """A verdict on a lease does not outlive a change of the lease in a later batch:
    an attempt whose writes passed is refused once another runtime took over."""
    await run(recorded, acquire("A", timeout=-1.0))
    assert await run(recorded, put("A", 1, "a")) == [None]
    (got,) = await run(recorded, acquire("B"))
    assert got.outcome == "acquired"
    (late,) = await run(recorded, put("A", 1, "b"))
    assert isinstance(late, StaleAttemptError)
    assert await run(recorded, ops.Items(SCOPE)) == [{"a": 1}]


def lease_at(index: int, holder: str, try_number: int) -> Lease:
    return Lease("d", "r", "t", index, holder, try_number)


def put_at(fence: Lease, key: str, value: str) -> ops.Fenced:
    """A fenced put of the attempt ``fence`` into its own instance's state."""
    scope = TaskScope("d", "r", "t", fence.map_index)
    writer = Writer("d", "r", "t", fence.map_index, fence.try_number)
    return ops.Fenced(fence, ops.Put(scope, key, value, None, writer))


async def written(store: Store, index: int, key: str) -> tuple[Any, list[Any]]:
    """The key's value in instance ``index`` and its versions' values, newest first."""
    scope = TaskScope("d", "r", "t", index)
    value, history = await run(store, ops.Get(scope, key), ops.History(scope, key))
    return value, [v.value for v in history]


ASSET = ops.AssetScope("a", "s3://a")


@pytest.mark.parametrize("history", [0, 10])
@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "existing-key"])
@pytest.mark.parametrize("scope", [SCOPE, ASSET], ids=["task", "asset"])
async def test_a_lone_fenced_put_is_applied_or_refused_whole(
    make_store: Callable[[], Store], history: int, existing: bool, scope: ops.Scope
) -> None:
    """A fenced put alone in a batch (PostgreSQL: one statement) is applied with its
    version when its lease holds; a stale one, of another try or runtime, writes neither
    the key nor a version (nor registers its asset), whether the key existed or not."""

    def fenced(holder: str, try_number: int, value: str) -> ops.Fenced:
        writer = Writer("d", "r", "t", 3, try_number)
        return ops.Fenced(lease(holder, try_number), ops.Put(scope, "k", value, None, writer))

    async def key() -> tuple[Any, list[Any]]:
        value, history = await run(store, ops.Get(scope, "k"), ops.History(scope, "k"))
        return value, [v.value for v in history]

    made = make_store()
    made.history = history  # type: ignore[attr-defined]
    async with made as store:
        await run(store, ops.RecordRun("d", "r", "running", 1.0), acquire("A"))
        before: list[Any] = []
        if existing:
            assert await run(store, fenced("A", 1, "1")) == [None]
            before = [1] if history else []
        for stale in (fenced("A", 2, "9"), fenced("B", 1, "9")):
            (refused,) = await run(store, stale)
            assert isinstance(refused, StaleAttemptError)
            assert await key() == (1 if existing else None, before)
        if scope == ASSET and not existing:
            assert await run(store, ops.LookupAsset(name="a")) == [None]
        assert await run(store, fenced("A", 1, "2")) == [None]
        assert await key() == (2, [2, *before] if history else [])


@pytest.mark.parametrize("existing", [False, True], ids=["new-key", "existing-key"])
async def test_a_stale_put_in_a_batch_of_fresh_ones_is_refused_alone(
    store: Store, existing: bool
) -> None:
    """A batch of fenced puts from several attempts (what group commit gathers), one of
    them stale: only that one is refused, and nothing of it is written (its key and
    history as they were); the others are applied, each with its version."""
    await run(store, ops.RecordRun("d", "r", "running", 1.0))
    for index in range(4):
        await run(store, ops.AcquireLease("d", "r", "t", index, "A", 60.0, 0, START))
    fresh = [lease_at(index, "A", 1) for index in range(4)]
    if existing:
        await run(store, put_at(fresh[2], "k", "1"))
    stale = lease_at(2, "A", 2)
    results = await run(
        store,
        put_at(fresh[0], "k", "10"),
        put_at(fresh[1], "k", "11"),
        put_at(stale, "k", "99"),
        put_at(fresh[3], "k", "13"),
        put_at(fresh[1], "j", "21"),
    )
    assert [type(r).__name__ for r in results] == [
        "NoneType", "NoneType", "StaleAttemptError", "NoneType", "NoneType",
    ]  # fmt: skip
    assert results[2].try_number == 2
    assert await written(store, 2, "k") == ((1, [1]) if existing else (None, []))
    for index in (0, 1, 3):
        assert await written(store, index, "k") == (10 + index, [10 + index])
    assert await written(store, 1, "j") == (21, [21])


async def test_a_clear_in_a_batch_fences_the_writes_after_it(recorded: Store) -> None:
    """A run cleared in the middle of a batch gives up its instances' leases there: a
    write of the cleared attempt after it in the same batch is refused, written nowhere,
    whether its lease was checked before the clear or not (PostgreSQL checks a batch's
    leases ahead, in one statement)."""
    for index in (3, 4):
        await run(recorded, ops.AcquireLease("d", "r", "t", index, "A", 60.0, 0, START))
    early, cleared, late_same, late_other = await run(
        recorded,
        put("A", 1, "early"),
        ops.ClearRun("d", "r", None),
        put("A", 1, "late"),
        put_at(lease_at(4, "A", 1), "late", "2"),
    )
    assert early is None
    assert sorted(cleared) == [("t", 3), ("t", 4)]
    assert isinstance(late_same, StaleAttemptError)
    assert isinstance(late_other, StaleAttemptError)
    assert await written(recorded, 3, "late") == (None, [])
    assert await written(recorded, 4, "late") == (None, [])
