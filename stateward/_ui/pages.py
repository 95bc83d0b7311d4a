"""The web pages: grid, run, task instance, asset, search; rendered on the server.

Templates are rendered by a Jinja2 environment of their own (autoescaping on),
separate from the sandbox that renders task templates. A state-changing form posts
back to its page's ``/state`` route with the CSRF token; the first post of an edit,
delete or clear shows a confirmation page, whose button posts it again confirmed.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, Final
from urllib.parse import parse_qsl, quote, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from .._records import AssetEvent, DagRunRecord, StateWriter, TaskInstanceRecord, TaskNode
from .._records import iso_time as iso
from .._values import dump_json, value_from_text
from . import charts
from .api import MAX_INT
from .auth import check_form_csrf, csrf_token
from .data import InvalidError, UiData, asset_id

#: How many recent runs the grid shows (``?limit=`` up to :data:`GRID_MAX_RUNS`).
GRID_RUNS: Final = 25
#: How many of an asset's newest events its page lists.
EVENTS_SHOWN: Final = 50
GRID_MAX_RUNS: Final = 100
#: How many keys a task instance's or an asset's page shows (``?offset=`` pages on).
KEYS_SHOWN: Final = 25
#: Instance states after which more is to come: their page refreshes itself.
UNFINISHED: Final = ("running", "up_for_retry", "queued")
#: The worst state of a mapped task's instances is the colour of its grid cell.
SEVERITY: Final = charts.SEVERITY


def environment() -> jinja2.Environment:
    """The pages' Jinja2 environment: package templates, autoescaping on."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("stateward._ui", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["iso"] = iso
    env.filters["json"] = lambda value: dump_json(value, indent=2)
    env.filters["colour"] = charts.colour
    env.globals["run_url"] = run_url
    return env


def data(request: Request) -> UiData:
    ui: UiData = request.app.state.data
    return ui


def render(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    env: jinja2.Environment = request.app.state.templates
    page = {
        "csrf": csrf_token(request.app.state.token),
        "read_only": request.app.state.read_only,
        "query": request.query_params.get("q", ""),
        "live": False,
    }
    html = env.get_template(name).render({**page, **context})
    return HTMLResponse(html, status_code=status)


async def error_page(request: Request, status: int, detail: str) -> Response:
    return render(request, "error.html", status, code=status, detail=detail)


def url(*parts: str) -> str:
    """A path of these segments, each quoted whole (a ``/``, ``#``, ``?`` or ``%`` in a
    run id stays part of it: the routes take a run id as a path)."""
    return "".join("/" + _segment(part) for part in parts)


def _segment(part: str) -> str:
    # A segment "." or ".." is one a browser would resolve away: its dots are quoted too.
    return quote(part, safe="") if part.strip(".") else part.replace(".", "%2E")


def run_url(dag_id: str, run_id: str) -> str:
    return url("runs", dag_id, run_id)


def ti_url(dag_id: str, run_id: str, task_id: str, map_index: int = -1, suffix: str = "") -> str:
    """The page of a task instance (``suffix``: a path under it, such as ``/state``)."""
    query = f"?{urlencode({'map_index': map_index})}" if map_index >= 0 else ""
    return f"{run_url(dag_id, run_id)}{url('tasks', task_id)}{suffix}{query}"


def pager(request: Request, page_url: str, shown: int, total: int) -> dict[str, Any]:
    """The links of a page of keys: which rows it shows, and the previous and next
    pages' URLs (None: none). ``page_url``: the page's own, built from its ids (not
    from the request's path, whose ``/``, ``..`` and ``%`` a browser would read anew)."""
    offset = _int_query(request, "offset", 0)

    def at(start: int) -> str:
        if not start:
            return page_url
        return page_url + ("&" if "?" in page_url else "?") + urlencode({"offset": start})

    return {
        "first": offset + 1 if shown else 0,
        "last": offset + shown,
        "total": total,
        "previous": at(max(offset - KEYS_SHOWN, 0)) if offset > 0 else None,
        "next": at(offset + KEYS_SHOWN) if offset + shown < total else None,
    }


# -- grid -------------------------------------------------------------------------------------


def summarise(instances: list[TaskInstanceRecord]) -> dict[str, Any]:
    """A grid cell: an unmapped instance's state, or a mapped task's worst and counts."""
    if len(instances) == 1 and instances[0].map_index < 0:
        state = instances[0].state
        return {"state": state, "mapped": False, "text": "", "title": state}
    counts = Counter(ti.state for ti in instances)
    worst = next((s for s in SEVERITY if counts[s]), instances[0].state)
    mapped = any(ti.map_index >= 0 for ti in instances)
    done = counts["success"]
    return {
        "state": worst,
        "mapped": mapped,
        "text": f"{done}/{len(instances)}" if mapped else "",
        "title": ", ".join(f"{n} {s}" for s, n in sorted(counts.items())),
    }


def grid(runs: list[DagRunRecord]) -> list[dict[str, Any]]:
    """Per Dag: its runs (oldest first) and one row per task with a cell per run."""
    by_dag: dict[str, list[DagRunRecord]] = {}
    for run in runs:
        by_dag.setdefault(run.dag_id, []).append(run)
    dags = []
    for dag_id, dag_runs in sorted(by_dag.items()):
        dag_runs.sort(key=lambda r: r.started_at)
        tasks: dict[str, float] = {}
        for run in dag_runs:
            for ti in run.instances:
                first = ti.started_at if ti.started_at is not None else float("inf")
                tasks[ti.task_id] = min(tasks.get(ti.task_id, first), first)
        # Each run's instances by task id, so that a cell is one lookup.
        members_of: list[dict[str, list[TaskInstanceRecord]]] = []
        for run in dag_runs:
            by_task: dict[str, list[TaskInstanceRecord]] = {}
            for ti in run.instances:
                by_task.setdefault(ti.task_id, []).append(ti)
            members_of.append(by_task)
        rows = []
        for task_id in sorted(tasks, key=lambda t: (tasks[t], t)):
            cells = []
            for run, by_task in zip(dag_runs, members_of, strict=True):
                members = by_task.get(task_id, [])
                cell = summarise(members) if members else None
                if cell is not None:
                    index = -1 if cell["mapped"] else members[0].map_index
                    cell["url"] = (
                        f"{run_url(run.dag_id, run.run_id)}#{quote(task_id)}"
                        if cell["mapped"]
                        else ti_url(run.dag_id, run.run_id, task_id, index)
                    )
                cells.append(cell)
            rows.append({"task_id": task_id, "cells": cells})
        dags.append({"dag_id": dag_id, "runs": dag_runs, "rows": rows})
    return dags


async def grid_page(request: Request) -> Response:
    """Recent runs by tasks, coloured by state."""
    ui = data(request)
    text = request.query_params.get("limit", "")
    limit = min(int(text), GRID_MAX_RUNS) if text.isdigit() and int(text) > 0 else GRID_RUNS
    listed = await ui.runs(request.query_params.get("dag_id"), limit=limit)
    runs = await ui.runs_with_instances(listed)
    assets = await ui.asset_names()
    return render(
        request, "grid.html", dags=grid(runs), assets=[(a, asset_id(a.name)) for a in assets]
    )


# -- run and task instance --------------------------------------------------------------------


async def run_page(request: Request) -> Response:
    """One run: its instances, their order, and the Gantt chart of attempts."""
    p = request.path_params
    ui = data(request)
    run = await ui.run(p["dag_id"], p["run_id"])
    items = await ui.rt.runs.items(p["dag_id"], p["run_id"])
    now = time.time()

    def node_url(node: TaskNode) -> str:
        # A mapped task's instances are listed under the chart.
        if node.mapped:
            return f"#{quote(node.task_id)}"
        return ti_url(run.dag_id, run.run_id, node.task_id)

    order = charts.graph(run, node_url) if run.graph else charts.start_order(run)
    return render(
        request, "run.html", run=run, items=items, live=run.state == "running",
        order=order, has_graph=bool(run.graph), gantt=charts.gantt(run, now), ti_url=ti_url,
    )  # fmt: skip


async def instance_page(request: Request, problem: str | None = None) -> Response:
    """One task instance: attempts, rendered fields, logs, and its task state."""
    p = request.path_params
    dag_id, run_id, task_id = p["dag_id"], p["run_id"], p["task_id"]
    map_index = _map_index(request)
    ui = data(request)
    offset = _int_query(request, "offset", 0)
    entries, total = await ui.task_page(dag_id, run_id, task_id, map_index, KEYS_SHOWN, offset)
    keys = [e.key for e in entries]
    # Only the keys shown: a page reads its own keys' histories, no others.
    histories = await ui.task_histories(dag_id, run_id, task_id, map_index, keys)
    ti = await ui.instance(dag_id, run_id, task_id, map_index)
    item = (await ui.rt.runs.items(dag_id, run_id)).get((task_id, map_index))
    return render(
        request, "instance.html", 422 if problem else 200,
        dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, ti=ti, item=item,
        entries=entries, histories=histories, writer_url=writer_url, problem=problem,
        live=ti is not None and ti.state in UNFINISHED,
        pages=pager(request, ti_url(dag_id, run_id, task_id, map_index), len(entries), total),
        post_url=ti_url(dag_id, run_id, task_id, map_index, "/state"),
    )  # fmt: skip


def _map_index(request: Request) -> int:
    return max(_int_query(request, "map_index", -1), -1)


def _int_query(request: Request, name: str, default: int) -> int:
    text = request.query_params.get(name)
    if text is None:
        return default
    try:
        number = int(text)
    except ValueError:
        number = None
    if number is None or number > MAX_INT:
        msg = f"{name} must be an integer up to {MAX_INT}, got {text!r}"
        raise InvalidError(msg, ("query", name)) from None
    return max(number, 0) if name == "offset" else number


async def _form(request: Request) -> tuple[dict[str, str], Response | None]:
    # The pages' forms are urlencoded (no file uploads): parsed here, without the
    # python-multipart dependency Starlette's request.form() needs.
    body = (await request.body()).decode("utf-8", "replace")
    fields = dict(parse_qsl(body, keep_blank_values=True))
    return fields, check_form_csrf(fields.get("csrf"), request.app.state.token)


def _confirm(request: Request, fields: dict[str, str], what: str, action: str) -> Response:
    hidden = {k: v for k, v in fields.items() if k != "confirmed"}
    return render(
        request, "confirm.html", what=what, fields=hidden,
        action=action,
        back=request.headers.get("referer", "/"),
    )  # fmt: skip


def writer_url(writer: StateWriter) -> str | None:
    """The page of the task instance that made a version (None: written out of band)."""
    dag_id, run_id, task_id = writer.dag_id, writer.run_id, writer.task_id
    if writer.kind != "task" or dag_id is None or run_id is None or task_id is None:
        return None
    map_index = -1 if writer.map_index is None else writer.map_index
    return ti_url(dag_id, run_id, task_id, map_index)


def event_url(event: AssetEvent) -> str | None:
    """The page of the task instance that emitted an event (None: added out of band)."""
    dag_id, run_id, task_id = event.dag_id, event.run_id, event.task_id
    if dag_id is None or run_id is None or task_id is None:
        return None
    return ti_url(dag_id, run_id, task_id, -1 if event.map_index is None else event.map_index)


def _version(fields: dict[str, str]) -> int:
    text = fields.get("version", "")
    if not text.isdigit():
        msg = f"version must be a version number from the key's history, got {text!r}"
        raise InvalidError(msg, ("body", "version"))
    return int(text)


def _describe(action: str, key: str, where: str, version: str = "") -> str:
    if action == "rollback":
        return f"Roll key {key!r} of {where} back to version {version}?"
    if action == "set":
        return f"Set key {key!r} of {where}?"
    if action == "delete":
        return f"Delete key {key!r} of {where}?"
    return f"Delete every key of {where}?"


async def instance_post(request: Request) -> Response:
    """Set, delete or clear the instance's task state, after confirmation."""
    fields, refused = await _form(request)
    if refused is not None:
        return refused
    p = request.path_params
    dag_id, run_id, task_id = p["dag_id"], p["run_id"], p["task_id"]
    map_index = _map_index(request)
    action, key = fields.get("action", ""), fields.get("key", "")
    where = f"{dag_id}/{run_id}/{task_id}" + (f"[{map_index}]" if map_index >= 0 else "")
    ui = data(request)
    try:
        value = _value(fields) if action == "set" else None
        version = _version(fields) if action == "rollback" else 0
        if fields.get("confirmed") != "1":
            what = _describe(action, key, where, fields.get("version", ""))
            return _confirm(
                request, fields, what, ti_url(dag_id, run_id, task_id, map_index, "/state")
            )
        if action == "set":
            await ui.set_task(dag_id, run_id, task_id, map_index, key, value)
        elif action == "rollback":
            await ui.rollback_task(dag_id, run_id, task_id, map_index, key, version)
        elif action == "delete":
            await ui.delete_task(dag_id, run_id, task_id, map_index, key)
        elif action == "clear":
            await ui.clear_task(dag_id, run_id, task_id, map_index, all_map_indices=False)
        else:
            msg = f"unknown action {action!r}; use set, delete, clear or rollback"
            raise InvalidError(msg, ("body", "action"))
    except InvalidError as exc:
        return await instance_page(request, problem=exc.detail)
    return RedirectResponse(ti_url(dag_id, run_id, task_id, map_index), status_code=303)


def _value(fields: dict[str, str]) -> Any:
    try:
        return value_from_text(fields.get("value", ""), "use its Delete button")
    except ValueError as exc:
        raise InvalidError(str(exc)) from None


# -- assets -----------------------------------------------------------------------------------


async def asset_page(request: Request, problem: str | None = None) -> Response:
    """One asset: its state, each key's history with provenance, and rollback."""
    ui = data(request)
    ident = request.path_params["asset_id"]
    info = await ui.asset(ident)
    offset = _int_query(request, "offset", 0)
    entries, total = await ui.asset_page(info, KEYS_SHOWN, offset)
    histories = await ui.asset_histories(info, [e.key for e in entries])
    events = await ui.asset_events(info, EVENTS_SHOWN)
    return render(
        request, "asset.html", 422 if problem else 200, asset=info, asset_id=ident,
        entries=entries, histories=histories, writer_url=writer_url, problem=problem,
        post_url=f"/assets/{ident}/state", events=events, events_shown=EVENTS_SHOWN,
        event_url=event_url, pages=pager(request, f"/assets/{ident}", len(entries), total),
    )  # fmt: skip


async def asset_post(request: Request) -> Response:
    """Set, delete or clear the asset's state, after confirmation."""
    fields, refused = await _form(request)
    if refused is not None:
        return refused
    ui = data(request)
    ident = request.path_params["asset_id"]
    info = await ui.asset(ident)
    action, key = fields.get("action", ""), fields.get("key", "")
    try:
        value = _value(fields) if action == "set" else None
        version = _version(fields) if action == "rollback" else 0
        if fields.get("confirmed") != "1":
            what = _describe(action, key, f"asset {info.name!r}", fields.get("version", ""))
            return _confirm(request, fields, what, f"/assets/{ident}/state")
        if action == "set":
            await ui.set_asset(info, key, value)
        elif action == "rollback":
            await ui.rollback_asset(info, key, version)
        elif action == "delete":
            await ui.delete_asset(info, key)
        elif action == "clear":
            await ui.clear_asset(info)
        else:
            msg = f"unknown action {action!r}; use set, delete, clear or rollback"
            raise InvalidError(msg, ("body", "action"))
    except InvalidError as exc:
        return await asset_page(request, problem=exc.detail)
    return RedirectResponse(f"/assets/{ident}", status_code=303)


# -- search -----------------------------------------------------------------------------------


async def search_page(request: Request) -> Response:
    """Dags, runs, tasks and assets whose name holds the query."""
    q = request.query_params.get("q", "").strip()
    ui = data(request)
    found: dict[str, list[tuple[str, str]]] = {"Dags": [], "Runs": [], "Tasks": [], "Assets": []}
    if q:
        needle = q.lower()
        runs = await ui.runs(limit=500)
        dags = sorted({r.dag_id for r in runs})
        found["Dags"] = [(d, f"/?{urlencode({'dag_id': d})}") for d in dags if needle in d.lower()]
        found["Runs"] = [
            (f"{r.dag_id} / {r.run_id}", run_url(r.dag_id, r.run_id))
            for r in runs
            if needle in r.run_id.lower()
        ]
        tasks: dict[str, str] = {}
        for r in await ui.runs_with_instances(runs[:GRID_RUNS]):
            for ti in r.instances:
                if needle in ti.task_id.lower():
                    name = f"{r.dag_id}.{ti.task_id}"
                    tasks.setdefault(name, f"{run_url(r.dag_id, r.run_id)}#{quote(ti.task_id)}")
        found["Tasks"] = sorted(tasks.items())
        found["Assets"] = [
            (a.name, f"/assets/{asset_id(a.name)}")
            for a in await ui.asset_names()
            if needle in a.name.lower() or needle in a.uri.lower()
        ]
    return render(request, "search.html", q=q, found=found)


async def asset_lookup(request: Request) -> Response:
    """``/assets?name=...`` or ``?uri=...``: to the asset's page."""
    q = request.query_params
    info = await data(request).asset_by_ref(q.get("name"), None if q.get("name") else q.get("uri"))
    return RedirectResponse(f"/assets/{asset_id(info.name)}", status_code=303)


def routes() -> list[Route]:
    """The pages' routing table."""
    # A run id may hold "/" (each link quotes it whole, see url()): its segment is a
    # path, so the instance's routes come before the run's, which would match them.
    ti = "/runs/{dag_id}/{run_id:path}/tasks/{task_id}"
    return [
        Route("/", grid_page, methods=["GET"]),
        Route("/search", search_page, methods=["GET"]),
        Route(ti, instance_page, methods=["GET"]),
        Route(ti + "/state", instance_post, methods=["POST"]),
        Route("/runs/{dag_id}/{run_id:path}", run_page, methods=["GET"]),
        Route("/assets", asset_lookup, methods=["GET"]),
        Route("/assets/{asset_id:int}", asset_page, methods=["GET"]),
        Route("/assets/{asset_id:int}/state", asset_post, methods=["POST"]),
    ]
