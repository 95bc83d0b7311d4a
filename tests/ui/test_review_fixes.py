"""What one key costs, ids that need quoting in a URL, bad input, and response headers."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from stateward import Dag, Runtime
from stateward._records import StateEntry
from stateward._ui.auth import COOKIE
from stateward._ui.pages import KEYS_SHOWN

from .conftest import TOKEN, client_for

TI = "/api/v2/dags/d/dagRuns/{run}/taskInstances/t/state-store"
OWN = "/api/v2/stateward/runs/d/{run}"


def one_task_dag() -> Dag:
    dag = Dag("d")

    @dag.task
    def t(task_state: Any) -> None:
        task_state.set("k", 1)

    return dag


def count_reads(rt: Runtime) -> list[int]:
    """How many entries each rt.state.list call of the UI returns, from now on."""
    read: list[int] = []
    original: Callable[..., Awaitable[list[StateEntry]]] = rt.state.list

    async def spy(**filters: Any) -> list[StateEntry]:
        found = await original(**filters)
        read.append(len(found))
        return found

    rt.state.list = spy  # type: ignore[method-assign]
    return read


@pytest.fixture
async def many_keys(rt: Runtime) -> Runtime:
    """Run 'r1' of a one-task Dag whose instance holds 250 keys (k, key000..key248)."""
    await rt.run_dag(one_task_dag(), run_id="r1")
    accessor = rt.state.task("d", "r1", "t")
    for i in range(249):
        await accessor.aset(f"key{i:03}", i)
    return rt


async def test_one_key_reads_one_key_and_a_listing_one_page(many_keys: Runtime) -> None:
    """GET, PUT, PATCH, DELETE of one key, its history, and a page of the listing read
    no more entries than they answer with; total_entries still counts every key."""
    read = count_reads(many_keys)
    url = TI.format(run="r1")
    async with client_for(many_keys) as api:
        assert (await api.get(url + "/key007")).json()["value"] == 7
        assert (await api.put(url + "/key007", json={"value": 8})).status_code == 204
        assert (await api.patch(url + "/key007", json={"value": 9})).status_code == 200
        history = await api.get(OWN.format(run="r1") + "/tasks/t/state/key007/history")
        assert [v["value"] for v in history.json()["versions"]] == [9, 8, 7]
        assert (await api.delete(url + "/key007")).status_code == 204
        assert (await api.get(url + "/key007")).status_code == 404
        page = (await api.get(url, params={"limit": 10, "offset": 240})).json()
    kept = sorted(["k", *(f"key{i:03}" for i in range(249) if i != 7)])
    assert [e["key"] for e in page["task_state_store"]] == kept[240:250]
    assert page["total_entries"] == 249
    assert read
    assert max(read) <= 10, read


async def test_the_instance_page_shows_one_page_of_keys(many_keys: Runtime) -> None:
    """The instance page lists KEYS_SHOWN keys with the next page's link, and reads the
    history of those keys only; the last page links back."""
    async with client_for(many_keys) as api:
        first = await api.get("/runs/d/r1/tasks/t")
        assert first.status_code == 200
        assert len(re.findall(r'<td class="key">', first.text)) == KEYS_SHOWN
        assert "key000" in first.text
        assert f"key{KEYS_SHOWN:03}" not in first.text
        assert "of 250" in first.text
        (after,) = re.findall(r'href="([^"]*)" rel="next"', first.text)
        assert after == f"/runs/d/r1/tasks/t?offset={KEYS_SHOWN}"
        start = (249 // KEYS_SHOWN) * KEYS_SHOWN
        last = await api.get(f"/runs/d/r1/tasks/t?offset={start}")
        assert len(re.findall(r'<td class="key">', last.text)) == 250 - start
        assert 'rel="next"' not in last.text
        (before,) = re.findall(r'href="([^"]*)" rel="prev"', last.text)
        assert before == f"/runs/d/r1/tasks/t?offset={start - KEYS_SHOWN}"


@pytest.mark.parametrize("run_id", ["nightly#1", "50%-done", "a?b", "with space", "a/b", "é/../x"])
async def test_ids_that_need_quoting_reach_every_page_and_route(rt: Runtime, run_id: str) -> None:
    """A run id with #, %, ?, a space or / is quoted in every link, and each link, the
    API's routes and the pages' forms reach that run."""
    await rt.run_dag(one_task_dag(), run_id=run_id)
    quoted = quote(run_id, safe="")
    async with client_for(rt) as api:
        grid = await api.get("/")
        links = set(re.findall(r'href="(/runs/[^"]*)"', grid.text))
        search = await api.get("/search", params={"q": run_id[:3]})
        links |= set(re.findall(r'href="(/runs/[^"]*)"', search.text))
        run = await api.get(f"/runs/d/{quoted}")
        assert run.status_code == 200
        links |= set(re.findall(r'href="(/runs/[^"]*)"', run.text))
        assert f"/runs/d/{quoted}" in links
        assert f"/runs/d/{quoted}/tasks/t" in links
        for link in links:
            page = await api.get(link.replace("&amp;", "&"))
            assert page.status_code == 200, link
            assert run_id in page.text.replace("&amp;", "&"), link
        assert (await api.get(TI.format(run=quoted) + "/k")).json()["value"] == 1
        assert (await api.put(TI.format(run=quoted) + "/k", json={"value": 2})).status_code == 204
        assert (await api.get(OWN.format(run=quoted))).json()["run_id"] == run_id
        assert (await api.get(OWN.format(run=quoted) + "/tasks/t")).status_code == 200
        history = await api.get(OWN.format(run=quoted) + "/tasks/t/state/k/history")
        assert [v["value"] for v in history.json()["versions"]] == [2, 1]
        form = {"action": "set", "key": "k", "value": "3"}
        page = f"/runs/d/{quoted}/tasks/t"
        confirm = await api.post(page + "/state", data={**form, "csrf": _csrf()})
        (action,) = re.findall(r'<form method="post" action="([^"]*)"', confirm.text)
        assert action == page + "/state"
        done = await api.post(action, data={**form, "csrf": _csrf(), "confirmed": "1"})
        assert done.status_code == 303
        assert done.headers["location"] == page
    assert await rt.state.task("d", run_id, "t").aget("k") == 3


def _csrf() -> str:
    from stateward._ui.auth import csrf_token

    return csrf_token(TOKEN)


@pytest.mark.parametrize(
    "url",
    [
        TI.format(run="r1") + "?map_index=99999999999999999999",
        TI.format(run="r1") + "/k?map_index=99999999999999999999",
        TI.format(run="r1") + "?offset=99999999999999999999",
        TI.format(run="r1") + "?limit=99999999999999999999",
        "/api/v2/stateward/runs?limit=99999999999999999999",
        OWN.format(run="r1") + "/tasks/t?map_index=99999999999999999999",
    ],
)
async def test_huge_integers_are_422_in_fastapis_shape(rt: Runtime, url: str) -> None:
    await rt.run_dag(one_task_dag(), run_id="r1")
    async with client_for(rt) as api:
        got = await api.get(url)
    assert got.status_code == 422, got.text
    (problem,) = got.json()["detail"]
    assert problem["loc"][0] == "query"
    assert "less than or equal to" in problem["msg"]


@pytest.mark.parametrize(
    "url", ["/runs/d/r1/tasks/t?map_index=99999999999999999999", "/runs/d/r1/tasks/t?offset=x"]
)
async def test_a_page_with_a_huge_integer_is_a_422_page(rt: Runtime, url: str) -> None:
    await rt.run_dag(one_task_dag(), run_id="r1")
    async with client_for(rt) as api:
        got = await api.get(url)
    assert got.status_code == 422
    assert "text/html" in got.headers["content-type"]


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", TI.format(run="r1") + "/a%00b"),
        ("PUT", TI.format(run="r1") + "/a%00b"),
        ("GET", TI.format(run="r%001")),
        ("GET", "/api/v2/dags/d%00/dagRuns/r1/taskInstances/t/state-store"),
        ("GET", "/api/v2/stateward/assets?name=a%00b"),
        ("GET", "/runs/d/r%001"),
    ],
)
async def test_a_nul_in_an_id_or_a_parameter_is_422(rt: Runtime, method: str, url: str) -> None:
    """No store keeps a NUL in an id (PostgreSQL refuses it): refused before."""
    await rt.run_dag(one_task_dag(), run_id="r1")
    async with client_for(rt) as api:
        got = await api.request(method, url, json={"value": 1})
    assert got.status_code == 422, got.text
    assert got.json()["detail"][0]["msg"].startswith("a NUL character")
    assert got.headers["x-content-type-options"] == "nosniff"


async def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    rt: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    """An error the UI does not expect is logged, and the client gets only a JSON 500
    (a page, a line of text) that says nothing of it."""
    await rt.run_dag(one_task_dag(), run_id="r1")

    async def broken(**filters: Any) -> list[StateEntry]:
        raise RuntimeError("secret detail")

    rt.state.list = broken  # type: ignore[method-assign]
    async with client_for(rt) as api:
        got = await api.get(TI.format(run="r1") + "/k")
        page = await api.get("/runs/d/r1/tasks/t")
    assert got.status_code == 500
    assert got.json() == {"detail": "internal error"}
    assert page.status_code == 500
    assert "secret detail" not in page.text
    assert "Traceback" not in page.text
    assert "secret detail" in caplog.text


async def test_every_response_says_nosniff(rt: Runtime) -> None:
    await rt.run_dag(one_task_dag(), run_id="r1")
    (ti,) = (await rt.runs.get("d", "r1") or pytest.fail("no run")).instances
    async with client_for(rt) as api:
        log = await api.get(OWN.format(run="r1") + f"/tasks/t/tries/{ti.try_number}/log")
        responses = [
            log,
            await api.get("/"),
            await api.get("/nope"),
            await api.get("/static/ui.css"),
        ]
    async with client_for(rt, token=None) as anonymous:
        responses.append(await anonymous.get("/"))
    assert log.status_code == 200
    for response in responses:
        assert response.headers["x-content-type-options"] == "nosniff", response.url


async def test_the_token_cookie_is_named_with_the_port(rt: Runtime) -> None:
    """Two servers on one host (a cookie belongs to the host) keep a cookie each."""
    await rt.run_dag(one_task_dag(), run_id="r1")
    async with client_for(rt, token=None) as browser:
        browser.base_url = httpx.URL("http://127.0.0.1:8765")
        first = await browser.get("/", params={"token": TOKEN})
        assert first.status_code == 303
        assert first.headers["set-cookie"].startswith(f"{COOKIE}_8765={TOKEN};")
        assert (await browser.get("/")).status_code == 200
        browser.base_url = httpx.URL("http://127.0.0.1:8766")
        assert (await browser.get("/")).status_code == 401


async def test_the_asset_page_and_listing_are_paged(rt: Runtime) -> None:
    """An asset's page shows KEYS_SHOWN keys with a link on; its listing reads a page."""
    accessor = rt.state.asset(name="big", uri="s3://big")
    for i in range(KEYS_SHOWN + 5):
        await accessor.aset(f"key{i:03}", i)
    read = count_reads(rt)
    async with client_for(rt) as api:
        ident = (await api.get("/api/v2/stateward/assets", params={"name": "big"})).json()
        url = f"/api/v2/assets/{ident['asset_id']}/state-store"
        listing = (await api.get(url, params={"limit": 3, "offset": KEYS_SHOWN + 3})).json()
        assert [e["key"] for e in listing["asset_state_store"]] == [
            f"key{KEYS_SHOWN + 3:03}", f"key{KEYS_SHOWN + 4:03}"
        ]  # fmt: skip
        assert listing["total_entries"] == KEYS_SHOWN + 5
        assert (await api.get(url + "/key001")).json()["value"] == 1
        assert max(read) <= 3, read
        page = await api.get(f"/assets/{ident['asset_id']}")
        assert len(re.findall(r'<td class="key">', page.text)) == KEYS_SHOWN
        (after,) = re.findall(r'href="([^"]*)" rel="next"', page.text)
        rest = await api.get(after)
        assert len(re.findall(r'<td class="key">', rest.text)) == 5
