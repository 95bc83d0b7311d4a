"""Property tests: values round-trip exactly, non-JSON values are refused whole, decode()
raises only ProtocolError, and random operation sequences give a model's answers.

Each property runs a modest, derandomised number of examples in the quick suite and ten
times as many under ``-m long``. Every example opens its own runtime with ``trio.run``:
hypothesis drives plain functions, so no async fixture is involved.
"""

from __future__ import annotations

import ast
import collections
import datetime
import decimal
import enum
import json
import math
from collections.abc import Callable
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stateward import (
    NEVER_EXPIRE,
    ProtocolError,
    StateTypeError,
    StateValueError,
    open_runtime,
)
from stateward._protocol import messages as m
from stateward._protocol.converter import decode, encode
from stateward._records import (
    AssetEvent,
    AssetInfo,
    AttemptRecord,
    DagRunRecord,
    ItemPlace,
    LeaseAnswer,
    StateVersion,
    StateWriter,
    TaskInstanceRecord,
    TaskNode,
)
from stateward.store import base as ops
from stateward.store.base import AssetScope, Store, TaskScope

#: Examples per property in the quick run, multiplied by the scale of each variant.
SCALES = [pytest.param(1, id="quick"), pytest.param(10, id="long", marks=pytest.mark.long)]

#: How many examples each property ran (read by the report: run with -s).
EXAMPLES_RUN: collections.Counter[str] = collections.Counter()


def profile(examples: int) -> settings:
    """Stable in CI: fixed seed, no deadline, no example database written to the repo."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def record(name: str) -> None:
    """Count one example of property ``name``."""
    EXAMPLES_RUN[name] += 1


@pytest.fixture(autouse=True)
def _report_examples(request: pytest.FixtureRequest) -> Any:
    """Print how many examples the test ran (visible with -s)."""
    EXAMPLES_RUN.clear()
    yield
    for name, count in EXAMPLES_RUN.items():
        print(f"\n[hypothesis] {request.node.name}: {name} ran {count} examples")


# -- strategies ----------------------------------------------------------------------------

json_scalars = (
    st.booleans()
    | st.integers()
    | st.integers(min_value=2**63, max_value=10**300)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values: st.SearchStrategy[Any] = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=25,
)


class Level(enum.IntEnum):
    """An int subclass: stored as its int value."""

    HIGH = 3


class Tag(str):
    """A str subclass: stored as its text."""


#: Values that set() accepts although they are not of the exact JSON types.
json_like = st.recursive(
    st.sampled_from([Level.HIGH, Tag("t")]) | json_scalars,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=4), children, max_size=3).map(collections.OrderedDict)
    ),
    max_leaves=8,
)

NOT_JSON: list[Any] = [
    None,
    math.nan,
    math.inf,
    -math.inf,
    (1, 2),
    {1, 2},
    frozenset(),
    b"bytes",
    bytearray(b"x"),
    datetime.datetime(2024, 1, 1),
    datetime.date(2024, 1, 1),
    decimal.Decimal("1.5"),
    complex(1, 2),
    object(),
    {1: "int key"},
    {None: "None key"},
    {("a",): "tuple key"},
    "lone \ud800 surrogate",
    {"lone \udfff surrogate key": 1},
]


@st.composite
def non_json_values(draw: st.DrawFn) -> Any:
    """A JSON value with exactly one non-JSON part hidden at a random depth."""
    value: Any = draw(st.sampled_from(NOT_JSON))
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            siblings = draw(st.lists(json_values, max_size=2))
            value = [*siblings[: len(siblings) // 2], value, *siblings[len(siblings) // 2 :]]
        else:
            siblings = draw(st.dictionaries(st.text(max_size=5), json_values, max_size=2))
            value = {**siblings, draw(st.text(min_size=6, max_size=8)): value}
    return value


def assert_same(got: Any, want: Any, path: str = "value") -> None:
    """Equal, of the same types all the way down, dict keys in the same order, -0.0 kept."""
    assert type(got) is type(want), f"{path}: got {type(got).__name__}, want {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{path}: length {len(got)} != {len(want)}"
        for index, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same(g, w, f"{path}[{index}]")
    elif isinstance(want, float):
        assert got == want, path
        assert math.copysign(1, got) == math.copysign(1, want), f"{path}: sign of zero"
    else:
        assert got == want, path


def follow(value: Any, path: str) -> Any:
    """The part of ``value`` that an error's ``path`` (``value[0]['a']``) points at."""
    node = ast.parse(path, mode="eval").body
    keys: list[Any] = []
    while isinstance(node, ast.Subscript):
        keys.append(ast.literal_eval(node.slice))
        node = node.value
    assert isinstance(node, ast.Name), path
    assert node.id == "value", path
    for key in reversed(keys):
        value = value[key]
    return value


# -- values round-trip exactly --------------------------------------------------------------


@pytest.mark.parametrize("scale", SCALES)
def test_any_json_value_round_trips_exactly(make_store: Callable[[], Store], scale: int) -> None:
    """Any JSON value reads back from every store type-exact, in key order, nested."""

    @profile(40 * scale)
    @given(value=json_values)
    def check(value: Any) -> None:
        record("round trip")
        n = EXAMPLES_RUN["round trip"]
        wire = json.loads(json.dumps(encode(m.SetTaskState("v", value))))
        assert_same(decode(wire).value, value)  # type: ignore[union-attr]

        async def main() -> list[Any]:
            async with open_runtime(store=make_store()) as rt:
                task = rt.state.task("props", f"run-{n}", "t")
                asset = rt.state.asset(name=f"asset-{n}")
                await task.aset("v", value)
                await asset.aset("v", value)
                got = [await task.aget("v"), await asset.aget("v"), dict(await task.aitems())["v"]]
                # Exact equality is what compare-and-set decides with.
                assert await task.acompare_and_set("v", value, "swapped")
                assert await asset.acompare_and_set("v", value, "swapped")
                return got

        for got in trio.run(main):
            assert_same(got, value)

    check()


@pytest.mark.parametrize("scale", SCALES)
def test_json_like_values_are_stored_and_compared_as_json(
    make_store: Callable[[], Store], scale: int
) -> None:
    """IntEnum, str subclass, OrderedDict are stored as JSON and CAS-equal to themselves."""

    @profile(20 * scale)
    @given(value=json_like)
    def check(value: Any) -> None:
        record("json-like")
        n = EXAMPLES_RUN["json-like"]
        as_json = json.loads(json.dumps(value))

        async def main() -> tuple[Any, bool]:
            async with open_runtime(store=make_store()) as rt:
                task = rt.state.task("props", f"like-{n}", "t")
                await task.aset("v", value)
                got = await task.aget("v")
                return got, await task.acompare_and_set("v", value, "swapped")

        got, swapped = trio.run(main)
        assert_same(got, as_json)
        assert swapped

    check()


@pytest.mark.parametrize("scale", SCALES)
def test_non_json_values_are_refused_with_nothing_written(
    make_store: Callable[[], Store], scale: int
) -> None:
    """A value with a non-JSON part anywhere is refused, naming key and path; nothing written."""

    @profile(30 * scale)
    @given(bad=non_json_values(), asset=st.booleans())
    def check(bad: Any, asset: bool) -> None:
        record("refused")
        n = EXAMPLES_RUN["refused"]

        async def main() -> list[BaseException]:
            async with open_runtime(store=make_store()) as rt:
                state: Any = (
                    rt.state.asset(name=f"bad-{n}")
                    if asset
                    else rt.state.task("p", f"bad-{n}", "t")
                )
                await state.aset("k", "before")
                refusals = []
                attempts = [
                    lambda: state.aset("k", bad),
                    lambda: state.acompare_and_set("k", "before", bad),
                ]
                if bad is not None:  # expected=None is allowed: it means "absent"
                    attempts.append(lambda: state.acompare_and_set("k", bad, "after"))
                for attempt in attempts:
                    with pytest.raises((StateTypeError, StateValueError)) as info:
                        await attempt()
                    refusals.append(info.value)
                assert await state.aitems() == [("k", "before")]
                return refusals

        for refusal in trio.run(main):
            assert "'k'" in str(refusal)
            if isinstance(refusal, StateTypeError) and refusal.path is not None:
                part = follow(bad, refusal.path)
                exact = (str, int, float, bool, list, dict)
                assert type(part) not in exact or any(type(k) is not str for k in part)

    check()


# -- decode() on anything -------------------------------------------------------------------

FIELD_NAMES = sorted(
    {f.name for cls in m.MESSAGE_TYPES.values() for f in attrs.fields(cls)} | {"type"}
)
anything = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(FIELD_NAMES) | st.text(max_size=4) | st.integers(), children, max_size=4
        )
    ),
    max_leaves=12,
)


@st.composite
def wire_dicts(draw: st.DrawFn) -> dict[Any, Any]:
    """A real message's wire form, then up to three mutations: a field dropped, added or
    replaced by anything (wrong types, non-str keys, nesting), or the tag changed."""
    data: dict[Any, Any] = dict(encode(draw(valid_messages())))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["drop", "add", "replace", "retag"]))
        fields = sorted(data, key=repr)
        if action == "drop" and fields:
            del data[draw(st.sampled_from(fields))]
        elif action == "add":
            data[draw(st.sampled_from(FIELD_NAMES) | st.integers() | st.text(max_size=3))] = draw(
                anything
            )
        elif action == "replace" and fields:
            data[draw(st.sampled_from(fields))] = draw(anything)
        else:
            data["type"] = draw(st.sampled_from(sorted(m.MESSAGE_TYPES)) | anything)
    return data


#: Instances with a try number: ``(dag_id, run_id, task_id, map_index, try)``.
LEASE_TUPLES: st.SearchStrategy[tuple[tuple[str, str, str, int, int], ...]] = st.lists(
    st.tuples(*[st.text(max_size=3)] * 3, st.integers(), st.integers()), max_size=2
).map(tuple)


@st.composite
def valid_messages(draw: st.DrawFn) -> Any:
    """A message of a random type whose fields come from the encoding of a sample."""
    cls = draw(st.sampled_from(sorted(m.MESSAGE_TYPES.values(), key=lambda c: c.__name__)))
    values: dict[str, Any] = {}
    for field in attrs.fields(cls):
        values[field.name] = draw(strategy_for(field.type))
    return cls(**values)


def strategy_for(annotation: Any) -> st.SearchStrategy[Any]:
    """Values for a message field, by its annotation."""
    text = annotation.__name__ if isinstance(annotation, type) else str(annotation)
    text = text.replace("typing.Any", "JsonValue").replace("stateward._records.", "")
    text = text.replace("stateward.", "")
    table: dict[str, st.SearchStrategy[Any]] = {
        "str": st.text(max_size=6),
        "str | None": st.none() | st.text(max_size=6),
        "int": st.integers(),
        "int | None": st.none() | st.integers(),
        "bool": st.booleans(),
        "float | None": st.none() | st.floats(allow_nan=False, allow_infinity=False),
        "JsonValue": json_values,
        "Any": json_values,
        "dict[str, JsonValue]": st.dictionaries(st.text(max_size=5), json_values, max_size=3),
        "ErrorType": st.sampled_from(m.ErrorType),
        "tuple[AssetInfo, ...]": st.lists(
            st.builds(AssetInfo, st.text(max_size=5), st.text(max_size=5)), max_size=3
        ).map(tuple),
        "AssetInfo | None": st.none()
        | st.builds(AssetInfo, st.text(max_size=5), st.text(max_size=5)),
        "tuple[StateEntry, ...]": st.just(()),
        "float": st.floats(allow_nan=False, allow_infinity=False),
        "AttemptRecord": st.builds(
            AttemptRecord,
            st.integers(),
            st.text(max_size=5),
            st.just(1.0),
            result=json_values,
        ),
        "tuple[DagRunRecord, ...]": st.just(()),
        "tuple[StateVersion, ...]": st.lists(
            st.builds(
                StateVersion,
                st.integers(min_value=1),
                json_values,
                st.booleans(),
                st.just(1.0),
                st.builds(
                    StateWriter, kind=st.text(max_size=4), user=st.none() | st.text(max_size=4)
                ),
            ),
            max_size=2,
        ).map(tuple),
        "tuple[ItemPlace, ...]": st.lists(
            st.builds(
                ItemPlace, st.text(max_size=4), st.integers(), st.none() | st.text(max_size=4)
            ),
            max_size=2,
        ).map(tuple),
        "DagRunRecord | None": st.none()
        | st.builds(DagRunRecord, *[st.text(max_size=4)] * 3, st.just(2.0)),
        "TaskInstanceRecord | None": st.none()
        | st.builds(
            TaskInstanceRecord,
            st.text(max_size=4),
            st.integers(),
            st.text(max_size=4),
            st.integers(),
        ),
        "tuple[str, ...] | None": st.none() | st.lists(st.text(max_size=4), max_size=3).map(tuple),
        "tuple[tuple[str, int], ...] | None": st.none()
        | st.lists(st.tuples(st.text(max_size=4), st.integers()), max_size=3).map(tuple),
        "LeaseAnswer": st.builds(LeaseAnswer, st.text(max_size=5), st.integers()),
        "tuple[AssetEvent, ...]": st.lists(
            st.builds(
                AssetEvent,
                st.none() | st.text(max_size=4),
                st.none() | st.text(max_size=4),
                st.just(1.0),
                st.dictionaries(st.text(max_size=4), json_values, max_size=2),
                try_number=st.none() | st.integers(),
            ),
            max_size=2,
        ).map(tuple),
        "tuple[TaskNode, ...] | None": st.none()
        | st.lists(
            st.builds(
                TaskNode,
                st.text(max_size=4),
                st.lists(st.text(max_size=4), max_size=2).map(tuple),
                st.booleans(),
            ),
            max_size=3,
        ).map(tuple),
        "tuple[int, ...]": st.lists(st.integers(), max_size=3).map(tuple),
        "tuple[tuple[str, int], ...]": st.lists(
            st.tuples(st.text(max_size=3), st.integers()), max_size=2
        ).map(tuple),
        "ListState": st.builds(
            m.ListState,
            dag_id=st.none() | st.text(max_size=4),
            map_index=st.none() | st.integers(),
            limit=st.none() | st.integers(),
        ),
        "tuple[tuple[str, str, str, int, int], ...]": LEASE_TUPLES,
        "tuple[tuple[str, str, str, int, int], ...] | None": st.none() | LEASE_TUPLES,
        "tuple[tuple[int, str, str | None], ...]": st.lists(
            st.tuples(st.integers(), st.text(max_size=3), st.none() | st.text(max_size=3)),
            max_size=2,
        ).map(tuple),
    }
    return table[text]


@pytest.mark.parametrize("scale", SCALES)
def test_decode_returns_a_message_or_raises_protocol_error(scale: int) -> None:
    """decode() of any dict returns a message that round-trips, or raises ProtocolError."""
    outcomes: collections.Counter[str] = collections.Counter()

    @profile(300 * scale)
    @given(data=wire_dicts() | anything)
    def check(data: Any) -> None:
        record("decode")
        try:
            message = decode(data)
        except ProtocolError:
            outcomes["refused"] += 1
            return
        outcomes["decoded"] += 1
        assert type(message).__name__ in m.MESSAGE_TYPES
        wire = encode(message)
        assert encode(decode(wire)) == wire

    check()
    assert outcomes["refused"] > 0, outcomes
    assert outcomes["decoded"] > 0, outcomes


@pytest.mark.parametrize("scale", SCALES)
def test_every_message_round_trips_through_json(scale: int) -> None:
    """Messages of every type with random fields survive encode, JSON and decode intact."""

    @profile(150 * scale)
    @given(message=valid_messages())
    def check(message: Any) -> None:
        record("messages")
        wire = json.loads(json.dumps(encode(message)))
        assert decode(wire) == message

    check()


# -- operation sequences against a model ------------------------------------------------------

KEYS = ["a", "b", "c"]
POOL: list[Any] = [1, 1.0, True, 2, "1", [1], {"a": 1}, {"a": 1.0}, 0]
DAY = 86_400.0
START = 1_700_000_000.0


@attrs.frozen
class Op:
    """One call: ``kind`` with its arguments; ``where`` picks the scope (0, 1: map indices
    of one task; 2: an asset, store path only)."""

    kind: str
    where: int = 0
    key: str = "a"
    value: Any = None
    other: Any = None
    retention: Any = None


def op_strategy(scopes: int) -> st.SearchStrategy[Op]:
    """Random calls over a few keys and values chosen to collide (1 / 1.0 / True)."""
    where = st.integers(0, scopes - 1)
    key = st.sampled_from(KEYS)
    value = st.sampled_from(POOL)
    retention = st.sampled_from([None, None, 5.0, 50.0, NEVER_EXPIRE])
    by = st.integers(-3, 3) | st.just(True)  # True: refused, it is not an int
    return st.one_of(
        st.builds(Op, st.just("set"), where, key, value, st.none(), retention),
        st.builds(Op, st.just("get"), where, key),
        st.builds(Op, st.just("delete"), where, key),
        st.builds(Op, st.just("clear"), where, other=st.booleans()),
        st.builds(Op, st.just("increment"), where, key, by, st.none(), retention),
        st.builds(Op, st.just("cas"), where, key, st.none() | value, value, retention),
        st.builds(Op, st.just("items"), where),
        st.builds(Op, st.just("tick"), value=st.sampled_from([1.0, 10.0, 60.0])),
    )


@attrs.define
class Model:
    """What every store must answer: rows with an expiry, scopes 0/1 a mapped fleet."""

    rows: dict[int, dict[str, tuple[Any, float | None]]] = attrs.Factory(
        lambda: {0: {}, 1: {}, 2: {}}
    )
    now: float = START

    def live(self, where: int) -> dict[str, Any]:
        return {
            k: v
            for k, (v, exp) in sorted(self.rows[where].items())
            if exp is None or exp > self.now
        }

    def expiry(self, retention: Any, default: float | None) -> float | None:
        if retention is NEVER_EXPIRE:
            return None
        seconds = default if retention is None else retention
        return None if seconds is None else self.now + seconds

    def apply(self, op: Op, default: float | None) -> Any:
        """The expected result; StateTypeError (the class) for a refused increment."""
        rows, live = self.rows[op.where], self.live(op.where)
        match op.kind:
            case "set":
                rows[op.key] = (op.value, self.expiry(op.retention, default))
                return None
            case "get":
                return live.get(op.key)
            case "delete":
                return rows.pop(op.key, None) is not None and op.key in live
            case "clear":
                wheres = [0, 1] if op.other and op.where < 2 else [op.where]
                count = sum(len(self.rows[w]) for w in wheres)
                for w in wheres:
                    self.rows[w].clear()
                return count
            case "increment":
                current = live.get(op.key, 0)
                if type(current) is not int or type(op.value) is not int:
                    return StateTypeError
                rows[op.key] = (current + op.value, self.expiry(op.retention, default))
                return current + op.value
            case "cas":
                current = live.get(op.key)
                if current is None:
                    matches = op.value is None
                else:
                    matches = op.value is not None and same_json(current, op.value)
                if matches:
                    rows[op.key] = (op.other, self.expiry(op.retention, default))
                return matches
            case "items":
                return list(live.items())
            case "tick":
                self.now += op.value
                return None
        raise AssertionError(op)


def same_json(a: Any, b: Any) -> bool:
    """JSON equality, exactly: types must match (True is not 1, 1 is not 1.0)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_answer(op: Op, got: Any, want: Any) -> None:
    """``got`` is what a store or accessor answered for ``op``; ``want`` the model's."""
    if want is StateTypeError:
        assert isinstance(got, StateTypeError), (op, got)
    elif op.kind == "items":
        assert [k for k, _ in got] == [k for k, _ in want], (op, got, want)
        for (_, g), (_, w) in zip(got, want, strict=True):
            assert_same(g, w)
    elif want is None or op.kind in ("delete", "clear", "cas"):
        assert got == want, (op, got, want)
        assert type(got) is type(want), (op, got, want)
    else:
        assert_same(got, want)


class Clock:
    """The runtime's wall clock, moved by the model's ``tick`` operations."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("scale", SCALES)
def test_accessor_calls_give_the_models_answers(
    make_store: Callable[[], Store], scale: int
) -> None:
    """Random call sequences through rt.state accessors answer as the model does."""

    @profile(25 * scale)
    @given(program=st.lists(op_strategy(scopes=2), min_size=1, max_size=30))
    def check(program: list[Op]) -> None:
        record("accessors")
        run_id = f"model-{EXAMPLES_RUN['accessors']}"
        model, clock = Model(), Clock()

        async def main() -> None:
            async with open_runtime(store=make_store(), wall_clock=clock) as rt:
                fleet = [rt.state.task("props", run_id, "t", index) for index in (0, 1)]
                for op in program:
                    want = model.apply(op, 30 * DAY)
                    clock.now = model.now
                    state = fleet[op.where]
                    try:
                        got = await call_accessor(state, op)
                    except StateTypeError as exc:
                        got = exc
                    if op.kind in ("delete", "clear"):
                        assert got is None, (op, got)  # the accessors return nothing
                    else:
                        check_answer(op, got, want)
                for index in (0, 1):
                    check_answer(
                        Op("items"), await fleet[index].aitems(), list(model.live(index).items())
                    )

        trio.run(main)

    check()


async def call_accessor(state: Any, op: Op) -> Any:
    """Make ``op``'s call on an accessor and return its answer."""
    match op.kind:
        case "set":
            await state.aset(op.key, op.value, retention=op.retention)
            return None
        case "get":
            return await state.aget(op.key)
        case "delete":
            return await state.adelete(op.key)
        case "clear":
            return await state.aclear(all_map_indices=op.other)
        case "increment":
            return await state.aincrement(op.key, op.value, retention=op.retention)
        case "cas":
            return await state.acompare_and_set(op.key, op.value, op.other, retention=op.retention)
        case "items":
            return await state.aitems()
        case "tick":
            return None
    raise AssertionError(op)


#: The supervisor refuses a bool ``by`` before the store sees it: the store gets ints only.
store_ops = op_strategy(scopes=3).filter(lambda op: op.kind != "increment" or op.value is not True)


def store_op(op: Op, run_id: str, now: float, default: float | None) -> ops.Op | None:
    """The store operation for ``op`` (``None`` for a clock tick)."""
    scope: ops.Scope = (
        AssetScope(f"asset-{run_id}", f"mem://{run_id}")
        if op.where == 2
        else TaskScope("props", run_id, "t", op.where)
    )

    def expiry(retention: Any) -> float | None:
        if retention is NEVER_EXPIRE:
            return None
        seconds = default if retention is None else retention
        return None if seconds is None else now + seconds

    match op.kind:
        case "set":
            return ops.Put(scope, op.key, json.dumps(op.value), expiry(op.retention), None)
        case "get":
            return ops.Get(scope, op.key)
        case "delete":
            return ops.Delete(scope, op.key)
        case "clear":
            return ops.Clear(scope, op.other and op.where < 2)
        case "increment":
            return ops.Increment(scope, op.key, op.value, expiry(op.retention), None)
        case "cas":
            return ops.CompareAndSet(
                scope, op.key, op.value, json.dumps(op.other), expiry(op.retention), None
            )
        case "items":
            return ops.Items(scope)
    return None


@pytest.mark.parametrize("scale", SCALES)
def test_store_batches_give_the_models_answers(make_store: Callable[[], Store], scale: int) -> None:
    """Random multi-operation batches on the store directly answer as the model does."""

    @profile(25 * scale)
    @given(program=st.lists(st.lists(store_ops, min_size=1, max_size=5), max_size=10))
    def check(program: list[list[Op]]) -> None:
        record("store batches")
        run_id = f"batch-{EXAMPLES_RUN['store batches']}"
        model = Model()

        async def main() -> None:
            async with make_store() as store:
                for batch in program:
                    planned: list[tuple[Op, ops.Op]] = []
                    for op in batch:  # one transaction at one time; the clock moves after
                        lowered = store_op(op, run_id, model.now, None)
                        if lowered is not None:
                            planned.append((op, lowered))
                    if planned:
                        results = await store.execute([o for _, o in planned], now=model.now)
                        assert len(results) == len(planned)
                        for (op, _), got in zip(planned, results, strict=True):
                            if op.kind == "items":
                                got = list(got.items())
                            check_answer(op, got, model.apply(op, None))
                    for op in batch:
                        if op.kind == "tick":
                            model.apply(op, None)

        trio.run(main)

    check()


BAD_KEYS: list[tuple[Any, type[Exception], str]] = [
    ("", StateValueError, "must not be empty"),
    ("k" * 513, StateValueError, "at most 512"),
    (3, StateTypeError, "must be str, got int 3"),
    ("lone \udc80 surrogate", StateValueError, "is not valid text"),
]


@pytest.mark.parametrize(
    ("key", "kind", "message"), BAD_KEYS, ids=["empty", "long", "int", "surrogate"]
)
async def test_bad_keys_are_refused_alike_by_every_store(
    make_store: Callable[[], Store], key: Any, kind: type[Exception], message: str
) -> None:
    """A key no store can hold is refused the same way by every store; nothing written."""
    async with open_runtime(store=make_store()) as rt:
        state = rt.state.task("props", "keys", "t")
        for call in (
            lambda: state.aset(key, 1),
            lambda: state.aincrement(key),
            lambda: state.aget(key),
        ):
            with pytest.raises(kind, match=message):
                await call()
        assert await state.aitems() == []
