"""The pytest plugin: fixtures, the harnesses, failure reports, MockClock retries."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from stateward import (
    Asset,
    AssetAlias,
    AsyncContextError,
    Dag,
    RuntimeClosedError,
    StoreError,
    TaskFailedError,
)
from stateward.testing import DEFAULT_RUN_ID, StateHarness, SyncHarness, assert_success

pytest_plugins = ["pytester"]

ORDERS = Asset("orders", uri="s3://lake/orders")
DAILY = AssetAlias("daily")

dag = Dag("shop", params={"region": "eu"})


@dag.task(op_kwargs={"job": "<< task_state.job_id >>", "region": "<< params.region >>"})
def submit(job: str, region: str, task_state: Any, ti: Any) -> str:
    task_state.set("seen_try", ti.try_number)
    return f"{job}@{region}"


@dag.task(inlets=[ORDERS])
async def load(asset_state: Any) -> int:
    watermark: int = await asset_state.aget("watermark", 0)
    await asset_state.aset("watermark", watermark + 10)
    return watermark


@dag.task
def square(x: int, task_state: Any) -> int:
    task_state.set("x", x)
    return x * x


square.expand(x=[2, 3, 4])


@dag.task(inlets=[DAILY])
def consume(asset_state: Any) -> list[str]:
    return sorted(asset.name for asset in asset_state)


@dag.task
def explode() -> None:
    raise ValueError("disk full")


@dag.task
def after_explode() -> None:
    """Never runs: its upstream task fails."""


explode >> after_explode

flaky_dag = Dag("flaky")


@flaky_dag.task(retries=3, retry_delay=timedelta(hours=1))
def flaky(task_state: Any) -> int:
    attempt: int = task_state.increment("attempts")
    if attempt < 4:
        raise ConnectionError(f"attempt {attempt} lost the connection")
    return attempt


# -- the async harness --------------------------------------------------------------------


async def test_task_state_seeded_before_and_read_after_a_run(sw: StateHarness) -> None:
    """Seeded task state is what the task sees; what it writes is read back by task object."""
    await sw.seed_task_state(submit, job_id="j-42")
    result = assert_success(await sw.run_task(submit))
    assert result.result == "j-42@eu"
    assert await sw.task_state(submit) == {"job_id": "j-42", "seen_try": 1}
    assert result.run_id == DEFAULT_RUN_ID


async def test_seed_task_state_takes_a_mapping_for_any_key(sw: StateHarness) -> None:
    """Keys that are not identifiers, or named like options, go in the mapping."""
    await sw.seed_task_state(submit, {"job-id": 1, "run_id": "x"}, job_id="j", run_id="r")
    assert await sw.task_state(submit, run_id="r") == {"job-id": 1, "run_id": "x", "job_id": "j"}
    assert await sw.task_state(submit) == {}


async def test_run_task_with_run_id_map_index_and_try_number(sw: StateHarness) -> None:
    """One mapped instance runs, in the chosen run, from the chosen try."""
    await sw.seed_task_state(submit, job_id="j-7", run_id="nightly")
    result = await sw.run_task(submit, run_id="nightly", try_number=3)
    assert (result.run_id, result.try_number) == ("nightly", 3)
    assert (await sw.task_state(submit, run_id="nightly"))["seen_try"] == 3
    mapped = assert_success(await sw.run_task(square, map_index=1))
    assert (mapped.map_index, mapped.result) == (1, 9)
    assert await sw.task_state(square, map_index=1) == {"x": 3}
    assert await sw.task_state(square, map_index=0) == {}


async def test_run_task_returns_the_rendered_template_fields(sw: StateHarness) -> None:
    """The result carries the template fields as rendered for the last try."""
    await sw.seed_task_state(submit, job_id="j-9")
    result = await sw.run_task(submit, params={"region": "us"})
    assert result.rendered == {"op_kwargs": {"job": "j-9", "region": "us"}}


DAILY_ORDERS = Asset(name="orders/daily", uri="s3://warehouse/orders/daily")
seeded_dag = Dag("seeded")


@seeded_dag.task(outlets=[DAILY_ORDERS])
async def advance(asset_state: Any) -> str:
    previous: str = await asset_state.aget("watermark")
    await asset_state.aset("watermark", "w1")
    return previous


async def test_state_seeded_by_name_belongs_to_the_asset_declared_later(
    sw_runtime: Any, sw_sqlite_runtime: Any
) -> None:
    """Seeding by name alone binds no URI: a task declaring the name with a URI reads
    the seeded state, and the asset then has that URI."""
    for rt in (sw_runtime, sw_sqlite_runtime):
        await rt.state.asset(name="orders/daily").aset("watermark", "w0")
        result = await rt.run_task(advance)
        assert result.state == "success", result.error
        assert result.result == "w0"
        assert await rt.state.asset(uri=DAILY_ORDERS.uri).aget("watermark") == "w1"
        (entry,) = await rt.state.list(scope="asset")
        assert entry.asset_uri == DAILY_ORDERS.uri


async def test_asset_state_seeded_and_read_by_asset_ref_or_name(sw: StateHarness) -> None:
    """Asset state seeded on the declared Asset is what the task reads and updates."""
    await sw.seed_asset_state(ORDERS, watermark=5)
    result = assert_success(await sw.run_task(load))
    assert result.result == 5
    assert await sw.asset_state(ORDERS) == {"watermark": 15}
    assert await sw.asset_state("orders") == {"watermark": 15}
    assert await sw.asset_state(Asset.ref(uri="s3://lake/orders")) == {"watermark": 15}


async def test_seed_asset_state_refuses_what_is_not_an_asset(sw: StateHarness) -> None:
    """A value that names no asset is refused with the kinds accepted."""
    with pytest.raises(TypeError, match=r"expected an Asset, Asset.ref\(...\) or an asset name"):
        await sw.seed_asset_state(42, watermark=1)  # type: ignore[arg-type]


async def test_alias_inlets_resolve_to_seeded_asset_events(sw: StateHarness) -> None:
    """An event seeded through an alias is what the consumer's alias inlet resolves to."""
    assert (await sw.run_task(consume)).result == []
    await sw.seed_asset_event(ORDERS, alias=DAILY, extra={"rows": 3})
    assert (await sw.run_task(consume)).result == ["orders"]


async def test_run_dag_records_every_instance(sw: StateHarness) -> None:
    """A Dag run through the harness records every instance, failed ones included."""
    await sw.seed_task_state(submit, job_id="j-1")
    run = await sw.run_dag(dag)
    assert run.state == "failed"
    assert run.ti("after_explode").state == "upstream_failed"
    assert {(ti.task_id, ti.map_index) for ti in sw.results} == {
        (ti.task_id, ti.map_index) for ti in run.task_instances
    }


async def test_sqlite_harness_keeps_state_in_tmp_path(
    sw_sqlite: StateHarness, tmp_path: Path
) -> None:
    """sw_sqlite runs on a SQLite file in the test's tmp_path."""
    await sw_sqlite.seed_task_state(submit, job_id="j-3")
    assert_success(await sw_sqlite.run_task(submit))
    assert await sw_sqlite.task_state(submit) == {"job_id": "j-3", "seen_try": 1}
    assert (tmp_path / "state.db").exists()


async def test_retry_delays_follow_the_mock_clock(
    sw: StateHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """Three one-hour retry delays pass on the MockClock, not on the wall."""
    result = assert_success(await sw.run_task(flaky))
    assert (result.result, result.try_number) == (4, 4)
    assert trio.current_time() >= 3 * 3600


# -- assert_success -------------------------------------------------------------------------


async def test_assert_success_raises_the_task_error_as_cause(sw: StateHarness) -> None:
    """The task's exception is the cause, its traceback starting in the task's code."""
    result = await sw.run_task(explode)
    with pytest.raises(TaskFailedError, match=r"task 'shop.explode' .* after 1 try") as caught:
        assert_success(result)
    cause = caught.value.__cause__
    assert isinstance(cause, ValueError)
    assert caught.value.task == "shop.explode"
    assert cause.__traceback__ is not None
    assert cause.__traceback__.tb_frame.f_code is explode.python_callable.__code__


async def test_assert_success_on_a_dag_run_names_every_failed_instance(sw: StateHarness) -> None:
    """A failed Dag run lists each failed instance and raises the first error."""
    await sw.seed_task_state(submit, job_id="j-2", run_id="r1")
    run = await sw.run_dag(dag, run_id="r1")
    with pytest.raises(TaskFailedError, match=r"'shop.after_explode' is upstream_failed") as caught:
        assert_success(run)
    assert isinstance(caught.value.__cause__, ValueError)


async def test_assert_success_returns_a_successful_result(sw: StateHarness) -> None:
    """A successful result is returned unchanged."""
    result = await sw.run_task(square, map_index=0)
    assert assert_success(result) is result


# -- the sync harness -----------------------------------------------------------------------


def test_sync_harness_seeds_runs_and_reads(sw_sync: SyncHarness) -> None:
    """A plain def test seeds, runs a task and reads its state back."""
    sw_sync.seed_task_state(submit, job_id="j-5")
    sw_sync.seed_asset_state(ORDERS, watermark=1)
    assert assert_success(sw_sync.run_task(submit)).result == "j-5@eu"
    assert assert_success(sw_sync.run_task(load)).result == 1
    assert sw_sync.task_state(submit) == {"job_id": "j-5", "seen_try": 1}
    assert sw_sync.asset_state(ORDERS) == {"watermark": 11}
    assert sw_sync.rt.state.task("shop", DEFAULT_RUN_ID, "submit").get("job_id") == "j-5"
    assert sw_sync.run_dag(dag).ti("explode").state == "failed"


def test_sync_harness_follows_the_autojump_clock(
    sw_sync: SyncHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """sw_sync runs trio on the test's autojump_clock, so retry delays are instant."""
    result = assert_success(sw_sync.run_task(flaky))
    assert result.try_number == 4
    assert autojump_clock.current_time() >= 3 * 3600


def test_sync_harness_joins_its_thread_and_refuses_use_after_close() -> None:
    """Leaving the block joins the thread; the closed harness says it is closed."""
    with SyncHarness() as harness:
        harness.seed_task_state(submit, job_id="j")
        assert harness.task_state(submit) == {"job_id": "j"}
    assert not [t for t in threading.enumerate() if t.name == "stateward-sync-harness"]
    with pytest.raises(RuntimeClosedError, match=r"needs an open harness; it is closed"):
        harness.task_state(submit)
    with pytest.raises(RuntimeClosedError, match=r"is closed; make a new one"):
        harness.__enter__()


def test_sync_harness_raises_the_error_that_stopped_its_runtime(tmp_path: Path) -> None:
    """A runtime that cannot open raises its error from the with statement."""
    with pytest.raises(StoreError), SyncHarness(tmp_path):
        pytest.fail("the block must not run")  # pragma: no cover
    assert not [t for t in threading.enumerate() if t.name == "stateward-sync-harness"]


def test_sync_harness_refuses_calls_from_async_code(sw_sync: SyncHarness) -> None:
    """A blocking call from trio's thread fails with the awaitable twin to use."""

    async def main() -> None:
        sw_sync.run_task(submit)

    with pytest.raises(AsyncContextError, match=r"async code .*'await sw.run_task\(...\)'"):
        trio.run(main)


async def test_sync_harness_refuses_to_open_in_async_code() -> None:
    """Opening a SyncHarness from trio's thread fails with a pointer to the async fixture."""
    with pytest.raises(AsyncContextError, match=r"cannot be used from async code"), SyncHarness():
        pass  # pragma: no cover


# -- the plugin, seen from a user's suite (pytester) -----------------------------------------

TASKS = """
from datetime import timedelta

import pytest
import trio

from stateward import Asset, Dag
from stateward.testing import assert_success

dag = Dag("etl")
ORDERS = Asset("orders")


@dag.task(inlets=[ORDERS])
def load(asset_state):
    rows = asset_state.get("rows", 0)
    asset_state.set("rows", rows + 1)
    return rows


@dag.task
def broken():
    raise ValueError("disk full")


@dag.task(retries=3, retry_delay=timedelta(hours=1))
def flaky(task_state):
    if task_state.increment("tries") < 4:
        raise ConnectionError("try again")
    return "ok"
"""


def run_inner(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """Run pytest on the pytester folder in-process, as a user would run their suite."""
    return pytester.runpytest("-p", "no:cacheprovider", *args)


def test_fixtures_found_through_the_entry_point_without_conftest(
    pytester: pytest.Pytester,
) -> None:
    """A fresh process finds every fixture through the entry point alone."""
    pytester.makepyfile(
        TASKS
        + """
@pytest.mark.trio
async def test_runtimes(sw_runtime, sw_sqlite_runtime):
    assert "MemoryStore" in repr(sw_runtime) and "Sqlite" in repr(sw_sqlite_runtime)


@pytest.mark.trio
async def test_harnesses(sw, sw_sqlite):
    for harness in (sw, sw_sqlite):
        await harness.seed_asset_state(ORDERS, rows=1)
        assert (await harness.run_task(load)).result == 1


def test_sync(sw_sync):
    assert sw_sync.run_task(load).result == 0
"""
    )
    assert not list(pytester.path.glob("conftest.py"))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3)
    result.stdout.fnmatch_lines(["plugins: *stateward-*"])


def test_fixtures_work_under_trio_mode_without_marks(pytester: pytest.Pytester) -> None:
    """With pytest-trio's trio_mode, unmarked async tests use the fixtures."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        TASKS
        + """
async def test_unmarked(sw):
    await sw.seed_asset_state(ORDERS, rows=4)
    assert (await sw.run_task(load)).result == 4
    assert await sw.asset_state(ORDERS) == {"rows": 5}
"""
    )
    run_inner(pytester).assert_outcomes(passed=1)


def test_a_failing_task_is_reported_with_its_own_traceback(pytester: pytest.Pytester) -> None:
    """A passing and a failing task test are reported; the failure shows the task's line."""
    pytester.makepyfile(
        TASKS
        + """
@pytest.mark.trio
async def test_load_passes(sw):
    assert_success(await sw.run_task(load))


@pytest.mark.trio
async def test_broken_fails(sw):
    assert_success(await sw.run_task(broken))
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*def broken():",
            '>       raise ValueError("disk full")',
            "E       ValueError: disk full",
            "*The above exception was the direct cause of the following exception:*",
            ">       assert_success(await sw.run_task(broken))",
            "E       stateward.TaskFailedError: task 'etl.broken' of run 'test_run' "
            "failed after 1 try (ValueError: disk full)*",
            "FAILED test_a_failing_task_is_reported_with_its_own_traceback.py::test_broken_fails*",
        ]
    )
    result.stdout.no_fnmatch_line("*ExceptionGroup*")


def test_a_plain_assert_report_adds_the_task_traceback(pytester: pytest.Pytester) -> None:
    """A failing plain assert gets a report section with each failed task's traceback."""
    pytester.makepyfile(
        TASKS
        + """
@pytest.mark.trio
async def test_async(sw):
    assert (await sw.run_task(broken)).state == "success"


def test_sync(sw_sync):
    assert sw_sync.run_task(broken).state == "success"
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(failed=2)
    section = [
        "*- stateward: failed task instances -*",
        "task 'etl.broken' of run 'test_run' failed after 1 try (ValueError: disk full):",
        "Traceback (most recent call last):",
        '  File "*.py", line *, in broken',
        '    raise ValueError("disk full")',
        "ValueError: disk full",
    ]
    # A state is an enum member: its repr names the enum, the diff shows the strings.
    assertion = "E       AssertionError: assert <TaskInstance*: 'failed'> == 'success'"
    result.stdout.fnmatch_lines([assertion, *section])
    assert result.stdout.str().count("stateward: failed task instances") == 2


def test_the_report_shows_the_end_of_a_failed_tasks_log(pytester: pytest.Pytester) -> None:
    """The report section ends with the last 20 lines the failed try printed."""
    pytester.makepyfile(
        TASKS
        + """
@dag.task
def chatty():
    for n in range(30):
        print(f"step {n}")
    raise ValueError("gave up")


@pytest.mark.trio
async def test_chatty(sw):
    assert_success(await sw.run_task(chatty))
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(failed=1)
    tail = [f"step {n}" for n in range(10, 30)]
    result.stdout.fnmatch_lines(["*- stateward: failed task instances -*"])
    result.stdout.fnmatch_lines(
        ["the last 20 lines of the log of 'etl.chatty' try 1:", *tail], consecutive=True
    )


def test_mock_clock_retries_are_instant(pytester: pytest.Pytester) -> None:
    """Hours of retry delays pass on the autojump clock, async and sync alike."""
    pytester.makepyfile(
        TASKS
        + """
@pytest.mark.trio
async def test_async(sw, autojump_clock):
    result = assert_success(await sw.run_task(flaky))
    assert result.try_number == 4
    assert trio.current_time() >= 3 * 3600


def test_sync(sw_sync, autojump_clock):
    assert assert_success(sw_sync.run_task(flaky)).try_number == 4
    assert autojump_clock.current_time() >= 3 * 3600
"""
    )
    run_inner(pytester).assert_outcomes(passed=2)


def test_plain_sync_tests_use_sw_sync(pytester: pytest.Pytester) -> None:
    """Plain def tests seed, run and read through sw_sync, and fail like any test."""
    pytester.makepyfile(
        TASKS
        + """
def test_passes(sw_sync):
    sw_sync.seed_asset_state(ORDERS, rows=2)
    assert sw_sync.run_task(load).result == 2
    assert sw_sync.asset_state(ORDERS) == {"rows": 3}


def test_fails(sw_sync):
    assert_success(sw_sync.run_task(broken))
"""
    )
    result = run_inner(pytester)
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(['>       raise ValueError("disk full")', "E*TaskFailedError*"])


def test_plugin_loads_without_pytest_trio(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without pytest-trio, sw_sync works and the async fixtures say what to install."""
    fake = pytester.mkpydir("pytest_trio")
    (fake / "__init__.py").write_text('raise ImportError("pytest-trio is not installed")\n')
    monkeypatch.setenv("PYTHONPATH", str(pytester.path))
    pytester.makepyfile(
        TASKS.replace("import trio\n", "")
        + """
def test_sync(sw_sync):
    assert sw_sync.run_task(load).result == 0


def test_async_fixture(sw):
    pass
"""
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:trio")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*the sw fixture needs pytest-trio; install it*"])
