"""The airflow.sdk stand-in, TaskFlow data passing, and the conveniences Airflow code uses."""

from __future__ import annotations

import importlib.util
import logging
import sys
import textwrap
import threading
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stateward import (
    Asset,
    Dag,
    DagDefinitionError,
    MemoryStore,
    Operator,
    ShellOperator,
    TaskLoadError,
    UpstreamResultError,
    load_dags,
    open_runtime,
)
from stateward._airflow import _FINDER, airflow_names
from stateward.testing import StateHarness


def dag_file(tmp_path: Path, source: str, name: str = "dag_file.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# -- the import hook ----------------------------------------------------------------------


def test_the_hook_serves_airflow_only_while_loading(tmp_path: Path) -> None:
    """Outside a load `import airflow` fails; the loaded Dag keeps working afterwards."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, task
        from airflow.sdk.execution_time.context import NEVER_EXPIRE, get_current_context

        with DAG("hooked"):
            @task
            def where():
                return get_current_context()["task"].task_id

            where()
        """,
    )
    dags = load_dags(path)
    assert "airflow" not in sys.modules
    assert not any(type(f).__name__ == "_Finder" for f in sys.meta_path)
    with pytest.raises(ModuleNotFoundError):
        __import__("airflow.sdk")
    with airflow_names():
        from airflow.sdk import NEVER_EXPIRE  # type: ignore[import-not-found]

        import stateward

        assert NEVER_EXPIRE is stateward.NEVER_EXPIRE
    assert "airflow.sdk" not in sys.modules
    assert list(dags) == ["hooked"]


def test_an_unserved_name_fails_the_load_saying_what_to_do(tmp_path: Path) -> None:
    """A name the stand-in lacks is an ImportError naming it and the alternative."""
    path = dag_file(tmp_path, "from airflow.sdk import DAG, TaskGroup\n")
    with pytest.raises(
        TaskLoadError,
        match=r"line 1: ImportError: airflow.sdk.TaskGroup is not supported by stateward: "
        r"task groups are not there; put the tasks in the Dag itself \(see 'What does not "
        r"run, and why' in docs/airflow.md\)",
    ):
        load_dags(path)


def test_an_unserved_module_fails_the_load_saying_what_to_do(tmp_path: Path) -> None:
    """Providers and other modules of Airflow are refused with what to use instead."""
    path = dag_file(
        tmp_path, "from airflow.providers.postgres.hooks.postgres import PostgresHook\n"
    )
    with pytest.raises(
        TaskLoadError,
        match=r"ModuleNotFoundError: module 'airflow.providers.postgres.hooks.postgres' is "
        r"not supported by stateward .*call the library itself in a @task .*ShellOperator",
    ):
        load_dags(path)
    path = dag_file(tmp_path, "import airflow.operators.bash\n")
    with pytest.raises(TaskLoadError, match=r"use stateward.ShellOperator for a command"):
        load_dags(path)


def test_probes_and_star_imports_of_served_modules(tmp_path: Path) -> None:
    """hasattr answers False for a missing name; `import *` gives the names served."""
    path = dag_file(
        tmp_path,
        """
        import airflow.sdk
        from airflow.sdk.execution_time.context import *

        try:
            airflow.sdk.Variable
        except AttributeError as exc:
            missing = str(exc)
        with airflow.sdk.DAG("probed", params={
            "probed": [hasattr(airflow.sdk, "TaskGroup"), hasattr(airflow.sdk, "task")],
            "star": sorted(n for n in globals() if n.isupper() or n[0].islower() and n in (
                "get_current_context",
            )),
            "missing": missing,
        }):
            pass
        """,
    )
    params = load_dags(path)["probed"].params
    assert params["probed"] == [False, True]
    assert params["star"] == ["NEVER_EXPIRE", "get_current_context"]
    assert params["missing"].startswith(
        "airflow.sdk.Variable is not supported by stateward: Airflow's Connections and Variables"
    )


async def test_a_task_body_imports_airflow_when_it_runs(tmp_path: Path) -> None:
    """`from airflow.sdk import ...` inside a task function is served at run time too."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, task

        with DAG(dag_id="inner"):
            @task
            def plain():
                from airflow.sdk import get_current_context
                return get_current_context()["run_id"]

            @task
            async def on_asyncio():
                import airflow.sdk.execution_time.context as c
                return c.get_current_context()["ti"].task_id

            plain() >> on_asyncio()
        """,
    )
    dag = load_dags(path)["inner"]
    assert "airflow" not in sys.modules
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    assert [result.ti("plain").result, result.ti("on_asyncio").result] == ["r", "on_asyncio"]
    assert "airflow" not in sys.modules


async def test_task_bodies_import_airflow_in_several_threads_at_once(tmp_path: Path) -> None:
    """Mapped instances importing at once each get the whole served module tree."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, task

        with DAG(dag_id="many", max_active_tasks=8):
            @task
            def each(n):
                import airflow.sdk.definitions.context
                from airflow.sdk.execution_time import context
                return [n, airflow.sdk.definitions.context.get_current_context is
                        context.get_current_context]

            each.expand(n=list(range(16)))
        """,
    )
    dag = load_dags(path)["many"]
    async with open_runtime(store=MemoryStore()) as rt:
        result = await rt.run_dag(dag, run_id="r")
    assert [result.ti("each", i).result for i in range(16)] == [[i, True] for i in range(16)]


async def test_a_module_next_to_the_file_is_served_as_the_file_is(tmp_path: Path) -> None:
    """A helper next to the Dag file imports airflow.sdk, at load and run time, privately."""
    (tmp_path / "af_helper.py").write_text(
        textwrap.dedent(
            """
            from airflow.sdk import BaseOperator

            class Hello(BaseOperator):
                def execute(self, context):
                    from airflow.sdk import get_current_context
                    return get_current_context()["run_id"]
            """
        )
    )
    path = dag_file(
        tmp_path,
        """
        import sys
        from airflow.sdk import DAG
        from af_helper import Hello

        assert not [n for n in sys.modules if n.split(".")[0] == "airflow"]
        with DAG("helped"):
            Hello(task_id="hello")
        """,
    )
    try:
        dag = load_dags(path)["helped"]
        async with open_runtime(store=MemoryStore()) as rt:
            result = await rt.run_dag(dag, run_id="r")
        assert result.ti("hello").result == "r"
    finally:
        sys.modules.pop("af_helper", None)
    assert not [n for n in sys.modules if n.split(".")[0] == "airflow"]
    assert _FINDER not in sys.meta_path


def test_a_failed_load_leaves_nothing_served(tmp_path: Path) -> None:
    """After a load that raised, neither the finder nor a served module remains."""
    path = dag_file(
        tmp_path,
        """
        import importlib
        importlib.import_module("airflow.sdk.bases.operator")
        raise RuntimeError("boom")
        """,
    )
    with pytest.raises(TaskLoadError, match="RuntimeError: boom"):
        load_dags(path)
    assert _FINDER not in sys.meta_path
    assert not [n for n in sys.modules if n.split(".")[0] == "airflow"]
    with pytest.raises(ModuleNotFoundError):
        __import__("airflow.sdk")


def test_another_thread_is_not_served_during_a_load(tmp_path: Path) -> None:
    """While a thread loads a Dag file, another thread's `import airflow` finds nothing.

    (The file's own imports never reach sys.modules; the finder serves only the loading
    context.)
    """
    started, release = threading.Event(), threading.Event()
    events = ModuleType("_sw_test_events")
    events.started, events.release = started, release  # type: ignore[attr-defined]
    sys.modules[events.__name__] = events
    path = dag_file(
        tmp_path,
        """
        import _sw_test_events
        from airflow.sdk import DAG
        _sw_test_events.started.set()
        _sw_test_events.release.wait(10)
        with DAG(dag_id="slow"):
            pass
        """,
    )
    loader = threading.Thread(target=load_dags, args=(path,))
    loader.start()
    try:
        assert started.wait(10)
        with pytest.raises(ModuleNotFoundError):
            __import__("airflow")
        assert importlib.util.find_spec("airflow") is None
    finally:
        release.set()
        loader.join()
        del sys.modules[events.__name__]


def test_concurrent_loads_in_threads(tmp_path: Path) -> None:
    """Loads in 4 threads at once each get the stand-in; the finder leaves at the end."""
    path = dag_file(
        tmp_path,
        """
        import importlib
        import time
        from airflow.sdk import DAG, task
        time.sleep(0.002)
        context = importlib.import_module("airflow.sdk.execution_time.context")
        with DAG(dag_id="etl"):
            @task
            def t():
                return context.NEVER_EXPIRE
            t()
        """,
    )
    errors: list[Exception] = []

    def load() -> None:
        for _ in range(30):
            try:
                assert list(load_dags(path)) == ["etl"]
            except Exception as exc:
                errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors[:3]
    assert _FINDER not in sys.meta_path
    assert not [n for n in sys.modules if n.split(".")[0] == "airflow"]


def test_airflow_arguments_are_ignored_with_one_debug_line_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Scheduling arguments are ignored (logged at DEBUG); one Airflow lacks is refused."""
    caplog.set_level(logging.DEBUG, logger="stateward.airflow")
    path = dag_file(
        tmp_path,
        """
        from datetime import datetime
        from airflow.sdk import DAG, Asset, task

        with DAG("args", schedule="@daily", start_date=datetime(2026, 1, 1), catchup=False,
                 tags=["x"], default_args={"owner": "me", "retries": 3}):
            @task(pool="small", outlets=Asset("a", extra={"k": 1}))
            def one():
                pass

            one()
        """,
    )
    dag = load_dags(path)["args"]
    task = dag.get_task("one")
    assert task.retries == 3
    assert task.outlets == (Asset("a"),)
    lines = [r.getMessage() for r in caplog.records if r.name == "stateward.airflow"]
    assert (
        "DAG('args'): stateward ignores the Airflow argument(s) catchup, schedule, start_date, tags"
        in lines
    )
    assert "@task: stateward ignores the Airflow argument(s) pool" in lines
    refused = dag_file(tmp_path, "from airflow.sdk import DAG\nDAG('x', shedule=None)\n", "bad.py")
    with pytest.raises(TaskLoadError, match=r"Airflow does not have: shedule"):
        load_dags(refused)


def test_every_dag_of_a_file_is_found_whatever_its_name(tmp_path: Path) -> None:
    """`with DAG(...)` without `as`, a @dag function's Dag and Dags in a list are all found."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, dag, task
        from stateward import Dag

        with DAG("first"):
            pass

        @dag
        def second():
            pass

        second()
        made = [Dag(f"made_{i}") for i in range(2)]
        """,
    )
    assert list(load_dags(path)) == ["first", "second", "made_0", "made_1"]


async def test_a_dag_function_chain_and_override(tmp_path: Path, sw: StateHarness) -> None:
    """@dag(...) with its arguments, chain(), .override() and a function called twice."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import chain, dag, task

        @dag(dag_id="chained", params={"n": 2})
        def build():
            @task
            def step(params=None):
                return params["n"]

            chain(step(), step.override(task_id="middle")(), step())

        build()
        """,
    )
    dag = sw.load_dag(path)
    assert [t.task_id for t in dag.topological_order()] == ["step", "middle", "step__1"]
    result = await sw.run_dag(dag)
    assert [ti.result for ti in result.task_instances] == [2, 2, 2]


# -- context names ------------------------------------------------------------------------


async def test_airflow_context_names_are_the_same_accessors(sw: StateHarness) -> None:
    """task_state_store / asset_state_store: by parameter, by key and in templates."""
    orders = Asset("orders")
    dag = Dag("names")

    @dag.task(outlets=[orders], op_kwargs={"seen": "<< task_state_store.k >>"})
    def both(seen: str, task_state_store: Any, asset_state_store: Any, **context: Any) -> Any:
        assert context["task_state"] is task_state_store
        assert context["asset_state"] is asset_state_store
        asset_state_store.set("w", 1)
        return seen

    await sw.seed_task_state(both, k="v")
    result = await sw.run_task(both)
    assert result.result == "v"
    assert await sw.asset_state("orders") == {"w": 1}


def test_a_missing_context_key_says_why_and_what_is_close() -> None:
    """Airflow's keys name what to use instead; a near miss gets "did you mean"."""
    from stateward._context.context import Context

    context = Context._create(task_state=1, run_id="r")
    with pytest.raises(
        KeyError,
        match=r"no 'logical_date' \(an Airflow context key: stateward runs have no logical date",
    ):
        context["logical_date"]
    with pytest.raises(KeyError, match=r"no 'task_stat'; did you mean 'task_state'\?"):
        context["task_stat"]


def test_a_default_parameter_named_like_an_airflow_key_warns(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """It would always get its default: the Dag's build says so."""
    dag = Dag("warned")

    @dag.task
    def uses(logical_date: Any = None) -> None:
        pass

    assert "takes 'logical_date', which is not a stateward context key" in caplog.text


# -- TaskFlow -----------------------------------------------------------------------------


def taskflow_dag(tmp_path: Path, result: str = "{'n': 3}", fail_load: bool = False) -> Path:
    return dag_file(
        tmp_path,
        f"""
        from airflow.sdk import DAG, task

        with DAG("flow"):
            @task
            def extract():
                return {result}

            @task
            def load(value):
                if {fail_load}:
                    raise RuntimeError("down")
                return value

            load(extract())
        """,
    )


async def test_a_non_json_result_cannot_be_passed_on_after_a_resume(tmp_path: Path) -> None:
    """Only its repr was recorded: the downstream fails with UpstreamResultError."""
    db = tmp_path / "s.db"
    async with open_runtime(db=db) as rt:
        first = await rt.run_dag(
            load_dags(taskflow_dag(tmp_path, "{1, 2}", fail_load=True))["flow"], run_id="r"
        )
    assert first.ti("load").state == "failed"
    async with open_runtime(db=db) as rt:
        again = await rt.run_dag(load_dags(taskflow_dag(tmp_path, "{1, 2}"))["flow"], run_id="r")
    error = again.ti("load").error
    assert isinstance(error, UpstreamResultError)
    assert "its result '{1, 2}' was not JSON" in str(error)


async def test_a_json_result_is_passed_on_after_a_resume(tmp_path: Path) -> None:
    """The recorded result takes the place of the upstream's run."""
    db = tmp_path / "s.db"
    async with open_runtime(db=db) as rt:
        await rt.run_dag(load_dags(taskflow_dag(tmp_path, fail_load=True))["flow"], run_id="r")
    async with open_runtime(db=db) as rt:
        again = await rt.run_dag(load_dags(taskflow_dag(tmp_path))["flow"], run_id="r")
    assert again.ti("extract").attempts == ()
    assert again.ti("load").result == {"n": 3}


async def test_expand_over_a_result_that_is_not_a_list_fails(
    tmp_path: Path, sw: StateHarness
) -> None:
    """The mapped task fails before any try; the message says what was returned."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, task

        with DAG("bad_map"):
            @task
            def one():
                return 5

            @task
            def each(x):
                return x

            each.expand(x=one())
        """,
    )
    result = await sw.run_dag(sw.load_dag(path))
    each = result.ti("each")
    assert each.state == "failed"
    assert each.try_number == 0
    assert "returned int 5; expand() needs a list" in str(each.error)


async def test_run_task_refuses_a_task_that_takes_upstream_results(
    tmp_path: Path, sw: StateHarness
) -> None:
    """It would run without them."""
    dag = sw.load_dag(taskflow_dag(tmp_path))
    with pytest.raises(UpstreamResultError, match=r"run the Dag \(rt.run_dag\)"):
        await sw.run_task(dag.get_task("load"))


async def test_taskflow_in_a_task_process_is_refused(tmp_path: Path) -> None:
    """Results do not cross to a task process yet: the error says so."""
    async with open_runtime(db=":memory:", isolation="process") as rt:
        result = await rt.run_dag(load_dags(taskflow_dag(tmp_path))["flow"], run_id="r")
    assert "not passed to a task process yet" in str(result.ti("load").error)


def test_a_task_output_cannot_be_iterated_while_building() -> None:
    """Its value is known only when the Dag runs."""
    dag = Dag("it")

    @dag.task
    def a() -> None: ...

    from stateward._taskflow import TaskOutput

    with pytest.raises(TypeError, match=r"map over it with \.expand"):
        list(TaskOutput(a))
    with pytest.raises(DagDefinitionError, match=r"known only when the Dag runs"):
        dag.task(task_id="b")(lambda x: x).expand(x=TaskOutput(a)).map_count()


# -- operator conveniences ----------------------------------------------------------------


class Writes(Operator):
    template_fields = ("out_file", "command")

    def __init__(self, *, out_file: str, command: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.out_file = out_file
        self.command = command
        self.seen: list[int] = []

    def execute(self, context: Any) -> Any:
        self.seen.append(context["ti"].try_number)
        self.log.info("command %s", self.command)
        if context["ti"].try_number == 1:
            raise RuntimeError("first try")
        return [self.command, self.seen]


async def test_fields_render_in_order_and_attributes_do_not_outlive_a_try(
    sw: StateHarness, caplog: pytest.LogCaptureFixture
) -> None:
    """A template reads a field rendered before it; self.seen starts afresh each try."""
    caplog.set_level(logging.INFO)
    dag = Dag("writes")
    task = Writes(
        task_id="w", dag=dag, retries=1,
        out_file="/data/<< run_id >>.csv", command="gzip << task.out_file >>",
    )  # fmt: skip
    result = await sw.run_task(task)
    assert result.result == ["gzip /data/test_run.csv", [2]]
    second = await sw.run_task(task, run_id="again")
    assert second.result[1] == [2]
    assert task.seen == []
    assert "command gzip /data/test_run.csv" in result.log


async def test_airflow_template_syntax_per_dag(sw: StateHarness) -> None:
    """template_syntax="airflow" renders {{ }}; << >> is then plain text."""
    dag = Dag("braces", template_syntax="airflow")
    task = ShellOperator(task_id="s", dag=dag, command="echo {{ run_id }} << x >>")
    result = await sw.run_task(task)
    assert result.rendered["command"] == "echo test_run << x >>"
    with pytest.raises(DagDefinitionError, match=r"template_syntax must be one of"):
        Dag("bad", template_syntax="mustache")


async def test_asyncio_code_on_trio_fails_saying_how(sw: StateHarness) -> None:
    """A stateward async task awaiting asyncio gets a note; async_library fixes it."""
    import asyncio

    dag = Dag("aio")

    @dag.task
    async def nap() -> int:
        await asyncio.sleep(0)
        return 1

    failed = await sw.run_task(nap)
    assert "set async_library = 'asyncio'" in "\n".join(failed.error.__notes__)
    nap.async_library = "asyncio"  # type: ignore[misc]
    assert (await sw.run_task(nap, run_id="again")).result == 1


async def test_async_accessors_work_on_asyncio(tmp_path: Path, sw: StateHarness) -> None:
    """aget/aset from an asyncio task go through the sync bridge, concurrently too."""
    path = dag_file(
        tmp_path,
        """
        import asyncio
        from airflow.sdk import DAG, task

        with DAG("aio_state"):
            @task
            async def count(task_state_store=None):
                await asyncio.gather(*(task_state_store.aset(f"k{i}", i) for i in range(5)))
                values = await asyncio.gather(*(task_state_store.aget(f"k{i}") for i in range(5)))
                return sum(values)

            count()
        """,
    )
    dag = sw.load_dag(path)
    result = await sw.run_dag(dag)
    assert result.ti("count").result == 10
    assert len(await sw.task_state(dag.get_task("count"))) == 5


async def test_asyncio_tasks_get_a_plain_loop_under_trio_asyncio(
    tmp_path: Path, sw: StateHarness
) -> None:
    """trio-asyncio's event loop policy (the PostgreSQL store installs it) is not used.

    Its loop would run the task inside a trio run of its own, where the task's sync
    state calls are refused as if made from trio's thread.
    """
    pytest.importorskip("trio_asyncio")
    path = dag_file(
        tmp_path,
        """
        import asyncio
        from airflow.sdk import DAG, task

        with DAG("aio_sync_calls"):
            @task
            async def mixed(task_state_store=None):
                await asyncio.sleep(0)
                task_state_store.set("k", 1)
                return task_state_store.get("k")

            mixed()
        """,
    )
    result = await sw.run_dag(sw.load_dag(path))
    assert result.ti("mixed").result == 1


def test_with_airflow_importable_nothing_is_served(tmp_path: Path) -> None:
    """An importable `airflow` (here a stand-in next to the file) is used as it is."""
    (tmp_path / "airflow").mkdir()
    (tmp_path / "airflow" / "__init__.py").write_text("")
    (tmp_path / "airflow" / "sdk.py").write_text(
        "class DAG:\n    def __init__(self, dag_id):\n        pass\n"
    )
    path = dag_file(tmp_path, "from airflow.sdk import DAG\nDAG('real')\nd = DAG('bound')\n")
    try:
        with pytest.raises(
            TaskLoadError, match=r"defines Airflow's own Dags: Airflow is installed"
        ):
            load_dags(path)
    finally:
        for name in [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]:
            del sys.modules[name]


def test_with_airflow_importable_an_unbound_dag_says_why(tmp_path: Path) -> None:
    """`import airflow.sdk as af` and an `@af.dag` called unbound: the message says Airflow."""
    (tmp_path / "airflow" / "sdk").mkdir(parents=True)
    (tmp_path / "airflow" / "__init__.py").write_text("")
    (tmp_path / "airflow" / "sdk" / "__init__.py").write_text(
        "import functools\n\n"
        "def dag(f):\n    @functools.wraps(f)\n    def build():\n        return f()\n"
        "    return build\n"
    )
    path = dag_file(
        tmp_path, "import airflow.sdk as af\n\n@af.dag\ndef etl():\n    pass\n\netl()\n"
    )
    try:
        with pytest.raises(
            TaskLoadError, match=r"defines Airflow's own Dags: Airflow is installed"
        ):
            load_dags(path)
    finally:
        for name in [n for n in sys.modules if n == "airflow" or n.startswith("airflow.")]:
            del sys.modules[name]


async def test_one_instance_of_a_dag_that_maps_at_run_time(sw: StateHarness) -> None:
    """run_task of an upstream task works though its Dag maps a task over its result."""
    dag = sw.load_dag(Path(__file__).parent / "airflow_dags" / "mapped_tables.py")
    result = await sw.run_task(dag.get_task("list_tables"))
    assert result.result == ["orders", "customers", "products"]


async def test_a_mapped_operator_over_an_upstream_result(tmp_path: Path, sw: StateHarness) -> None:
    """Operator.partial(...).expand(...): each instance gets its element as an attribute."""
    path = dag_file(
        tmp_path,
        """
        from airflow.sdk import DAG, BaseOperator, task

        class Copy(BaseOperator):
            template_fields = ("target",)

            def __init__(self, *, table, target, **kwargs):
                super().__init__(**kwargs)
                self.table = table
                self.target = target

            def execute(self, context):
                return f"{self.table} -> {self.target}"

        with DAG("mapped_op"):
            @task
            def tables():
                return ["a", "b"]

            Copy.partial(task_id="copy", target="raw_{{ ti.map_index }}").expand(table=tables())
        """,
    )
    result = await sw.run_dag(sw.load_dag(path))
    assert [result.ti("copy", i).result for i in (0, 1)] == ["a -> raw_0", "b -> raw_1"]
