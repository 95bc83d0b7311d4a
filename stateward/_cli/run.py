"""``stateward run`` (with live progress and the result table) and ``stateward dags``."""

from __future__ import annotations

import contextlib
import json
import shlex
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from .._assets import Asset, AssetAlias, AssetNameRef, AssetUriRef
from .._dag import Dag
from .._errors import TaskLoadError
from .._loader import load_dags, pick_dag
from .._runtime.runner import DagRunResult, TaskInstanceEvent
from .._runtime.runtime import Runtime, default_db, new_run_id
from .._states import DagRunState, TaskInstanceState
from .._tracebacks import trim_to_user_code
from .._values import parse_json
from .app import (
    EXIT_FAILURE,
    STATE_STYLE,
    cli,
    db_option,
    stderr_console,
    stdout_console,
    with_runtime,
)

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

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


def _load_dags(file: Path) -> dict[str, Dag]:
    """``load_dags``; with ``-v``, a file that fails to load shows its traceback too."""
    try:
        return load_dags(file)
    except TaskLoadError as exc:
        verbose = click.get_current_context().find_root().params.get("verbose", 0)
        if verbose and exc.__cause__ is not None:
            shown = traceback.format_exception(trim_to_user_code(exc.__cause__))
            stderr_console().print(Text("".join(shown).rstrip("\n")), soft_wrap=True)
        raise


def _choose_dag(file: Path, dag_id: str | None) -> Dag:
    dags = _load_dags(file)
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
@click.option(
    "--lease-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="How long a task instance this runtime runs stays its own if the runtime stops "
    "renewing (dies or pauses); another runtime on the same run id then takes it over.",
)
@click.option(
    "--show-results",
    is_flag=True,
    help="After the table, show what each task instance returned and its rendered template fields.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the run's result as one JSON object instead of the table.",
)
@click.option(
    "--task",
    "task_id",
    metavar="ID",
    help="Run only this task's instance, ignoring its upstream tasks (as 'airflow tasks "
    "test' does); it is recorded in the run.",
)
@click.option(
    "--map-index",
    type=click.IntRange(min=-1),
    metavar="N",
    help="With --task: which mapped instance. [default: -1, an unmapped task]",
)
@click.pass_context
def run(
    ctx: click.Context,
    file: Path,
    dag_id: str | None,
    run_id: str | None,
    db: str | None,
    params: dict[str, Any],
    lease_timeout: float,
    show_results: bool,
    as_json: bool,
    task_id: str | None,
    map_index: int | None,
) -> None:
    """Run a Dag from FILE once (or one task instance, with --task) and show how each
    task instance ended.

    Exits with 0 when every task instance succeeded, 1 when the run failed (the
    message gives the command that resumes it), 130 when interrupted (likewise).
    """
    # With --json, stdout holds the JSON alone: what the Dag file and its tasks print
    # goes to stderr, with the progress.
    quiet_stdout = contextlib.redirect_stdout(sys.stderr) if as_json else contextlib.nullcontext()
    with quiet_stdout:
        dag = _choose_dag(file, dag_id)
    if map_index is not None and task_id is None:
        msg = "--map-index needs --task ID: it chooses a mapped instance of that task"
        raise click.UsageError(msg)
    if task_id is not None and task_id not in dag.tasks:
        msg = f"Dag {dag.dag_id!r} has no task {task_id!r}; its tasks: {', '.join(dag.tasks)}"
        raise click.UsageError(msg)
    run_id = run_id or new_run_id()
    display = RunDisplay(dag, one=task_id is not None)

    async def work(rt: Runtime) -> DagRunResult:
        if task_id is None:
            return await rt.run_dag(dag, run_id=run_id, params=params, on_event=display.on_event)
        task = dag.tasks[task_id]
        ti = await rt.run_task(
            task, run_id=run_id, map_index=-1 if map_index is None else map_index, params=params
        )
        display.on_event(TaskInstanceEvent(ti.task_id, ti.map_index, ti.state, ti.try_number))
        return DagRunResult._create(dag.dag_id, run_id, DagRunState(ti.state), (ti,))

    try:
        with display, quiet_stdout:
            result = with_runtime(db, work, create=True, lease_timeout=lease_timeout)
    except BaseException as exc:
        if _interrupted(exc):
            again = _command_again(ctx, file, run_id, db or default_db())
            raise RunInterrupted(run_id, again) from None
        if isinstance(exc, ValueError) and map_index is not None:
            raise click.UsageError(str(exc)) from None  # no such map index
        raise
    if as_json:
        click.echo(json.dumps(run_json(result), indent=2, ensure_ascii=False))
    else:
        print_run(stdout_console(), result, task_id)
        if show_results:
            print_results(stdout_console(), result)
    if result.state != DagRunState.SUCCESS:
        again = _command_again(ctx, file, run_id, db or default_db())
        click.echo(
            f"note: run {run_id!r} failed; its state and records are kept under that run "
            f"id, and this resumes it (what succeeded is not run again): {again}",
            err=True,
        )
        ctx.exit(EXIT_FAILURE)


def _interrupted(exc: BaseException) -> bool:
    """Whether Ctrl-C caused ``exc``: a KeyboardInterrupt in it, its group or its causes.

    trio raises KeyboardInterrupt in whatever code runs when the signal arrives; in
    the runtime's own actors it can come back as a group of it and what it caused.
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, KeyboardInterrupt):
            return True
        if isinstance(error, BaseExceptionGroup):
            pending.extend(error.exceptions)
        pending.extend(e for e in (error.__cause__, error.__context__) if e is not None)
    return False


class RunInterrupted(click.ClickException):
    """Ctrl-C during ``stateward run``: says how to run the same run again."""

    exit_code = 130

    def __init__(self, run_id: str, command: str) -> None:
        super().__init__(
            f"interrupted run {run_id!r}; its state is kept under that run id, and "
            f"this runs it again: {command}"
        )


def _command_again(ctx: click.Context, file: Path, run_id: str, db: str) -> str:
    """The ``stateward run`` command line that repeats this run with the same run id."""
    argv = ["stateward", "run", str(file)]
    if ctx.params["dag_id"] is not None:
        argv += ["--dag", ctx.params["dag_id"]]
    argv += ["--run-id", run_id, "--db", db]
    if ctx.params["task_id"] is not None:
        argv += ["--task", ctx.params["task_id"]]
    if ctx.params["map_index"] is not None:
        argv += ["--map-index", str(ctx.params["map_index"])]
    for key, value in ctx.params["params"].items():
        text = value if isinstance(value, str) else json.dumps(value)
        argv += ["--param", f"{key}={text}"]
    return shlex.join(argv)


def _instance_count(dag: Dag) -> int:
    # A task mapped over an upstream result counts as one until it runs.
    return sum(
        task.map_count() if task.is_mapped and not task.maps_at_run_time else 1
        for task in dag.tasks.values()
    )


def task_label(task_id: str, map_index: int) -> str:
    return f"{task_id}[{map_index}]" if map_index >= 0 else task_id


class RunDisplay:
    """Live progress of a run on stderr: a progress bar on a terminal, else plain lines."""

    def __init__(self, dag: Dag, *, one: bool = False) -> None:
        self._console = stderr_console()
        self._live = self._console.is_interactive
        self._running: dict[str, None] = {}
        self._progress: Progress | None = None
        self._bar: TaskID | None = None
        self._total = 1 if one else _instance_count(dag)
        self._finished = 0

    def __enter__(self) -> RunDisplay:
        if self._live:
            # Here: only a terminal shows the bar, and rich.progress is slow to import.
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

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
        label = task_label(event.task_id, event.map_index)
        if self._progress is None or self._bar is None:
            click.echo(f"{label}: {event.state} (try {event.try_number})", err=True)
            return
        if event.state == TaskInstanceState.RUNNING:
            self._running[label] = None
        else:
            self._running.pop(label, None)
        if event.state not in (TaskInstanceState.RUNNING, TaskInstanceState.SUCCESS):
            style = STATE_STYLE.get(event.state, "yellow")
            self._progress.console.print(
                Text(f"{label}: {event.state} (try {event.try_number})", style=style)
            )
        names = list(self._running)
        shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
        done = event.state in STATE_STYLE
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


def print_run(console: Console, result: DagRunResult, task_id: str | None = None) -> None:
    """Print a run's task instances as a table, then one summary line (of the one
    instance ``task_id`` when only it ran)."""
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
            Text(ti.state, style=STATE_STYLE.get(ti.state, "")),
            str(ti.try_number),
            _duration(ti.duration),
            error,
        )
    console.print(table)
    counts: dict[TaskInstanceState, int] = {}
    for ti in result.task_instances:
        counts[ti.state] = counts.get(ti.state, 0) + 1
    tally = ", ".join(f"{n} {state}" for state, n in counts.items())
    verdict = "succeeded" if result.state == DagRunState.SUCCESS else "failed"
    which = f"Dag {result.dag_id!r} run {result.run_id!r}"
    if task_id is not None:
        which = f"task {task_id!r} of {which}"
    outcome = f"{verdict} ({tally})"
    if len(which) + 1 + len(outcome) <= console.width:
        console.print(f"{which} {outcome}", soft_wrap=True)
    else:  # broken between the two phrases, never inside one
        console.print(which, soft_wrap=True)
        console.print(outcome, soft_wrap=True)


def _result_json(value: Any) -> Any:
    """``value`` if it is JSON, else its repr (a str)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value


def _error_text(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_json(result: DagRunResult) -> dict[str, Any]:
    """The ``stateward run --json`` object (see docs/cli.md)."""
    return {
        "dag_id": result.dag_id,
        "run_id": result.run_id,
        "state": result.state,
        "task_instances": [
            {
                "task_id": ti.task_id,
                "map_index": ti.map_index,
                "state": ti.state,
                "try_number": ti.try_number,
                "duration": round(ti.duration, 6),
                "result": _result_json(ti.result),
                "error": _error_text(ti.error),
            }
            for ti in result.task_instances
        ],
    }


def print_results(console: Console, result: DagRunResult) -> None:
    """``--show-results``: each instance's rendered template fields and what it returned."""
    for ti in result.task_instances:
        if ti.try_number == 0:
            continue
        console.print()
        console.print(Text(f"{task_label(ti.task_id, ti.map_index)} (try {ti.try_number})", "bold"))
        for field, value in ti.rendered.items():
            if value in ({}, [], "", None):
                continue
            text = value if isinstance(value, str) else json.dumps(_result_json(value))
            lines = text.rstrip("\n").splitlines() or [""]
            if len(lines) == 1:
                console.print(f"  rendered {field}: {lines[0]}", soft_wrap=True)
            else:
                console.print(f"  rendered {field}:")
                for line in lines:
                    console.print(f"    {line}", soft_wrap=True)
        if ti.state == TaskInstanceState.SUCCESS:
            shown = json.dumps(_result_json(ti.result), ensure_ascii=False)
            console.print(f"  returned {shown}", soft_wrap=True)
        else:
            console.print(f"  {ti.state}: {_error_text(ti.error) or 'did not run'}", soft_wrap=True)


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
    console = stdout_console()
    for dag in _load_dags(file).values():
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
            if task.maps_at_run_time:
                mapped = "at run time"
            else:
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
