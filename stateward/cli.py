"""The ``stateward`` command: run Dags, inspect and edit durable state, clean up.

Every command that touches the database opens it with :func:`stateward.open_runtime`
inside ``trio.run``. A user error (a missing file, an unknown Dag, bad JSON, a file
that is not a stateward database) prints one line, ``error: ...``, to stderr and exits
with 2 for a usage error or 1 for anything else; a failed run exits with 1 as well.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs
import click
import trio
from rich import box
from rich.console import Console, Group, RenderableType
from rich.padding import Padding
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

from . import __version__
from .assets import Asset, AssetAlias, AssetNameRef, AssetUriRef
from .context.accessors import NEVER_EXPIRE, AssetStateAccessor, RetentionLike, TaskStateAccessor
from .dag import Dag
from .errors import StatewardError, TaskLoadError
from .loader import load_dags, pick_dag
from .records import StateEntry
from .runtime.runner import DagRunResult, TaskInstanceEvent
from .runtime.runtime import Runtime, default_db, is_postgres_url, new_run_id, open_runtime

T = TypeVar("T")

#: The fields of each object ``stateward state list --json`` prints, in order.
JSON_FIELDS: Final = (
    "scope", "dag_id", "run_id", "task_id", "map_index", "asset_name", "asset_uri",
    "key", "value", "updated_at", "expires_at", "updated_by",
)  # fmt: skip
#: Exit status of a user error that is not a usage error, and of a failed run.
EXIT_FAILURE: Final = 1
#: Longest value shown in a table cell; ``--json`` shows values whole.
_CELL_CHARS: Final = 60
_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_STATE_STYLE: Final = {"success": "green", "failed": "red", "upstream_failed": "yellow"}


class CliError(click.ClickException):
    """A user error that is not a usage error: printed as one line, exit status 1."""

    exit_code = EXIT_FAILURE


# -- entry point ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stateward`` command line and return its exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success; 1 for a failed run or a user error; 2 for a usage error;
        130 when interrupted.
    """
    try:
        result = cli.main(args=argv, prog_name="stateward", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:
        _print_error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        _print_error("interrupted")
        return 130
    except BaseException as exc:
        leaf = _single_leaf(exc)
        if isinstance(leaf, click.ClickException):
            _print_error(leaf.format_message())
            return leaf.exit_code
        if isinstance(leaf, KeyboardInterrupt):
            _print_error("interrupted")
            return 130
        if isinstance(leaf, StatewardError | OSError):
            _print_error(_one_line(leaf))
            return EXIT_FAILURE
        raise
    return result if isinstance(result, int) else 0


def _single_leaf(exc: BaseException) -> BaseException:
    """The one exception inside nested single-member exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {os.fspath(exc.filename)!r}"
    return str(exc)


def _print_error(message: str) -> None:
    click.echo("error: " + re.sub(r"\s*\n\s*", " ", message.strip()), err=True)


def _stdout() -> Console:
    # Keys and values are data: never read them as rich markup or :emoji: codes.
    return Console(highlight=False, markup=False, emoji=False)


# -- shared options and helpers --------------------------------------------------------------


def db_option(function: Callable[..., T]) -> Callable[..., T]:
    """The ``--db PATH|URL`` option of every command that uses the database."""
    return click.option(
        "--db",
        metavar="PATH|URL",
        help="The state database: an SQLite file, or a postgresql://user:password@host/db "
        "URL. [default: $STATEWARD_DB, else ./stateward.db]",
    )(function)


def with_runtime(db: str | None, work: Callable[[Runtime], Awaitable[T]], *, create: bool) -> T:
    """Open the runtime on ``db`` in ``trio.run`` and return what ``work`` returns.

    Args:
        db: The ``--db`` value (None: ``$STATEWARD_DB``, else ``./stateward.db``).
        work: What to do with the open runtime.
        create: Whether a missing database may be created (commands that write).

    Raises:
        CliError: ``create`` is false and there is no database at the path.
    """
    path = db or default_db()
    if is_postgres_url(path):
        # The server holds the database; opening creates stateward's schema in it.
        try:
            from .store import postgres  # noqa: F401
        except ImportError as exc:
            raise CliError(str(exc)) from exc
    elif not create and path != ":memory:" and not os.path.exists(path):
        msg = (
            f"no database at {path!r}; give the right one with --db PATH or "
            "$STATEWARD_DB (a database is created by 'stateward run' or 'stateward state set')"
        )
        raise CliError(msg)

    async def go() -> T:
        async with open_runtime(path) as rt:
            return await work(rt)

    return trio.run(go)


def parse_json(text: str) -> Any:
    """Parse ``text`` as strict JSON (no NaN or Infinity); raise ValueError if it is not."""

    def refuse(constant: str) -> Any:
        msg = f"{constant} is not JSON"
        raise ValueError(msg)

    return json.loads(text, parse_constant=refuse)


def iso_time(timestamp: float | None) -> str | None:
    """A Unix time as an ISO-8601 UTC string (None stays None)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _table_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def _cell_json(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


# -- the command group ----------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
)
@click.version_option(__version__, prog_name="stateward")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Show task failures' tracebacks (-v) and debug messages (-vv).",
)
def cli(verbose: int) -> None:
    """Run stateward Dags and manage their durable task state and asset state."""
    _configure_logging(verbose)


class _LogFormatter(logging.Formatter):
    """``warning: message``, one line; tracebacks only when asked for."""

    def __init__(self, tracebacks: bool) -> None:
        super().__init__("%(levelname)s: %(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        record.levelname = record.levelname.lower()
        if self.tracebacks:
            return super().format(record)
        return f"{record.levelname}: {record.getMessage()}"


def _configure_logging(verbose: int) -> None:
    # Task failures are also in the run's table; the log adds retries and, with -v,
    # the tracebacks. Without a handler, Python's last resort would print tracebacks.
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter(tracebacks=verbose > 0))
    logger = logging.getLogger("stateward")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logger.propagate = False


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


# -- state ----------------------------------------------------------------------------------


@cli.group()
def state() -> None:
    """List, read and edit task state and asset state out of band."""


@attrs.frozen
class Target:
    """Whose state a ``state get|set|delete|clear`` command addresses."""

    #: ``(dag_id, run_id, task_id, map_index)`` for task state, else None.
    task: tuple[str, str, str, int] | None = None
    asset_name: str | None = None
    asset_uri: str | None = None

    @property
    def label(self) -> str:
        """How messages name the target."""
        if self.task is not None:
            dag_id, run_id, task_id, map_index = self.task
            return f"task state of {dag_id}/{run_id}/{_label(task_id, map_index)}"
        if self.asset_name is not None:
            return f"state of asset {self.asset_name!r}"
        return f"state of the asset with URI {self.asset_uri!r}"

    def accessor(self, rt: Runtime) -> TaskStateAccessor | AssetStateAccessor:
        """The out-of-band accessor for this target."""
        if self.task is not None:
            return rt.state.task(*self.task)
        return rt.state.asset(name=self.asset_name, uri=self.asset_uri)


def selector_options(function: Callable[..., T]) -> Callable[..., T]:
    """The options choosing a task instance or an asset, and ``--db``."""
    options: list[Callable[[Any], Any]] = [
        click.option("--dag", "dag_id", metavar="ID", help="Task state: the Dag's id."),
        click.option("--run-id", metavar="ID", help="Task state: the run's id."),
        click.option("--task", "task_id", metavar="ID", help="Task state: the task's id."),
        click.option(
            "--map-index",
            type=click.IntRange(min=-1),
            metavar="N",
            help="Task state: the mapped instance. [default: -1, unmapped]",
        ),
        click.option("--asset", "asset_name", metavar="NAME", help="Asset state, by name."),
        click.option("--asset-uri", metavar="URI", help="Asset state, by URI."),
        db_option,
    ]
    for option in reversed(options):
        function = option(function)
    return function


def make_target(
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
    asset_name: str | None,
    asset_uri: str | None,
) -> Target:
    """Check the selector options and return the target they name.

    Raises:
        click.UsageError: the options name no target, an incomplete one, or two.
    """
    task_options = {"--dag": dag_id, "--run-id": run_id, "--task": task_id}
    given = [name for name, value in task_options.items() if value is not None]
    if map_index is not None:
        given.append("--map-index")
    if asset_name is not None or asset_uri is not None:
        if asset_name is not None and asset_uri is not None:
            msg = "give --asset NAME or --asset-uri URI, not both"
            raise click.UsageError(msg)
        if given:
            msg = (
                f"--asset/--asset-uri select asset state; drop {', '.join(given)}, "
                "or drop the asset option to select task state"
            )
            raise click.UsageError(msg)
        return Target(asset_name=asset_name, asset_uri=asset_uri)
    if dag_id is None or run_id is None or task_id is None:
        missing = [name for name, value in task_options.items() if value is None]
        msg = (
            f"task state needs --dag, --run-id and --task (missing {', '.join(missing)}); "
            "for asset state give --asset NAME or --asset-uri URI"
        )
        raise click.UsageError(msg)
    return Target(task=(dag_id, run_id, task_id, -1 if map_index is None else map_index))


def _parse_value(ctx: click.Context, param: click.Parameter, text: str) -> Any:
    try:
        value = parse_json(text)
    except ValueError as exc:
        if re.fullmatch(r"[^\s\"'\[\]{},:]+", text):
            msg = (
                f"{text!r} is not JSON; to store a string, quote it as JSON: "
                f"'\"{text}\"' (numbers, true/false, lists and objects are taken as JSON)"
            )
        else:
            msg = f"{text!r} is not valid JSON ({exc}); quote strings as JSON, e.g. '\"text\"'"
        raise click.BadParameter(msg, ctx=ctx, param=param) from None
    if value is None:
        msg = "null cannot be stored; to remove the key use 'stateward state delete KEY'"
        raise click.BadParameter(msg, ctx=ctx, param=param)
    return value


def _parse_retention(ctx: click.Context, param: click.Parameter, text: str | None) -> RetentionLike:
    if text is None:
        return None
    if text.strip().lower() == "never":
        return NEVER_EXPIRE
    found = _DURATION.match(text.lower())
    seconds = float(found[1]) * _UNIT_SECONDS[found[2]] if found else math.nan
    if not seconds > 0:
        msg = f"expected seconds (e.g. 3600, 90m, 12h, 30d) or 'never', got {text!r}"
        raise click.BadParameter(msg, ctx=ctx, param=param)
    return seconds


@state.command("list")
@click.option("--dag", "dag_id", metavar="ID", help="Only task state of this Dag.")
@click.option("--run-id", metavar="ID", help="Only task state of this run.")
@click.option("--task", "task_id", metavar="ID", help="Only task state of this task.")
@click.option("--map-index", type=click.IntRange(min=-1), metavar="N", help="Only this index.")
@click.option("--asset", "asset_name", metavar="NAME", help="Only the state of this asset.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of objects.")
@db_option
def list_state(
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
    asset_name: str | None,
    as_json: bool,
    db: str | None,
) -> None:
    """List stored keys with values and provenance.

    The table groups keys by task instance or asset and says when each was written
    and by whom (a try of the task instance, another task, or out-of-band).
    """
    filters = {"--dag": dag_id, "--run-id": run_id, "--task": task_id, "--map-index": map_index}
    task_filters = [name for name, value in filters.items() if value is not None]
    if asset_name is not None and task_filters:
        msg = (
            f"--asset lists asset state, which {', '.join(task_filters)} cannot match; "
            "list task state and asset state separately"
        )
        raise click.UsageError(msg)

    async def work(rt: Runtime) -> list[StateEntry]:
        return await rt.state.list(
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            asset_name=asset_name,
        )

    entries = with_runtime(db, work, create=False)
    if as_json:
        click.echo(json.dumps([entry_json(e) for e in entries], indent=2, ensure_ascii=False))
        return
    console = _stdout()
    if not entries:
        console.print("no state matches")
        return
    console.print(state_table(entries, time.time(), console.width))


def entry_json(entry: StateEntry) -> dict[str, Any]:
    """One listed key as the ``--json`` object (see :data:`JSON_FIELDS`)."""
    return {
        "scope": entry.scope,
        "dag_id": entry.dag_id,
        "run_id": entry.run_id,
        "task_id": entry.task_id,
        "map_index": entry.map_index,
        "asset_name": entry.asset_name,
        "asset_uri": entry.asset_uri,
        "key": entry.key,
        "value": entry.value,
        "updated_at": iso_time(entry.updated_at),
        "expires_at": iso_time(entry.expires_at),
        "updated_by": entry.writer,
    }


def state_table(entries: Sequence[StateEntry], now: float, width: int = 80) -> Group:
    """The listed keys, grouped by task instance or asset, for an 80-column terminal.

    Each group is a heading (the task instance or asset, on a line of its own so that
    long run ids fit) over a table of its keys. "by" is the writer: ``try N`` for the
    task instance itself, a task instance's label for asset state, or ``out-of-band``
    (the CLI, admin code, test seeding).
    """
    groups: dict[str, list[StateEntry]] = {}
    for entry in entries:
        groups.setdefault(_owner(entry), []).append(entry)
    # One set of column widths for every group, so that the tables line up. To fit
    # the terminal, the value gives way first (down to 16), then the widest column.
    widths = {
        "key": max(3, *(len(e.key) for e in entries)),
        "value": max(5, *(len(_cell_json(e.value)) for e in entries)),
        "by": max(2, *(len(_writer(e) or "out-of-band") for e in entries)),
    }
    # The indent (2), "updated (UTC)" (16), "expires" (10), four gaps of 3.
    available = max(width - 2 - 16 - 10 - 4 * 3, 3 * 6)
    while sum(widths.values()) > available:
        shrink = "value" if widths["value"] > 16 else max(widths, key=widths.__getitem__)
        widths[shrink] -= 1
    parts: list[RenderableType] = []
    for owner, members in groups.items():
        if parts:
            parts.append(Text())
        parts.append(Text(owner, style="bold"))
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
        table.add_column("key", overflow="fold", width=widths["key"])
        table.add_column("value", overflow="fold", width=widths["value"])
        table.add_column("updated (UTC)", no_wrap=True, width=16)
        table.add_column("by", overflow="fold", width=widths["by"])
        table.add_column("expires", no_wrap=True, width=10)
        for entry in members:
            writer = _writer(entry)
            table.add_row(
                entry.key,
                _cell_json(entry.value),
                _table_time(entry.updated_at),
                Text("out-of-band", style="dim") if writer is None else writer,
                _expires_in(entry.expires_at, now),
            )
        parts.append(Padding(table, (0, 0, 0, 2)))
    return Group(*parts)


def _owner(entry: StateEntry) -> str:
    if entry.scope == "task":
        index = entry.map_index if entry.map_index is not None else -1
        return f"task {entry.dag_id} / {entry.run_id} / {_label(entry.task_id or '', index)}"
    if entry.asset_uri != entry.asset_name:
        return f"asset {entry.asset_name} ({entry.asset_uri})"
    return f"asset {entry.asset_name}"


def _writer(entry: StateEntry) -> str | None:
    """The writer as shown: a task instance's own writes are just ``try N``."""
    writer = entry.writer
    if writer is not None and entry.scope == "task":
        index = entry.map_index if entry.map_index is not None else -1
        own = f"{entry.dag_id}/{entry.run_id}/{_label(entry.task_id or '', index)} try "
        if writer.startswith(own):
            return "try " + writer[len(own) :]
    return writer


def _expires_in(expires_at: float | None, now: float) -> str:
    if expires_at is None:
        return "never"
    left = int(expires_at - now)
    if left <= 0:
        return "expired"
    days, rest = divmod(left, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"in {days}d {hours}h" if hours else f"in {days}d"
    if hours:
        return f"in {hours}h {minutes}m" if minutes else f"in {hours}h"
    return f"in {minutes}m {seconds}s" if minutes else f"in {seconds}s"


@state.command("get")
@click.argument("key")
@selector_options
def get_state(
    key: str,
    db: str | None,
    **selectors: Any,
) -> None:
    """Print the value of KEY as JSON.

    Exits with 1 and says so when the key is absent (or expired).
    """
    target = make_target(**selectors)

    async def work(rt: Runtime) -> Any:
        return await target.accessor(rt).aget(key)

    value = with_runtime(db, work, create=False)
    if value is None:
        msg = f"no key {key!r} in the {target.label}; 'stateward state list' shows what is stored"
        raise CliError(msg)
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


@state.command("set")
@click.argument("key")
@click.argument("value", callback=_parse_value)
@selector_options
@click.option(
    "--retention",
    metavar="SECONDS|never",
    callback=_parse_retention,
    help="Keep the key this long (3600, 90m, 12h, 30d) or 'never' expire it. "
    "[default: 30 days for task state, never for asset state]",
)
def set_state(
    key: str,
    value: Any,
    db: str | None,
    retention: RetentionLike,
    **selectors: Any,
) -> None:
    """Store a JSON VALUE under KEY.

    VALUE is JSON: 42, true, '"text"', '[1, 2]', '{"a": 1}'. A bare word is refused
    rather than guessed to be a string: quote it as JSON. The write is recorded as
    out-of-band (no task instance wrote it).
    """
    target = make_target(**selectors)

    async def work(rt: Runtime) -> None:
        await target.accessor(rt).aset(key, value, retention=retention)

    with_runtime(db, work, create=True)
    click.echo(f"set {key!r} in the {target.label}")


@state.command("delete")
@click.argument("key")
@selector_options
def delete_state(
    key: str,
    db: str | None,
    **selectors: Any,
) -> None:
    """Delete KEY (deleting an absent key is not an error)."""
    target = make_target(**selectors)

    async def work(rt: Runtime) -> bool:
        accessor = target.accessor(rt)
        present = await accessor.aget(key) is not None
        await accessor.adelete(key)
        return present

    if with_runtime(db, work, create=False):
        click.echo(f"deleted {key!r} from the {target.label}")
    else:
        click.echo(f"{key!r} was not set in the {target.label}; nothing to delete")


@state.command("clear")
@selector_options
@click.option(
    "--all-map-indices",
    is_flag=True,
    help="Task state: clear every map index of the task in the run (the mapped fleet).",
)
def clear_state(
    db: str | None,
    all_map_indices: bool,
    **selectors: Any,
) -> None:
    """Delete every key of a task instance or an asset.

    With --all-map-indices, every map index of the task in the run is cleared.
    """
    target = make_target(**selectors)
    if all_map_indices and target.task is None:
        msg = "--all-map-indices applies to task state only; drop it for asset state"
        raise click.UsageError(msg)
    if all_map_indices and selectors["map_index"] is not None:
        msg = "--all-map-indices clears every map index; drop --map-index"
        raise click.UsageError(msg)

    async def work(rt: Runtime) -> int:
        # Counted first, to say what was cleared; the clear itself is one request.
        accessor = target.accessor(rt)
        if isinstance(accessor, AssetStateAccessor):
            count = len(await accessor.aitems())
            await accessor.aclear()
            return count
        assert target.task is not None
        dag, run, task, index = target.task
        entries = await rt.state.list(
            dag_id=dag, run_id=run, task_id=task, map_index=None if all_map_indices else index
        )
        await accessor.aclear(all_map_indices=all_map_indices)
        return len(entries)

    count = with_runtime(db, work, create=False)
    where = target.label
    if all_map_indices and target.task is not None:
        dag, run, task, _ = target.task
        where = f"task state of {dag}/{run}/{task}, every map index"
    click.echo(f"cleared {count} key{'' if count == 1 else 's'} from the {where}")


# -- cleanup ----------------------------------------------------------------------------------


@cli.command()
@click.option("--dry-run", is_flag=True, help="Count the expired rows without deleting them.")
@db_option
def cleanup(dry_run: bool, db: str | None) -> None:
    """Delete expired state rows and say how many."""

    async def work(rt: Runtime) -> int:
        return await rt.cleanup(dry_run=dry_run)

    count = with_runtime(db, work, create=False)
    rows = f"{count} expired state row{'' if count == 1 else 's'}"
    click.echo(f"{rows} would be deleted (dry run)" if dry_run else f"deleted {rows}")


if __name__ == "__main__":
    raise SystemExit(main())
