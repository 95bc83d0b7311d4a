"""Template fields rendered by the runtime: state reads, refusals and what each try ran."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import pytest
import trio

from stateward import (
    Asset,
    AssetAlias,
    Dag,
    Operator,
    Runtime,
    TaskInstanceResult,
    TemplateError,
    TemplateKeyError,
    TemplateWriteError,
    UndeclaredAssetError,
    open_runtime,
)
from stateward._dag import PythonTask

DAG_ID = "etl"
RUN_ID = "run-1"
ORDERS = Asset("orders")
CUSTOMERS = Asset("customers", uri="s3://lake/customers")


def echo_task(dag: Dag, value: Any, *, task_id: str = "load", **options: Any) -> PythonTask:
    """A @dag.task that returns its templated op_kwarg ``value``."""

    def load(value: Any) -> Any:
        return value

    return dag.task(task_id=task_id, op_kwargs={"value": value}, **options)(load)


async def seed_task_state(rt: Runtime, task_id: str = "load", **values: Any) -> None:
    state = rt.state.task(DAG_ID, RUN_ID, task_id)
    for key, value in values.items():
        await state.aset(key, value)


async def seed_asset_state(rt: Runtime, asset: Asset, **values: Any) -> None:
    state = rt.state.asset(asset)
    for key, value in values.items():
        await state.aset(key, value)


async def render_value(
    rt: Runtime, source: Any, *, dag: Dag | None = None, **options: Any
) -> TaskInstanceResult:
    """Run a task whose one op_kwarg is ``source``; its result is the rendered value."""
    task = echo_task(dag or Dag(DAG_ID), source, **options)
    return await rt.run_task(task, run_id=RUN_ID)


class Query(Operator):
    """An operator with a templated ``sql`` field that may name a ``.sql`` file."""

    template_fields: ClassVar[tuple[str, ...]] = ("sql", "labels")
    template_ext: ClassVar[tuple[str, ...]] = (".sql",)

    def __init__(self, *, sql: str, labels: Any = None, **options: Any) -> None:
        self.sql = sql
        self.labels = labels
        super().__init__(**options)

    def execute(self, context: Mapping[str, Any]) -> Any:
        return (self.sql, self.labels)


class AsyncQuery(Query):
    """The same operator with an ``async def execute``."""

    async def execute(self, context: Mapping[str, Any]) -> Any:
        return (self.sql, self.labels)


# -- reading state ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("job << task_state.job_id >>", "job J-42"),
        ("job << task_state['job_id'] >>", "job J-42"),
        ("<< task_state['job-name'] >>", "nightly"),
        ("<< task_state.get('absent', 'none') >>", "none"),
        ("<< task_state.get('job_id') >>", "J-42"),
        ("<< 'job_id' in task_state >>/<< 'absent' in task_state >>", "True/False"),
        ("<< task_state.keys() | sort | join(',') >>", "job-name,job_id"),
    ],
)
async def test_task_state_by_attribute_and_key(rt, source, expected):
    """<< task_state.k >>, << task_state['k'] >>, get() and `in` read the task's own state."""
    await seed_task_state(rt, job_id="J-42", **{"job-name": "nightly"})
    ti = await render_value(rt, source)
    assert (ti.state, ti.result) == ("success", expected)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<< asset_state.watermark >>", "2024-05-01"),
        ("<< asset_state.get('watermark') >>", "2024-05-01"),
        ("<< asset_state.get('absent', 0) >>", "0"),
        ("<< asset_state['orders'].watermark >>", "2024-05-01"),
        ("<< asset_state['orders']['watermark'] >>", "2024-05-01"),
    ],
)
async def test_single_asset_by_attribute_and_key(rt, source, expected):
    """With one asset, asset_state.k reads it directly; asset_state['name'].k works too."""
    await seed_asset_state(rt, ORDERS, watermark="2024-05-01")
    ti = await render_value(rt, source, outlets=[ORDERS])
    assert (ti.state, ti.result) == ("success", expected)


async def test_several_assets_are_indexed_by_name_or_uri(rt):
    """With several assets, asset_state['name'] and asset_state['uri'] pick one."""
    await seed_asset_state(rt, ORDERS, watermark=7)
    await seed_asset_state(rt, CUSTOMERS, cursor="c-9")
    source = (
        "<< asset_state['orders'].watermark >> "
        "<< asset_state['customers'].cursor >> "
        "<< asset_state['s3://lake/customers']['cursor'] >>"
    )
    ti = await render_value(rt, source, inlets=[ORDERS], outlets=[CUSTOMERS])
    assert ti.result == "7 c-9 c-9"


async def test_several_assets_refuse_attribute_access(sw_runtime):
    """asset_state.k with several assets fails, telling the user how to index."""
    ti = await render_value(sw_runtime, "<< asset_state.watermark >>", inlets=[ORDERS, CUSTOMERS])
    assert ti.state == "failed"
    assert isinstance(ti.error, AttributeError)
    assert str(ti.error) == (
        "asset_state.watermark works only when the task has exactly one inlet asset (or no "
        "inlets and one outlet); it has 2 inlet assets ['orders', 'customers']. Index it "
        "instead: asset_state['orders'].watermark"
    )


async def test_single_asset_sugar_in_a_template_reads_the_inlet(rt):
    """In a template as in code, the sugar is the one inlet and .asset is the Asset."""
    await seed_asset_state(rt, ORDERS, watermark=7)
    await rt.state.asset(ORDERS).aset("asset", "a state key")
    source = (
        "<< asset_state.watermark >> << asset_state.asset.uri >> << asset_state.get('asset') >>"
    )
    ti = await render_value(rt, source, inlets=[ORDERS], outlets=[CUSTOMERS])
    assert (ti.state, ti.result) == ("success", "7 orders a state key")


async def test_undeclared_asset_fails_with_the_declared_ones(sw_runtime):
    """asset_state['other'] fails with UndeclaredAssetError listing the declared assets."""
    ti = await render_value(
        sw_runtime, "<< asset_state['invoices'].watermark >>", inlets=[ORDERS, CUSTOMERS]
    )
    assert isinstance(ti.error, UndeclaredAssetError)
    assert str(ti.error) == (
        "'invoices' is not an asset this task declared; it declared Asset('orders'), "
        "Asset('customers', uri='s3://lake/customers'). Add it to the task's inlets or outlets"
    )
    assert ti.error.__notes__ == [
        "while rendering template field \"op_kwargs['value']\" of task 'etl.load'"
    ]


async def test_statements_comments_and_filters(rt):
    """<% for %>, <% if %>, <# #> comments and filters run against state."""
    await seed_task_state(rt, partitions=["a", "b", "c"], skip="b")
    source = (
        "<# one load per partition #>"
        "<% for p in task_state.partitions %><% if p != task_state.skip %>"
        "load << p | upper >>;<% endif %><% endfor %>"
    )
    ti = await render_value(rt, source)
    assert ti.result == "load A;load C;"


async def test_curly_brace_syntax_reaches_the_task_untouched(sw_runtime):
    """{{ }}, {% %} and {# #} are plain text for the tool the task calls."""
    await seed_task_state(sw_runtime, job_id="J-1")
    source = "gh run view '{{ run.id }}' {% raw %} {# x #} --job << task_state.job_id >>"
    ti = await render_value(sw_runtime, source)
    assert ti.result == "gh run view '{{ run.id }}' {% raw %} {# x #} --job J-1"


async def test_strings_without_markers_are_not_rendered(sw_runtime):
    """A value without << <% <# is passed as it is, even if it is not valid Jinja."""
    ti = await render_value(sw_runtime, "awk '{ print $1 }' {{ %}")
    assert ti.result == "awk '{ print $1 }' {{ %}"


# -- native rendering and nested values ---------------------------------------------------


async def test_native_rendering_gives_python_objects(sw_runtime):
    """render_template_as_native_obj=True hands execute an int, a list and a dict."""
    await seed_task_state(sw_runtime, count=3, ids=[1, 2])
    await seed_asset_state(sw_runtime, ORDERS, config={"mode": "full"})
    dag = Dag(DAG_ID, render_template_as_native_obj=True)

    @dag.task(
        outlets=[ORDERS],
        op_kwargs={
            "count": "<< task_state.count >>",
            "ids": "<< task_state.ids >>",
            "config": "<< asset_state.config >>",
            "label": "n=<< task_state.count >>",
            "next_id": "<< task_state.ids[-1] + 1 >>",
        },
    )
    def load(count, ids, config, label, next_id):
        return count, ids, config, label, next_id

    ti = await sw_runtime.run_task(load, run_id=RUN_ID)
    assert ti.result == (3, [1, 2], {"mode": "full"}, "n=3", 3)
    assert type(ti.result[0]) is int
    assert type(ti.result[1]) is list


async def test_string_rendering_is_the_default(sw_runtime):
    """Without native rendering the same fields render to strings."""
    await seed_task_state(sw_runtime, count=3, ids=[1, 2])
    ti = await render_value(sw_runtime, ["<< task_state.count >>", "<< task_state.ids >>"])
    assert ti.result == ["3", "[1, 2]"]


async def test_nested_op_kwargs_are_rendered_and_the_task_is_not_changed(rt):
    """Values inside dicts, lists and tuples render; the Dag's own op_kwargs stay as written."""
    await seed_task_state(rt, job_id="J-7")
    await seed_asset_state(rt, ORDERS, watermark=100)
    dag = Dag(DAG_ID)
    op_kwargs = {
        "request": {
            "since": "<< asset_state.watermark >>",
            "jobs": ["<< task_state.job_id >>", 7, None],
            "pair": ("fixed", "<< task_state.job_id >>-b"),
            "keys": {"<< not a key template >>": "v"},
        },
        "limit": 50,
    }

    @dag.task(outlets=[ORDERS], op_kwargs=op_kwargs)
    def load(request, limit):
        return request, limit

    ti = await rt.run_task(load, run_id=RUN_ID)
    expected = {
        "since": "100",
        "jobs": ["J-7", 7, None],
        "pair": ("fixed", "J-7-b"),
        "keys": {"<< not a key template >>": "v"},
    }
    assert ti.result == (expected, 50)
    assert ti.rendered == {"op_kwargs": {"request": expected, "limit": 50}}
    assert load.op_kwargs["request"]["since"] == "<< asset_state.watermark >>"


# -- operators and template files ---------------------------------------------------------


@pytest.mark.parametrize("operator", [Query, AsyncQuery])
async def test_operator_template_fields_render_like_op_kwargs(sw_runtime, operator):
    """An Operator's template_fields render as @dag.task op_kwargs do (sync and async)."""
    await seed_task_state(sw_runtime, job_id="J-3")
    await seed_asset_state(sw_runtime, ORDERS, watermark=5)
    task = operator(
        task_id="load",
        dag=Dag(DAG_ID),
        outlets=[ORDERS],
        sql="select * from orders where id > << asset_state.watermark >>",
        labels={"job": "<< task_state.job_id >>"},
    )
    ti = await sw_runtime.run_task(task, run_id=RUN_ID)
    assert ti.result == ("select * from orders where id > 5", {"job": "J-3"})
    assert ti.rendered == {
        "sql": "select * from orders where id > 5",
        "labels": {"job": "J-3"},
    }


async def test_template_ext_files_load_from_the_dag_searchpath(sw_runtime, tmp_path: Path):
    """A value ending in template_ext is a file in template_searchpath, rendered."""
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "load.sql").write_text(
        "select * from orders\n<# incremental #>where id > << asset_state.watermark >>\n"
    )
    await seed_asset_state(sw_runtime, ORDERS, watermark=41)
    dag = Dag(DAG_ID, template_searchpath=str(tmp_path))
    task = Query(task_id="load", dag=dag, outlets=[ORDERS], sql="sql/load.sql")
    ti = await sw_runtime.run_task(task, run_id=RUN_ID)
    assert ti.result == ("select * from orders\nwhere id > 41\n", None)


async def test_missing_template_file_names_file_and_searchpath(sw_runtime, tmp_path: Path):
    """A template file that is not in the searchpath fails the render, naming both."""
    dag = Dag(DAG_ID, template_searchpath=[str(tmp_path)])
    task = Query(task_id="load", dag=dag, sql="nope.sql")
    searchpath = [str(await trio.Path(tmp_path).resolve())]
    ti = await sw_runtime.run_task(task, run_id=RUN_ID)
    assert ti.state == "failed"
    assert isinstance(ti.error, TemplateError)
    assert str(ti.error) == (
        f"template field 'sql' of task 'etl.load' needs the template file 'nope.sql', "
        f"which is not in the template searchpath {searchpath!r}; put the "
        f"file in one of those folders or fix the name"
    )


async def test_syntax_error_fails_the_render_with_its_line(sw_runtime):
    """A malformed template fails the task with a TemplateError giving the line."""
    ti = await render_value(sw_runtime, "ok\n<< task_state.job_id")
    assert isinstance(ti.error, TemplateError)
    assert (ti.error.task, ti.error.field) == ("etl.load", "op_kwargs")
    assert re.match(
        r"^template field \"op_kwargs\['value'\]\" of task 'etl\.load' has a syntax error "
        r"on line 2: ",
        str(ti.error),
    )


# -- missing keys -------------------------------------------------------------------------


async def test_missing_task_state_key_fails_the_render(rt):
    """A missing key fails the attempt before execute, naming key, field, task and keys."""
    await seed_task_state(rt, attempts=2, watermark="2024-04-30")
    dag = Dag(DAG_ID)
    executed = []

    @dag.task(op_kwargs={"job": "<< task_state.job_id >>"})
    def load(job):
        executed.append(job)

    ti = await rt.run_task(load, run_id=RUN_ID)
    assert ti.state == "failed"
    assert isinstance(ti.error, TemplateKeyError)
    assert isinstance(ti.error, KeyError)
    assert str(ti.error) == (
        "template field \"op_kwargs['job']\" of task 'etl.load' reads task_state.job_id, "
        "which is not set; task_state has keys ['attempts', 'watermark']; read it with "
        "task_state.get('job_id') if it may be absent"
    )
    assert (ti.error.key, ti.error.field, ti.error.task) == ("job_id", "op_kwargs", "etl.load")
    assert executed == []
    assert ti.rendered == {}


async def test_missing_key_of_an_empty_task_state(sw_runtime):
    """With no keys at all the message says so."""
    ti = await render_value(sw_runtime, "<< task_state['job-id'] >>")
    assert str(ti.error) == (
        "template field \"op_kwargs['value']\" of task 'etl.load' reads "
        "task_state['job-id'], which is not set; task_state has no keys; read it with "
        "task_state.get('job-id') if it may be absent"
    )


async def test_missing_key_of_the_single_asset_lists_its_keys(rt):
    """<< asset_state.k >> on a one-asset task lists that asset's keys."""
    await seed_asset_state(rt, ORDERS, watermark=1, cursor="x")
    ti = await render_value(rt, "<< asset_state.high_water >>", outlets=[ORDERS])
    assert isinstance(ti.error, TemplateKeyError)
    assert str(ti.error) == (
        "template field \"op_kwargs['value']\" of task 'etl.load' reads "
        "asset_state.high_water, which is not set; asset_state has keys ['cursor', "
        "'watermark']; read it with asset_state.get('high_water') if it may be absent"
    )


async def test_missing_key_of_an_indexed_asset_names_the_asset(rt):
    """<< asset_state['orders'].k >> names the asset and lists its keys."""
    await seed_asset_state(rt, ORDERS, watermark=1)
    ti = await render_value(
        rt, "<< asset_state['orders'].cursor >>", inlets=[ORDERS], outlets=[CUSTOMERS]
    )
    assert str(ti.error) == (
        "template field \"op_kwargs['value']\" of task 'etl.load' reads "
        "asset_state['orders'].cursor, which is not set; asset_state['orders'] has keys "
        "['watermark']; read it with asset_state['orders'].get('cursor') if it may be absent"
    )


async def test_missing_key_names_the_mapped_instance(sw_runtime):
    """A mapped instance's error names the task with its map index."""
    dag = Dag(DAG_ID)

    @dag.task(op_kwargs={"job": "<< task_state.job_id >>"})
    def load(job, part):
        return f"{job}:{part}"

    load.expand(part=["a", "b"])
    await sw_runtime.state.task(DAG_ID, RUN_ID, "load", 0).aset("job_id", "J-0")
    run = await sw_runtime.run_dag(dag, run_id=RUN_ID)
    assert run.ti("load", 0).result == "J-0:a"
    error = run.ti("load", 1).error
    assert isinstance(error, TemplateKeyError)
    assert error.task == "etl.load[1]"
    assert str(error).startswith(
        "template field \"op_kwargs['job']\" of task 'etl.load[1]' reads task_state.job_id"
    )


# -- templates cannot write ---------------------------------------------------------------

WRITES = [
    ("set", "set('job_id', 'X')"),
    ("aset", "aset('job_id', 'X')"),
    ("delete", "delete('job_id')"),
    ("adelete", "adelete('job_id')"),
    ("clear", "clear()"),
    ("aclear", "aclear()"),
    ("increment", "increment('n')"),
    ("aincrement", "aincrement('n')"),
    ("compare_and_set", "compare_and_set('job_id', 'J-1', 'X')"),
    ("acompare_and_set", "acompare_and_set('job_id', 'J-1', 'X')"),
]


@pytest.mark.parametrize(("method", "call"), WRITES, ids=[name for name, _ in WRITES])
@pytest.mark.parametrize(
    ("view", "owner"),
    [
        ("task_state", 'context["task_state"]'),
        ("asset_state", "context[\"asset_state\"]['orders']"),
        ("asset_state['orders']", "context[\"asset_state\"]['orders']"),
    ],
)
async def test_templates_cannot_write_state(rt, view, owner, method, call):
    """Every writer (and its async twin) fails the render and leaves state unchanged."""
    await seed_task_state(rt, job_id="J-1", n=1)
    await seed_asset_state(rt, ORDERS, job_id="J-1", n=1)
    ti = await render_value(rt, f"<< {view}.{call} >>", outlets=[ORDERS])
    assert ti.state == "failed"
    assert isinstance(ti.error, TemplateWriteError)
    assert isinstance(ti.error, TemplateError)
    assert not isinstance(ti.error, OSError)
    assert str(ti.error) == (
        f"template field \"op_kwargs['value']\" of task 'etl.load': templates can read "
        f"state but not write it: {method!r} writes state; call it from the task's code "
        f"(e.g. {owner}.{method}(...)) instead"
    )
    assert (ti.error.task, ti.error.field) == ("etl.load", "op_kwargs")
    task_items = await rt.state.task(DAG_ID, RUN_ID, "load").aitems()
    asset_items = await rt.state.asset(ORDERS).aitems()
    assert dict(task_items) == {"job_id": "J-1", "n": 1}
    assert dict(asset_items) == {"job_id": "J-1", "n": 1}


async def test_writes_in_statements_are_refused_too(sw_runtime):
    """A write hidden in a <% set %> statement fails the render the same way."""
    await seed_task_state(sw_runtime, n=1)
    ti = await render_value(sw_runtime, "<% set _ = task_state.increment('n') %>ok")
    assert isinstance(ti.error, TemplateWriteError)
    assert dict(await sw_runtime.state.task(DAG_ID, RUN_ID, "load").aitems()) == {"n": 1}


@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        ("<< task_state.__class__ >>", "__class__"),
        ("<< ().__class__.__mro__ >>", "__class__"),
        ("<< task_state._items >>", "_items"),
        ("<< task_state['_items'] >>", "_items"),
        ("<< task_state._template_keys() >>", "_template_keys"),
        ("<< task_state.get.__globals__ >>", "__globals__"),
        ("<< asset_state._members >>", "_members"),
        ("<< asset_state['orders']._label >>", "_label"),
    ],
)
async def test_sandbox_escapes_are_refused(sw_runtime, source, attribute):
    """Names starting with '_' fail the render with a TemplateError."""
    ti = await render_value(sw_runtime, source, outlets=[ORDERS])
    assert ti.state == "failed"
    assert isinstance(ti.error, TemplateError)
    assert re.match(
        rf"^template field \"op_kwargs\['value'\]\" of task 'etl\.load' reached something "
        rf"the sandbox refuses: access to attribute '{attribute}' of '\w+' object is "
        rf"refused: it is private \(it starts with '_' or is a Python internal\); templates "
        rf"read only public names$",
        str(ti.error),
    )


async def test_templates_cannot_change_the_dag(sw_runtime):
    """The exploit of issue 18: a template mapping another task; the next run is unchanged."""
    dag = Dag(DAG_ID)

    @dag.task
    def victim(n: int = 0) -> int:
        return n

    attacker = echo_task(dag, "<< dag.tasks['victim'].expand(n=[1, 2, 3]) >>", task_id="attacker")
    first = await sw_runtime.run_dag(dag, run_id="r1")
    error = first.ti("attacker").error
    assert isinstance(error, TemplateError)
    assert str(error) == (
        "template field \"op_kwargs['value']\" of task 'etl.attacker' reached something the "
        "sandbox refuses: access to attribute 'expand' of 'PythonTask' object is refused: "
        "PythonTask.expand could change the Dag or run task code; templates may call only "
        "['map_arguments', 'map_count'] on a PythonTask, so wire and map tasks in the Dag file"
    )
    assert not victim.is_mapped
    second = await sw_runtime.run_dag(dag, run_id="r2")
    assert sorted((ti.task_id, ti.map_index) for ti in second.task_instances) == [
        ("attacker", -1), ("victim", -1),
    ]  # fmt: skip
    assert attacker.op_kwargs  # the attacker's own field is untouched too


@pytest.mark.parametrize(
    "source",
    [
        "<< dag.tasks['victim'].set_downstream(task) >>",
        "<< dag.task(task.python_callable) >>",
        "<< dag.add_task(task) >>",
        "<< task.python_callable() >>",
        "<< task.expand(value=[1]) >>",
        "<< (dag.tasks['victim']|attr('expand'))(n=[1]) >>",
        "<% for t in dag.tasks.values() %><< t.expand(n=[1]) >><% endfor %>",
    ],
)
async def test_no_method_that_changes_the_dag_is_callable(sw_runtime, source):
    """Dag and task methods other than the read-only ones are refused however reached."""
    dag = Dag(DAG_ID)
    victim = dag.task(lambda: 1, task_id="victim")
    ti = await sw_runtime.run_task(echo_task(dag, source), run_id=RUN_ID)
    assert isinstance(ti.error, TemplateError), ti.error
    assert "could change the Dag or run task code" in str(ti.error)
    assert sorted(dag.tasks) == ["load", "victim"]
    assert not victim.is_mapped
    assert not victim.upstream_task_ids


async def test_read_only_dag_methods_work_in_templates(sw_runtime):
    """get_task, topological_order and map_count read the Dag."""
    dag = Dag(DAG_ID)
    source = (
        "<< dag.get_task('load').task_id >> "
        "<< dag.topological_order()|map(attribute='task_id')|join(',') >> << task.map_count() >>"
    )
    ti = await sw_runtime.run_task(echo_task(dag, source), run_id=RUN_ID)
    assert (ti.state, ti.result) == ("success", "load load 0")


# -- what each attempt ran -----------------------------------------------------------------


async def test_each_attempt_records_what_it_rendered(rt):
    """.attempts[i].rendered shows each try's values; a retry sees what earlier tries wrote."""
    dag = Dag(DAG_ID)

    @dag.task(retries=2, op_kwargs={"seen": "<< task_state.get('tries', 0) >>"})
    def flaky(seen, task_state):
        tries = task_state.increment("tries")
        if tries < 3:
            msg = f"try {tries} failed"
            raise RuntimeError(msg)
        return seen

    ti = await rt.run_task(flaky, run_id=RUN_ID)
    assert (ti.state, ti.try_number, ti.result) == ("success", 3, "2")
    assert [a.rendered for a in ti.attempts] == [
        {"op_kwargs": {"seen": "0"}},
        {"op_kwargs": {"seen": "1"}},
        {"op_kwargs": {"seen": "2"}},
    ]
    assert [str(a.error) for a in ti.attempts] == ["try 1 failed", "try 2 failed", "None"]
    assert ti.rendered == {"op_kwargs": {"seen": "2"}}


async def test_a_failed_attempt_keeps_its_rendered_values(sw_runtime):
    """When execute raises, .rendered still shows what the failing try ran with."""
    await seed_task_state(sw_runtime, job_id="J-9")
    dag = Dag(DAG_ID)

    @dag.task(op_kwargs={"job": "<< task_state.job_id >>"})
    def load(job):
        msg = f"job {job} is gone"
        raise LookupError(msg)

    ti = await sw_runtime.run_task(load, run_id=RUN_ID)
    assert ti.state == "failed"
    assert str(ti.error) == "job J-9 is gone"
    assert ti.rendered == {"op_kwargs": {"job": "J-9"}}
    assert ti.attempts[0].rendered == ti.rendered


async def test_templates_read_state_written_by_upstream_tasks(rt):
    """A downstream template reads the asset state its upstream task wrote in the run."""
    dag = Dag(DAG_ID)

    @dag.task(outlets=[ORDERS])
    def extract(asset_state):
        asset_state.set("watermark", 250)

    load = echo_task(dag, "since << asset_state.watermark >>", inlets=[ORDERS])
    extract >> load
    run = await rt.run_dag(dag, run_id=RUN_ID)
    assert run.state == "success"
    assert run.ti("load").result == "since 250"
    assert run.ti("load").rendered == {"op_kwargs": {"value": "since 250"}}
    assert run.ti("extract").rendered == {"op_kwargs": {}}


@pytest.mark.parametrize(
    "source",
    [
        "<< params.update({'limit': 0}) >>",
        "<< params.pop('limit') >>",
        "<< inlets.append(1) >>",
        "<% set _ = params.setdefault('x', 1) %>",
    ],
)
async def test_templates_cannot_mutate_context_containers(sw_runtime, source):
    """The sandbox is immutable: a template cannot change params or other containers."""
    dag = Dag(DAG_ID, params={"limit": 5})
    result = await render_value(sw_runtime, source, dag=dag)
    assert result.state == "failed"
    assert isinstance(result.error, TemplateError)
    assert "starts with '_'" not in str(result.error)
    assert dag.params == {"limit": 5}


async def test_changing_an_outlet_extra_is_refused_with_why(sw_runtime):
    """extra.update(...) is refused as a change, not as a private name."""
    source = "<< outlet_events[outlet_events|first].extra.update(rows=3) >>"
    result = await render_value(sw_runtime, source, outlets=[ORDERS])
    assert isinstance(result.error, TemplateError)
    assert str(result.error) == (
        "template field \"op_kwargs['value']\" of task 'etl.load' reached something the "
        "sandbox refuses: access to attribute 'update' of 'dict' object is refused: "
        "dict.update() would change the dict; templates read values but do not change them, "
        "so do it in the task's code"
    )


async def test_templates_cannot_emit_asset_events(sw_runtime):
    """outlet_events[alias].add(...) is a write: a template calling it fails the render."""
    daily = AssetAlias("daily")
    source = "<% for alias in outlet_events %><< outlet_events[alias].add(alias) >><% endfor %>"
    result = await render_value(sw_runtime, source, outlets=[daily])
    assert isinstance(result.error, TemplateWriteError)
    assert str(result.error).endswith(
        "templates cannot call 'add': it changes what the task records; call it from the "
        'task\'s code (e.g. context["outlet_events"][alias].add(...)) instead'
    )
    assert "task_state" not in str(result.error)


async def test_airflow_braces_warn_once_per_field(sw_runtime, caplog):
    """{{ ... }} in a field without << >> passes through, with one warning per field."""
    dag = Dag("braces")
    task = echo_task(dag, "{{ ds }}", retries=1)
    with caplog.at_level("WARNING", logger="stateward.templates"):
        for run_id in ("r1", "r2"):
            ti = await sw_runtime.run_task(task, run_id=run_id)
            assert ti.result == "{{ ds }}"
        mixed = echo_task(dag, "<< ti.try_number >> {{ .ID }}", task_id="mixed")
        await sw_runtime.run_task(mixed, run_id="r1")
    assert [r.getMessage() for r in caplog.records] == [
        "template field 'op_kwargs' of task 'braces.load' holds {{ ... }}, which stateward "
        "passes through unrendered: its templates write values as << name >> and statements "
        "as <% ... %> (ignore this if the braces are meant for the command itself)"
    ]


@pytest.mark.parametrize(("source", "expected"), [
    ("<< task_state.shallow >>", "1"),
    ("<< 'deep' in task_state >>", "True"),
])  # fmt: skip
async def test_a_value_stored_past_the_depth_limit_does_not_break_other_reads(
    tmp_path: Path, source: str, expected: str
):
    """State holding a value an older release stored 5000 deep still renders other keys."""
    db = tmp_path / "s.db"
    async with open_runtime(db) as rt:
        await seed_task_state(rt, deep=[0], shallow=1)
        with sqlite3.connect(db) as connection:
            deep = "[" * 5000 + "]" * 5000
            connection.execute("UPDATE task_state SET value = ? WHERE key = 'deep'", (deep,))
        ti = await render_value(rt, source)
        assert (ti.state, ti.result) == ("success", expected)
        ti = await render_value(rt, "<< task_state.deep >>")
        assert isinstance(ti.error, TemplateError)
        assert "reached a value nested too deep to render; state values may nest lists and " \
            "dicts at most 100 levels deep" in str(ti.error)  # fmt: skip
