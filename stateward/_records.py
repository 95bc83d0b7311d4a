"""Plain records shared by every layer (messages, store, CLI): values with no behaviour."""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from ._frozen import frozen


def instance_label(dag_id: str, task_id: str, map_index: int = -1) -> str:
    """How messages name a task instance: ``dag.task``, or ``dag.task[2]`` when mapped."""
    return f"{dag_id}.{task_id}[{map_index}]" if map_index >= 0 else f"{dag_id}.{task_id}"


@frozen
class AssetInfo:
    """A concrete asset as the store knows it."""

    #: The asset's unique name.
    name: str
    #: The asset's unique URI.
    uri: str


@frozen
class StateEntry:
    """One stored key with its provenance, as listed for the CLI and admin tools."""

    #: ``"task"`` or ``"asset"``.
    scope: str
    key: str
    value: Any
    #: Unix time of the last write.
    updated_at: float
    #: Unix time at which the key expires; ``None``: never.
    expires_at: float | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    asset_name: str | None = None
    asset_uri: str | None = None
    #: The task instance that last wrote the key (``dag/run/task[i] try n``); ``None``
    #: for an out-of-band write (CLI, admin code, test seeding).
    writer: str | None = None
    #: A mapped instance's item, as a label (its arguments' JSON, or what the task's
    #: key function named it); ``None`` for unmapped instances and state kept by
    #: position. ``map_index`` is where the item stood in the latest expansion.
    item: str | None = None


@frozen
class AttemptRecord:
    """One try of a task instance, as the store recorded it."""

    #: The try number (1 for the first).
    try_number: int
    #: ``running``, ``success`` or ``failed``.
    state: str
    #: Unix time the attempt started.
    started_at: float
    #: Unix time it ended; ``None`` while it runs (or if its runtime died).
    ended_at: float | None = None
    #: The exception's class name, message and traceback text, when it failed.
    error_type: str | None = None
    error_message: str | None = None
    error_traceback: str | None = None
    #: The template fields as rendered for this try (name to rendered value).
    rendered: dict[str, Any] = attrs.field(factory=dict)
    #: The task's return value if it was JSON; else its ``repr`` (bounded), and
    #: :attr:`result_is_json` is false. ``None`` for no result.
    result: Any = None
    result_is_json: bool = True
    #: The host name and process id of the runtime that ran it.
    host: str | None = None
    pid: int | None = None
    #: What the attempt printed and logged (bounded: its first and last 512 KiB), as
    #: recorded so far while it runs and whole when it ended; ``None``: not captured
    #: (a record made before logs were kept).
    log: str | None = None


@frozen
class TaskInstanceRecord:
    """One task instance of a run, with its attempts (oldest first)."""

    task_id: str
    map_index: int
    #: ``running``, ``up_for_retry``, ``success``, ``failed``, ``upstream_failed`` or
    #: ``cleared`` (to run again on the run's next resume).
    state: str
    #: The number of its latest try (0: none started).
    try_number: int
    started_at: float | None = None
    ended_at: float | None = None
    attempts: tuple[AttemptRecord, ...] = ()


@frozen
class TaskNode:
    """One task of a Dag as a run recorded its graph: its upstream tasks, and whether it
    is mapped (its instances are ``task_id[0]``, ``[1]``...)."""

    task_id: str
    upstream_task_ids: tuple[str, ...] = ()
    mapped: bool = False


@frozen
class DagRunRecord:
    """One run of a DAG as the store recorded it; instances by task id and map index."""

    dag_id: str
    run_id: str
    #: ``running``, ``success``, ``failed`` or ``queued`` (instances still to run, after
    #: a clear or a one-instance run).
    state: str
    started_at: float
    ended_at: float | None = None
    #: Filled by a lookup of one run; a listing of runs leaves it empty.
    instances: tuple[TaskInstanceRecord, ...] = ()
    #: The Dag's tasks (in topological order) with their upstream task ids, as the
    #: run's latest start recorded them; empty for a run recorded before stateward
    #: kept the graph.
    graph: tuple[TaskNode, ...] = ()


@frozen(kw_only=True)
class StateWriter:
    """Who made one version of a state key: its provenance in the key's history.

    ``kind`` says which sort of writer it was; the fields that do not apply to that
    kind are ``None``.
    """

    #: ``"task"`` (an attempt), ``"cli"`` (the ``stateward`` command), ``"api"``
    #: (out-of-band code through ``rt.state``), ``"test"`` (the test harness) or
    #: ``"cleanup"`` (an expired key removed by ``stateward cleanup``).
    kind: str
    #: The attempt that wrote, for ``kind == "task"``.
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    #: The host the writing runtime ran on.
    host: str | None = None
    #: The OS user, for out-of-band writers.
    user: str | None = None
    #: Set when the version is a rollback: the version whose value it restored.
    rollback_to: int | None = None

    @property
    def label(self) -> str:
        """A short description: ``dag/run/task[i] try n on host``, ``cli alice@box``..."""
        if self.kind == "task":
            index = "" if self.map_index is None or self.map_index < 0 else f"[{self.map_index}]"
            who = f"{self.dag_id}/{self.run_id}/{self.task_id}{index} try {self.try_number}"
            if self.host is not None:
                who += f" on {self.host}"
        else:
            place = "@".join(part for part in (self.user, self.host) if part is not None)
            who = f"{self.kind} {place}" if place else self.kind
        if self.rollback_to is not None:
            who = f"rollback to version {self.rollback_to} by {who}"
        return who

    def rolled_back_to(self, version: int) -> StateWriter:
        """The same writer, marked as restoring ``version``."""
        return attrs.evolve(self, rollback_to=version)

    def to_json(self) -> str:
        """The compact JSON the stores keep (fields that are ``None`` left out)."""
        # The fields are str or int: a plain dict of them, not asdict's recursion (a
        # store encodes one per try that writes, in the thread that holds its batch).
        fields = {
            name: value for name in _WRITER_FIELDS if (value := getattr(self, name)) is not None
        }
        return _COMPACT_JSON.encode(fields)

    @classmethod
    def from_json(cls, text: str) -> StateWriter:
        """Read what :meth:`to_json` wrote (unknown fields, from a newer release, are
        dropped)."""
        data = json.loads(text)
        known = {field.name for field in attrs.fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


#: The fields of :class:`StateWriter`, in the order its JSON lists them.
_WRITER_FIELDS: Final = tuple(sorted(field.name for field in attrs.fields(StateWriter)))
#: ``json.dumps(..., separators=(",", ":"), sort_keys=True)``, without making an
#: encoder per call.
_COMPACT_JSON: Final = json.JSONEncoder(separators=(",", ":"), sort_keys=True)


@frozen
class ItemPlace:
    """Which mapped item stands at a task's map index in a run's latest expansion."""

    task_id: str
    map_index: int
    #: The item's label (its arguments' JSON, or what the key function named it);
    #: ``None`` for an instance kept by position.
    label: str | None = None


@functools.lru_cache(maxsize=1024)
def writer_json(writer: StateWriter) -> str:
    """``writer.to_json()``, remembered: a task's every write names the same writer."""
    return writer.to_json()


@frozen
class StateVersion:
    """One version in a state key's history (``acc.history(key)``, newest first)."""

    #: The version number, increasing by one per change of the key.
    version: int
    #: The value this version wrote; ``None`` for a removal (:attr:`deleted`).
    value: Any
    #: Whether this version removed the key (delete, clear, expiry, rollback to one).
    deleted: bool
    #: Unix time of the change.
    updated_at: float
    #: Who made the change.
    updated_by: StateWriter


@frozen
class Lease:
    """An attempt's claim on its task instance: which runtime holds it, for which try.

    Internal: the runner acquires one before an attempt starts, and the supervisor
    fences the attempt's writes with it.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    #: The runtime's id.
    holder: str
    try_number: int

    @property
    def instance(self) -> tuple[str, str, str, int]:
        """The task instance it is on: ``(dag_id, run_id, task_id, map_index)``."""
        return (self.dag_id, self.run_id, self.task_id, self.map_index)


@frozen
class LeaseAnswer:
    """What an attempt to take an instance's lease found (internal).

    ``acquired``: the caller holds it now, for ``try_number`` (its attempt is recorded
    ``running``). ``held``: another live runtime (``holder``) holds it until
    ``expires_at`` (the store's clock). ``finished``: the instance has ended since the
    caller last looked (succeeded, or failed after ``seen_try``); ``instance`` is its
    record, with its last attempt.
    """

    outcome: str
    try_number: int
    holder: str | None = None
    expires_at: float | None = None
    instance: TaskInstanceRecord | None = None


@frozen
class AssetEvent:
    """One event emitted to an asset, as the store recorded it (newest first when
    listed by ``rt.state.asset_events()``)."""

    #: The asset's name and URI as the store knows them (``None``: not bound yet).
    asset_name: str | None
    asset_uri: str | None
    #: Unix time the event was recorded (when its task succeeded).
    timestamp: float
    #: The event's ``extra`` dictionary.
    extra: dict[str, Any]
    #: The alias it was emitted through, if any.
    alias_name: str | None = None
    #: The task instance and try that emitted it; ``None`` for an event added out of
    #: band (the test harness).
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None


def resolve_record_types() -> None:
    """Resolve the string annotations (``from __future__``) of the records here, in this
    module's namespace, for what reads them (cattrs): ``import stateward`` sets the public
    records' ``__module__`` to ``"stateward"``, where ``Any`` and the rest are not."""
    namespace = globals()
    for value in list(namespace.values()):
        if isinstance(value, type) and attrs.has(value):
            attrs.resolve_types(value, globalns=namespace)


def iso_time(timestamp: float | None) -> str | None:
    """A Unix time as an ISO-8601 UTC string (None stays None)."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def version_json(version: StateVersion) -> dict[str, Any]:
    """One version of a key's history as JSON (``state history --json``, the UI's API),
    with who made it (``label``: in words)."""
    by = attrs.asdict(version.updated_by)
    by["label"] = version.updated_by.label
    return {
        "version": version.version,
        "value": version.value,
        "deleted": version.deleted,
        "updated_at": iso_time(version.updated_at),
        "updated_by": by,
    }
