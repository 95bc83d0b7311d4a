"""task_state from task code: every method, both forms (sync and async), every store."""

from __future__ import annotations

import datetime as dt
import enum
import math
from datetime import timedelta
from typing import Any

import pytest

from stateward import (
    NEVER_EXPIRE,
    AsyncContextError,
    Dag,
    Runtime,
    StateTypeError,
    StateValueError,
    TaskInstanceResult,
)
from tests.conftest import FakeWallClock


def only_task(fn: Any, **options: Any) -> Any:
    dag = Dag("d")
    return dag.task(**options)(fn)


async def run(rt: Runtime, fn: Any, run_id: str = "r", **options: Any) -> TaskInstanceResult:
    result = await rt.run_task(only_task(fn, **options), run_id=run_id)
    return result


def nested(depth: int) -> Any:
    """A list holding a list ... ``depth`` lists deep, built without recursion."""
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def ok(result: TaskInstanceResult) -> Any:
    if result.error is not None:
        raise result.error
    return result.result


async def test_sync_task_uses_every_method(rt: Runtime) -> None:
    """A plain-function task reads and writes through the sync accessor methods."""

    def task(task_state: Any) -> Any:
        seen = [task_state.get("k"), task_state.get("k", "dflt")]
        task_state.set("k", {"a": [1, 2]})
        task_state["other"] = "x"
        seen += [task_state.get("k"), task_state["k"], task_state.k, "k" in task_state]
        seen += [task_state.increment("n"), task_state.increment("n", by=5)]
        seen += [task_state.compare_and_set("lock", None, "me")]
        seen += [task_state.compare_and_set("lock", None, "you")]
        seen += [task_state.compare_and_set("lock", "me", "you")]
        seen += [sorted(task_state.items())]
        task_state.delete("k")
        del task_state["other"]
        seen += ["k" in task_state, "other" in task_state]
        task_state.clear()
        seen += [task_state.items()]
        return seen

    assert ok(await run(rt, task)) == [
        None, "dflt", {"a": [1, 2]}, {"a": [1, 2]}, {"a": [1, 2]}, True, 1, 6, True, False,
        True, [("k", {"a": [1, 2]}), ("lock", "you"), ("n", 6), ("other", "x")], False,
        False, [],
    ]  # fmt: skip


async def test_async_task_uses_every_async_twin(rt: Runtime) -> None:
    """An async task awaits the a-prefixed twins."""

    async def task(task_state: Any) -> Any:
        seen = [await task_state.aget("k", 0)]
        await task_state.aset("k", 5)
        seen += [await task_state.aget("k"), await task_state.aincrement("k", 2)]
        seen += [await task_state.acompare_and_set("k", 7, "seven")]
        seen += [await task_state.aitems()]
        await task_state.adelete("k")
        await task_state.aset("z", True)
        await task_state.aclear()
        seen += [await task_state.aitems()]
        return seen

    assert ok(await run(rt, task)) == [0, 5, 7, True, [("k", "seven")], []]


async def test_missing_key_raises_key_error_and_attribute_error(rt: Runtime) -> None:
    """Item access raises KeyError, attribute access AttributeError, for an absent key."""

    def task(task_state: Any) -> Any:
        errors = []
        for access in (lambda: task_state["nope"], lambda: task_state.nope):
            try:
                access()
            except (KeyError, AttributeError) as exc:
                errors.append(type(exc).__name__)
        return [*errors, hasattr(task_state, "nope")]

    assert ok(await run(rt, task)) == ["KeyError", "AttributeError", False]


async def test_key_named_like_a_method_is_reached_as_an_item(rt: Runtime) -> None:
    """A key called 'get' is read with task_state['get']; .get stays the method."""

    def task(task_state: Any) -> Any:
        task_state.set("get", 1)
        return [task_state["get"], callable(task_state.get)]

    assert ok(await run(rt, task)) == [1, True]


@pytest.mark.parametrize(
    ("call", "twin"),
    [
        (lambda s: s.get("k"), "task_state.aget"),
        (lambda s: s.set("k", 1), "task_state.aset"),
        (lambda s: s.delete("k"), "task_state.adelete"),
        (lambda s: s.clear(), "task_state.aclear"),
        (lambda s: s.increment("k"), "task_state.aincrement"),
        (lambda s: s.compare_and_set("k", None, 1), "task_state.acompare_and_set"),
        (lambda s: s.items(), "task_state.aitems"),
        (lambda s: s["k"], "task_state.aget"),
        (lambda s: s.k, "task_state.aget"),
    ],
)
async def test_sync_method_from_async_code_names_the_async_twin(
    rt: Runtime, call: Any, twin: str
) -> None:
    """Calling a blocking accessor from an async task fails, naming the twin to await."""

    async def task(task_state: Any) -> Any:
        call(task_state)

    result = await run(rt, task)
    assert isinstance(result.error, AsyncContextError)
    assert f"use await {twin}(...) instead" in str(result.error)


BAD_VALUES = [
    (None, StateValueError, r"cannot store None for key 'k'.*call delete\('k'\)"),
    (math.nan, StateValueError, r"cannot store nan at value for key 'k': JSON has no NaN"),
    (math.inf, StateValueError, r"cannot store inf at value"),
    ({"when": dt.datetime(2024, 1, 1)}, StateTypeError, r"value\['when'\] is a datetime .*isoformat"),
    ({1, 2}, StateTypeError, r"value is a set .*sorted list"),
    (b"raw", StateTypeError, r"value is a bytes .*base64"),
    ({1: "a"}, StateTypeError, r"value has a int key 1; JSON objects have str keys"),
    ({"a": [1, {"b": object()}]}, StateTypeError, r"value\['a'\]\[1\]\['b'\] is a object"),
    ((1, 2), StateTypeError, r"value is a tuple .*use a list"),
    ({"a": None}, StateValueError, r"cannot store None at value\['a'\]"),
    ("x" * (64 * 1024), StateValueError, r"65538 bytes as JSON, over the limit of 65536"),
    (
        {"when": dt.datetime(2026, 11, 29, 4, 52, 17, 588576, tzinfo=dt.UTC)},
        StateTypeError,
        r"is a datetime \(datetime\.datetime\(2026, 11, 29, 4, 52, 17, 588576, tzinfo=…\), "
        r"which is not a JSON value",
    ),
    (nested(101), StateValueError, r"the value for key 'k': it nests lists and dicts 101 levels "
     r"deep, over the limit of 100; flatten it"),
    (nested(990), StateValueError, r"nests lists and dicts 990 levels deep"),
    ({"a": nested(100)}, StateValueError, r"101 levels deep"),
    (nested(5000), StateValueError, r"5000 levels deep"),
]  # fmt: skip


@pytest.mark.parametrize(("value", "kind", "match"), BAD_VALUES)
async def test_bad_value_is_refused_and_the_old_value_kept(
    rt: Runtime, value: Any, kind: type[Exception], match: str
) -> None:
    """A value that is not storable raises a clear error; the previous value stays."""

    def task(task_state: Any) -> Any:
        task_state.set("k", "before")
        with pytest.raises(kind, match=match):
            task_state.set("k", value)
        with pytest.raises(kind, match=match):
            task_state.compare_and_set("k", "before", value)
        return task_state.get("k")

    assert ok(await run(rt, task)) == "before"


@pytest.mark.parametrize(
    ("key", "kind", "match"),
    [
        ("", StateValueError, r"state keys must not be empty"),
        (3, StateTypeError, r"state keys must be str, got int 3"),
        (None, StateTypeError, r"state keys must be str, got NoneType None"),
        ("k" * 513, StateValueError, r"is 513 characters long; keys may have at most 512"),
    ],
)
async def test_bad_key_is_refused(rt: Runtime, key: Any, kind: type[Exception], match: str) -> None:
    """Empty, non-str and over-long keys are refused for every method, the error carrying the key as .key; nothing is written."""

    def task(task_state: Any) -> Any:
        for call in (
            lambda: task_state.set(key, 1),
            lambda: task_state.get(key),
            lambda: task_state.delete(key),
            lambda: task_state.increment(key),
            lambda: task_state.compare_and_set(key, None, 1),
        ):
            with pytest.raises(kind, match=match) as raised:
                call()
            assert raised.value.key == key
        return task_state.items()

    assert ok(await run(rt, task)) == []


async def test_membership_of_a_key_that_cannot_be_stored_is_false(rt: Runtime) -> None:
    """`in` answers False for keys no store could hold, as a mapping does."""

    def task(task_state: Any) -> Any:
        return ["" in task_state, "k" * 513 in task_state, 3 in task_state, None in task_state]

    assert ok(await run(rt, task)) == [False, False, False, False]


class Key(enum.StrEnum):
    JOB = "job_id"
    COUNT = "count"


async def test_str_subclass_keys_are_stored_as_the_plain_str(rt: Runtime) -> None:
    """A StrEnum member is a key like its value, for every method; listings give str."""

    def task(task_state: Any) -> Any:
        task_state.set(Key.JOB, "j")
        task_state.increment(Key.COUNT)
        swapped = task_state.compare_and_set(Key.JOB, "j", "k")
        return [
            task_state.get("job_id"), task_state[Key.JOB], Key.COUNT in task_state, swapped,
            [type(key) is str for key, _ in task_state.items()],
        ]  # fmt: skip

    assert ok(await run(rt, task)) == ["k", "k", True, True, [True, True]]
    entries = await rt.state.list()
    assert [(type(e.key), e.key) for e in entries] == [(str, "count"), (str, "job_id")]


async def test_a_value_nested_to_the_limit_is_stored_on_every_path(rt: Runtime) -> None:
    """100 levels of lists and dicts are stored and read back, in a task and out of band."""
    deep = {"a": nested(99)}

    def task(task_state: Any) -> Any:
        task_state.set("deep", deep)
        return task_state.get("deep") == deep

    assert ok(await run(rt, task)) is True
    state = rt.state.task("d", "r", "t")
    await state.aset("deep", deep)
    assert await state.aget("deep") == deep
    with pytest.raises(StateValueError, match=r"key 'deeper'.* 101 levels deep") as caught:
        await state.aset("deeper", [deep])
    assert caught.value.key == "deeper"


async def test_a_value_that_contains_itself_is_refused(rt: Runtime) -> None:
    """A list holding itself is a StateValueError, not a RecursionError."""
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(StateValueError, match=r"the value for key 'k': it contains itself"):
        await rt.state.task("d", "r", "t").aset("k", loop)


async def test_key_of_512_characters_is_fine(rt: Runtime) -> None:
    """The limit is inclusive."""

    def task(task_state: Any) -> Any:
        task_state.set("k" * 512, 1)
        return task_state.get("k" * 512)

    assert ok(await run(rt, task)) == 1


async def test_increment_of_non_int_is_refused(rt: Runtime) -> None:
    """increment() on a str key or with a non-int step fails and leaves the value."""

    def task(task_state: Any) -> Any:
        task_state.set("k", "text")
        with pytest.raises(StateTypeError, match=r"cannot increment key 'k': it holds str 'text'"):
            task_state.increment("k")
        with pytest.raises(StateTypeError, match=r"takes an int 'by', got float 1.5"):
            task_state.increment("n", 1.5)
        return task_state.items()

    assert ok(await run(rt, task)) == [("k", "text")]


async def test_an_increment_past_4300_digits_is_refused_and_writes_nothing(rt: Runtime) -> None:
    """An amount, or a result, of more than 4,300 digits (what Python converts to text)
    is refused with StateValueError naming the key; the value stays readable."""
    big = 9 * 10**4299  # 4,300 digits: the most there may be

    def task(task_state: Any) -> Any:
        task_state.increment("n", big)
        with pytest.raises(StateValueError, match=r"key 'n': the result is an int of more "):
            task_state.increment("n", big)
        with pytest.raises(StateValueError, match=r"key 'm': the amount is an int of more "):
            task_state.increment("m", 10**4300)
        return task_state.items() == [("n", big)]

    assert ok(await run(rt, task)) is True


async def test_max_value_bytes_is_configurable(make_store: Any) -> None:
    """open_runtime(max_value_bytes=...) sets the limit."""
    from stateward import open_runtime

    def task(task_state: Any) -> Any:
        task_state.set("small", "x" * 8)
        with pytest.raises(StateValueError, match=r"over the limit of 10"):
            task_state.set("big", "x" * 9)

    async with open_runtime(store=make_store(), max_value_bytes=10) as rt:
        ok(await run(rt, task))


async def test_default_retention_is_30_days(rt: Runtime, wall_clock: FakeWallClock) -> None:
    """Task state without a retention expires 30 days after it was written."""

    def task(task_state: Any) -> None:
        task_state.set("k", 1)

    ok(await run(rt, task))
    (entry,) = await rt.state.list()
    assert entry.expires_at == wall_clock.now + timedelta(days=30).total_seconds()
    accessor = rt.state.task("d", "r", "task")
    wall_clock.advance(timedelta(days=30).total_seconds() - 1)
    assert await accessor.aget("k") == 1
    wall_clock.advance(1)
    assert await accessor.aget("k") is None
    assert "k" not in dict(await accessor.aitems())


async def test_retention_timedelta_seconds_and_never(
    rt: Runtime, wall_clock: FakeWallClock
) -> None:
    """retention= takes a timedelta, seconds or NEVER_EXPIRE."""
    state = rt.state.task("d", "r", "t")
    await state.aset("short", 1, retention=timedelta(minutes=1))
    await state.aset("secs", 1, retention=90)
    await state.aset("forever", 1, retention=NEVER_EXPIRE)
    wall_clock.advance(60)
    assert dict(await state.aitems()) == {"secs": 1, "forever": 1}
    wall_clock.advance(10 * 365 * 86400)
    assert dict(await state.aitems()) == {"forever": 1}


@pytest.mark.parametrize(
    ("retention", "kind", "match"),
    [
        (timedelta(0), StateValueError, r"retention must be positive, got datetime.timedelta\(0\)"),
        (-5, StateValueError, r"retention must be positive, got -5"),
        ("1d", TypeError, r"retention must be a timedelta, a number of seconds, NEVER_EXPIRE"),
    ],
)
async def test_bad_retention_is_refused(
    rt: Runtime, retention: Any, kind: type[Exception], match: str
) -> None:
    """A retention that is not a positive duration is refused; nothing is written."""
    state = rt.state.task("d", "r", "t")
    with pytest.raises(kind, match=match) as raised:
        await state.aset("k", 1, retention=retention)
    assert await state.aitems() == []
    if kind is StateValueError:
        assert raised.value.key == "k"  # type: ignore[attr-defined]


async def test_expired_key_can_be_counted_again_and_cas_sees_it_absent(
    rt: Runtime, wall_clock: FakeWallClock
) -> None:
    """After expiry, increment starts from 0 and compare_and_set(None) succeeds."""
    state = rt.state.task("d", "r", "t")
    await state.aset("n", 41, retention=10)
    await state.aset("lock", "old", retention=10)
    wall_clock.advance(11)
    assert await state.aincrement("n") == 1
    assert await state.acompare_and_set("lock", None, "new") is True


async def test_cleanup_deletes_expired_rows(rt: Runtime, wall_clock: FakeWallClock) -> None:
    """rt.cleanup() deletes expired rows and says how many."""
    state = rt.state.task("d", "r", "t")
    await state.aset("a", 1, retention=10)
    await state.aset("b", 1, retention=NEVER_EXPIRE)
    wall_clock.advance(20)
    assert await rt.cleanup(dry_run=True) == 1
    assert await rt.cleanup() == 1
    assert await rt.cleanup() == 0
    assert [e.key for e in await rt.state.list(include_expired=True)] == ["b"]


async def test_an_int_too_large_for_json_is_refused_and_the_runtime_serves_on(rt: Runtime) -> None:
    """An int beyond Python's digit limit is a StateValueError, not a supervisor crash."""

    def task(task_state: Any) -> Any:
        with pytest.raises(StateValueError, match=r"cannot store the value for key 'k'.*as a str"):
            task_state.set("k", 10**5000)
        task_state.set("k", "after")
        return task_state.get("k")

    assert ok(await run(rt, task)) == "after"


async def test_type_error_carries_its_path_to_the_task(rt: Runtime) -> None:
    """StateTypeError.path says where in the value the bad part sits, across the supervisor."""

    def task(task_state: Any) -> Any:
        try:
            task_state.set("k", {"a": [1, {"when": object()}]})
        except StateTypeError as exc:
            return [exc.key, exc.path]
        return None

    assert ok(await run(rt, task)) == ["k", "value['a'][1]['when']"]


async def test_items_come_in_key_order_on_every_store(rt: Runtime) -> None:
    """items() lists keys in key order, whatever order they were written in."""
    state = rt.state.task("d", "r", "t")
    for key in ("b", "c", "a"):
        await state.aset(key, key)
    assert [k for k, _ in await state.aitems()] == ["a", "b", "c"]
