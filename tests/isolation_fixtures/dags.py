"""Dags whose tasks run in task processes (isolation="process"), for test_isolation.py.

The tests load this file by path, as the child does: every Dag is a module-level global.
"""

from __future__ import annotations

import ctypes
import enum
import os
import resource
import signal
import time
from typing import Any, ClassVar

import trio

from stateward import (
    Asset,
    AssetAlias,
    AsyncContextError,
    Dag,
    Operator,
    StateTypeError,
    StateValueError,
)
from stateward._protocol import messages as m
from stateward._protocol.converter import encode

ORDERS = Asset("orders", uri="s3://lake/orders")
SALES = Asset("sales")
DAILY = AssetAlias("daily")

# -- how a task process can die ---------------------------------------------------------------

deaths = Dag("deaths", default_args={"isolation": "process"})


@deaths.task
def raises() -> None:
    raise ValueError("boom in the child")


@deaths.task
def exits() -> None:
    os._exit(3)


@deaths.task
def sigkill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


@deaths.task
def segfault() -> None:
    ctypes.string_at(0)


@deaths.task(retries=1)
def out_of_memory(ti: Any) -> str:
    if ti.try_number == 1:
        with open("/proc/self/statm") as statm:
            in_use = int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (in_use + 64 * 1024 * 1024, hard))
        bytearray(1024 * 1024 * 1024)
    return f"recovered on try {ti.try_number}"


@deaths.task
async def dies_mid_request(task_state: Any) -> None:
    async def write(i: int) -> None:
        await task_state.aset(f"k{i}", i)

    async with trio.open_nursery() as nursery:
        for i in range(200):
            nursery.start_soon(write, i)
        await trio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGKILL)


@deaths.task
def returns_a_set() -> Any:
    return {"ids": {1, 2}}


@deaths.task
def sibling_isolated(task_state: Any) -> int:
    task_state.set("alive", True)
    return os.getpid()


@deaths.task(isolation="none")
def sibling_in_process() -> int:
    return os.getpid()


# -- what works the same in a task process --------------------------------------------------------


class Greet(Operator):
    """An operator with a template field reading params and task state."""

    template_fields: ClassVar = ("greeting",)

    def __init__(self, *, greeting: str, **options: Any) -> None:
        self.greeting = greeting
        super().__init__(**options)

    def execute(self, context: Any) -> Any:
        return {"greeting": self.greeting, "pid": os.getpid()}


features = Dag(
    "features",
    params={"name": "ada"},
    default_args={"isolation": "process", "retry_delay": 0},
)

Greet(
    task_id="templated",
    dag=features,
    greeting="hello << params.name >>, job << task_state.job_id >> try << ti.try_number >>",
)


@features.task(inlets=[ORDERS])
def sync_accessors(task_state: Any, asset_state: Any, run_id: str, map_index: int) -> Any:
    task_state.set("n", 1)
    task_state["m"] = [1, {"a": True}]
    seen = {
        "get": task_state.get("n"),
        "item": task_state["m"],
        "attr": task_state.n,
        "in": ["n" in task_state, "zz" in task_state],
        "increment": task_state.increment("n", 5),
        "cas": [task_state.compare_and_set("n", 6, 7), task_state.compare_and_set("n", 1, 2)],
        "missing": task_state.get("zz", "default"),
    }
    task_state.delete("m")
    seen["items"] = sorted(task_state.items())
    try:
        task_state.set("bad", (1, 2))
    except StateTypeError as exc:
        seen["tuple_refused"] = str(exc)
    deep: Any = []
    for _ in range(100):
        deep = [deep]
    try:
        task_state.set("deep", deep)
    except StateValueError as exc:
        seen["deep_refused"] = [str(exc), exc.key]
    seen["unstorable_in"] = ["" in task_state, "k" * 513 in task_state]
    task_state.set(Key.JOB, "j")
    seen["enum_key"] = [task_state.get("job_id"), task_state[Key.JOB], Key.JOB in task_state]
    task_state.delete(Key.JOB)
    asset_state.set("watermark", "2024-01-02")
    seen["asset"] = [asset_state.get("watermark"), [a.name for a in asset_state]]
    seen["ids"] = [run_id, map_index]
    return seen


class Key(enum.StrEnum):
    JOB = "job_id"


@features.task(outlets=[ORDERS])
async def async_accessors(task_state: Any, asset_state: Any, params: Any) -> Any:
    await task_state.aset("k", "v")
    seen: dict[str, Any] = {
        "aget": await task_state.aget("k"),
        "aincrement": await task_state.aincrement("count", 2),
        "acas": await task_state.acompare_and_set("k", "v", "w"),
        "params": dict(params),
    }
    await asset_state.aset("cursor", 42)
    seen["asset"] = await asset_state.aget("cursor")
    try:
        task_state.get("k")
    except AsyncContextError as exc:
        seen["sync_from_async"] = str(exc)
    return seen


@features.task
async def pipelined(task_state: Any) -> list[int]:
    """Many requests in flight at once; each response reaches its own request."""
    values: dict[int, int] = {}

    async def bump(i: int) -> None:
        values[i] = await task_state.aincrement(f"c{i}", i)

    async with trio.open_nursery() as nursery:
        for i in range(100):
            nursery.start_soon(bump, i)
    return [values[i] for i in range(100)]


@features.task
def mapped(x: int, ti: Any) -> list[int]:
    return [x * 10, ti.map_index]


mapped.expand(x=[1, 2, 3])


@features.task(outlets=[DAILY, SALES])
async def produce(outlet_events: Any) -> str:
    outlet_events[DAILY].add(ORDERS, extra={"rows": 3})
    outlet_events[SALES].extra["source"] = "crm"
    return "produced"


@features.task(inlets=[DAILY])
def consume(asset_state: Any) -> Any:
    return [a.name for a in asset_state], asset_state[DAILY].get("watermark")


produce >> consume
sync_accessors >> consume


@features.task(retries=2)
def resumable_job(task_state: Any, ti: Any) -> str:
    """Submit once, keep the job id, die; the retry reattaches to the stored job."""
    job_id = task_state.get("job_id")
    if job_id is None:
        submissions = task_state.increment("submissions")
        task_state.set("job_id", f"job-{submissions}")
        os.kill(os.getpid(), signal.SIGKILL)
    return f"{job_id} done on try {ti.try_number}, submitted {task_state.get('submissions')}x"


# -- limits, rogues and loading ------------------------------------------------------------------

limits = Dag("limits", default_args={"isolation": "process"})


@limits.task(execution_timeout=0.5)
def sleeps_sync(task_state: Any) -> None:
    task_state.set("pid", os.getpid())
    time.sleep(60)


@limits.task(execution_timeout=0.5)
async def ignores_sigterm() -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    await trio.sleep(60)


@limits.task
async def waits_forever(task_state: Any) -> None:
    await task_state.aset("pid", os.getpid())
    await trio.sleep_forever()


@limits.task
def runs_where(task_state: Any) -> int:
    return os.getpid()


@limits.task(isolation="none")
def stays_home() -> int:
    return os.getpid()


@limits.task(inlets=[ORDERS])
async def rogue(task_state: Any) -> dict[str, Any]:
    """Writes frames by hand: every trick is answered with a refusal."""
    connection = task_state._client._connection
    tricks: dict[str, dict[str, Any]] = {
        "claims_identity": {
            "msg": encode(m.SetTaskState("k", "forged")),
            "caller": {"dag_id": "deaths", "task_id": "raises", "unrestricted": True},
        },
        "extra_field": {
            "msg": {"type": "SetTaskState", "key": "k", "value": 1, "dag_id": "deaths"}
        },
        "undeclared_asset": {"msg": encode(m.SetAssetStateByName("sales", "k", 1))},
        "admin_list": {"msg": encode(m.ListState())},
        "admin_cleanup": {"msg": encode(m.CleanupExpired())},
        "admin_declare": {"msg": encode(m.DeclareAssets(()))},
        "asset_event": {"msg": encode(m.AddAssetEvent("sales", "sales"))},
        "response_as_request": {"msg": encode(m.OkResponse())},
        "unknown_type": {"msg": {"type": "DropAllTables"}},
        "not_a_message": {"msg": "GetTaskState"},
    }
    answers: dict[str, Any] = {}
    for name, fields in tricks.items():
        response = await connection.exchange_frame(fields)
        answers[name] = [response.error.value, response.detail]
    legit = await connection.exchange_frame({"msg": encode(m.GetTaskState("k"))})
    answers["legit"] = encode(legit)
    return answers


@limits.task
async def corrupts_stream(task_state: Any) -> None:
    await task_state._client._connection._stream.send_all(b"\x00\x00\x00\x04oops")
    await trio.sleep(60)


# -- what a review found ------------------------------------------------------------------------

review = Dag("review", default_args={"isolation": "process"})


@review.task
def starts_a_process_then_dies(task_state: Any) -> None:
    """Leave a process behind that would hold an inherited socket open, then die."""
    import subprocess

    helper = subprocess.Popen(["sleep", "60"], close_fds=False)
    task_state.set("helper_pid", helper.pid)
    os._exit(3)


@review.task
def beats_after_return(task_state: Any) -> int:
    """A thread keeps using state after the task returned a result too big to send at once."""
    import threading

    def beat() -> None:
        for i in range(10_000):
            try:
                task_state.set("beat", i)
            except Exception:
                return

    task_state.set("beat", -1)
    threading.Thread(target=beat, daemon=True).start()
    return len("x" * 4_000_000)  # returned after the thread started
