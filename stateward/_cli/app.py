"""The command group, its shared options, and how errors and logs are printed."""

from __future__ import annotations

import functools
import importlib
import logging
import os
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import click
import trio
from rich.console import Console
from rich.text import Text

from .. import __version__
from .._runtime.runtime import Runtime, default_db, open_runtime
from .._states import TaskInstanceState
from .._values import dump_json
from ..store import open_store

T = TypeVar("T")

#: The fields of each object ``stateward state list --json`` prints, in order.
JSON_FIELDS: Final = (
    "scope", "dag_id", "run_id", "task_id", "map_index", "asset_name", "asset_uri",
    "key", "value", "updated_at", "expires_at", "updated_by", "item",
)  # fmt: skip
#: Exit status of a user error that is not a usage error, and of a failed run.
EXIT_FAILURE: Final = 1
#: Longest value shown in a table cell; ``--json`` shows values whole.
_CELL_CHARS: Final = 60
DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
UNIT_SECONDS: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
STATE_STYLE: Final = {
    TaskInstanceState.SUCCESS: "green",
    TaskInstanceState.FAILED: "red",
    TaskInstanceState.UPSTREAM_FAILED: "yellow",
}


class CliError(click.ClickException):
    """A user error that is not a usage error: printed as one line, exit status 1."""

    exit_code = EXIT_FAILURE


def one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror and exc.filename:
        return f"{exc.strerror}: {os.fspath(exc.filename)!r}"
    return str(exc)


def print_error(message: str) -> None:
    click.echo("error: " + re.sub(r"\s*\n\s*", " ", message.strip()), err=True)


def stdout_console() -> Console:
    # Keys and values are data: never read them as rich markup or :emoji: codes.
    return Console(highlight=False, markup=False, emoji=False)


@functools.cache
def stderr_console() -> Console:
    """The one Console on stderr, shared by the log handler and the live progress bar.

    While a progress bar is live, whatever this Console prints goes above the bar; a
    log line written to stderr by another route would land on the bar's line.
    """
    return Console(stderr=True, highlight=False, markup=False, emoji=False)


# -- shared options and helpers --------------------------------------------------------------


def db_option(function: Callable[..., T]) -> Callable[..., T]:
    """The ``--db PATH|URL`` option of every command that uses the database."""
    return click.option(
        "--db",
        metavar="PATH|URL",
        help="The state database: an SQLite file (or sqlite:///path), memory:, or a "
        "postgresql://user:password@host/db URL. [default: $STATEWARD_DB, else ./stateward.db]",
    )(function)


def with_runtime(
    db: str | None,
    work: Callable[[Runtime], Awaitable[T]],
    *,
    create: bool,
    writer: str = "cli",
    **options: Any,
) -> T:
    """Open the runtime on ``db`` in ``trio.run`` and return what ``work`` returns.

    Args:
        db: The ``--db`` value (None: ``$STATEWARD_DB``, else ``./stateward.db``).
        work: What to do with the open runtime.
        create: Whether a missing database may be created (commands that write).
        writer: Who history names as the writer of out-of-band changes (``stateward
            ui`` writes as ``"api"``).
        options: More arguments of :func:`~stateward.open_runtime`.

    Raises:
        CliError: ``create`` is false and there is no database at the path.
    """
    path = db or default_db()
    try:
        store = open_store(path, create=create)
    except FileNotFoundError as exc:
        msg = (
            f"no database at {path!r}; give the right one with --db PATH or "
            "$STATEWARD_DB (a database is created by 'stateward run' or 'stateward state set')"
        )
        raise CliError(msg) from exc
    except (ImportError, ValueError) as exc:
        raise CliError(str(exc)) from exc

    async def go() -> T:
        async with open_runtime(store=store, out_of_band_writer=writer, **options) as rt:
            return await work(rt)

    return trio.run(go)


def table_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M")


def cell_json(value: Any) -> str:
    text = dump_json(value)
    return text if len(text) <= _CELL_CHARS else text[: _CELL_CHARS - 1] + "…"


# -- the command group ----------------------------------------------------------------------


#: The modules of ``stateward._cli`` that define commands ``stateward run`` does not
#: need, by command: imported when the command is asked for (or all are listed).
LAZY_COMMANDS: Final = {
    "cleanup": "state",
    "logs": "runs",
    "runs": "runs",
    "state": "state",
    "ui": "ui",
}


class _Group(click.Group):
    """Imports the modules of :data:`LAZY_COMMANDS` when their command is used, and
    points ``stateward get|set|delete|clear|list`` at the ``state`` command of that name."""

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in LAZY_COMMANDS:
            importlib.import_module(f"{__package__}.{LAZY_COMMANDS[cmd_name]}")
        return super().get_command(ctx, cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        for name in LAZY_COMMANDS:
            self.get_command(ctx, name)
        return super().list_commands(ctx)

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and self.get_command(ctx, name) is None:
            state = self.get_command(ctx, "state")
            if isinstance(state, click.Group) and name in state.commands:
                msg = f"no command {name!r}; did you mean 'stateward state {name}'?"
                raise click.UsageError(msg, ctx)
        return super().resolve_command(ctx, args)


@click.group(
    cls=_Group,
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
        super().__init__("%(message)s")
        self.tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        # The record is shared with every other handler: its fields are not changed.
        level = record.levelname.lower()
        if self.tracebacks:
            return f"{level}: {super().format(record)}"
        return f"{level}: {record.getMessage()}"


class _ConsoleHandler(logging.Handler):
    """Log records printed by :func:`stderr_console`, so they go above a live display."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            # soft_wrap: a long line is left to the terminal, never cut into pieces.
            stderr_console().print(Text(self.format(record)), soft_wrap=True)
        except Exception:
            self.handleError(record)


def _configure_logging(verbose: int) -> None:
    # Task failures are also in the run's table; the log adds retries and, with -v,
    # the tracebacks. Without a handler, Python's last resort would print tracebacks.
    handler = _ConsoleHandler()
    handler.setFormatter(_LogFormatter(tracebacks=verbose > 0))
    logger = logging.getLogger("stateward")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logger.propagate = False
    # Task code logs as Airflow code does (logging.getLogger(__name__).info(...)): show
    # its INFO records too, and keep them in the attempt's log, unless the program
    # embedding the CLI configured logging itself.
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(handler)
        root.setLevel(logging.INFO)
