"""``stateward runs list|show|clear`` and ``stateward logs``: the recorded runs, their
instances and attempts, and the attempts' output."""

from __future__ import annotations

import sys
from typing import Any, Final

import attrs
import click
import trio
from rich import box
from rich.table import Table

from .._records import AttemptRecord, DagRunRecord, TaskInstanceRecord, iso_time
from .._runtime.runtime import Runtime
from .._values import dump_json
from .app import CliError, cli, db_option, stdout_console, table_time, with_runtime

RUN_STATES = ("running", "queued", "success", "failed")
#: Seconds between two reads of a followed attempt's record (``logs --follow``).
FOLLOW_POLL: Final = 0.5


@cli.group()
def runs() -> None:
    """List recorded runs, show one with its task instances and attempts, clear them."""


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

    async def work(rt: Runtime) -> tuple[DagRunRecord | None, dict[tuple[str, int], str | None]]:
        return await rt.runs.get(dag_id, run_id), await rt.runs.items(dag_id, run_id)

    run, items = with_runtime(db, work, create=False)
    if run is None:
        msg = (
            f"no run {run_id!r} of Dag {dag_id!r} is recorded; "
            f"'stateward runs list --dag {dag_id}' lists its runs"
        )
        raise CliError(msg)
    if as_json:
        document = run_json(run, instances=True)
        for instance in document["instances"]:
            instance["item"] = items.get((instance["task_id"], instance["map_index"]))
        click.echo(dump_json(document, indent=2))
        return
    console = stdout_console()
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("task", overflow="fold")
    table.add_column("map index", justify="right")
    labelled = any(label is not None for label in items.values())
    if labelled:
        table.add_column("item", overflow="fold")
    table.add_column("state")
    table.add_column("tries", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="fold")
    for ti in run.instances:
        item = [items.get((ti.task_id, ti.map_index)) or ""] if labelled else []
        table.add_row(
            ti.task_id, "-" if ti.map_index < 0 else str(ti.map_index), *item, ti.state,
            str(ti.try_number), _duration(ti.started_at, ti.ended_at), _last_error(ti),
        )  # fmt: skip
    console.print(table)
    console.print(f"Dag {dag_id!r} run {run_id!r}: {run.state}")


def _instance_label(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


@runs.command("clear")
@click.argument("dag_id")
@click.argument("run_id")
@click.option(
    "--task",
    "task_ids",
    metavar="ID",
    multiple=True,
    help="Clear only this task's instances (every map index). Repeatable. [default: all]",
)
@click.option(
    "--failed-only", is_flag=True, help="Clear only instances that failed or are upstream_failed."
)
@click.option("--keep-task-state", is_flag=True, help="Keep the cleared instances' task state.")
@db_option
def clear_run(
    dag_id: str,
    run_id: str,
    task_ids: tuple[str, ...],
    failed_only: bool,
    keep_task_state: bool,
    db: str | None,
) -> None:
    """Mark task instances of a run to run again when the run id is next run.

    Their task state is deleted unless --keep-task-state; their tries continue.
    """

    async def work(rt: Runtime) -> list[tuple[str, int]]:
        chosen = task_ids or None
        return await rt.clear(
            dag_id, run_id, chosen, failed_only=failed_only, keep_task_state=keep_task_state
        )

    cleared = with_runtime(db, work, create=False)
    count = f"{len(cleared)} task instance{'' if len(cleared) == 1 else 's'}"
    shown = ", ".join(_instance_label(*key) for key in cleared)
    click.echo(
        f"cleared {count} of Dag {dag_id!r} run {run_id!r}" + (f": {shown}" if shown else "")
    )
    if cleared:
        them = "it" if len(cleared) == 1 else "them"
        click.echo(f"the next 'stateward run' of run id {run_id!r} runs {them}")


def _attempt_to_show(ti: TaskInstanceRecord, try_number: int | None) -> AttemptRecord:
    if not ti.attempts:
        msg = f"{_instance_label(ti.task_id, ti.map_index)} has no attempt recorded (it never ran)"
        raise CliError(msg)
    if try_number is None:
        return ti.attempts[-1]
    for attempt in ti.attempts:
        if attempt.try_number == try_number:
            return attempt
    tries = ", ".join(str(a.try_number) for a in ti.attempts)
    msg = f"{_instance_label(ti.task_id, ti.map_index)} has no try {try_number}; its tries: {tries}"
    raise CliError(msg)


def _new_output(shown: str, now: str) -> str:
    """What of ``now`` follows ``shown`` (the log as printed so far). A log past its
    bound drops bytes from its middle: then what follows the end of ``shown`` in it."""
    if now.startswith(shown):
        return now[len(shown) :]
    anchor = shown[-200:]
    at = now.rfind(anchor) if anchor else -1
    if at >= 0:
        return now[at + len(anchor) :]
    return "[stateward: output dropped here]\n" + now.splitlines(keepends=True)[-1]


@cli.command()
@click.argument("dag_id")
@click.argument("run_id")
@click.argument("task_id")
@click.option("--map-index", type=click.IntRange(min=-1), default=-1, metavar="N",
              help="Which mapped instance. [default: -1, an unmapped task]")  # fmt: skip
@click.option("--try", "try_number", type=click.IntRange(min=1), metavar="N",
              help="Which try. [default: the latest]")  # fmt: skip
@click.option("--follow", "-f", is_flag=True,
              help="Keep printing new output until the attempt ends (like tail -f).")  # fmt: skip
@db_option
def logs(
    dag_id: str, run_id: str, task_id: str, map_index: int, try_number: int | None,
    follow: bool, db: str | None,
) -> None:  # fmt: skip
    """Print what one attempt of a task instance printed and logged."""
    label = f"{dag_id}/{run_id}/{_instance_label(task_id, map_index)}"

    async def read(rt: Runtime) -> AttemptRecord:
        ti = await rt.runs.get_instance(dag_id, run_id, task_id, map_index)
        if ti is None:
            msg = (
                f"no task instance {label} is recorded; 'stateward runs show {dag_id} "
                f"{run_id}' lists the run's instances"
            )
            raise CliError(msg)
        return _attempt_to_show(ti, try_number)

    async def work(rt: Runtime) -> None:
        attempt = await read(rt)
        chosen = attempt.try_number
        shown = ""
        while True:
            text = attempt.log or ""
            new = _new_output(shown, text)
            if new:
                sys.stdout.write(new)
                sys.stdout.flush()
            shown = text
            if not follow or attempt.state != "running":
                break
            await trio.sleep(FOLLOW_POLL)
            ti = await rt.runs.get_instance(dag_id, run_id, task_id, map_index)
            attempt = _attempt_to_show(ti, chosen) if ti is not None else attempt
        if attempt.log is None:
            click.echo(f"note: no output was kept for {label} try {chosen}", err=True)

    with_runtime(db, work, create=False)
