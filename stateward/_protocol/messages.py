"""The typed messages between task actors and the supervisor.

Every request and response is a frozen attrs class, and the module ends with the
closed unions they form. A request carries no task identity: the supervisor knows which
task instance sent it, because each client is bound to one identity by the runtime.
Their wire form (:func:`stateward._protocol.converter.encode` and ``decode``) is one
tagged union with a ``type`` tag.

A field that holds a state value is declared with :data:`STATE_VALUE`, so code that
checks or encodes values before sending them (a task process) finds them by
:func:`state_values`, whatever the message.
"""

from __future__ import annotations

import enum
from typing import Any, Final, TypeAlias

import attrs

from .._errors import (
    AssetConflictError,
    ProtocolError,
    RuntimeClosedError,
    StaleAttemptError,
    StateScopeError,
    StateTypeError,
    StateValueError,
    StatewardError,
    StoreError,
    SupervisorDiedError,
    UndeclaredAssetError,
)
from .._frozen import frozen
from .._records import (
    AssetEvent,
    AssetInfo,
    AttemptRecord,
    DagRunRecord,
    ItemPlace,
    LeaseAnswer,
    StateEntry,
    StateVersion,
    TaskInstanceRecord,
    TaskNode,
)

# Values are JSON values; they are checked by stateward._values, not by the converter.
JsonValue: TypeAlias = Any

_STATE_VALUE: Final = "stateward.state_value"
#: The metadata of a field that holds a state value to store.
STATE_VALUE: Final = {_STATE_VALUE: False}
#: ... or ``None``, which means "absent" (compare-and-set's ``expected``).
STATE_VALUE_OR_ABSENT: Final = {_STATE_VALUE: True}


def state_values(message: object) -> list[tuple[str, Any]]:
    """The ``(field name, value)`` pairs of ``message`` that hold state values to store.

    A field declared :data:`STATE_VALUE_OR_ABSENT` that holds ``None`` (compare-and-set's
    "the key is absent") is left out: it is not a value to store.
    """
    found = []
    cls: type[Any] = type(message)
    for field in _value_fields(cls):
        value = getattr(message, field.name)
        if value is None and field.metadata[_STATE_VALUE]:
            continue
        found.append((field.name, value))
    return found


def _value_fields(cls: type[Any]) -> tuple[attrs.Attribute[Any], ...]:
    found = _VALUE_FIELDS.get(cls)
    if found is None:  # a handful of classes; a task process asks once per request
        has = attrs.has(cls)
        found = tuple(f for f in attrs.fields(cls) if _STATE_VALUE in f.metadata) if has else ()
        _VALUE_FIELDS[cls] = found
    return found


_VALUE_FIELDS: Final[dict[type[Any], tuple[attrs.Attribute[Any], ...]]] = {}


# -- task state requests ----------------------------------------------------------------


@frozen
class GetTaskState:
    """Read one key of the caller's task state."""

    key: str


@frozen
class SetTaskState:
    """Write one key of the caller's task state."""

    key: str
    value: JsonValue = attrs.field(metadata=STATE_VALUE)
    #: Unix time at which the key expires; ``None`` keeps it forever.
    expires_at: float | None = None


@frozen
class DeleteTaskState:
    """Delete one key of the caller's task state (absent keys are fine)."""

    key: str


@frozen
class ClearTaskState:
    """Delete every key of the caller's task state."""

    #: Also clear the other map indices of the same mapped task in the same run.
    all_map_indices: bool = False


@frozen
class IncrementTaskState:
    """Add ``by`` to an integer key (absent counts as 0) and return the new value."""

    key: str
    by: int = 1
    expires_at: float | None = None


@frozen
class CompareAndSetTaskState:
    """Set ``key`` to ``new`` only if it now holds ``expected`` (``None``: absent)."""

    key: str
    expected: JsonValue = attrs.field(metadata=STATE_VALUE_OR_ABSENT)
    new: JsonValue = attrs.field(metadata=STATE_VALUE)
    expires_at: float | None = None


@frozen
class ListTaskState:
    """Read every live key of the caller's task state."""


@frozen
class GetTaskStateHistory:
    """Read the kept versions of one key of the caller's task state, newest first."""

    key: str


@frozen
class RollbackTaskState:
    """Write a kept version of a task-state key again (out-of-band clients only)."""

    key: str
    version: int
    expires_at: float | None = None


# -- asset state requests ---------------------------------------------------------------


@frozen
class GetAssetStateByName:
    """Read one key of a declared asset's state, the asset named by its name."""

    name: str
    key: str


@frozen
class GetAssetStateByUri:
    """Read one key of a declared asset's state, the asset named by its URI."""

    uri: str
    key: str


@frozen
class SetAssetStateByName:
    """Write one key of a declared asset's state."""

    name: str
    key: str
    value: JsonValue = attrs.field(metadata=STATE_VALUE)
    expires_at: float | None = None


@frozen
class SetAssetStateByUri:
    """Write one key of a declared asset's state."""

    uri: str
    key: str
    value: JsonValue = attrs.field(metadata=STATE_VALUE)
    expires_at: float | None = None


@frozen
class DeleteAssetStateByName:
    """Delete one key of a declared asset's state."""

    name: str
    key: str


@frozen
class DeleteAssetStateByUri:
    """Delete one key of a declared asset's state."""

    uri: str
    key: str


@frozen
class ClearAssetStateByName:
    """Delete every key of a declared asset's state."""

    name: str


@frozen
class ClearAssetStateByUri:
    """Delete every key of a declared asset's state."""

    uri: str


@frozen
class IncrementAssetStateByName:
    """Add ``by`` to an integer key of an asset's state and return the new value."""

    name: str
    key: str
    by: int = 1
    expires_at: float | None = None


@frozen
class IncrementAssetStateByUri:
    """Add ``by`` to an integer key of an asset's state and return the new value."""

    uri: str
    key: str
    by: int = 1
    expires_at: float | None = None


@frozen
class CompareAndSetAssetStateByName:
    """Set a key of an asset's state only if it holds ``expected`` (``None``: absent)."""

    name: str
    key: str
    expected: JsonValue = attrs.field(metadata=STATE_VALUE_OR_ABSENT)
    new: JsonValue = attrs.field(metadata=STATE_VALUE)
    expires_at: float | None = None


@frozen
class CompareAndSetAssetStateByUri:
    """Set a key of an asset's state only if it holds ``expected`` (``None``: absent)."""

    uri: str
    key: str
    expected: JsonValue = attrs.field(metadata=STATE_VALUE_OR_ABSENT)
    new: JsonValue = attrs.field(metadata=STATE_VALUE)
    expires_at: float | None = None


@frozen
class ListAssetStateByName:
    """Read every live key of an asset's state."""

    name: str


@frozen
class ListAssetStateByUri:
    """Read every live key of an asset's state."""

    uri: str


@frozen
class GetAssetStateHistoryByName:
    """Read the kept versions of one key of an asset's state, newest first."""

    name: str
    key: str


@frozen
class GetAssetStateHistoryByUri:
    """Read the kept versions of one key of an asset's state, newest first."""

    uri: str
    key: str


@frozen
class RollbackAssetStateByName:
    """Write a kept version of an asset-state key again (out-of-band clients only)."""

    name: str
    key: str
    version: int
    expires_at: float | None = None


@frozen
class RollbackAssetStateByUri:
    """Write a kept version of an asset-state key again (out-of-band clients only)."""

    uri: str
    key: str
    version: int
    expires_at: float | None = None


@frozen
class GetAssetsByAlias:
    """Resolve an alias the caller declared as an inlet to its concrete assets."""

    alias_name: str


@frozen
class AddAssetEvent:
    """Record that the caller produced ``(name, uri)``, through ``alias_name`` if given."""

    name: str
    uri: str
    extra: dict[str, JsonValue] = attrs.field(factory=dict)
    alias_name: str | None = None


# -- administrative requests (out-of-band clients only) -----------------------------------


@frozen
class ListState:
    """List state rows with their provenance; every filter is optional."""

    scope: str | None = None  # "task", "asset" or None for both
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    asset_name: str | None = None
    include_expired: bool = False
    key: str | None = None  # only this key
    #: A page: at most ``limit`` rows after skipping ``offset`` (needs ``scope``).
    limit: int | None = None
    offset: int = 0


@frozen
class CountState:
    """How many rows :class:`ListState` with these filters lists (its page ignored)."""

    filters: ListState


@frozen
class DeclareAssets:
    """Register the assets a Dag declares; a clash with a known asset is refused."""

    assets: tuple[AssetInfo, ...]


@frozen
class GetAssetByRef:
    """Look up a registered asset by name or by URI (exactly one is given)."""

    name: str | None = None
    uri: str | None = None


@frozen
class CleanupExpired:
    """Delete the expired rows (or, with ``dry_run``, count them)."""

    dry_run: bool = False
    #: Drop the history of task instances with no state left whose last change was
    #: before this Unix time (None: keep it).
    orphans_before: float | None = None


@frozen
class RecordTaskItem:
    """Record that a mapped instance's item stands at ``map_index`` (the runner's
    expansion), so out-of-band access by map index reaches that item's state."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    item: str
    label: str | None = None


@frozen
class RecordTaskItems:
    """Record where each item of a mapped task's expansion stands: ``places`` holds
    ``(map_index, item, label)`` in map-index order (the runner's expansion)."""

    dag_id: str
    run_id: str
    task_id: str
    places: tuple[tuple[int, str, str | None], ...]


@frozen
class ListTaskItems:
    """Where each mapped item of a run stands in its latest expansion."""

    dag_id: str
    run_id: str


@frozen
class RecordDagRun:
    """Create or update a run's record (state ``running``, ``success`` or ``failed``),
    with the Dag's graph when given (``None``: keep the recorded one)."""

    dag_id: str
    run_id: str
    state: str
    started_at: float
    ended_at: float | None = None
    graph: tuple[TaskNode, ...] | None = None


@frozen
class EndDagRun:
    """Record the end of a run none of whose instances failed: ``success`` when every
    instance of ``instances`` (``(task_id, map_index)``: all the run has) reads
    ``success``, after the records sent before this one; ``queued`` otherwise (the next
    run of the run id resumes it). Answered with the state recorded."""

    dag_id: str
    run_id: str
    started_at: float
    ended_at: float
    instances: tuple[tuple[str, int], ...]


@frozen
class RecordTaskInstance:
    """Create or update a task instance's record (one that has no attempt to record)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    state: str
    try_number: int
    started_at: float | None = None
    ended_at: float | None = None


@frozen
class RecordTaskAttempt:
    """Create or update an attempt's record, and set its instance's to it."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    instance_state: str
    attempt: AttemptRecord
    #: The runtime whose lease the attempt held: the record is written only if it
    #: still does (else it is refused with StaleAttemptError), and a final state gives
    #: the lease up. ``None``: written as is.
    holder: str | None = None


@frozen
class AcquireTaskLease:
    """Take the lease on a task instance for its next try, recording that try
    ``running`` (``attempt`` gives its start, host and pid); see ``LeaseAnswer``."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    holder: str
    #: Seconds the lease lasts unless renewed.
    timeout: float
    #: The instance's try number when the caller read its record (0: none): a failed
    #: instance whose try number is still this is run again, a later one has finished.
    seen_try: int
    attempt: AttemptRecord
    #: Run the instance again whatever its record says (``rt.run_task``): taken unless
    #: another attempt holds it.
    again: bool = False
    #: With ``again``, the try to take (``None``: the one after the record's).
    try_number: int | None = None


@frozen
class FindUnheldInstances:
    """Which of ``instances`` (``(dag_id, run_id, task_id, map_index, seen_try)``) an
    ``AcquireTaskLease`` by ``holder`` would not find held now; one read for all."""

    holder: str
    instances: tuple[tuple[str, str, str, int, int], ...]


@frozen
class RenewTaskLeases:
    """Extend every lease ``holder`` holds by ``timeout`` seconds from now."""

    holder: str
    timeout: float


@frozen
class ReleaseTaskLeases:
    """Give up every lease ``holder`` holds (its runtime is closing), or only
    ``leases`` (``(dag_id, run_id, task_id, map_index, try)``, each given up only if the
    instance's lease is still that one: a cancelled run call's)."""

    holder: str
    leases: tuple[tuple[str, str, str, int, int], ...] | None = None


@frozen
class ListDagRuns:
    """List run records (without instances), newest first."""

    dag_id: str | None = None
    state: str | None = None
    limit: int = 100


@frozen
class ListAssetEvents:
    """An asset's recorded events (by name, else URI), newest first, at most ``limit``."""

    name: str | None = None
    uri: str | None = None
    limit: int = 100


@frozen
class GetDagRun:
    """One run's record with its instances and attempts (``attempts`` false: the
    instances without their attempts, a read that does not grow with the tries)."""

    dag_id: str
    run_id: str
    attempts: bool = True


@frozen
class GetTaskInstanceRecord:
    """One task instance's record with its attempts (``stateward logs`` polls it)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1


@frozen
class ClearDagRun:
    """Mark a run's recorded instances to run again on its next resume (see
    :class:`stateward.store.base.ClearRun`)."""

    dag_id: str
    run_id: str
    task_ids: tuple[str, ...] | None = None
    failed_only: bool = False
    keep_task_state: bool = False


@frozen
class CleanupDagRuns:
    """Delete the records of runs that ended before ``ended_before`` (Unix seconds), or,
    with ``dry_run``, count them."""

    ended_before: float
    dry_run: bool = False


# -- responses --------------------------------------------------------------------------


@frozen
class TaskStateResult:
    """The value of a task-state key (``None``: absent)."""

    key: str
    value: JsonValue


@frozen
class AssetStateResult:
    """The value of an asset-state key (``None``: absent)."""

    key: str
    value: JsonValue


@frozen
class IncrementResult:
    """The value of a key after an increment."""

    key: str
    value: int


@frozen
class CompareAndSetResult:
    """Whether a compare-and-set wrote its new value."""

    key: str
    swapped: bool


@frozen
class StateItemsResult:
    """Every live key of one scope and its value."""

    items: dict[str, JsonValue]


@frozen
class StateHistoryResult:
    """The kept versions of one key, newest first."""

    key: str
    versions: tuple[StateVersion, ...]


@frozen
class TaskItemsResult:
    """The items listed by :class:`ListTaskItems`, by task id and map index."""

    items: tuple[ItemPlace, ...]


@frozen
class AssetsByAliasResult:
    """The concrete assets an alias resolves to (possibly none)."""

    assets: tuple[AssetInfo, ...]


@frozen
class AssetResult:
    """A registered asset (``None``: not registered)."""

    asset: AssetInfo | None


@frozen
class StateEntriesResult:
    """Rows listed by :class:`ListState`."""

    entries: tuple[StateEntry, ...]


@frozen
class CountResult:
    """How many rows :class:`CountState` counted."""

    count: int


@frozen
class CleanupResult:
    """How many expired rows were deleted (or would be, on a dry run)."""

    deleted: int


@frozen
class DagRunsResult:
    """Runs listed by :class:`ListDagRuns`."""

    runs: tuple[DagRunRecord, ...]


@frozen
class AssetEventsResult:
    """Events listed by :class:`ListAssetEvents`."""

    events: tuple[AssetEvent, ...]


@frozen
class DagRunRecordResult:
    """The run asked for by :class:`GetDagRun` (``None``: not recorded)."""

    run: DagRunRecord | None


@frozen
class TaskInstanceRecordResult:
    """The instance asked for by :class:`GetTaskInstanceRecord` (``None``: not recorded)."""

    instance: TaskInstanceRecord | None


@frozen
class ClearedResult:
    """The ``(task_id, map_index)`` of each instance :class:`ClearDagRun` cleared;
    ``None`` when the run has no record."""

    cleared: tuple[tuple[str, int], ...] | None


@frozen
class LeaseResult:
    """The answer to :class:`AcquireTaskLease`."""

    answer: LeaseAnswer


@frozen
class UnheldResult:
    """The positions, in the request, of the instances no live runtime holds."""

    positions: tuple[int, ...]


@frozen
class RenewedLeasesResult:
    """The leases a renewal extended: ``(dag_id, run_id, task_id, map_index, try)``."""

    held: tuple[tuple[str, str, str, int, int], ...]


@frozen
class DagRunEndedResult:
    """The state :class:`EndDagRun` recorded."""

    state: str


@frozen
class OkResponse:
    """A request that has nothing to return succeeded."""


class ErrorType(enum.Enum):
    """Why a request failed; the client raises the matching exception."""

    INVALID_VALUE = "invalid_value"
    INVALID_TYPE = "invalid_type"
    SCOPE_DENIED = "scope_denied"
    UNDECLARED_ASSET = "undeclared_asset"
    ASSET_CONFLICT = "asset_conflict"
    STORE_FAILURE = "store_failure"
    PROTOCOL = "protocol"
    SHUTTING_DOWN = "shutting_down"
    STALE_ATTEMPT = "stale_attempt"
    INTERNAL = "internal"


#: Which exception each error type stands for, both ways: the supervisor reports an
#: exception as the type of the first class it is an instance of; the client raises the
#: first class listed for a type (INTERNAL, and any type not listed: StatewardError).
ERROR_EXCEPTIONS: Final[tuple[tuple[ErrorType, type[StatewardError]], ...]] = (
    (ErrorType.SCOPE_DENIED, StateScopeError),
    (ErrorType.UNDECLARED_ASSET, UndeclaredAssetError),
    (ErrorType.ASSET_CONFLICT, AssetConflictError),
    (ErrorType.INVALID_VALUE, StateValueError),
    (ErrorType.INVALID_TYPE, StateTypeError),
    (ErrorType.PROTOCOL, ProtocolError),
    (ErrorType.STALE_ATTEMPT, StaleAttemptError),
    (ErrorType.STORE_FAILURE, StoreError),
    (ErrorType.SHUTTING_DOWN, RuntimeClosedError),
    (ErrorType.SHUTTING_DOWN, SupervisorDiedError),
)


@frozen
class ErrorResponse:
    """A request failed; nothing it asked for was written."""

    error: ErrorType
    detail: str
    #: The state key the request was about, when there is one.
    key: str | None = None
    #: Where in a refused value the bad part sits, e.g. ``value['when']``.
    path: str | None = None


TaskStateRequest: TypeAlias = (
    GetTaskState
    | SetTaskState
    | DeleteTaskState
    | ClearTaskState
    | IncrementTaskState
    | CompareAndSetTaskState
    | ListTaskState
    | GetTaskStateHistory
    | RollbackTaskState
)
AssetStateRequest: TypeAlias = (
    GetAssetStateByName
    | GetAssetStateByUri
    | SetAssetStateByName
    | SetAssetStateByUri
    | DeleteAssetStateByName
    | DeleteAssetStateByUri
    | ClearAssetStateByName
    | ClearAssetStateByUri
    | IncrementAssetStateByName
    | IncrementAssetStateByUri
    | CompareAndSetAssetStateByName
    | CompareAndSetAssetStateByUri
    | ListAssetStateByName
    | ListAssetStateByUri
    | GetAssetStateHistoryByName
    | GetAssetStateHistoryByUri
    | RollbackAssetStateByName
    | RollbackAssetStateByUri
    | GetAssetsByAlias
    | AddAssetEvent
)
AdminRequest: TypeAlias = (
    ListState
    | CountState
    | CleanupExpired
    | DeclareAssets
    | GetAssetByRef
    | RecordTaskItem
    | RecordTaskItems
    | ListTaskItems
    | RecordDagRun
    | EndDagRun
    | RecordTaskInstance
    | RecordTaskAttempt
    | AcquireTaskLease
    | FindUnheldInstances
    | RenewTaskLeases
    | ReleaseTaskLeases
    | ListDagRuns
    | GetDagRun
    | ListAssetEvents
    | GetTaskInstanceRecord
    | ClearDagRun
    | CleanupDagRuns
)
Request: TypeAlias = TaskStateRequest | AssetStateRequest | AdminRequest
Response: TypeAlias = (
    TaskStateResult
    | AssetStateResult
    | IncrementResult
    | CompareAndSetResult
    | StateItemsResult
    | StateHistoryResult
    | TaskItemsResult
    | AssetsByAliasResult
    | AssetResult
    | StateEntriesResult
    | CountResult
    | CleanupResult
    | DagRunsResult
    | DagRunRecordResult
    | DagRunEndedResult
    | AssetEventsResult
    | TaskInstanceRecordResult
    | ClearedResult
    | LeaseResult
    | RenewedLeasesResult
    | UnheldResult
    | OkResponse
    | ErrorResponse
)
Message: TypeAlias = Request | Response

#: Every message class, by its wire tag.
MESSAGE_TYPES: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (*Request.__args__, *Response.__args__)
}
