"""MemoryStore: the Store protocol in dicts, for tests and harnesses.

It behaves as :class:`~stateward.store.sqlite.SqliteStore` does (one behaviour suite
runs against both) but keeps nothing across processes. It does no I/O, so a batch
cannot fail half way: an operation refused for its own reasons writes nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final

import attrs

from .._errors import RuntimeClosedError, StateTypeError
from .._records import AssetEvent as EventRecord
from .._records import (
    AssetInfo,
    ItemPlace,
    Lease,
    LeaseAnswer,
    StateEntry,
    StateVersion,
    StateWriter,
)
from .._values import check_int_digits, decode_listed, decode_stored, json_equal
from . import base, run_rows
from .conflicts import KnownAsset, check_declarations, increment_type_message, resolve_declaration


@attrs.frozen
class _Row:
    value: str
    updated_at: float
    expires_at: float | None
    writer: base.Writer | None
    #: The map index of the instance that wrote it (task state).
    map_index: int = -1

    def live(self, now: float) -> bool:
        return self.expires_at is None or self.expires_at > now


@attrs.frozen
class _Version:
    version: int
    value: str | None  # None: a tombstone
    updated_at: float
    who: StateWriter


@attrs.frozen
class AssetEvent:
    """An asset event as recorded (kept for tests; the SQLite store has a table)."""

    asset: AssetInfo
    extra: str
    alias_name: str | None
    writer: base.Writer | None
    timestamp: float
    asset_id: int = 0


@attrs.define
class _Data:
    #: Task state by the scope its store key is (map index -1, item set).
    task: dict[base.TaskScope, dict[str, _Row]] = attrs.Factory(dict)
    #: Where each item stood in its latest expansion: (map index, label, seq) by
    #: (dag, run, task, item).
    items: dict[tuple[str, str, str, str], tuple[int, str | None, int]] = attrs.Factory(dict)
    asset: dict[int, dict[str, _Row]] = attrs.Factory(dict)
    assets: dict[int, KnownAsset] = attrs.Factory(dict)
    by_name: dict[str, int] = attrs.Factory(dict)
    by_uri: dict[str, int] = attrs.Factory(dict)
    aliases: dict[str, list[int]] = attrs.Factory(dict)
    events: list[AssetEvent] = attrs.Factory(list)
    #: Run records as the SQL stores' rows, by their keys.
    runs: dict[tuple[Any, ...], tuple[Any, ...]] = attrs.Factory(dict)
    instances: dict[tuple[Any, ...], tuple[Any, ...]] = attrs.Factory(dict)
    attempts: dict[tuple[Any, ...], tuple[Any, ...]] = attrs.Factory(dict)
    #: Each key's kept versions, oldest first, by (scope, key): the scope is a
    #: TaskScope, or an asset's id.
    history: dict[tuple[Any, str], list[_Version]] = attrs.Factory(dict)
    #: Leases by instance key: (holder, try number, expiry).
    leases: dict[tuple[Any, ...], tuple[str, int, float]] = attrs.Factory(dict)


class MemoryStore:
    """A Store that keeps state in memory; fast, and gone when the process ends."""

    def __init__(self, *, history: int = base.DEFAULT_HISTORY) -> None:
        #: How many versions of each key to keep (0: none); the runtime sets it.
        self.history = history
        self._data = _Data()
        self._open = False
        self._write_transactions = 0

    @property
    def write_transactions(self) -> int:
        """Batches that wrote, each one transaction (for tests and benchmarks)."""
        return self._write_transactions

    @property
    def events(self) -> list[AssetEvent]:
        """The asset events recorded so far, oldest first."""
        return list(self._data.events)

    def __repr__(self) -> str:
        return f"MemoryStore(<{len(self._data.task)} task instances>)"

    async def __aenter__(self) -> MemoryStore:
        """Open the store; a MemoryStore may be opened again and keeps its data."""
        self._open = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the store; its data stays for the next opening."""
        self._open = False

    #: :meth:`execute` never awaits, so a cancellation cannot leave a batch half done
    #: (the supervisor's ``read_now`` needs no shield).
    reads_cancel_safe: Final = True

    async def execute(self, ops: Sequence[base.Op], *, now: float) -> list[Any]:
        """Run ``ops`` in order; see :meth:`stateward.store.base.Store.execute`."""
        if not self._open:
            msg = "the MemoryStore is closed; open a runtime on it first"
            raise RuntimeClosedError(msg)
        results = base.apply_each(
            ops, functools.partial(self._apply, now=now), base.FenceCheck(self._holds)
        )
        if any(base.is_write(op) for op in ops):
            self._write_transactions += 1
        return results

    # -- one operation ------------------------------------------------------------------

    def _key(self, scope: base.TaskScope) -> base.TaskScope:
        """The scope as the store keys it: by its item (resolved from its map index if
        not given: the item recorded there last, else the position)."""
        item = scope.item
        if item is None:
            item = base.position_item(scope.map_index)
            run = (scope.dag_id, scope.run_id, scope.task_id)
            there = [
                (seq, k[3])
                for k, (index, _, seq) in self._data.items.items()
                if k[:3] == run and index == scope.map_index
            ]
            if scope.map_index >= 0 and there:
                item = max(there)[1]
        return base.TaskScope(scope.dag_id, scope.run_id, scope.task_id, item=item)

    def _rows(self, scope: base.Scope, create: bool = False) -> dict[str, _Row]:
        if isinstance(scope, base.TaskScope):
            scope = self._key(scope)
            table = self._data.task
            if create:
                return table.setdefault(scope, {})
            return table.get(scope, {})
        asset_id = self._asset_id(scope, register=create)
        if asset_id is None:
            return {}
        if create:
            return self._data.asset.setdefault(asset_id, {})
        return self._data.asset.get(asset_id, {})

    def _asset_id(self, scope: base.AssetScope, *, register: bool) -> int | None:
        data = self._data
        if scope.name is not None and scope.uri is not None and register:
            return self._register(AssetInfo(scope.name, scope.uri))
        found = data.by_name.get(scope.name) if scope.name is not None else None
        if found is None and scope.name is None:
            found = data.by_uri.get(scope.uri or "")
        if found is not None or not register:
            return found
        # Referenced by one side only: register that side, bind nothing else.
        return self._bind(KnownAsset(len(data.assets) + 1, scope.name, scope.uri))

    def _events(self, scope: base.AssetScope, limit: int) -> tuple[EventRecord, ...]:
        asset_id = self._asset_id(scope, register=False)
        known = self._data.assets.get(asset_id) if asset_id is not None else None
        if known is None:
            return ()
        chosen = [e for e in reversed(self._data.events) if e.asset_id == asset_id][:limit]
        return tuple(
            base.event_of((known.name, known.uri, e.timestamp, e.extra, e.alias_name,
                           *base.writer_columns(e.writer)))
            for e in chosen
        )  # fmt: skip

    def _resolve(self, asset: AssetInfo) -> KnownAsset | None:
        ids = {self._data.by_name.get(asset.name), self._data.by_uri.get(asset.uri)}
        return resolve_declaration(asset, [self._data.assets[i] for i in ids if i is not None])

    def _register(self, asset: AssetInfo) -> int:
        found = self._resolve(asset)
        if found is None:
            return self._bind(KnownAsset(len(self._data.assets) + 1, asset.name, asset.uri))
        if not found.bound(asset):
            self._bind(KnownAsset(found.id, asset.name, asset.uri))  # completes it
        return found.id

    def _bind(self, known: KnownAsset) -> int:
        self._data.assets[known.id] = known
        if known.name is not None:
            self._data.by_name[known.name] = known.id
        if known.uri is not None:
            self._data.by_uri[known.uri] = known.id
        return known.id

    def _live(self, rows: dict[str, _Row], key: str, now: float) -> _Row | None:
        row = rows.get(key)
        return row if row is not None and row.live(now) else None

    def _apply(self, op: base.Op, now: float) -> Any:
        match op:
            case base.Get(scope, key):
                row = self._live(self._rows(scope), key, now)
                return None if row is None else decode_stored(key, row.value)
            case base.Items(scope):
                rows = self._rows(scope)
                # Key order, as the SQLite store's primary key gives it.
                return {k: decode_listed(rows[k].value) for k in sorted(rows) if rows[k].live(now)}
            case base.Put(scope, key, value, expires_at, writer, who):
                self._rows(scope, create=True)[key] = _Row(
                    value, now, expires_at, writer, _index(scope)
                )
                self._version(scope, key, value, now, base.provenance(who, writer))
                return None
            case base.Delete(scope, key, who):
                rows = self._rows(scope)
                row = rows.pop(key, None)
                if row is not None:
                    self._version(scope, key, None, now, base.provenance(who))
                return row is not None and row.live(now)
            case base.Clear(scope, all_map_indices, who):
                return self._clear(scope, all_map_indices, now, base.provenance(who))
            case base.History(scope, key):
                return self._history(scope, key)
            case base.Rollback(scope, key, _, expires_at, writer):
                kept = [(v.version, v.value) for v in self._versions(scope, key)]
                restored, marked = base.rollback_to(op, kept)
                if restored is None:
                    self._rows(scope).pop(key, None)
                else:
                    self._rows(scope, create=True)[key] = _Row(
                        restored, now, expires_at, writer, _index(scope)
                    )
                self._version(scope, key, restored, now, marked)
                return None
            case base.Increment(scope, key, by, expires_at, writer, who):
                rows = self._rows(scope, create=True)
                row = self._live(rows, key, now)
                current = 0 if row is None else decode_stored(key, row.value)
                if type(current) is not int:
                    raise StateTypeError(increment_type_message(key, current), key=key)
                new = check_int_digits(key, current + by, "the result")
                rows[key] = _Row(str(new), now, expires_at, writer, _index(scope))
                self._version(scope, key, str(new), now, base.provenance(who, writer))
                return new
            case base.CompareAndSet(scope, key, expected, new, expires_at, writer, who):
                # Like the SQL stores, an unknown asset is registered only by a write.
                row = self._live(self._rows(scope), key, now)
                if row is None:
                    matches = expected is None
                else:
                    matches = expected is not None and json_equal(
                        decode_stored(key, row.value), expected
                    )
                if matches:
                    self._rows(scope, create=True)[key] = _Row(
                        new, now, expires_at, writer, _index(scope)
                    )
                    self._version(scope, key, new, now, base.provenance(who, writer))
                return matches
            case base.RegisterAssets(assets):
                check_declarations(assets)  # refuse before registering any: all or nothing
                for asset in assets:
                    self._resolve(asset)
                for asset in assets:
                    self._register(asset)
                return None
            case base.LookupAsset(name, uri):
                if name is not None:
                    found = self._data.by_name.get(name)
                else:
                    found = self._data.by_uri.get(uri or "")
                return None if found is None else self._data.assets[found].info
            case base.ResolveAlias(alias_name):
                ids = self._data.aliases.get(alias_name, [])
                return tuple(self._data.assets[i].info for i in ids)
            case base.AddEvent(asset, extra, alias_name, writer):
                asset_id = self._register(asset)
                event = AssetEvent(asset, extra, alias_name, writer, now, asset_id)
                self._data.events.append(event)
                if alias_name is not None:
                    ids = self._data.aliases.setdefault(alias_name, [])
                    if asset_id not in ids:
                        ids.append(asset_id)
                return None
            case base.ListAssetEvents(scope, limit):
                return self._events(scope, limit)
            case base.ListEntries():
                return self._list(op, now)
            case base.CountEntries(filters):
                return len(self._list(attrs.evolve(filters, limit=None, offset=0), now))
            case base.Cleanup(dry_run, orphans_before):
                return self._cleanup(now, dry_run, orphans_before)
            case base.RecordItem(dag_id, run_id, task_id, map_index, item, label):
                self._record_items(dag_id, run_id, task_id, ((map_index, item, label),))
                return None
            case base.RecordItems(dag_id, run_id, task_id, places):
                self._record_items(dag_id, run_id, task_id, places)
                return None
            case base.ListItems(dag_id, run_id):
                latest: dict[tuple[str, int], tuple[int, str | None]] = {}
                for (d, r, task_id, _), (index, label, seq) in self._data.items.items():
                    if (d, r) == (dag_id, run_id) and seq > latest.get((task_id, index), (0,))[0]:
                        latest[(task_id, index)] = (seq, label)
                return tuple(ItemPlace(t, i, latest[(t, i)][1]) for t, i in sorted(latest))
            case base.RecordRun() | base.RecordInstance() | base.RecordAttempt():
                self._record(op)
                return None
            case base.EndRun(dag_id, run_id):
                instances = self._data.instances
                states = {
                    (t, i): instances[(dag_id, run_id, t, i)][4]
                    for t, i in op.instances
                    if (dag_id, run_id, t, i) in instances
                }
                ended = op.record(states)
                self._record(ended)
                return ended.state
            case base.AcquireLease():
                return self._acquire(op, now)
            case base.FindUnheld(holder, instances):
                return tuple(
                    i
                    for i, (*key, seen_try) in enumerate(instances)
                    if self._outcome(base.LeaseProbe(holder, seen_try), tuple(key), now) != "held"
                )
            case base.RenewLeases(holder, timeout):
                leases = self._data.leases
                held = [(k, t) for k, (h, t, _) in leases.items() if h == holder]
                for instance, try_number in held:
                    leases[instance] = (holder, try_number, now + timeout)
                return tuple((*instance, try_number) for instance, try_number in held)
            case base.ReleaseLeases(holder, given):
                leases = self._data.leases
                if given is None:
                    mine = [k for k, (h, _, _) in leases.items() if h == holder]
                    for instance in mine:
                        del leases[instance]
                    return len(mine)
                released = 0
                for d, r, t, i, n in given:
                    if leases.get((d, r, t, i), ())[:2] == (holder, n):
                        del leases[(d, r, t, i)]
                        released += 1
                return released
            case base.ListRuns(dag_id, state, limit):
                runs = [
                    row
                    for row in self._data.runs.values()
                    if (dag_id is None or row[0] == dag_id) and (state is None or row[2] == state)
                ]
                runs.sort(key=run_rows.run_sort_key)
                return tuple(run_rows.run_from_row(row) for row in runs[:limit])
            case base.GetRun(dag_id, run_id, with_attempts):
                return self._get_run(dag_id, run_id, with_attempts)
            case base.GetInstance(dag_id, run_id, task_id, map_index):
                ident = (dag_id, run_id, task_id, map_index)
                record = self._data.instances.get(ident)
                if record is None:
                    return None
                attempts = [r for k, r in self._data.attempts.items() if k[:4] == ident]
                return run_rows.instance_from_rows(record, attempts)
            case base.ClearRun():
                return self._clear_run(op, now)
            case base.CleanupRuns(ended_before, dry_run):
                data = self._data
                old = [
                    k for k, row in data.runs.items()
                    if row[2] in run_rows.ENDED_RUN_STATES and row[4] is not None
                    and row[4] < ended_before
                ]  # fmt: skip
                if not dry_run:
                    for table in (data.runs, data.instances, data.attempts):
                        for k in [k for k in table if k[:2] in old]:
                            del table[k]
                return len(old)
            case _:
                msg = f"MemoryStore cannot execute {type(op).__name__}: {op!r}"
                raise TypeError(msg)

    def _record_items(
        self, dag_id: str, run_id: str, task_id: str,
        places: Sequence[tuple[int, str, str | None]],
    ) -> None:  # fmt: skip
        run = (dag_id, run_id, task_id)
        seq = max((v[2] for k, v in self._data.items.items() if k[:3] == run), default=0)
        for map_index, item, label in places:
            seq += 1
            self._data.items[(*run, item)] = (map_index, label, seq)
            position = base.position_item(map_index)
            if item != position:
                self._adopt(base.TaskScope(*run, item=position), base.TaskScope(*run, item=item))

    def _holds(self, lease: Lease) -> bool:
        held = self._data.leases.get(lease.instance)
        return held is not None and held[:2] == (lease.holder, lease.try_number)

    def _outcome(self, probe: base.LeaseProbe, key: tuple[Any, ...], now: float) -> str:
        row = self._data.instances.get(key)
        lease = self._data.leases.get(key)
        holder, expires = (None, None) if lease is None else (lease[0], lease[2])
        current = None if row is None else (row[4], row[5], holder, expires)
        return base.decide_lease(probe, current, now)[0]

    def _acquire(self, op: base.AcquireLease, now: float) -> LeaseAnswer:
        key = (op.dag_id, op.run_id, op.task_id, op.map_index)
        row = self._data.instances.get(key)
        lease = self._data.leases.get(key)
        holder, expires = (None, None) if lease is None else (lease[0], lease[2])
        current = None if row is None else (row[4], row[5], holder, expires)
        outcome, try_number = base.decide_lease(op, current, now)
        if outcome == "finished":
            assert row is not None
            attempt = self._data.attempts.get((*key, try_number))
            record = run_rows.instance_from_rows(row, [] if attempt is None else [attempt])
            return base.lease_answer(outcome, try_number, None, None, record)
        if outcome == "held":
            return base.lease_answer(outcome, try_number, holder, expires)
        if row is not None and row[4] == "running":
            left = self._data.attempts.get((*key, row[5]))
            if left is not None and left[run_rows.ATTEMPT_STATE] == "running":
                self._data.attempts[left[:5]] = _with_state(left, "abandoned")
        self._data.leases[key] = (op.holder, try_number, now + op.timeout)
        instance, attempt = run_rows.acquired_rows(op, try_number)
        self._data.attempts[attempt[:5]] = attempt
        self._data.instances[instance[:4]] = instance
        return base.lease_answer(outcome, try_number, None, None)

    def _record(self, op: base.RecordRun | base.RecordInstance | base.RecordAttempt) -> None:
        if isinstance(op, base.RecordAttempt) and op.holder is not None:
            key = (op.dag_id, op.run_id, op.task_id, op.map_index)
            lease = Lease(*key, op.holder, op.attempt.try_number)
            if not self._holds(lease):
                raise base.stale_error(lease, "the record of its end")
            if op.instance_state in base.FINAL_STATES:
                del self._data.leases[key]
        if isinstance(op, base.RecordRun):
            row = run_rows.run_row(op)
            before = self._data.runs.get(row[:2])
            if row[-1] is None and before is not None:
                row = (*row[:-1], before[-1])  # the graph is kept
            self._data.runs[row[:2]] = row
        elif isinstance(op, base.RecordInstance):
            row = run_rows.instance_row(op)
            self._data.instances[row[:4]] = row
        else:
            row = run_rows.attempt_row(op)
            self._data.attempts[row[:5]] = row
            row = run_rows.instance_row_of_attempt(op)
            self._data.instances[row[:4]] = row

    def _clear_run(self, op: base.ClearRun, now: float) -> list[tuple[str, int]] | None:
        data = self._data
        run = data.runs.get((op.dag_id, op.run_id))
        if run is None:
            return None
        rows = [r for k, r in data.instances.items() if k[:2] == (op.dag_id, op.run_id)]
        cleared = run_rows.to_clear(op, (r[2:5] for r in rows))
        for task_id, map_index in cleared:
            key = (op.dag_id, op.run_id, task_id, map_index)
            row = data.instances[key]
            data.instances[key] = (*row[:4], run_rows.CLEARED, *row[5:])
            # The lease is given up (a running attempt is fenced off) and an attempt
            # left running is recorded abandoned.
            data.leases.pop(key, None)
            for ident, attempt in list(data.attempts.items()):
                if ident[:4] == key and attempt[run_rows.ATTEMPT_STATE] == "running":
                    data.attempts[ident] = _with_state(attempt, "abandoned")
            if not op.keep_task_state:  # by item, each key with its tombstone
                self._clear(base.TaskScope(*key), False, now, base.provenance(None))
        if cleared:
            data.runs[run[:2]] = (*run[:2], run_rows.QUEUED, *run[3:])
        return cleared

    def _get_run(self, dag_id: str, run_id: str, with_attempts: bool = True) -> Any:
        run = self._data.runs.get((dag_id, run_id))
        if run is None:
            return None
        instances = [r for k, r in self._data.instances.items() if k[:2] == (dag_id, run_id)]
        attempts = (
            [r for k, r in self._data.attempts.items() if k[:2] == (dag_id, run_id)]
            if with_attempts
            else []
        )
        return run_rows.assemble(run, instances, attempts)

    def _clear(self, scope: base.Scope, all_map_indices: bool, now: float, who: StateWriter) -> int:
        if isinstance(scope, base.TaskScope) and all_map_indices:
            fleet: list[base.Scope] = [
                s
                for s in self._data.task
                if (s.dag_id, s.run_id, s.task_id) == (scope.dag_id, scope.run_id, scope.task_id)
            ]
        else:
            fleet = [scope]
        count = 0
        for each in fleet:
            rows = self._rows(each)
            for key in sorted(rows):
                self._version(each, key, None, now, who)
            count += len(rows)
            rows.clear()
        return count

    def _adopt(self, position: base.TaskScope, item: base.TaskScope) -> None:
        """Move state (and history) kept by position to the item, if it has none."""
        task = self._data.task
        if task.get(position) and not task.get(item):
            task[item] = task.pop(position)
        history = self._data.history
        if any(k[0] == item for k in history):
            return
        for found in [k for k in history if k[0] == position]:
            history[(item, found[1])] = history.pop(found)

    # -- history ------------------------------------------------------------------------

    def _history_key(self, scope: base.Scope, key: str) -> tuple[Any, str] | None:
        if isinstance(scope, base.TaskScope):
            return (self._key(scope), key)
        asset_id = self._asset_id(scope, register=False)
        return None if asset_id is None else (asset_id, key)

    def _versions(self, scope: base.Scope, key: str) -> list[_Version]:
        found = self._history_key(scope, key)
        return [] if found is None else self._data.history.get(found, [])

    def _version(
        self, scope: base.Scope, key: str, value: str | None, now: float, who: StateWriter
    ) -> None:
        if self.history <= 0:
            return
        found = self._history_key(scope, key)
        assert found is not None, "a scope written to is known"
        kept = self._data.history.setdefault(found, [])
        number = kept[-1].version + 1 if kept else 1
        kept.append(_Version(number, value, now, who))
        del kept[: -self.history]

    def _history(self, scope: base.Scope, key: str) -> tuple[StateVersion, ...]:
        return tuple(
            StateVersion(
                version=v.version,
                value=None if v.value is None else decode_listed(v.value),
                deleted=v.value is None,
                updated_at=v.updated_at,
                updated_by=v.who,
            )
            for v in reversed(self._versions(scope, key))
        )

    def _list(self, f: base.ListEntries, now: float) -> tuple[StateEntry, ...]:
        entries: list[StateEntry] = []
        want_task = f.scope in (None, "task") and f.asset_name is None
        want_asset = f.scope in (None, "asset") and f.dag_id is f.run_id is f.task_id is None
        if want_task:
            for s, rows in self._data.task.items():
                if (
                    (f.dag_id is not None and s.dag_id != f.dag_id)
                    or (f.run_id is not None and s.run_id != f.run_id)
                    or (f.task_id is not None and s.task_id != f.task_id)
                ):
                    continue
                stands = self._data.items.get((s.dag_id, s.run_id, s.task_id, s.item or ""))
                for key, row in rows.items():
                    if f.key is not None and key != f.key:
                        continue
                    map_index = row.map_index if stands is None else stands[0]
                    if f.map_index is not None and map_index != f.map_index:
                        continue
                    if f.include_expired or row.live(now):
                        entries.append(
                            StateEntry(
                                "task", key, decode_listed(row.value), row.updated_at,
                                row.expires_at, s.dag_id, s.run_id, s.task_id, map_index,
                                writer=None if row.writer is None else row.writer.label,
                                item=None if stands is None else stands[1],
                            )
                        )  # fmt: skip
        if want_asset and f.map_index is None:
            for asset_id, rows in self._data.asset.items():
                asset = self._data.assets[asset_id].info
                if f.asset_name is not None and asset.name != f.asset_name:
                    continue
                for key, row in rows.items():
                    if f.key is not None and key != f.key:
                        continue
                    if f.include_expired or row.live(now):
                        entries.append(
                            StateEntry(
                                "asset", key, decode_listed(row.value), row.updated_at,
                                row.expires_at, asset_name=asset.name, asset_uri=asset.uri,
                                writer=None if row.writer is None else row.writer.label,
                            )
                        )  # fmt: skip
        entries.sort(key=base.entry_sort_key)
        end = None if f.limit is None else f.offset + f.limit
        return tuple(entries[f.offset : end])

    def _cleanup(self, now: float, dry_run: bool, orphans_before: float | None) -> int:
        count = 0
        tables: list[tuple[base.Scope, dict[str, _Row]]] = list(self._data.task.items())
        for asset_id, rows in self._data.asset.items():
            known = self._data.assets[asset_id]
            tables.append((base.AssetScope(known.name, known.uri), rows))
        for scope, table in tables:
            expired = sorted(key for key, row in table.items() if not row.live(now))
            count += len(expired)
            if not dry_run:
                for key in expired:
                    del table[key]
                    self._version(scope, key, None, now, base.CLEANUP_WRITER)
        if dry_run:
            return count
        # A run's record of where its items stood goes when the task holds nothing.
        held = {(s.dag_id, s.run_id, s.task_id) for s, rows in self._data.task.items() if rows}
        held |= {
            (k[0].dag_id, k[0].run_id, k[0].task_id)
            for k in self._data.history
            if isinstance(k[0], base.TaskScope)
        }
        for item in [k for k in self._data.items if k[:3] not in held]:
            del self._data.items[item]
        history = self._data.history
        for found in list(history):
            del history[found][: -self.history or len(history[found])]
            scope = found[0]
            if not history[found] or (
                isinstance(scope, base.TaskScope)
                and orphans_before is not None
                and not self._data.task.get(scope)
                and all(
                    v.updated_at <= orphans_before
                    for k, kept in history.items()
                    if k[0] == scope
                    for v in kept
                )
            ):
                del history[found]
        return count


def _index(scope: base.Scope) -> int:
    return scope.map_index if isinstance(scope, base.TaskScope) else -1


def _with_state(row: tuple[Any, ...], state: str) -> tuple[Any, ...]:
    at = run_rows.ATTEMPT_STATE
    return (*row[:at], state, *row[at + 1 :])


def open_memory(url: str, /, *, create: bool = True) -> MemoryStore:
    """The opener :func:`~stateward.store.open_store` calls for ``memory:``: a new,
    empty MemoryStore (``create`` changes nothing: there is nothing to miss)."""
    return MemoryStore()
