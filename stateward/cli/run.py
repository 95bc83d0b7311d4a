"""``stateward run`` (with live progress and the result table) and ``stateward dags``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from ..assets import Asset, AssetAlias, AssetNameRef, AssetUriRef
from ..dag import Dag
from ..errors import TaskLoadError
from ..loader import load_dags, pick_dag
from ..runtime.runner import DagRunResult, TaskInstanceEvent
from ..runtime.runtime import Runtime, new_run_id
from .app import (
    _STATE_STYLE,
    EXIT_FAILURE,
    _stdout,
    cli,
    db_option,
    parse_json,
    with_runtime,
)

# -- run ----------------------------------------------------------------------------------


def _parse_params(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for item in values:
        key, sep, text = item.partition("=")
        if not sep or not key:
            msg = f"expected KEY=VALUE, got {item!r}; e.g. --param limit=10"
            raise click.BadParameter(msg, ctx=ctx, param=param)
        try:
            params[key] = parse_json(text)
        except ValueError:
            params[key] = text
    return params


def _choose_dag(file: Path, dag_id: str | None) -> Dag:
    dags = load_dags(file)
    try:
        return pick_dag(dags, dag_id, source=repr(str(file)))
    except TaskLoadError as exc:
        raise click.UsageError(str(exc)) from exc


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dag", "dag_id", metavar="ID", help="The Dag to run (needed if FILE has several).")
@click.option("--run-id", metavar="ID", help="The run's id. [default: manual__<UTC time>]")
@db_option
@click.option(
    "--param",
    "params",
    metavar="KEY=VALUE",
    multiple=True,
    callback=_parse_params,
    help="Override a Dag param; VALUE is JSON if it parses, else a string. Repeatable.",
)
@click.pass_context
def run(
    ctx: click.Context,
    file: Path,
    dag_id: str | None,
    run_id: str | None,
    db: str | None,
    params: dict[str, Any],
) -> None:
    """Run a Dag from FILE once and show how each task instance ended.

    Exits with 0 when every task instance succeeded, 1 when the run failed.
    """
    dag = _choose_dag(file, dag_id)
    run_id = run_id or new_run_id()
    display = RunDisplay(dag)

    async def work(rt: Runtime) -> DagRunResult:
        return await rt.run_dag(dag, run_id=run_id, params=params, on_event=display.on_event)

    with display:
        result = with_runtime(db, work, create=True)
    print_run(_stdout(), result)
    if result.state != "success":
        ctx.exit(EXIT_FAILURE)


def _instance_count(dag: Dag) -> int:
    return sum(task.map_count() if task.is_mapped else 1 for task in dag.tasks.values())


def _label(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


class RunDisplay:
    """Live progress of a run on stderr: a progress bar on a terminal, else plain lines."""

    def __init__(self, dag: Dag) -> None:
        self._console = Console(stderr=True, highlight=False, markup=False, emoji=False)
        self._live = self._console.is_interactive
        self._running: dict[str, None] = {}
        self._progress: Progress | None = None
        self._bar = TaskID(0)
        self._total = _instance_count(dag)
        self._finished = 0

    def __enter__(self) -> RunDisplay:
        if self._live:
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self._console,
                transient=True,
            )
            self._progress.start()
            self._bar = self._progress.add_task("starting", total=self._total)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def on_event(self, event: TaskInstanceEvent) -> None:
        """Show one event (called by the runner, in trio's thread)."""
        label = _label(event.task_id, event.map_index)
        if self._progress is None:
            click.echo(f"{label}: {event.state} (try {event.try_number})", err=True)
            return
        if event.state == "running":
            self._running[label] = None
        else:
            self._running.pop(label, None)
        if event.state not in ("running", "success"):
            style = _STATE_STYLE.get(event.state, "yellow")
            self._progress.console.print(
                Text(f"{label}: {event.state} (try {event.try_number})", style=style)
            )
        names = list(self._running)
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        done = event.state in _STATE_STYLE
        self._finished += done
        self._progress.update(
            self._bar,
            description=shown or ("done" if self._finished == self._total else "waiting"),
            advance=1 if done else 0,
        )


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, rest = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{rest:02d}s" if hours else f"{minutes}m{rest:02d}s"


def print_run(console: Console, result: DagRunResult) -> None:
    """Print a run's task instances as a table, then one summary line."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("task", overflow="fold")
    table.add_column("map index", justify="right")
    table.add_column("state")
    table.add_column("tries", justify="right")
    table.add_column("duration", justify="right")
    table.add_column("error", overflow="fold")
    for ti in result.task_instances:
        error = ""
        if ti.error is not None:
            text = str(ti.error).strip().splitlines()
            error = f"{type(ti.error).__name__}: {text[0]}" if text else type(ti.error).__name__
        table.add_row(
            ti.task_id,
            str(ti.map_index) if ti.map_index >= 0 else "-",
            Text(ti.state, style=_STATE_STYLE.get(ti.state, "")),
            str(ti.try_number),
            _duration(ti.duration),
            error,
        )
    console.print(table)
    counts: dict[str, int] = {}
    for ti in result.task_instances:
        counts[ti.state] = counts.get(ti.state, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    verdict = "succeeded" if result.state == "success" else "failed"
    console.print(f"Dag {result.dag_id!r} run {result.run_id!r} {verdict} ({tally})")


# -- dags -----------------------------------------------------------------------------------


def _asset_cell(items: Sequence[object]) -> str:
    shown: list[str] = []
    for item in items:
        match item:
            case Asset(name, _):
                shown.append(name)
            case AssetNameRef(name):
                shown.append(f"{name} (ref)")
            case AssetUriRef(uri):
                shown.append(f"{uri} (ref)")
            case AssetAlias(name):
                shown.append(f"alias {name}")
            case _:
                shown.append(repr(item))
    return "\n".join(shown)


@cli.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def dags(file: Path) -> None:
    """List the Dags in FILE and their tasks."""
    console = _stdout()
    for dag in load_dags(file).values():
        order = dag.topological_order()  # before printing: a cycle is an error
        count = len(dag.tasks)
        heading = f"Dag {dag.dag_id!r}: {count} task{'' if count == 1 else 's'}"
        if dag.params:
            heading += f", params {json.dumps(dag.params, default=repr)}"
        console.print(Text(heading, style="bold"))
        if dag.description:
            console.print(dag.description)
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("task", overflow="fold")
        table.add_column("mapped")
        table.add_column("retries", justify="right")
        table.add_column("inlets", overflow="fold")
        table.add_column("outlets", overflow="fold")
        table.add_column("upstream", overflow="fold")
        for task in order:
            mapped = f"yes ({task.map_count()})" if task.is_mapped else "no"
            table.add_row(
                task.task_id,
                mapped,
                str(task.retries),
                _asset_cell(task.inlets),
                _asset_cell(task.outlets),
                ", ".join(sorted(task.upstream_task_ids)),
            )
        console.print(table)
