"""The pages through the ASGI app: each renders, escapes data, and confirms changes."""

from __future__ import annotations

import functools

import httpx
import trio

from stateward import Dag, Runtime, TaskNode
from stateward._protocol import messages as m
from stateward._ui.auth import csrf_token
from stateward._ui.data import asset_id

from .conftest import TOKEN, client_for


async def test_each_page_renders(api: httpx.AsyncClient) -> None:
    """Grid, run, task instance, asset and search pages answer 200 with their content."""
    grid = (await api.get("/")).text
    assert "/runs/etl/r1/tasks/load" in grid
    assert ">2/2<" in grid  # the mapped extract, summarised
    run = (await api.get("/runs/etl/r1")).text
    assert run.count("<svg") == 2
    ti = (await api.get("/runs/etl/r1/tasks/extract", params={"map_index": 1})).text
    assert "job_id" in ti
    assert "job-b" in ti
    asset = (await api.get(f"/assets/{asset_id('orders')}")).text
    assert "watermark" in asset
    found = (await api.get("/search", params={"q": "extr"})).text
    assert "etl.extract" in found
    assert (await api.get("/assets", params={"name": "orders"})).headers["location"] == (
        f"/assets/{asset_id('orders')}"
    )


async def test_an_unknown_page_is_404_html(api: httpx.AsyncClient) -> None:
    """Unknown runs and instances get an HTML error page with the reason."""
    response = await api.get("/runs/etl/nope")
    assert response.status_code == 404
    assert "no run 'nope'" in response.text.replace("&#39;", "'")


async def test_a_change_is_confirmed_first(api: httpx.AsyncClient, ran: Runtime) -> None:
    """A form post shows a confirmation page; only the confirmed post writes."""
    form = {"csrf": csrf_token(TOKEN), "action": "set", "key": "k", "value": "[1, 2]"}
    asking = await api.post("/runs/etl/r1/tasks/load/state", data=form)
    assert asking.status_code == 200
    assert "Set key &#39;k&#39;" in asking.text
    assert await ran.state.task("etl", "r1", "load").aget("k") is None
    done = await api.post("/runs/etl/r1/tasks/load/state", data={**form, "confirmed": "1"})
    assert done.status_code == 303
    assert await ran.state.task("etl", "r1", "load").aget("k") == [1, 2]
    clear = {"csrf": csrf_token(TOKEN), "action": "clear", "confirmed": "1"}
    assert (await api.post(f"/assets/{asset_id('orders')}/state", data=clear)).status_code == 303
    assert await ran.state.asset(name="orders").aget("watermark") is None


async def test_a_bad_value_in_a_form_says_why(api: httpx.AsyncClient) -> None:
    """A bare word is refused with the CLI's hint to quote it, on the page, as 422."""
    form = {"csrf": csrf_token(TOKEN), "action": "set", "key": "k", "value": "hello"}
    response = await api.post("/runs/etl/r1/tasks/load/state", data=form)
    assert response.status_code == 422
    assert "is not JSON; to store a string, quote it as JSON" in response.text


async def test_keys_and_values_are_escaped(api: httpx.AsyncClient, ran: Runtime) -> None:
    """Markup in a key or value is shown as text, never as markup."""
    xss = "<script>alert(1)</script>"
    await ran.state.task("etl", "r1", "load").aset(xss, xss)
    page = (await api.get("/runs/etl/r1/tasks/load")).text
    assert xss not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


async def test_a_finished_run_does_not_refresh(api: httpx.AsyncClient) -> None:
    """The refresh script is told to poll only while the run is running."""
    page = (await api.get("/runs/etl/r1")).text
    assert 'data-live="0"' in page


async def test_a_running_run_refreshes_until_it_ends(rt: Runtime) -> None:
    """While the run runs, its run and instance pages ask to be refreshed; then not."""
    dag = Dag("slow")
    started, release = trio.Event(), trio.Event()

    @dag.task
    async def wait() -> None:
        started.set()
        await release.wait()

    async with client_for(rt) as api:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(rt.run_dag, dag, run_id="r"))
            await started.wait()
            for path in ("/runs/slow/r", "/runs/slow/r/tasks/wait"):
                assert 'data-live="1"' in (await api.get(path)).text, path
            grid = (await api.get("/")).text
            assert 'data-state="running"' in grid
            release.set()
        assert 'data-live="0"' in (await api.get("/runs/slow/r")).text


async def test_each_key_shows_its_history_with_who_wrote_it(
    api: httpx.AsyncClient, ran: Runtime
) -> None:
    """Under a key: its versions, newest first, the task's try linked, out of band by kind."""
    await ran.state.task("etl", "r1", "extract", 1).aset("job_id", "job-z")
    page = (await api.get("/runs/etl/r1/tasks/extract", params={"map_index": 1})).text
    row, history = page.split('class="history"', 1)
    assert "<td>api " in row  # the key's "by" is its newest version's writer
    assert history.index('data-version="2"') < history.index('data-version="1"')
    assert '<a href="/runs/etl/r1/tasks/extract?map_index=1">etl/r1/extract[1]</a> try 1' in history
    assert "&#34;job-z&#34;" in history
    assert "Roll back to 1" in history
    assert "Roll back to 2" not in history  # the newest version is the value already


async def test_a_rollback_is_confirmed_first_and_shown_as_one(
    api: httpx.AsyncClient, ran: Runtime
) -> None:
    """The rollback button asks first; once confirmed the key's history says so."""
    asset = ran.state.asset(name="orders")
    await asset.aset("watermark", 50)
    url = f"/assets/{asset_id('orders')}/state"
    form = {"csrf": csrf_token(TOKEN), "action": "rollback", "key": "watermark", "version": "1"}
    asking = await api.post(url, data=form)
    assert asking.status_code == 200
    assert (
        "Roll key &#39;watermark&#39; of asset &#39;orders&#39; back to version 1?" in asking.text
    )
    assert await asset.aget("watermark") == 50
    done = await api.post(url, data={**form, "confirmed": "1"})
    assert done.status_code == 303
    assert await asset.aget("watermark") == 10
    page = (await api.get(f"/assets/{asset_id('orders')}")).text
    assert '<span class="rollback">rollback to version 1</span> by' in page
    missing = await api.post(url, data={**form, "version": "9", "confirmed": "1"})
    assert missing.status_code == 404
    assert "has no version 9" in missing.text
    bad = await api.post(url, data={**form, "version": "x", "confirmed": "1"})
    assert bad.status_code == 422


async def test_read_only_pages_show_history_without_rollback(ran: Runtime) -> None:
    """--read-only: the history is there, its buttons are not."""
    await ran.state.task("etl", "r1", "load").aset("params", {"limit": 1})
    async with client_for(ran, read_only=True) as api:
        page = (await api.get("/runs/etl/r1/tasks/load")).text
    assert "history of params (2 versions)" in page
    assert "Roll back" not in page


async def test_markup_in_history_is_escaped(api: httpx.AsyncClient, ran: Runtime) -> None:
    """An old value with markup is shown as text in the history too."""
    xss = "<script>alert(1)</script>"
    accessor = ran.state.task("etl", "r1", "load")
    await accessor.aset(xss, xss)
    await accessor.aset(xss, 1)
    page = (await api.get("/runs/etl/r1/tasks/load")).text
    assert xss not in page
    history = page[page.index('class="history"') :]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in history


async def test_mapped_instances_show_their_item(api: httpx.AsyncClient) -> None:
    """The instance page and the run page name the item each mapped instance stands for."""
    ti = (await api.get("/runs/etl/r1/tasks/extract", params={"map_index": 1})).text
    assert '<span class="item" title="the item this mapped instance stands for">&#34;b&#34;' in ti
    run = (await api.get("/runs/etl/r1")).text
    assert 'extract[0]</a> <span class="item">&#34;a&#34;</span>' in run
    unmapped = (await api.get("/runs/etl/r1/tasks/load")).text
    assert 'class="item"' not in unmapped


async def test_the_asset_page_lists_its_events_escaped(
    api: httpx.AsyncClient, ran: Runtime
) -> None:
    """The asset page lists the events that touched it, newest first, each linking to the
    try that emitted it, with extra values escaped."""
    url = f"/assets/{asset_id('orders')}"
    page = (await api.get(url)).text
    events = page[page.index('id="asset-events"') :]
    assert '<a href="/runs/etl/r1/tasks/load">etl/r1/load</a> try 1' in events
    extra = {"note": "<script>alert(1)</script>"}
    await ran.admin.request(m.AddAssetEvent("orders", "s3://lake/orders", extra, "daily"))
    events = (await api.get(url)).text
    events = events[events.index('id="asset-events"') :]
    assert "<script>alert(1)</script>" not in events
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in events
    assert events.index("out of band") < events.index("etl/r1/load")  # newest first
    assert "daily" in events


async def test_an_asset_without_events_says_so(rt: Runtime) -> None:
    """An asset with state but no events says it has none."""
    await rt.state.asset(name="quiet", uri="file:///quiet").aset("k", 1)
    async with client_for(rt) as client:
        page = (await client.get(f"/assets/{asset_id('quiet')}")).text
    assert "No events have been emitted to this asset." in page


async def test_the_run_page_draws_the_dags_graph(api: httpx.AsyncClient) -> None:
    """A run recorded with its graph shows it: a box per task coloured by state (the
    mapped extract summarised, linking to its instances), an arrow per edge."""
    page = (await api.get("/runs/etl/r1")).text
    assert "Task graph" in page
    chart = page[page.index('aria-label="task graph"') :]
    chart = chart[: chart.index("</svg>")]
    assert '<a href="#extract" data-task="extract" data-state="success">' in chart
    assert "extract [2/2]" in chart
    assert '<a href="/runs/etl/r1/tasks/load" data-task="load" data-state="success">' in chart
    assert chart.count("marker-end=") == 1  # extract >> load
    assert chart.index('data-task="extract"') < chart.index('data-task="load"')


async def test_a_run_recorded_without_its_graph_shows_its_waves(ran: Runtime) -> None:
    """A run recorded before runs kept their graph shows its tasks in start order."""
    await ran.admin.request(m.RecordDagRun("old", "r", "success", 1.0, 2.0))
    await ran.admin.request(m.RecordTaskInstance("old", "r", "t", -1, "success", 1, 1.0, 2.0))
    async with client_for(ran) as client:
        page = (await client.get("/runs/old/r")).text
    assert "Tasks in start order" in page
    assert "task graph" not in page
    assert 'aria-label="task instances in start order"' in page


async def test_graph_labels_are_escaped_and_unrun_tasks_grey(rt: Runtime) -> None:
    """Task ids in the graph are escaped; a task with no instance yet has no status."""
    graph = (TaskNode("<b>a</b>"), TaskNode("later", ("<b>a</b>",)))
    await rt.admin.request(m.RecordDagRun("x", "r", "running", 1.0, graph=graph))
    async with client_for(rt) as client:
        page = (await client.get("/runs/x/r")).text
    assert "<b>a</b>" not in page
    assert "&lt;b&gt;a&lt;/b&gt;" in page
    assert 'data-task="later" data-state="no status"' in page
