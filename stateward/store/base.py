"""The Store protocol: what the supervisor asks of durable state, and the scopes.

A store executes a *batch* of operations in order. If any of them writes, the batch
is one transaction: either every write in it is durable when :meth:`Store.execute`
returns, or none is. An operation that is refused for its own reasons (an increment
of a non-integer, a conflicting asset declaration) yields its exception in the
results list and writes nothing; the other operations go on. A failure of the store
itself (I/O, lock timeout, disk full) raises :class:`~stateward.StoreError`
for the whole batch, with nothing written.

Values cross this boundary as JSON text (checked by :mod:`stateward._values`), so a
stored value never aliases an object a task still holds.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self, TypeAlias

from .._errors import AssetConflictError, StaleAttemptError, StateTypeError, StateValueError
from .._frozen import frozen
from .._records import (
    AssetEvent,
    AssetInfo,
    AttemptRecord,
    Lease,
    LeaseAnswer,
    StateEntry,
    StateVersion,
    StateWriter,
    TaskNode,
    instance_label,
)


@frozen
class TaskScope:
    """One task instance's namespace: shared by its retries, not by other runs.

    A mapped instance's state belongs to its item, not its position: ``item`` is the
    item's identity (see :mod:`stateward._items`), which the store keys the state by.
    ``None`` (out of band, by map index): the item that stood at ``map_index`` in the
    latest expansion recorded (:class:`RecordItem`), else the position itself.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1
    item: str | None = None

    @property
    def label(self) -> str:
        """A short name for messages: ``dag.task`` or ``dag.task[3]``, with the run."""
        return f"{instance_label(self.dag_id, self.task_id, self.map_index)} (run {self.run_id!r})"


@frozen
class AssetScope:
    """One asset's namespace, by its name or its URI (at least one is given).

    A write to an asset the store does not know registers it. Given both (the
    supervisor does for declared assets), that is a declaration: it binds the name
    to the URI, or completes an asset registered before by one of them. Given one,
    only that one is registered: the other is bound by the first declaration that
    gives it (until then the asset reads as Airflow's rule says, the missing side
    taking the other's value).
    """

    name: str | None = None
    uri: str | None = None


Scope: TypeAlias = TaskScope | AssetScope


def position_item(map_index: int) -> str:
    """The identity of state kept by position: ``''`` unmapped, ``'#3'`` for index 3."""
    return "" if map_index < 0 else f"#{map_index}"


@frozen
class Writer:
    """The task instance that wrote a row (provenance)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int

    @property
    def label(self) -> str:
        """``dag/run/task[i] try n``, as shown by the CLI."""
        index = f"[{self.map_index}]" if self.map_index >= 0 else ""
        return f"{self.dag_id}/{self.run_id}/{self.task_id}{index} try {self.try_number}"

    def history_writer(self, host: str | None = None) -> StateWriter:
        """This try as a history version's provenance (one object per try and host, so
        its JSON is made once too: records.writer_json)."""
        return _history_writer(self, host)

    def new_history_writer(self, host: str | None = None) -> StateWriter:
        """:meth:`history_writer`, made anew: for a caller that keeps it for its try."""
        return StateWriter(
            kind="task", dag_id=self.dag_id, run_id=self.run_id, task_id=self.task_id,
            map_index=self.map_index, try_number=self.try_number, host=host,
        )  # fmt: skip


_history_writer = functools.lru_cache(maxsize=1024)(Writer.new_history_writer)


#: How many versions of each key a store keeps unless told otherwise.
DEFAULT_HISTORY: Final = 10
#: The provenance of an expired key removed by a cleanup.
CLEANUP_WRITER: Final = StateWriter(kind="cleanup")


def provenance(who: StateWriter | None, writer: Writer | None = None) -> StateWriter:
    """Who a history version names: ``who`` if the supervisor gave it, else the row's
    writer (a store used without a supervisor: its try, or an out-of-band API call)."""
    if who is not None:
        return who
    return StateWriter(kind="api") if writer is None else writer.history_writer()


# -- operations -------------------------------------------------------------------------


@frozen
class Get:
    """Return the live value of ``key`` (decoded), or ``None``."""

    scope: Scope
    key: str


@frozen
class Items:
    """Return every live key of the scope as a dict of decoded values."""

    scope: Scope


@frozen
class Put:
    """Write ``key``; returns ``None``."""

    scope: Scope
    key: str
    value: str  # JSON text
    expires_at: float | None
    writer: Writer | None
    #: The history version's provenance (None: derived from ``writer``).
    who: StateWriter | None = None


@frozen
class Delete:
    """Delete ``key``; returns whether a live key was there."""

    scope: Scope
    key: str
    who: StateWriter | None = None


@frozen
class Clear:
    """Delete every key of the scope (for a task, optionally all its map indices)."""

    scope: Scope
    all_map_indices: bool = False
    who: StateWriter | None = None


@frozen
class Increment:
    """Add ``by`` to an integer key (absent or expired: 0); returns the new int."""

    scope: Scope
    key: str
    by: int
    expires_at: float | None
    writer: Writer | None
    who: StateWriter | None = None


@frozen
class CompareAndSet:
    """Write ``new`` if the key holds ``expected`` (``None``: absent); returns bool."""

    scope: Scope
    key: str
    expected: Any  # a decoded JSON value or None
    new: str  # JSON text
    expires_at: float | None
    writer: Writer | None
    who: StateWriter | None = None


@frozen
class History:
    """Return the key's kept versions, newest first (a tuple of StateVersion)."""

    scope: Scope
    key: str


@frozen
class Rollback:
    """Write version ``version`` of ``key`` again (remove the key, for a tombstone),
    as a new version whose provenance is ``who`` marked as a rollback to it; returns
    ``None``. An unknown version is refused with StateValueError."""

    scope: Scope
    key: str
    version: int
    expires_at: float | None
    writer: Writer | None
    who: StateWriter | None = None


@frozen
class RegisterAssets:
    """Make each asset known; a name or URI already bound elsewhere is a conflict."""

    assets: tuple[AssetInfo, ...]


@frozen
class LookupAsset:
    """Return the registered asset with this name or URI, or ``None``."""

    name: str | None = None
    uri: str | None = None


@frozen
class ResolveAlias:
    """Return the assets an alias has been emitted through, oldest first."""

    alias_name: str


@frozen
class AddEvent:
    """Record an asset event (and register the asset, and the alias mapping)."""

    asset: AssetInfo
    extra: str  # JSON text
    alias_name: str | None
    writer: Writer | None


@frozen
class ListAssetEvents:
    """Return the events recorded for an asset (a tuple of AssetEvent), newest first,
    at most ``limit``; an asset the store does not know has none."""

    asset: AssetScope
    limit: int = 100


@frozen
class ListEntries:
    """List rows with provenance, filtered like the CLI's ``state list``."""

    scope: str | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    asset_name: str | None = None
    include_expired: bool = False
    #: Only this key.
    key: str | None = None
    #: At most ``limit`` rows (None: all), after skipping ``offset``, in the listing's
    #: order; a page needs ``scope`` (``task`` or ``asset``).
    limit: int | None = None
    offset: int = 0

    def __attrs_post_init__(self) -> None:
        if (self.limit is not None or self.offset) and self.scope not in ("task", "asset"):
            msg = "a page of state entries (limit, offset) needs scope 'task' or 'asset'"
            raise ValueError(msg)


@frozen
class CountEntries:
    """Return how many rows ``filters`` lists (its ``limit`` and ``offset`` ignored)."""

    filters: ListEntries


@frozen
class Cleanup:
    """Delete expired rows (or count them, on a dry run); returns the count.

    Each expired key removed gets a tombstone version; then each key's history is cut
    to the store's ``history`` newest versions, and a task instance that holds no
    state and whose newest version is older than ``orphans_before`` loses its history.
    """

    dry_run: bool = False
    orphans_before: float | None = None


@frozen
class RecordItem:
    """Record that ``item`` (labelled ``label``) stands at ``map_index`` of the task in
    the run, as its latest expansion placed it; returns ``None``.

    State kept by that position (``#i``: written by map index before any expansion was
    recorded, a seed, or rows of a database from before items) is *adopted* by the
    item, with its history, unless the item holds state already.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    item: str
    label: str | None = None


@frozen
class RecordItems:
    """Record where each item of one expansion of a mapped task stands, as
    :class:`RecordItem` does for each of ``places`` (``(map_index, item, label)``, in
    map-index order) in turn, in one operation; returns ``None``. The runner records
    a task's expansion with it before the task's instances start."""

    dag_id: str
    run_id: str
    task_id: str
    places: tuple[tuple[int, str, str | None], ...]


@frozen
class ListItems:
    """Return where each mapped item of a run stands (a tuple of ItemPlace, by task id
    and map index): the latest item recorded at each index."""

    dag_id: str
    run_id: str


@frozen
class RecordRun:
    """Create or update a run's record (keyed by DAG and run id); returns ``None``.

    ``graph`` (the Dag's tasks and edges) replaces the recorded one when given and
    leaves it as it is when ``None``."""

    dag_id: str
    run_id: str
    state: str
    started_at: float
    ended_at: float | None = None
    graph: tuple[TaskNode, ...] | None = None


@frozen
class EndRun:
    """Record the end of a run whose every instance is one of ``instances`` (``(task_id,
    map_index)``): ``success`` when each of them reads ``success`` in the store (the
    operations before it in the batch included), ``queued`` otherwise (the next run of
    the run id resumes it); returns the state recorded. The recorded graph is kept."""

    dag_id: str
    run_id: str
    started_at: float
    ended_at: float
    instances: tuple[tuple[str, int], ...]

    def state(self, states: Mapping[tuple[str, int], str]) -> str:
        """The run's state, given its instances' recorded ``states``."""
        done = all(states.get(instance) == "success" for instance in self.instances)
        return "success" if done else "queued"

    def record(self, states: Mapping[tuple[str, int], str]) -> RecordRun:
        """The run's record, given its instances' recorded ``states``."""
        return RecordRun(
            self.dag_id, self.run_id, self.state(states), self.started_at, self.ended_at
        )


@frozen
class RecordInstance:
    """Create or update a task instance's record; returns ``None``."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    try_number: int
    started_at: float | None = None
    ended_at: float | None = None


@frozen
class RecordAttempt:
    """Create or update one attempt's record (keyed by its try number), and set its
    instance's record to it: ``instance_state``, the attempt's try number, start and
    end (as Airflow's task instance shows its latest try). Returns ``None``."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    instance_state: str
    attempt: AttemptRecord
    #: The runtime whose lease the attempt holds: then the record is written only if
    #: the instance's lease is still (``holder``, the attempt's try), else it is refused
    #: with :class:`~stateward.StaleAttemptError`; and a final ``instance_state``
    #: (``success``, ``failed``) gives the lease up. ``None``: written as is.
    holder: str | None = None


@frozen
class AcquireLease:
    """Take an instance's lease for its next try, in one transaction; returns a
    :class:`~stateward._records.LeaseAnswer` (decided by :func:`decide_lease`).

    Acquired, the instance is recorded ``running`` at the new try, with the lease
    (``holder``, that try, expiring ``timeout`` seconds from the store's now), and the
    attempt ``attempt`` (its try number replaced) is recorded; a previous attempt left
    ``running`` by a holder whose lease expired is recorded ``abandoned``.
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    holder: str
    timeout: float
    seen_try: int
    attempt: AttemptRecord
    #: Run the instance again whatever its record says (``rt.run_task``): taken unless
    #: another attempt holds it, never ``finished``.
    again: bool = False
    #: With ``again``, the try to take (``None``: the one after the record's).
    try_number: int | None = None

    @property
    def first_try(self) -> int:
        """The try an instance with no record is taken at (the chosen one, else 1)."""
        return self.try_number if self.again and self.try_number is not None else 1


@frozen
class FindUnheld:
    """Of ``instances`` (each ``(dag_id, run_id, task_id, map_index, seen_try)``), the
    positions of those an :class:`AcquireLease` by ``holder`` with that ``seen_try``
    would not find held now (finished, free, or leased by a holder whose lease
    expired), in one read; returns a tuple of positions. A runtime waiting for other
    runtimes' instances asks this once per interval for all of them."""

    holder: str
    instances: tuple[tuple[str, str, str, int, int], ...]


@frozen
class LeaseProbe:
    """Who asks :func:`decide_lease`: a runtime, and the try number it last saw."""

    holder: str
    seen_try: int


@frozen
class RenewLeases:
    """Extend every lease of ``holder`` to ``timeout`` seconds from the store's now, in
    one statement; returns the leases extended as ``(dag, run, task, map_index, try)``."""

    holder: str
    timeout: float


@frozen
class ReleaseLeases:
    """Give up every lease of ``holder`` (its runtime closes), or only ``leases``
    (each ``(dag_id, run_id, task_id, map_index, try)``; one no longer held as given is
    left as it is: a run call cancelled gives up its own); returns how many."""

    holder: str
    leases: tuple[tuple[str, str, str, int, int], ...] | None = None


@frozen
class Fenced:
    """``op``, sent by the attempt that holds ``lease``: applied only if the instance's
    lease is still exactly that one, else refused with StaleAttemptError (nothing
    written). The check is made in the batch's transaction."""

    lease: Lease
    op: Op


@frozen
class ListRuns:
    """Return run records (without instances), newest start first, at most ``limit``."""

    dag_id: str | None = None
    state: str | None = None
    limit: int = 100


@frozen
class GetRun:
    """Return one run's record with its instances and attempts, or ``None``.

    With ``attempts`` false, the instances come without their attempts (their
    ``attempts`` empty): a read whose cost does not grow with the tries made."""

    dag_id: str
    run_id: str
    attempts: bool = True


@frozen
class GetInstance:
    """Return one task instance's record with its attempts, or ``None``."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@frozen
class ClearRun:
    """Mark recorded task instances of a run to run again on its next resume.

    Selects the run's recorded instances of ``task_ids`` (``None``: all of them),
    with ``failed_only`` only those ``failed`` or ``upstream_failed``; sets each to
    ``cleared`` (its try number kept, so tries continue), deletes its task state unless
    ``keep_task_state``, gives up its lease (a running attempt is fenced off: its
    writes and end record are refused) and records an attempt left ``running``
    ``abandoned``, and, if any was selected, sets the run's state to ``queued``.
    Returns the ``(task_id, map_index)`` pairs cleared, sorted, or ``None`` when the
    run has no record.
    """

    dag_id: str
    run_id: str
    task_ids: tuple[str, ...] | None = None
    failed_only: bool = False
    keep_task_state: bool = False


@frozen
class CleanupRuns:
    """Delete the records (runs, instances, attempts and their logs) of runs in state
    ``success`` or ``failed`` that ended before ``ended_before`` (Unix seconds), or
    count them on a dry run; returns the number of runs."""

    ended_before: float
    dry_run: bool = False


Op: TypeAlias = (
    Get
    | Items
    | Put
    | Delete
    | Clear
    | Increment
    | CompareAndSet
    | History
    | Rollback
    | RegisterAssets
    | LookupAsset
    | ResolveAlias
    | AddEvent
    | ListAssetEvents
    | ListEntries
    | CountEntries
    | Cleanup
    | RecordItem
    | RecordItems
    | ListItems
    | RecordRun
    | EndRun
    | RecordInstance
    | RecordAttempt
    | AcquireLease
    | FindUnheld
    | RenewLeases
    | ReleaseLeases
    | Fenced
    | ListRuns
    | GetRun
    | GetInstance
    | ClearRun
    | CleanupRuns
)

#: Operations that never write: a batch of only these needs no write transaction.
READ_OPS: tuple[type[Any], ...] = (
    Get, Items, History, LookupAsset, ResolveAlias, ListAssetEvents, ListEntries, CountEntries,
    ListItems, ListRuns, GetRun, GetInstance,
)  # fmt: skip


#: The run-record and lease operations a SQL store hands to its run-record module
#: (``store/sqlite/runs.py``, ``store/postgres/runs.py``) as they are.
RUN_RECORD_OPS: tuple[type[Any], ...] = (
    RecordItems, RecordRun, EndRun, RecordInstance, RecordAttempt, AcquireLease, FindUnheld,
    RenewLeases, ReleaseLeases, ListRuns, GetRun, GetInstance, CleanupRuns,
)  # fmt: skip


def is_write(op: Op) -> bool:
    """Whether ``op`` may write (and so needs the write transaction)."""
    return not isinstance(op, READ_OPS) and not (
        isinstance(op, Cleanup | CleanupRuns) and op.dry_run
    )


#: What refuses one operation for its own reasons: it writes nothing, becomes that
#: operation's result, and the rest of the batch goes on.
REFUSALS: Final = (StateTypeError, StateValueError, AssetConflictError, StaleAttemptError)

#: The lease's own instance states: a final one ends the lease.
FINAL_STATES: Final = frozenset({"success", "failed"})


def stale_error(lease: Lease, what: str = "its request") -> StaleAttemptError:
    """The refusal of a request of an attempt that no longer holds ``lease``."""
    label = instance_label(lease.dag_id, lease.task_id, lease.map_index)
    msg = (
        f"{label} (run {lease.run_id!r}) try {lease.try_number} no longer holds the "
        f"instance (it ended, or its lease expired and another attempt took the instance "
        f"over), so {what} was refused and nothing was written"
    )
    return StaleAttemptError(msg, task=label, try_number=lease.try_number)


#: Operations that write no lease column: a fence checked before one of them still
#: holds after it.
KEEPS_LEASES: Final[tuple[type[Any], ...]] = (
    *READ_OPS, Put, Delete, Clear, Increment, CompareAndSet, Rollback, RegisterAssets, AddEvent,
    Cleanup, RecordItem, RecordRun, EndRun, RecordInstance, FindUnheld,
)  # fmt: skip


#: Operations that write the lease of their own instance only.
_OWN_LEASE_OPS: Final = (AcquireLease, RecordAttempt)


def changes_leases(op: Op) -> bool:
    """Whether ``op`` may write a lease column (of any instance): a fence checked before
    it must be checked again after it. A fenced operation is judged by its inner one."""
    inner = op.op if isinstance(op, Fenced) else op
    return not isinstance(inner, KEEPS_LEASES)


class FenceCheck:
    """Checks fenced operations' leases: each distinct lease once, again only after an
    operation that may have changed it (``holds`` asks the store, in the transaction).

    A store whose batches run one after another on one connection may keep one
    ``FenceCheck`` across batches, as long as it calls :meth:`forget` whenever the lease
    rows may have changed without it (another connection committed, a batch rolled
    back): a lease row no operation touched is still what it was when checked.
    """

    __slots__ = ("_checked", "_holds")

    def __init__(self, holds: Callable[[Lease], bool]) -> None:
        self._holds = holds
        #: The verdicts by instance: the lease checked and whether it held.
        self._checked: dict[tuple[str, str, str, int], tuple[Lease, bool]] = {}

    def forget(self) -> None:
        """Check every lease again from now on."""
        self._checked.clear()

    def unwrap(self, op: Op) -> Op:
        """The operation to apply for ``op``; raise StaleAttemptError if fenced out."""
        if isinstance(op, Fenced):
            lease = op.lease
            found = self._checked.get(lease.instance)
            if found is not None and (found[0] is lease or found[0] == lease):
                held = found[1]
            else:
                held = self._holds(lease)
                self._checked[lease.instance] = (lease, held)
            if not held:
                raise stale_error(lease)
            return op.op
        if isinstance(op, _OWN_LEASE_OPS):
            # Changes the lease of its own instance only.
            self._checked.pop((op.dag_id, op.run_id, op.task_id, op.map_index), None)
        elif not isinstance(op, KEEPS_LEASES):
            self._checked.clear()
        return op

    def acquired(self, op: AcquireLease, answer: LeaseAnswer) -> None:
        """Note what ``op`` wrote, answered ``answer``: acquired, the instance's lease
        is now ``op.holder``'s for the new try (the store applied it in the
        transaction), so a fenced operation of that try needs no check."""
        if answer.outcome == "acquired":
            lease = Lease(
                op.dag_id, op.run_id, op.task_id, op.map_index, op.holder, answer.try_number
            )
            self._checked[lease.instance] = (lease, True)


def apply_each(ops: Sequence[Op], apply: Callable[[Op], Any], fences: FenceCheck) -> list[Any]:
    """Apply each operation in order; a refused one yields its exception as its result.

    The batch loop of a store whose operations run synchronously (in one thread);
    any other exception fails the whole batch. ``fences`` checks a fenced operation's
    lease (see :class:`FenceCheck`).
    """
    results: list[Any] = []
    for op in ops:
        try:
            results.append(apply(fences.unwrap(op)))
        except REFUSALS as exc:
            results.append(exc)
    return results


def decide_lease(
    op: AcquireLease | LeaseProbe,
    current: tuple[str, int, str | None, float | None] | None,
    now: float,
) -> tuple[str, int]:
    """What :class:`AcquireLease` does, given the instance's ``(state, try_number,
    lease holder, lease expiry)`` (``None``: no record) and the store's ``now``.

    Returns ``("acquired", new try)``, ``("held", holder's try)`` or
    ``("finished", its try)``; the store then writes what an acquisition writes. An
    acquisition ``again`` is never ``finished``, and takes its chosen try if it has one.
    """
    if current is None:
        return "acquired", op.first_try if isinstance(op, AcquireLease) else 1
    again = isinstance(op, AcquireLease) and op.again
    state, try_number, holder, expires = current
    if state == "success" and not again:
        return "finished", try_number
    if holder is not None and holder != op.holder and expires is not None and expires > now:
        return "held", try_number
    if holder == op.holder and state == "running":
        # Another call in the same runtime runs it (a runtime retries only once its
        # try's end is recorded).
        return "held", try_number
    if again:
        assert isinstance(op, AcquireLease)
        return "acquired", op.try_number or try_number + 1
    if holder != op.holder and state in ("failed", "upstream_failed") and try_number > op.seen_try:
        return "finished", try_number  # another runtime ended it since the caller looked
    return "acquired", try_number + 1


def lease_answer(
    outcome: str, try_number: int, holder: str | None, expires: float | None,
    instance: Any = None,
) -> LeaseAnswer:  # fmt: skip
    """The :class:`LeaseAnswer` of a decision (``instance``: a finished one's record)."""
    if outcome == "held":
        return LeaseAnswer(outcome, try_number, holder, expires)
    if outcome == "finished":
        return LeaseAnswer(outcome, try_number, instance=instance)
    return LeaseAnswer(outcome, try_number)


class Store(Protocol):
    """Durable key/value state for task instances and assets.

    Implementations: :class:`~stateward.store.sqlite.SqliteStore` (embedded, durable)
    and :class:`~stateward.store.memory.MemoryStore` (tests). Only the supervisor calls
    a store; one store object serves one supervisor.
    """

    @property
    def write_transactions(self) -> int:
        """Batches executed that wrote (a transaction each); for tests and benchmarks."""
        ...

    async def __aenter__(self) -> Self:
        """Open (creating or migrating the database); from trio, in the closing task."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close; later calls to :meth:`execute` fail with RuntimeClosedError."""

    async def execute(self, ops: Sequence[Op], *, now: float) -> list[Any]:
        """Run ``ops`` in order, as one transaction if any writes.

        Args:
            ops: The operations.
            now: The wall-clock time (Unix seconds) that decides what has expired and
                is recorded as ``updated_at``.

        Returns:
            One result per operation: its value, or the exception that refused it.

        Raises:
            StoreError: the store failed; nothing of the batch was written.
        """
        ...


class AnswersOnCommit(Store, Protocol):
    """A store whose :meth:`execute` can hand a batch's results to a callback as soon
    as its transaction commits, in the thread that committed it, before ``execute``
    returns: the supervisor answers callers waiting in worker threads from there,
    saving them the trip through trio's thread. Such a store sets
    ``answers_on_commit = True``.
    """

    answers_on_commit: bool

    async def execute(
        self,
        ops: Sequence[Op],
        *,
        now: float,
        on_commit: Callable[[list[Any]], None] | None = None,
    ) -> list[Any]:
        """As :meth:`Store.execute`; ``on_commit(results)`` may be called (at most
        once, only if the batch committed) and must not raise."""
        ...


def unknown_version(scope: Scope, key: str, version: int, kept: Sequence[int]) -> StateValueError:
    """The refusal of a rollback to a version the key's history does not hold."""
    where = scope.label if isinstance(scope, TaskScope) else f"asset {scope.name or scope.uri!r}"
    held = f"versions {min(kept)} to {max(kept)}" if kept else "no versions"
    msg = (
        f"{key!r} of {where} has no version {version}: its history holds {held}. "
        "List them with history(key) or 'stateward state history'"
    )
    return StateValueError(msg, key=key)


def rollback_to(
    op: Rollback, kept: Sequence[tuple[int, str | None]]
) -> tuple[str | None, StateWriter]:
    """What a rollback writes, given the key's kept ``(version, encoded value)`` pairs:
    the old value (``None``: a tombstone, the key is removed) and the provenance of the
    version it adds; refused when ``op.version`` is not kept."""
    found = [value for version, value in kept if version == op.version]
    if not found:
        raise unknown_version(op.scope, op.key, op.version, [version for version, _ in kept])
    return found[0], provenance(op.who, op.writer).rolled_back_to(op.version)


def version_of(row: Sequence[Any], decode: Callable[[str], Any]) -> StateVersion:
    """A history row ``(version, value, updated_at, updated_by JSON)`` as the record
    callers get (``value`` None: a tombstone)."""
    version, value, updated_at, by = row
    return StateVersion(
        version=version,
        value=None if value is None else decode(value),
        deleted=value is None,
        updated_at=updated_at,
        updated_by=StateWriter.from_json(by),
    )


def entry_sort_key(entry: StateEntry) -> tuple[Any, ...]:
    """The order of listed entries: task rows by instance, then asset rows by name."""
    return (
        entry.scope != "task",
        entry.dag_id or "",
        entry.run_id or "",
        entry.task_id or "",
        entry.map_index if entry.map_index is not None else -1,
        entry.item or "",
        entry.asset_name or "",
        entry.key,
    )


def writer_columns(writer: Writer | None) -> tuple[Any, ...]:
    """The provenance columns (dag, run, task, map index, try); all ``None`` out of band."""
    if writer is None:
        return (None,) * 5
    return (writer.dag_id, writer.run_id, writer.task_id, writer.map_index, writer.try_number)


def event_of(row: Sequence[Any]) -> AssetEvent:
    """An event row ``(name, uri, timestamp, extra JSON, alias, dag, run, task, map
    index, try)`` as the record callers get."""
    name, uri, timestamp, extra, alias_name, dag_id, run_id, task_id, map_index, tries = row
    return AssetEvent(
        asset_name=name, asset_uri=uri, timestamp=timestamp, extra=json.loads(extra),
        alias_name=alias_name, dag_id=dag_id, run_id=run_id, task_id=task_id,
        map_index=map_index, try_number=tries,
    )  # fmt: skip
