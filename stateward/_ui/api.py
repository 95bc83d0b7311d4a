"""The HTTP API under ``/api/v2``: Airflow 3.3's state-store routes and stateward's own.

The task-state and asset-state routes have the paths, methods, parameters, bodies and
responses of Airflow 3.3's REST API (the ``TaskStateStoreApi`` and
``AssetStateStoreApi`` of ``apache-airflow-client`` 3.3.2 work against them
unchanged). stateward's own routes live under ``/api/v2/stateward/``. Errors are JSON:
``{"detail": "..."}``, and for 422 FastAPI's list of ``{"loc", "msg", "type"}``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .._records import (
    AssetEvent,
    AssetInfo,
    AttemptRecord,
    DagRunRecord,
    StateEntry,
    StateVersion,
    TaskInstanceRecord,
    version_json,
)
from .._records import iso_time as iso
from .._values import OutOfRangeError, parse_json
from . import openapi
from .data import DEFAULT_EXPIRY, Expiry, InvalidError, NotFoundError, UiData, asset_id
from .data import parse_writer as _parse_writer

#: Airflow's default page size of a listing, and the largest page served.
DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 1000
#: The largest integer a query parameter may be (a map index, an offset): the stores'
#: 32-bit columns hold it.
MAX_INT: Final = 2**31 - 1

# Run ids may hold "/": their segment is a path (each link quotes it, see pages.url).
TI_STATE = "/api/v2/dags/{dag_id}/dagRuns/{dag_run_id:path}/taskInstances/{task_id}/state-store"
ASSET_STATE = "/api/v2/assets/{asset_id:int}/state-store"
OWN = "/api/v2/stateward"
#: Where stateward's own routes for a key live: its history, and rolling it back.
TI_OWN = OWN + "/runs/{dag_id}/{run_id:path}/tasks/{task_id}/state"
ASSET_OWN = OWN + "/assets/{asset_id:int}/state"


def data(request: Request) -> UiData:
    ui: UiData = request.app.state.data
    return ui


# -- parameters and bodies -------------------------------------------------------------------


def int_param(
    request: Request, name: str, default: int, minimum: int, maximum: int = MAX_INT
) -> int:
    """A query parameter that is an integer from ``minimum`` to ``maximum`` (422
    otherwise, as FastAPI words it)."""
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        number = int(text)
    except ValueError:
        msg = f"Input should be a valid integer, unable to parse string as an integer: {text!r}"
        raise InvalidError(msg, ("query", name)) from None
    if number < minimum:
        msg = f"Input should be greater than or equal to {minimum}"
        raise InvalidError(msg, ("query", name))
    if number > maximum:
        msg = f"Input should be less than or equal to {maximum}"
        raise InvalidError(msg, ("query", name))
    return number


def bool_param(request: Request, name: str) -> bool:
    text = (request.query_params.get(name) or "false").lower()
    if text in ("true", "1", "yes", "on"):
        return True
    if text in ("false", "0", "no", "off"):
        return False
    msg = f"Input should be a valid boolean, unable to interpret input: {text!r}"
    raise InvalidError(msg, ("query", name))


async def json_body(request: Request, fields: tuple[str, ...]) -> dict[str, Any]:
    """The body: a JSON object with ``value`` and only the given fields."""
    text = (await request.body()).decode("utf-8", "replace")
    try:
        body = parse_json(text)
    except OutOfRangeError as exc:
        msg = f"{exc}; store a smaller number or the number as a string"
        raise InvalidError(msg, ("body",)) from None
    except ValueError as exc:
        msg = f'the body is not valid JSON ({exc}); send an object such as {{"value": 42}}'
        raise InvalidError(msg, ("body",)) from None
    if not isinstance(body, dict):
        msg = f'the body must be a JSON object such as {{"value": 42}}, got {text[:60]!r}'
        raise InvalidError(msg, ("body",))
    if "value" not in body:
        msg = "Field required"
        raise InvalidError(msg, ("body", "value"))
    extra = sorted(set(body) - set(fields))
    if extra:
        msg = f"unknown field {extra[0]!r}; the body takes {', '.join(fields)}"
        raise InvalidError(msg, ("body", extra[0]))
    return body


def expiry(body: dict[str, Any]) -> Expiry:
    """``expires_at`` of a task-state body: absent or ``"default"``, null, or a time."""
    if "expires_at" not in body or body["expires_at"] == DEFAULT_EXPIRY:
        return DEFAULT_EXPIRY
    given = body["expires_at"]
    if given is None:
        return None
    try:
        when = datetime.fromisoformat(given) if isinstance(given, str) else None
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        msg = (
            f'expires_at must be "default", null, or a datetime with a timezone '
            f"(2030-01-01T00:00:00Z), got {given!r}"
        )
        raise InvalidError(msg, ("body", "expires_at"))
    return when.timestamp()


def ti_address(request: Request) -> tuple[str, str, str, int]:
    p = request.path_params
    map_index = int_param(request, "map_index", -1, -1)
    return p["dag_id"], p["dag_run_id"], p["task_id"], map_index


# -- responses --------------------------------------------------------------------------------


def task_entry_json(entry: StateEntry) -> dict[str, Any]:
    return {
        "key": entry.key,
        "value": entry.value,
        "updated_at": iso(entry.updated_at),
        "expires_at": iso(entry.expires_at),
    }


def asset_entry_json(entry: StateEntry) -> dict[str, Any]:
    writer = _parse_writer(entry.writer)
    by: dict[str, Any] = (
        {"kind": "api"} if writer is None else {"kind": "task", **attrs.asdict(writer)}
    )
    return {
        "key": entry.key,
        "value": entry.value,
        "updated_at": iso(entry.updated_at),
        "last_updated_by": by,
    }


def history_json(key: str, versions: list[StateVersion]) -> dict[str, Any]:
    return {"key": key, "versions": [version_json(v) for v in versions]}


async def version_body(request: Request) -> int:
    """The body of a rollback: ``{"version": N}``."""
    text = (await request.body()).decode("utf-8", "replace")
    try:
        body = parse_json(text)
    except ValueError:
        body = None
    if not isinstance(body, dict) or set(body) != {"version"}:
        msg = f'the body must be a JSON object such as {{"version": 3}}, got {text[:60]!r}'
        raise InvalidError(msg, ("body",))
    version = body["version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        msg = f"version must be a positive integer from the key's history, got {version!r}"
        raise InvalidError(msg, ("body", "version"))
    return version


def event_json(event: AssetEvent) -> dict[str, Any]:
    """One asset event, with the task instance and try that emitted it (``null``s: an
    event added out of band)."""
    return {
        "timestamp": iso(event.timestamp),
        "extra": event.extra,
        "alias_name": event.alias_name,
        "dag_id": event.dag_id,
        "run_id": event.run_id,
        "task_id": event.task_id,
        "map_index": event.map_index,
        "try_number": event.try_number,
    }


def asset_json(info: AssetInfo) -> dict[str, Any]:
    return {"asset_id": asset_id(info.name), "name": info.name, "uri": info.uri}


def _times(document: dict[str, Any]) -> dict[str, Any]:
    for name in ("started_at", "ended_at"):
        if name in document:
            document[name] = iso(document[name])
    return document


def attempt_json(attempt: AttemptRecord) -> dict[str, Any]:
    document = _times(attrs.asdict(attempt))
    document["has_log"] = document.pop("log") is not None
    return document


def instance_json(ti: TaskInstanceRecord) -> dict[str, Any]:
    document = _times(attrs.asdict(ti, recurse=False))
    document["attempts"] = [attempt_json(a) for a in ti.attempts]
    return document


def run_json(run: DagRunRecord, *, instances: bool) -> dict[str, Any]:
    document = _times(attrs.asdict(run, recurse=False))
    if instances:
        document["instances"] = [instance_json(ti) for ti in run.instances]
        # The Dag's graph as the run recorded it ([] for a run recorded before).
        document["graph"] = [
            {"task_id": n.task_id, "upstream_task_ids": list(n.upstream_task_ids),
             "mapped": n.mapped}
            for n in run.graph
        ]  # fmt: skip
    else:
        del document["instances"], document["graph"]
    return document


# -- Airflow's task-state routes --------------------------------------------------------------


async def list_task_state(request: Request) -> Response:
    """List the task state of a task instance (``limit``/``offset``, ``map_index``): the
    store reads that page and counts the rest."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    limit = min(int_param(request, "limit", DEFAULT_LIMIT, 0), MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0)
    ui = data(request)
    page, total = await ui.task_page(dag_id, run_id, task_id, map_index, limit, offset)
    return JSONResponse(
        {"task_state_store": [task_entry_json(e) for e in page], "total_entries": total}
    )


async def clear_task_state(request: Request) -> Response:
    """Delete every key of a task instance (``all_map_indices``: of every map index)."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    every = bool_param(request, "all_map_indices")
    await data(request).clear_task(dag_id, run_id, task_id, map_index, all_map_indices=every)
    return Response(status_code=204)


async def get_task_state(request: Request) -> Response:
    """One key of a task instance."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    key = request.path_params["key"]
    entry = await data(request).task_entry(dag_id, run_id, task_id, map_index, key)
    return JSONResponse(task_entry_json(entry))


async def set_task_state(request: Request) -> Response:
    """Create or overwrite a key (``expires_at``: ``"default"``, null, or a time)."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    key = request.path_params["key"]
    body = await json_body(request, ("value", "expires_at"))
    when = expiry(body)
    await data(request).set_task(dag_id, run_id, task_id, map_index, key, body["value"], when)
    return Response(status_code=204)


async def patch_task_state(request: Request) -> Response:
    """Change the value of an existing key, keeping its expiry; 404 if it is absent."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    key = request.path_params["key"]
    body = await json_body(request, ("value",))
    ui = data(request)
    entry = await ui.task_entry(dag_id, run_id, task_id, map_index, key)
    await ui.set_task(dag_id, run_id, task_id, map_index, key, body["value"], entry.expires_at)
    updated = await ui.task_entry(dag_id, run_id, task_id, map_index, key)
    return JSONResponse(task_entry_json(updated))


async def delete_task_state(request: Request) -> Response:
    """Delete one key (an absent key is not an error)."""
    dag_id, run_id, task_id, map_index = ti_address(request)
    await data(request).delete_task(dag_id, run_id, task_id, map_index, request.path_params["key"])
    return Response(status_code=204)


# -- Airflow's asset-state routes -------------------------------------------------------------


async def list_asset_state(request: Request) -> Response:
    """List the state of an asset (``limit``/``offset``)."""
    limit = min(int_param(request, "limit", DEFAULT_LIMIT, 0), MAX_LIMIT)
    offset = int_param(request, "offset", 0, 0)
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    page, total = await ui.asset_page(info, limit, offset)
    return JSONResponse(
        {"asset_state_store": [asset_entry_json(e) for e in page], "total_entries": total}
    )


async def clear_asset_state(request: Request) -> Response:
    """Delete every key of an asset."""
    ui = data(request)
    await ui.clear_asset(await ui.asset(request.path_params["asset_id"]))
    return Response(status_code=204)


async def get_asset_state(request: Request) -> Response:
    """One key of an asset."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    return JSONResponse(asset_entry_json(await ui.asset_entry(info, request.path_params["key"])))


async def set_asset_state(request: Request) -> Response:
    """Create or overwrite a key of an asset."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    body = await json_body(request, ("value",))
    await ui.set_asset(info, request.path_params["key"], body["value"])
    return Response(status_code=204)


async def delete_asset_state(request: Request) -> Response:
    """Delete one key of an asset (an absent key is not an error)."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    await ui.delete_asset(info, request.path_params["key"])
    return Response(status_code=204)


# -- stateward's own routes -------------------------------------------------------------------


async def list_runs(request: Request) -> Response:
    """Recorded runs, newest first (``dag_id``, ``state``, ``limit``)."""
    q = request.query_params
    limit = min(int_param(request, "limit", 100, 1), MAX_LIMIT)
    runs = await data(request).runs(q.get("dag_id"), q.get("state"), limit)
    return JSONResponse({"runs": [run_json(r, instances=False) for r in runs]})


async def get_run(request: Request) -> Response:
    """One run with its task instances and their attempts."""
    p = request.path_params
    run = await data(request).run(p["dag_id"], p["run_id"])
    return JSONResponse(run_json(run, instances=True))


async def _instance(request: Request) -> TaskInstanceRecord:
    p = request.path_params
    map_index = int_param(request, "map_index", -1, -1)
    ti = await data(request).instance(p["dag_id"], p["run_id"], p["task_id"], map_index)
    if ti is None:
        msg = f"no task instance {p['task_id']!r} is recorded in run {p['run_id']!r}"
        raise NotFoundError(msg)
    return ti


async def get_instance(request: Request) -> Response:
    """One task instance of a run with its attempts (``map_index``)."""
    return JSONResponse(instance_json(await _instance(request)))


async def get_log(request: Request) -> Response:
    """The captured output of one try, as text; 404 when none was captured."""
    ti = await _instance(request)
    number = request.path_params["try_number"]
    for attempt in ti.attempts:
        if attempt.try_number == number:
            if attempt.log is None:
                msg = f"try {number} of {ti.task_id!r} has no captured log"
                raise NotFoundError(msg)
            return PlainTextResponse(attempt.log)
    msg = f"{ti.task_id!r} has no try {number}"
    raise NotFoundError(msg)


async def find_asset(request: Request) -> Response:
    """An asset by ``name`` or ``uri``, with its API id."""
    name, uri = request.query_params.get("name"), request.query_params.get("uri")
    if (name is None) == (uri is None):
        msg = "give name= or uri=, not both"
        raise InvalidError(msg, ("query", "name"))
    return JSONResponse(asset_json(await data(request).asset_by_ref(name, uri)))


async def task_state_history(request: Request) -> Response:
    """The kept versions of a task-state key, newest first, with who wrote each."""
    p = request.path_params
    map_index = int_param(request, "map_index", -1, -1)
    key = p["key"]
    ui = data(request)
    versions = await ui.task_history(p["dag_id"], p["run_id"], p["task_id"], map_index, key)
    return JSONResponse(history_json(key, versions))


async def rollback_task_state(request: Request) -> Response:
    """Write a kept version of a task-state key again, as its newest version."""
    p = request.path_params
    map_index = int_param(request, "map_index", -1, -1)
    version = await version_body(request)
    key = p["key"]
    ui = data(request)
    await ui.rollback_task(p["dag_id"], p["run_id"], p["task_id"], map_index, key, version)
    versions = await ui.task_history(p["dag_id"], p["run_id"], p["task_id"], map_index, key)
    return JSONResponse(history_json(key, versions))


async def asset_state_history(request: Request) -> Response:
    """The kept versions of an asset-state key, newest first, with who wrote each."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    key = request.path_params["key"]
    return JSONResponse(history_json(key, await ui.asset_history(info, key)))


async def rollback_asset_state(request: Request) -> Response:
    """Write a kept version of an asset-state key again, as its newest version."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    version = await version_body(request)
    key = request.path_params["key"]
    await ui.rollback_asset(info, key, version)
    return JSONResponse(history_json(key, await ui.asset_history(info, key)))


async def list_asset_events(request: Request) -> Response:
    """The events emitted to an asset, newest first (``limit``, default 100)."""
    ui = data(request)
    info = await ui.asset(request.path_params["asset_id"])
    events = await ui.asset_events(info, min(int_param(request, "limit", 100, 1), MAX_LIMIT))
    return JSONResponse({**asset_json(info), "events": [event_json(e) for e in events]})


async def get_openapi(request: Request) -> Response:
    """This API's OpenAPI document."""
    return JSONResponse(openapi.document(routes()))


def routes() -> list[Route]:
    """The API's routing table."""
    run = f"{OWN}/runs/{{dag_id}}/{{run_id:path}}"
    # A run id may hold "/": its segment is a path, so a route whose path holds a run's
    # comes before the shorter routes that would match it.
    own = [
        Route(f"{OWN}/runs", list_runs, methods=["GET"]),
        Route(f"{OWN}/assets", find_asset, methods=["GET"]),
        Route(f"{OWN}/assets/{{asset_id:int}}/events", list_asset_events, methods=["GET"]),
        Route(f"{TI_OWN}/{{key:path}}/history", task_state_history, methods=["GET"]),
        Route(f"{TI_OWN}/{{key:path}}/rollback", rollback_task_state, methods=["POST"]),
        Route(f"{ASSET_OWN}/{{key:path}}/history", asset_state_history, methods=["GET"]),
        Route(f"{ASSET_OWN}/{{key:path}}/rollback", rollback_asset_state, methods=["POST"]),
        Route(f"{run}/tasks/{{task_id}}/tries/{{try_number:int}}/log", get_log, methods=["GET"]),
        Route(f"{run}/tasks/{{task_id}}", get_instance, methods=["GET"]),
        Route(run, get_run, methods=["GET"]),
    ]
    return [
        Route(TI_STATE, list_task_state, methods=["GET"]),
        Route(TI_STATE, clear_task_state, methods=["DELETE"]),
        Route(TI_STATE + "/{key:path}", get_task_state, methods=["GET"]),
        Route(TI_STATE + "/{key:path}", set_task_state, methods=["PUT"]),
        Route(TI_STATE + "/{key:path}", patch_task_state, methods=["PATCH"]),
        Route(TI_STATE + "/{key:path}", delete_task_state, methods=["DELETE"]),
        Route(ASSET_STATE, list_asset_state, methods=["GET"]),
        Route(ASSET_STATE, clear_asset_state, methods=["DELETE"]),
        Route(ASSET_STATE + "/{key:path}", get_asset_state, methods=["GET"]),
        Route(ASSET_STATE + "/{key:path}", set_asset_state, methods=["PUT"]),
        Route(ASSET_STATE + "/{key:path}", delete_asset_state, methods=["DELETE"]),
        *own,
        Route("/api/v2/openapi.json", get_openapi, methods=["GET"]),
    ]
