"""``stateward runs list|show``: the recorded runs, their instances and attempts."""

from __future__ import annotations

from typing import Any

import attrs
import click
from rich import box
from rich.table import Table

from .._records import DagRunRecord, TaskInstanceRecord
from .._runtime.runtime import Runtime
from .._values import dump_json
from .app import CliError, cli, db_option, iso_time, stdout_console, table_time, with_runtime

RUN_STATES = ("running", "success", "failed")


@cli.group()
def runs() -> None:
    """List recorded runs and show one with its task instances and attempts."""


def _times(record: dict[str, Any]) -> dict[str, Any]:
    """``started_at`` / ``ended_at`` as ISO-8601 UTC strings, in place, recursively."""
    for name in ("started_at", "ended_at"):
        if name in record:
            record[name] = iso_time(record[name])
    for child in (*record.get("instances", ()), *record.get("attempts", ())):
        _times(child)
    return record


def run_json(run: DagRunRecord, *, instances: bool) -> dict[str, Any]:
    """A run record as its ``--json`` object (times as ISO-8601 UTC)."""
    document = _times(attrs.asdict(run))
    if not instances:
        del document["instances"]
    return document


def _duration(started: float | None, ended: float | None) -> str:
    return "" if started is None or ended is None else f"{ended - started:.2f}s"


@runs.command("list")
@click.option("--dag", "dag_id", metavar="ID", help="Only runs of this Dag.")
@click.option("--state", type=click.Choice(RUN_STATES), help="Only runs in this state.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of objects.")
@db_option
def list_runs(
    dag_id: str | None, state: str | None, limit: int, as_json: bool, db: str | None
) -> None:
    """List recorded runs, newest first."""

    async def work(rt: Runtime) -> list[DagRunRecord]:
        return await rt.runs.list(dag_id=dag_id, state=state, limit=limit)

    found = with_runtime(db, work, create=False)
    if as_json:
        click.echo(dump_json([run_json(r, instances=False) for r in found], indent=2))
        return
    console = stdout_console()
    if not found:
        console.print("no runs match")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("dag", "run id", "state", "started (UTC)", "duration"):
        table.add_column(name, overflow="fold")
    for r in found:
        duration = _duration(r.started_at, r.ended_at)
        table.add_row(r.dag_id, r.run_id, r.state, table_time(r.started_at), duration)
    console.print(table)


def _last_error(ti: TaskInstanceRecord) -> str:
    last = ti.attempts[-1] if ti.attempts else None
    if last is None or last.error_type is None:
        return ""
    first_line = (last.error_message or "").splitlines()[0:1]
    return f"{last.error_type}: {first_line[0]}" if first_line else last.error_type


@runs.command("show")
@click.argument("dag_id")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True, help="Print the run as one JSON object.")
@db_option
def show_run(dag_id: str, run_id: str, as_json: bool, db: str | None) -> None:
    """Show one run: each task instance's state, tries, duration and last error."""

    async def work(rt: Runtime) -> DagRunRecord | None:
        return await rt.runs.get(dag_id, run_id)

    run = with_runtime(db, work, create=False)
    if run is None:
        msg = (
            f"no run {run_id!r} of Dag {dag_id!r} is recorded; "
            f"'stateward runs list --dag {dag_id}' lists its runs"
        )
        raise CliError(msg)
    if as_json:
        click.echo(dump_json(run_json(run, instances=True), indent=2))
        return
    console = stdout_console()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("task", overflow="fold")
    table.add_column("map index", justify="right")
    table.add_column("state")
    table.add_column("tries", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="fold")
    for ti in run.instances:
        table.add_row(
            ti.task_id, "-" if ti.map_index < 0 else str(ti.map_index), ti.state,
            str(ti.try_number), _duration(ti.started_at, ti.ended_at), _last_error(ti),
        )  # fmt: skip
    console.print(table)
    console.print(f"Dag {dag_id!r} run {run_id!r}: {run.state}")
