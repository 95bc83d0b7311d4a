"""``stateward state list|get|set|delete|clear|history|rollback|events`` and
``stateward cleanup``."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs
import click
from rich import box
from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from .._context.accessors import NEVER_EXPIRE, AssetStateAccessor, RetentionLike, TaskStateAccessor
from .._records import AssetEvent, StateEntry, StateVersion, iso_time, version_json
from .._runtime.runtime import Runtime
from .._values import dump_json, value_from_text
from .app import (
    DURATION,
    UNIT_SECONDS,
    CliError,
    T,
    cell_json,
    cli,
    db_option,
    stdout_console,
    table_time,
    with_runtime,
)
from .run import task_label

#: Longest run id shown whole in a writer's label in the ``state list`` table.
_RUN_ID_CHARS: Final = 12
#: ``state clear --all-map-indices`` asks before clearing more keys than this.
CONFIRM_ABOVE: Final = 20

# -- state ----------------------------------------------------------------------------------


@cli.group()
def state() -> None:
    """List, read and edit task state and asset state out of band."""


@attrs.frozen
class Target:
    """Whose state a ``state get|set|delete|clear`` command addresses."""

    #: ``(dag_id, run_id, task_id, map_index)`` for task state, else None; a map index
    #: of None (``state clear --all-map-indices``) means every map index.
    task: tuple[str, str, str, int | None] | None = None
    asset_name: str | None = None
    asset_uri: str | None = None

    @property
    def label(self) -> str:
        """How messages name the target."""
        if self.task is not None:
            dag_id, run_id, task_id, map_index = self.task
            if map_index is None:
                return f"task state of {dag_id}/{run_id}/{task_id}, every map index"
            return f"task state of {dag_id}/{run_id}/{task_label(task_id, map_index)}"
        if self.asset_name is not None:
            return f"state of asset {self.asset_name!r}"
        return f"state of the asset with URI {self.asset_uri!r}"

    async def entries(self, rt: Runtime, *, include_expired: bool = False) -> list[StateEntry]:
        """The target's stored keys (of every map index when ``map_index`` is None)."""
        if self.task is None:
            listed = await rt.state.list(
                scope="asset", asset_name=self.asset_name, include_expired=include_expired
            )
            return [e for e in listed if self.asset_uri in (None, e.asset_uri)]
        dag_id, run_id, task_id, map_index = self.task
        return await rt.state.list(
            dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
            include_expired=include_expired,
        )  # fmt: skip

    def accessor(self, rt: Runtime) -> TaskStateAccessor | AssetStateAccessor:
        """The out-of-band accessor for this target."""
        if self.task is not None:
            dag_id, run_id, task_id, map_index = self.task
            return rt.state.task(dag_id, run_id, task_id, -1 if map_index is None else map_index)
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
        return value_from_text(text, "use 'stateward state delete KEY'")
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _parse_retention(ctx: click.Context, param: click.Parameter, text: str | None) -> RetentionLike:
    if text is None:
        return None
    if text.strip().lower() == "never":
        return NEVER_EXPIRE
    found = DURATION.match(text.lower())
    seconds = float(found[1]) * UNIT_SECONDS[found[2]] if found else math.nan
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
@click.option("--asset-uri", metavar="URI", help="Only the state of the asset with this URI.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of objects.")
@db_option
def list_state(
    dag_id: str | None,
    run_id: str | None,
    task_id: str | None,
    map_index: int | None,
    asset_name: str | None,
    asset_uri: str | None,
    as_json: bool,
    db: str | None,
) -> None:
    """List stored keys with values and provenance.

    The table groups keys by task instance or asset and says when each was written
    and by whom (a try of the task instance, another task, or out-of-band).
    """
    filters = {"--dag": dag_id, "--run-id": run_id, "--task": task_id, "--map-index": map_index}
    task_filters = [name for name, value in filters.items() if value is not None]
    asset_option = "--asset" if asset_uri is None else "--asset-uri"
    if (asset_name is not None or asset_uri is not None) and task_filters:
        msg = (
            f"{asset_option} lists asset state, which {', '.join(task_filters)} cannot "
            "match; list task state and asset state separately"
        )
        raise click.UsageError(msg)
    if asset_name is not None and asset_uri is not None:
        msg = "give --asset NAME or --asset-uri URI, not both"
        raise click.UsageError(msg)

    async def work(rt: Runtime) -> list[StateEntry]:
        entries = await rt.state.list(
            scope="asset" if asset_uri is not None else None,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            asset_name=asset_name,
        )
        return [e for e in entries if asset_uri is None or e.asset_uri == asset_uri]

    entries = with_runtime(db, work, create=False)
    if as_json:
        click.echo(dump_json([entry_json(e) for e in entries], indent=2))
        return
    console = stdout_console()
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
        "item": entry.item,
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
        "value": max(5, *(len(cell_json(e.value)) for e in entries)),
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
                cell_json(entry.value),
                table_time(entry.updated_at),
                Text("out-of-band", style="dim") if writer is None else writer,
                _expires_in(entry.expires_at, now),
            )
        parts.append(Padding(table, (0, 0, 0, 2)))
    return Group(*parts)


def _owner(entry: StateEntry) -> str:
    if entry.scope == "task":
        index = entry.map_index if entry.map_index is not None else -1
        owner = f"task {entry.dag_id} / {entry.run_id} / {task_label(entry.task_id or '', index)}"
        return owner if entry.item is None else f"{owner} item {entry.item}"
    if entry.asset_uri != entry.asset_name:
        return f"asset {entry.asset_name} ({entry.asset_uri})"
    return f"asset {entry.asset_name}"


def _writer(entry: StateEntry) -> str | None:
    """The writer as shown: a task instance's own writes are just ``try N``.

    Another task instance's label ``dag/run/task try N`` shows its run id as ``…``
    when that is longer than :data:`_RUN_ID_CHARS` (run ids such as
    ``manual__2024-06-01T02:00:57.924829+00:00`` would fold the column over many
    lines); ``--json`` gives the whole label.
    """
    writer = entry.writer
    if writer is None:
        return None
    if entry.scope == "task":
        index = entry.map_index if entry.map_index is not None else -1
        own = f"{entry.dag_id}/{entry.run_id}/{task_label(entry.task_id or '', index)} try "
        if writer.startswith(own):
            return "try " + writer[len(own) :]
    dag_id, slash, rest = writer.partition("/")
    run_id, slash2, task = rest.rpartition("/")
    if slash and slash2 and len(run_id) > _RUN_ID_CHARS:
        return f"{dag_id}/…/{task}"
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

    async def work(rt: Runtime) -> tuple[Any, float | None]:
        value = await target.accessor(rt).aget(key)
        if value is not None:
            return value, None
        expired = [e for e in await target.entries(rt, include_expired=True) if e.key == key]
        return None, expired[0].expires_at if expired else None

    value, expired_at = with_runtime(db, work, create=False)
    if value is None and expired_at is not None:
        msg = (
            f"key {key!r} in the {target.label} expired at {iso_time(expired_at)} and reads "
            "as absent; set it again with 'stateward state set', or remove expired rows "
            "with 'stateward cleanup'"
        )
        raise CliError(msg)
    if value is None:
        msg = f"no key {key!r} in the {target.label}; 'stateward state list' shows what is stored"
        raise CliError(msg)
    click.echo(dump_json(value, indent=2))


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
@click.option(
    "--yes",
    "-y",
    is_flag=True,
    help=f"Clear without asking, even more than {CONFIRM_ABOVE} keys of every map index.",
)
def clear_state(
    db: str | None,
    all_map_indices: bool,
    yes: bool,
    **selectors: Any,
) -> None:
    """Delete every key of a task instance or an asset.

    With --all-map-indices, every map index of the task in the run is cleared; above
    a few keys that asks for confirmation first (--yes skips the question).
    """
    target = make_target(**selectors)
    if all_map_indices and target.task is None:
        msg = "--all-map-indices applies to task state only; drop it for asset state"
        raise click.UsageError(msg)
    if all_map_indices and selectors["map_index"] is not None:
        msg = "--all-map-indices clears every map index; drop --map-index"
        raise click.UsageError(msg)
    if all_map_indices and target.task is not None:
        dag, run, task, _ = target.task
        target = attrs.evolve(target, task=(dag, run, task, None))
    where = target.label

    if all_map_indices and not yes:
        count = len(with_runtime(db, target.entries, create=False))
        if count > CONFIRM_ABOVE:
            _confirm_clear(count, where)

    async def work(rt: Runtime) -> tuple[int, bool]:
        # Counted first, to say what was cleared; the clear itself is one request.
        count = len(await target.entries(rt))
        accessor = target.accessor(rt)
        if isinstance(accessor, AssetStateAccessor):
            await accessor.aclear()
        else:
            await accessor.aclear(all_map_indices=all_map_indices)
        run_known = True
        if count == 0 and target.task is not None:
            dag, run, _, _ = target.task
            run_known = bool(await rt.state.list(dag_id=dag, run_id=run, include_expired=True))
        return count, run_known

    count, run_known = with_runtime(db, work, create=False)
    click.echo(f"cleared {count} key{'' if count == 1 else 's'} from the {where}")
    if not run_known and target.task is not None:
        dag, run, _, _ = target.task
        click.echo(
            f"note: no task state is stored for run {run!r} of Dag {dag!r}; check --dag and "
            f"--run-id ('stateward state list --dag {dag}' shows its runs)"
        )


@state.command("history")
@click.argument("key")
@selector_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of versions.")
def history_state(key: str, db: str | None, as_json: bool, **selectors: Any) -> None:
    """Show the kept versions of KEY, newest first, with who wrote each.

    A removal (delete, clear, expiry, a rollback to one) shows as "(deleted)". Put
    one back with 'stateward state rollback KEY --to-version N'.
    """
    target = make_target(**selectors)

    async def work(rt: Runtime) -> list[StateVersion]:
        return await target.accessor(rt).ahistory(key)

    versions = with_runtime(db, work, create=False)
    if as_json:
        click.echo(dump_json([version_json(v) for v in versions], indent=2))
        return
    console = stdout_console()
    if not versions:
        console.print(f"no history of {key!r} in the {target.label}")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("version", justify="right", no_wrap=True)
    table.add_column("value", overflow="fold")
    table.add_column("updated (UTC)", no_wrap=True, width=16)
    table.add_column("by", overflow="fold")
    for version in versions:
        shown = Text("(deleted)", style="dim") if version.deleted else cell_json(version.value)
        table.add_row(
            str(version.version), shown, table_time(version.updated_at),
            version.updated_by.label,
        )  # fmt: skip
    console.print(Text(f"{key} in the {target.label}", style="bold"))
    console.print(Padding(table, (0, 0, 0, 2)))


@state.command("events")
@click.option("--asset", "asset_name", metavar="NAME", help="The asset, by name.")
@click.option("--asset-uri", metavar="URI", help="The asset, by URI.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
    help="How many of the newest events.",
)  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print one JSON array of events.")
@db_option
def events_state(
    asset_name: str | None, asset_uri: str | None, limit: int, as_json: bool, db: str | None
) -> None:
    """Show the events emitted to an asset, newest first, with the try that emitted each."""
    if (asset_name is None) == (asset_uri is None):
        msg = "give --asset NAME or --asset-uri URI (one of them)"
        raise click.UsageError(msg)
    where = f"asset {asset_name!r}" if asset_name is not None else f"asset URI {asset_uri!r}"

    async def work(rt: Runtime) -> list[AssetEvent]:
        return await rt.state.asset_events(name=asset_name, uri=asset_uri, limit=limit)

    events = with_runtime(db, work, create=False)
    if as_json:
        click.echo(dump_json([event_json(e) for e in events], indent=2))
        return
    console = stdout_console()
    if not events:
        console.print(f"no events of {where}")
        return
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    table.add_column("when (UTC)", no_wrap=True, width=16)
    table.add_column("emitted by", overflow="fold")
    table.add_column("alias", overflow="fold")
    table.add_column("extra", overflow="fold")
    for event in events:
        table.add_row(
            table_time(event.timestamp), _emitter(event), event.alias_name or "",
            cell_json(event.extra) if event.extra else "",
        )  # fmt: skip
    console.print(Text(f"events of {where}", style="bold"))
    console.print(Padding(table, (0, 0, 0, 2)))


def _emitter(event: AssetEvent) -> str:
    if event.dag_id is None or event.task_id is None:
        return "out of band"
    index = "" if event.map_index is None or event.map_index < 0 else f"[{event.map_index}]"
    return f"{event.dag_id}/{event.run_id}/{event.task_id}{index} try {event.try_number}"


def event_json(event: AssetEvent) -> dict[str, Any]:
    """One event as the ``state events --json`` object."""
    document = attrs.asdict(event)
    document["timestamp"] = iso_time(event.timestamp)
    return document


@state.command("rollback")
@click.argument("key")
@selector_options
@click.option(
    "--to-version",
    "version",
    type=int,
    required=True,
    metavar="N",
    help="The version to put back (see 'stateward state history').",
)
@click.option(
    "--retention",
    metavar="SECONDS|never",
    callback=_parse_retention,
    help="Keep the restored value this long (3600, 90m, 12h, 30d) or 'never' expire it. "
    "[default: 30 days for task state, never for asset state]",
)
def rollback_state(
    key: str, db: str | None, version: int, retention: RetentionLike, **selectors: Any
) -> None:
    """Write version N of KEY again, as a new version.

    A version that removed the key removes it again. The new version's provenance
    says it is a rollback to N, by the CLI with your user and host.
    """
    target = make_target(**selectors)

    async def work(rt: Runtime) -> Any:
        accessor = target.accessor(rt)
        await accessor.arollback(key, version, retention=retention)
        return await accessor.aget(key)

    value = with_runtime(db, work, create=False)
    if value is None:
        click.echo(f"rolled {key!r} in the {target.label} back to version {version}: removed")
    else:
        shown = cell_json(value)
        click.echo(f"rolled {key!r} in the {target.label} back to version {version}: {shown}")


def _confirm_clear(count: int, where: str) -> None:
    """Ask before clearing ``count`` keys; refuse when nobody can answer."""
    if not sys.stdin.isatty():
        msg = (
            f"refusing to clear {count} keys from the {where} without confirmation "
            "(stdin is not a terminal); pass --yes to clear them"
        )
        raise click.UsageError(msg)
    if not click.confirm(f"clear {count} keys from the {where}?", default=False):
        msg = f"not confirmed; nothing cleared from the {where}"
        raise CliError(msg)


# -- cleanup ----------------------------------------------------------------------------------


def _parse_age(ctx: click.Context, param: click.Parameter, text: str) -> float | None:
    if text.strip().lower() == "never":
        return None
    found = DURATION.match(text.lower())
    seconds = float(found[1]) * UNIT_SECONDS[found[2]] if found else math.nan
    if not seconds >= 0:
        msg = f"expected seconds (e.g. 3600, 90m, 12h, 30d) or 'never', got {text!r}"
        raise click.BadParameter(msg, ctx=ctx, param=param)
    return seconds


@cli.command()
@click.option("--dry-run", is_flag=True, help="Count what would be deleted; delete nothing.")
@click.option(
    "--runs-older-than",
    "runs_age",
    metavar="AGE",
    default="30d",
    show_default=True,
    callback=_parse_age,
    help="Also delete the records (with logs) of runs that ended longer ago than this: "
    "seconds, 90m, 12h, 30d, or never.",
)
@db_option
def cleanup(dry_run: bool, runs_age: float | None, db: str | None) -> None:
    """Delete expired state rows and the records of old runs, and say how many."""

    async def work(rt: Runtime) -> tuple[int, int | None]:
        count = await rt.cleanup(dry_run=dry_run)
        if runs_age is None:
            return count, None
        return count, await rt.runs.cleanup(runs_age, dry_run=dry_run)

    count, old_runs = with_runtime(db, work, create=False)
    rows = f"{count} expired state row{'' if count == 1 else 's'}"
    click.echo(f"{rows} would be deleted (dry run)" if dry_run else f"deleted {rows}")
    if old_runs is not None:
        plural = "" if old_runs == 1 else "s"
        records = f"{old_runs} run record{plural} that ended over {_age_text(runs_age)} ago"
        click.echo(f"{records} would be deleted (dry run)" if dry_run else f"deleted {records}")


def _age_text(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    for unit in ("d", "h", "m"):
        size = UNIT_SECONDS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
