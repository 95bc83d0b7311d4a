"""The HTTP API through the ASGI app (no server): every route, auth, 404, 422, read-only."""

from __future__ import annotations

import httpx
import pytest

from stateward import Runtime
from stateward._protocol import messages as m
from stateward._ui.auth import COOKIE, csrf_token
from stateward._ui.data import asset_id

from .conftest import TOKEN, client_for

TI = "/api/v2/dags/etl/dagRuns/r1/taskInstances"
ORDERS_ID = asset_id("orders")
ASSET = f"/api/v2/assets/{ORDERS_ID}/state-store"
OWN_TI = "/api/v2/stateward/runs/etl/r1/tasks"
OWN_ASSET = f"/api/v2/stateward/assets/{ORDERS_ID}/state"


async def test_list_task_state_pages_with_limit_and_offset(api: httpx.AsyncClient) -> None:
    """A listing has Airflow's shape; limit/offset page it; total_entries counts all."""
    for key in ("c", "a", "b"):
        assert (
            await api.put(f"{TI}/load/state-store/{key}", json={"value": key})
        ).status_code == 204
    whole = (await api.get(f"{TI}/load/state-store")).json()
    assert [e["key"] for e in whole["task_state_store"]] == ["a", "b", "c", "params"]
    assert whole["total_entries"] == 4
    assert set(whole["task_state_store"][0]) == {"key", "value", "updated_at", "expires_at"}
    page = (await api.get(f"{TI}/load/state-store", params={"limit": 2, "offset": 1})).json()
    assert [e["key"] for e in page["task_state_store"]] == ["b", "c"]
    assert page["total_entries"] == 4


async def test_map_index_selects_the_mapped_instance(api: httpx.AsyncClient) -> None:
    """map_index picks one mapped instance's state."""
    got = await api.get(f"{TI}/extract/state-store/job_id", params={"map_index": 1})
    assert got.status_code == 200
    assert got.json()["value"] == "job-b"


async def test_set_get_patch_delete_a_task_key(api: httpx.AsyncClient) -> None:
    """PUT creates, GET reads, PATCH changes the value keeping expiry, DELETE removes."""
    url = f"{TI}/load/state-store/job"
    put = await api.put(url, json={"value": {"id": 7}, "expires_at": None})
    assert put.status_code == 204
    got = (await api.get(url)).json()
    assert got["value"] == {"id": 7}
    assert got["expires_at"] is None
    patched = await api.patch(url, json={"value": {"id": 8}})
    assert patched.status_code == 200
    assert patched.json()["value"] == {"id": 8}
    assert patched.json()["expires_at"] is None
    assert (await api.delete(url)).status_code == 204
    assert (await api.get(url)).status_code == 404
    assert (await api.delete(url)).status_code == 204  # absent: not an error


async def test_expires_at_default_and_a_time(api: httpx.AsyncClient, ran: Runtime) -> None:
    """expires_at "default" is the runtime's retention; a time is kept as given."""
    url = f"{TI}/load/state-store/k"
    await api.put(url, json={"value": 1, "expires_at": "default"})
    assert (await api.get(url)).json()["expires_at"] is not None
    await api.put(url, json={"value": 1, "expires_at": "2099-01-01T00:00:00Z"})
    assert (await api.get(url)).json()["expires_at"].startswith("2099-01-01T00:00:00")


async def test_patch_of_an_absent_key_is_404(api: httpx.AsyncClient) -> None:
    """PATCH changes an existing key only."""
    response = await api.patch(f"{TI}/load/state-store/absent", json={"value": 1})
    assert response.status_code == 404
    assert "absent" in response.json()["detail"]


async def test_clear_one_instance_or_every_map_index(api: httpx.AsyncClient) -> None:
    """DELETE on the collection clears one map index, or all with all_map_indices."""
    url = f"{TI}/extract/state-store"
    assert (await api.delete(url, params={"map_index": 0})).status_code == 204
    assert (await api.get(url, params={"map_index": 0})).json()["total_entries"] == 0
    assert (await api.get(url, params={"map_index": 1})).json()["total_entries"] == 1
    cleared = await api.delete(url, params={"all_map_indices": "true"})
    assert cleared.status_code == 204
    assert (await api.get(url, params={"map_index": 1})).json()["total_entries"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v2/dags/etl/dagRuns/r1/taskInstances/nope/state-store"),
        ("DELETE", "/api/v2/dags/etl/dagRuns/r1/taskInstances/nope/state-store"),
        ("GET", "/api/v2/dags/etl/dagRuns/r9/taskInstances/load/state-store/k"),
        ("PUT", "/api/v2/dags/nodag/dagRuns/r1/taskInstances/load/state-store/k"),
        ("PATCH", "/api/v2/dags/etl/dagRuns/r1/taskInstances/nope/state-store/k"),
        ("DELETE", "/api/v2/dags/etl/dagRuns/r1/taskInstances/nope/state-store/k"),
        ("GET", "/api/v2/assets/1/state-store"),
        ("DELETE", "/api/v2/assets/1/state-store"),
        ("GET", "/api/v2/assets/1/state-store/k"),
        ("PUT", "/api/v2/assets/1/state-store/k"),
        ("DELETE", "/api/v2/assets/1/state-store/k"),
        ("GET", "/api/v2/stateward/runs/etl/r9"),
        ("GET", "/api/v2/stateward/runs/etl/r1/tasks/nope"),
        ("GET", "/api/v2/stateward/runs/etl/r1/tasks/load/tries/9/log"),
        ("GET", "/api/v2/stateward/assets?name=nope"),
    ],
)
async def test_unknown_things_are_404_with_a_json_detail(
    api: httpx.AsyncClient, method: str, path: str
) -> None:
    """Unknown task instances, runs, assets, tries and logs: 404, {"detail": ...}."""
    response = await api.request(method, path, json={"value": 1})
    assert response.status_code == 404, response.text
    assert isinstance(response.json()["detail"], str)


async def test_a_task_instance_seeded_without_a_run_is_known(
    api: httpx.AsyncClient, ran: Runtime
) -> None:
    """State seeded out of band makes its task instance addressable."""
    await ran.state.task("other", "seeded", "t").aset("k", 1)
    response = await api.get("/api/v2/dags/other/dagRuns/seeded/taskInstances/t/state-store/k")
    assert response.json()["value"] == 1


@pytest.mark.parametrize(
    ("body", "loc", "wording"),
    [
        ({"value": None}, ["body", "value"], "null cannot be stored"),
        ({}, ["body", "value"], "Field required"),
        ({"value": 1, "extra": 2}, ["body", "extra"], "unknown field 'extra'"),
        ({"value": 1, "expires_at": "soon"}, ["body", "expires_at"], "expires_at must be"),
        ({"value": 1, "expires_at": "2000-01-01T00:00:00Z"}, ["body", "expires_at"], "in the past"),
        ({"value": "x" * 70_000}, ["body", "value"], "over the limit of 65536"),
        ([1], ["body"], "must be a JSON object"),
    ],
)
async def test_bad_values_are_422_with_the_cli_wording(
    api: httpx.AsyncClient, body: object, loc: list[str], wording: str
) -> None:
    """A refused value: 422 in FastAPI's shape, with the message the CLI gives."""
    response = await api.put(f"{TI}/load/state-store/k", json=body)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"] == loc
    assert wording in error["msg"]


async def test_bad_json_keys_and_params_are_422(api: httpx.AsyncClient) -> None:
    """NaN is not JSON; an over-long key and a bad map_index/limit are refused too."""
    nan = await api.put(f"{TI}/load/state-store/k", content=b'{"value": NaN}')
    assert nan.status_code == 422
    assert "not valid JSON" in nan.json()["detail"][0]["msg"]
    long_key = await api.put(f"{TI}/load/state-store/{'k' * 600}", json={"value": 1})
    assert long_key.status_code == 422
    assert "keys may have at most 512" in long_key.json()["detail"][0]["msg"]
    for params in ({"map_index": "x"}, {"map_index": -2}, {"limit": -1}, {"offset": "a"}):
        response = await api.get(f"{TI}/load/state-store", params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][0] == "query"
    flag = await api.delete(f"{TI}/load/state-store", params={"all_map_indices": "maybe"})
    assert flag.status_code == 422


async def test_asset_state_routes(api: httpx.AsyncClient) -> None:
    """List, get, set, delete and clear an asset's state by its integer id."""
    listed = (await api.get(ASSET)).json()
    assert listed["total_entries"] == 1
    (watermark,) = listed["asset_state_store"]
    assert watermark["value"] == 10
    assert watermark["last_updated_by"] == {
        "kind": "task", "dag_id": "etl", "run_id": "r1", "task_id": "load", "map_index": -1,
    }  # fmt: skip
    assert (await api.put(f"{ASSET}/cursor", json={"value": [1, 2]})).status_code == 204
    cursor = (await api.get(f"{ASSET}/cursor")).json()
    assert cursor["value"] == [1, 2]
    assert cursor["last_updated_by"] == {"kind": "api"}
    page = (await api.get(ASSET, params={"limit": 1, "offset": 1})).json()
    assert [e["key"] for e in page["asset_state_store"]] == ["watermark"]
    assert (await api.delete(f"{ASSET}/cursor")).status_code == 204
    assert (await api.get(f"{ASSET}/cursor")).status_code == 404
    assert (await api.put(f"{ASSET}/k", json={"value": None})).status_code == 422
    assert (await api.delete(ASSET)).status_code == 204
    assert (await api.get(ASSET)).json()["total_entries"] == 0


async def test_an_asset_is_found_by_name_or_uri_with_its_id(api: httpx.AsyncClient) -> None:
    """/api/v2/stateward/assets gives the id the state-store routes take."""
    by_name = (await api.get("/api/v2/stateward/assets", params={"name": "orders"})).json()
    by_uri = (await api.get("/api/v2/stateward/assets", params={"uri": "s3://lake/orders"})).json()
    assert by_name == by_uri == {"asset_id": ORDERS_ID, "name": "orders", "uri": "s3://lake/orders"}
    both = await api.get("/api/v2/stateward/assets", params={"name": "a", "uri": "b"})
    assert both.status_code == 422


async def test_runs_instances_and_attempts(api: httpx.AsyncClient) -> None:
    """The own routes list runs and show a run, an instance and its attempts."""
    runs = (await api.get("/api/v2/stateward/runs")).json()["runs"]
    assert [(r["dag_id"], r["run_id"], r["state"]) for r in runs] == [("etl", "r1", "success")]
    run = (await api.get("/api/v2/stateward/runs/etl/r1")).json()
    assert run["graph"] == [
        {"task_id": "extract", "upstream_task_ids": [], "mapped": True},
        {"task_id": "load", "upstream_task_ids": ["extract"], "mapped": False},
    ]
    assert "graph" not in runs[0]
    assert sorted((i["task_id"], i["map_index"]) for i in run["instances"]) == [
        ("extract", 0), ("extract", 1), ("load", -1),
    ]  # fmt: skip
    ti = (await api.get("/api/v2/stateward/runs/etl/r1/tasks/extract?map_index=1")).json()
    (attempt,) = ti["attempts"]
    assert attempt["state"] == "success"
    assert attempt["has_log"] is True  # the store keeps each try's output


async def test_the_openapi_document_lists_every_api_route(api: httpx.AsyncClient) -> None:
    """The OpenAPI document has each state-store operation with Airflow's schemas."""
    document = (await api.get("/api/v2/openapi.json")).json()
    paths = document["paths"]
    ti = "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id}/taskInstances/{task_id}/state-store"
    assert set(paths[ti]) == {"get", "delete"}
    assert set(paths[ti + "/{key}"]) == {"get", "put", "patch", "delete"}
    assert set(paths["/api/v2/assets/{asset_id}/state-store/{key}"]) == {"get", "put", "delete"}
    assert "TaskStateStoreCollectionResponse" in document["components"]["schemas"]


async def test_every_route_needs_the_token(ran: Runtime) -> None:
    """Without the token (or with a wrong one), API and pages answer 401."""
    for token in (None, "wrong"):
        async with client_for(ran, token=token) as anonymous:
            for path in (
                f"{TI}/load/state-store",
                ASSET,
                "/api/v2/openapi.json",
                "/",
                "/static/ui.css",
            ):
                assert (await anonymous.get(path)).status_code == 401, (token, path)
            put = await anonymous.put(f"{TI}/load/state-store/k", json={"value": 1})
            assert put.status_code == 401
            assert "detail" in put.json()
    assert await ran.state.task("etl", "r1", "load").aget("k") is None


async def test_the_token_in_the_url_becomes_a_cookie(ran: Runtime) -> None:
    """?token= on a page sets the cookie and redirects to the URL without the token."""
    async with client_for(ran, token=None) as browser:
        first = await browser.get("/runs/etl/r1", params={"token": TOKEN})
        assert first.status_code == 303
        assert first.headers["location"] == "/runs/etl/r1"
        assert TOKEN not in first.headers["location"]
        assert "httponly" in first.headers["set-cookie"].lower()
        assert (await browser.get("/runs/etl/r1")).status_code == 200


async def test_cookie_writes_need_the_csrf_token(ran: Runtime) -> None:
    """A write authenticated by the cookie alone is refused without the CSRF token."""
    async with client_for(ran, token=None) as browser:
        browser.cookies.set(COOKIE, TOKEN)
        url = f"{TI}/load/state-store/k"
        assert (await browser.put(url, json={"value": 1})).status_code == 403
        form = {"action": "set", "key": "k", "value": "1", "confirmed": "1", "csrf": "bad"}
        page = "/runs/etl/r1/tasks/load/state"
        assert (await browser.post(page, data=form)).status_code == 403
        assert await ran.state.task("etl", "r1", "load").aget("k") is None
        headers = {"X-CSRF-Token": csrf_token(TOKEN)}
        assert (await browser.put(url, json={"value": 1}, headers=headers)).status_code == 204
        form["csrf"] = csrf_token(TOKEN)
        assert (await browser.post(page, data=form)).status_code == 303
        assert await ran.state.task("etl", "r1", "load").aget("k") == 1


async def test_read_only_refuses_every_write(ran: Runtime) -> None:
    """--read-only: reads work, every write is 403 and changes nothing."""
    async with client_for(ran, read_only=True) as api:
        assert (await api.get(f"{TI}/load/state-store")).status_code == 200
        writes = [
            ("PUT", f"{TI}/load/state-store/k"), ("PATCH", f"{TI}/load/state-store/params"),
            ("DELETE", f"{TI}/load/state-store/params"), ("DELETE", f"{TI}/load/state-store"),
            ("PUT", f"{ASSET}/k"), ("DELETE", f"{ASSET}/watermark"), ("DELETE", ASSET),
            ("POST", "/runs/etl/r1/tasks/load/state"),
            ("POST", f"{OWN_TI}/load/state/params/rollback"),
            ("POST", f"{OWN_ASSET}/watermark/rollback"),
        ]  # fmt: skip
        for method, path in writes:
            body = {"version": 1} if path.endswith("/rollback") else {"value": 1}
            response = await api.request(method, path, json=body)
            assert response.status_code == 403, (method, path)
            assert "read-only" in response.json()["detail"]
        page = await api.get("/runs/etl/r1/tasks/load")
        assert "Save" not in page.text
    assert await ran.state.task("etl", "r1", "load").aget("params") is not None
    assert await ran.state.asset(name="orders").aget("watermark") == 10


async def test_keys_with_a_slash_and_markup_round_trip(api: httpx.AsyncClient) -> None:
    """A key with '/' or markup is an ordinary key (percent-encoded in the path)."""
    for key in ("a/b", "<script>alert(1)</script>"):
        url = f"{TI}/load/state-store/" + httpx.URL(key).raw_path.decode().replace("/", "%2F")
        assert (await api.put(url, json={"value": key})).status_code == 204
        assert (await api.get(url)).json()["key"] == key


async def test_an_attempts_log_is_served_as_text(ran: Runtime) -> None:
    """The log route gives what the try printed; its instance's record says it has one."""
    from stateward._loader import load_dags

    from .server import TALKY

    await ran.run_dag(load_dags(TALKY)["talky"], run_id="r1")
    async with client_for(ran) as api:
        log = await api.get("/api/v2/stateward/runs/talky/r1/tasks/speak/tries/1/log")
        assert log.status_code == 200
        assert log.headers["content-type"].startswith("text/plain")
        assert "hello from speak" in log.text
        ti = (await api.get("/api/v2/stateward/runs/talky/r1/tasks/speak")).json()
        assert ti["attempts"][0]["has_log"] is True
        page = (await api.get("/runs/talky/r1/tasks/speak")).text
        assert "hello from speak" in page


# -- key history and rollback ---------------------------------------------------------------


async def test_a_task_keys_history_is_newest_first_with_provenance(
    api: httpx.AsyncClient,
) -> None:
    """Each change is a version; the task's own write names its attempt."""
    url = f"{TI}/extract/state-store/job_id"
    await api.put(url, params={"map_index": 1}, json={"value": "job-x"})
    await api.delete(url, params={"map_index": 1})
    got = await api.get(f"{OWN_TI}/extract/state/job_id/history", params={"map_index": 1})
    assert got.status_code == 200
    body = got.json()
    assert body["key"] == "job_id"
    versions = body["versions"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert [v["deleted"] for v in versions] == [True, False, False]
    assert [v["value"] for v in versions] == [None, "job-x", "job-b"]
    task = versions[-1]["updated_by"]
    assert task["kind"] == "task"
    assert (task["dag_id"], task["run_id"], task["task_id"]) == ("etl", "r1", "extract")
    assert (task["map_index"], task["try_number"]) == (1, 1)
    assert task["label"].startswith("etl/r1/extract[1] try 1")
    assert versions[0]["updated_by"]["kind"] != "task"  # written out of band
    assert versions[0]["updated_at"].endswith("+00:00")


async def test_rollback_writes_a_kept_version_again(api: httpx.AsyncClient, ran: Runtime) -> None:
    """POST .../rollback makes the old value the newest version, marked as a rollback."""
    url = f"{TI}/load/state-store/k"
    await api.put(url, json={"value": {"n": 1}})
    await api.put(url, json={"value": {"n": 2}})
    rolled = await api.post(f"{OWN_TI}/load/state/k/rollback", json={"version": 1})
    assert rolled.status_code == 200
    newest = rolled.json()["versions"][0]
    assert newest["version"] == 3
    assert newest["value"] == {"n": 1}
    assert newest["updated_by"]["rollback_to"] == 1
    assert "rollback to version 1" in newest["updated_by"]["label"]
    assert await ran.state.task("etl", "r1", "load").aget("k") == {"n": 1}


async def test_an_asset_keys_history_and_rollback(api: httpx.AsyncClient, ran: Runtime) -> None:
    """The asset routes do the same for asset state."""
    await api.put(f"{ASSET}/watermark", json={"value": 99})
    history = (await api.get(f"{OWN_ASSET}/watermark/history")).json()["versions"]
    assert [v["value"] for v in history][:2] == [99, 10]
    first = history[-1]["version"]
    assert history[-1]["updated_by"]["kind"] == "task"
    rolled = await api.post(f"{OWN_ASSET}/watermark/rollback", json={"version": first})
    assert rolled.status_code == 200
    assert await ran.state.asset(name="orders").aget("watermark") == 10


async def test_history_and_rollback_of_unknown_things_are_404(api: httpx.AsyncClient) -> None:
    """Unknown instance, asset, key or version: 404 saying what is missing."""
    cases = [
        ("GET", f"{OWN_TI}/nope/state/k/history", "no task instance 'nope'"),
        ("GET", f"{OWN_TI}/load/state/never/history", "no history of key 'never'"),
        ("POST", f"{OWN_TI}/load/state/never/rollback", "no history of key 'never'"),
        ("POST", f"{OWN_TI}/load/state/params/rollback", "has no version 7; its history holds 1"),
        ("GET", "/api/v2/stateward/assets/1/state/k/history", "no asset with id 1"),
        ("GET", f"{OWN_ASSET}/never/history", "no history of key 'never'"),
        ("POST", f"{OWN_ASSET}/watermark/rollback", "has no version 7"),
    ]
    for method, path, wording in cases:
        response = await api.request(method, path, json={"version": 7})
        assert response.status_code == 404, (method, path, response.text)
        assert wording in response.json()["detail"], (path, response.json())


async def test_a_bad_rollback_body_is_422(api: httpx.AsyncClient) -> None:
    """The body is {"version": N} with N a positive integer."""
    url = f"{OWN_TI}/load/state/params/rollback"
    for body in ({"value": 1}, {"version": "1"}, {"version": 0}, {"version": True}, [1]):
        response = await api.post(url, json=body)
        assert response.status_code == 422, body
        assert "version" in response.json()["detail"][0]["msg"]


async def test_rollback_needs_the_token_and_a_csrf_header_with_the_cookie(ran: Runtime) -> None:
    """Rollback is a write: 401 without the token, 403 with the cookie and no CSRF."""
    url = f"{OWN_TI}/load/state/params/rollback"
    async with client_for(ran, token=None) as anonymous:
        assert (await anonymous.post(url, json={"version": 1})).status_code == 401
        anonymous.cookies.set(COOKIE, TOKEN)
        assert (await anonymous.post(url, json={"version": 1})).status_code == 403
        headers = {"X-CSRF-Token": csrf_token(TOKEN)}
        assert (await anonymous.post(url, json={"version": 1}, headers=headers)).status_code == 200


async def test_markup_in_history_is_json_data(api: httpx.AsyncClient) -> None:
    """A key and value with markup come back as JSON strings, unchanged."""
    key = "<script>alert(1)</script>"
    quoted = httpx.URL(key).raw_path.decode()
    await api.put(f"{TI}/load/state-store/{quoted}", json={"value": "<img src=x onerror=1>"})
    got = await api.get(f"{OWN_TI}/load/state/{quoted}/history")
    assert got.headers["content-type"] == "application/json"
    assert got.json()["key"] == key
    assert got.json()["versions"][0]["value"] == "<img src=x onerror=1>"


async def test_the_openapi_document_has_the_history_routes(api: httpx.AsyncClient) -> None:
    """History and rollback are in the OpenAPI document with their schemas."""
    document = (await api.get("/api/v2/openapi.json")).json()
    paths = document["paths"]
    own = "/api/v2/stateward/runs/{dag_id}/{run_id}/tasks/{task_id}/state/{key}"
    assert set(paths[own + "/history"]) == {"get"}
    assert set(paths[own + "/rollback"]) == {"post"}
    asset = "/api/v2/stateward/assets/{asset_id}/state/{key}"
    assert set(paths[asset + "/history"]) == {"get"}
    rollback = paths[asset + "/rollback"]["post"]
    assert rollback["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "RollbackBody"
    )
    assert "KeyHistoryResponse" in document["components"]["schemas"]


async def test_an_assets_events_are_listed_newest_first(
    api: httpx.AsyncClient, ran: Runtime
) -> None:
    """/api/v2/stateward/assets/{id}/events lists the events with their emitting try."""
    await ran.admin.request(m.AddAssetEvent("orders", "s3://lake/orders", {"rows": 3}, "daily"))
    got = (await api.get(f"/api/v2/stateward/assets/{ORDERS_ID}/events")).json()
    assert (got["asset_id"], got["name"], got["uri"]) == (ORDERS_ID, "orders", "s3://lake/orders")
    seeded, emitted = got["events"]
    assert seeded["extra"] == {"rows": 3}
    assert (seeded["alias_name"], seeded["dag_id"], seeded["try_number"]) == ("daily", None, None)
    assert emitted == {
        "timestamp": emitted["timestamp"], "extra": {}, "alias_name": None, "dag_id": "etl",
        "run_id": "r1", "task_id": "load", "map_index": -1, "try_number": 1,
    }  # fmt: skip
    one = await api.get(f"/api/v2/stateward/assets/{ORDERS_ID}/events", params={"limit": 1})
    assert one.json()["events"] == [seeded]
    bad = await api.get(f"/api/v2/stateward/assets/{ORDERS_ID}/events", params={"limit": 0})
    assert bad.status_code == 422
    assert (await api.get("/api/v2/stateward/assets/12345/events")).status_code == 404
    document = (await api.get("/api/v2/openapi.json")).json()
    listed = document["paths"]["/api/v2/stateward/assets/{asset_id}/events"]["get"]
    assert listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith(
        "AssetEventsResponse"
    )
