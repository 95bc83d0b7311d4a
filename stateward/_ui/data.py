"""What the API and the pages read and write, through the runtime's out-of-band admin.

Both front ends call :class:`UiData`; it turns what is missing into
:class:`NotFoundError` (404) and what is refused into :class:`InvalidError` (422), with
the wording the CLI uses for the same refusal.

Asset ids: Airflow's REST API names an asset by an integer id. stateward's stores key
assets by name (and URI) and keep no id that survives every store, so the id here is
derived from the name (:func:`asset_id`: the first 6 bytes of its SHA-256, a positive
integer that JSON and JavaScript hold exactly). An id is resolved by the assets this
process has seen (looked up by name or URI, or listed) and, failing that, by the assets
that have state; an asset that is registered but has neither is found by name or URI
(``/api/v2/stateward/assets?name=...``), which also gives its id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from typing import Any, Final, Literal

import attrs
import trio

from .._context.accessors import NEVER_EXPIRE, RetentionLike
from .._errors import StateTypeError, StateValueError
from .._protocol import messages as m
from .._records import (
    AssetEvent,
    AssetInfo,
    DagRunRecord,
    StateEntry,
    StateVersion,
    TaskInstanceRecord,
)
from .._records import iso_time as iso
from .._runtime.runtime import Runtime
from .._values import check_key

#: ``expires_at`` of Airflow's task-state body: the runtime's default retention.
DEFAULT_EXPIRY: Final = "default"
#: What a write's expiry may be: the default, never (None), or a Unix time.
Expiry = Literal["default"] | float | None


class UiError(Exception):
    """A request the UI refuses; ``status`` is the HTTP status, ``detail`` the message."""

    status = 400

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFoundError(UiError):
    """No such run, task instance, asset, key or attempt."""

    status = 404


class InvalidError(UiError):
    """A bad key, value or parameter; ``loc`` says where, as FastAPI's errors do."""

    status = 422

    def __init__(self, detail: str, loc: tuple[str | int, ...] = ("body", "value")) -> None:
        super().__init__(detail)
        self.loc = loc


def asset_id(name: str) -> int:
    """The integer id the API gives the asset named ``name`` (stable, from the name)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:6], "big")


@attrs.frozen
class WriterRef:
    """The task instance named by a provenance label (``dag/run/task[i] try n``)."""

    dag_id: str
    run_id: str
    task_id: str
    map_index: int


def parse_writer(label: str | None) -> WriterRef | None:
    """The task instance of a writer label; ``None`` for an out-of-band write.

    Dag and task ids hold no ``/`` (run ids may), so the run id is what lies between
    the first and the last slash.
    """
    if label is None:
        return None
    dag_id, _, rest = label.partition("/")
    run_id, _, task = rest.rpartition("/")
    task = task.rsplit(" try ", 1)[0]
    map_index = -1
    if task.endswith("]") and "[" in task:
        task, _, index = task[:-1].rpartition("[")
        map_index = int(index) if index.isdigit() else -1
    return WriterRef(dag_id, run_id, task, map_index)


def check_value(value: Any) -> Any:
    """Refuse a null value as the CLI does (the store refuses the rest on write)."""
    if value is None:
        msg = "null cannot be stored; to remove the key send DELETE to the key's URL"
        raise InvalidError(msg)
    return value


def checked_key(key: str) -> str:
    try:
        return check_key(key)
    except (StateValueError, StateTypeError) as exc:
        raise InvalidError(str(exc), ("path", "key")) from None


@attrs.define(eq=False)
class UiData:
    """The runtime's runs and state as the API and the pages need them."""

    rt: Runtime
    #: Assets seen by this process, by the id :func:`asset_id` gives them.
    _assets: dict[int, AssetInfo] = attrs.field(factory=dict)

    # -- runs -----------------------------------------------------------------------------

    async def runs(
        self, dag_id: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[DagRunRecord]:
        """Recorded runs, newest first, without their instances."""
        return await self.rt.runs.list(dag_id=dag_id, state=state, limit=limit)

    async def run(self, dag_id: str, run_id: str) -> DagRunRecord:
        """One run with its instances and attempts."""
        found = await self.rt.runs.get(dag_id, run_id)
        if found is None:
            msg = f"no run {run_id!r} of Dag {dag_id!r} is recorded"
            raise NotFoundError(msg)
        return found

    async def runs_with_instances(self, runs: list[DagRunRecord]) -> list[DagRunRecord]:
        """Each listed run's full record, fetched concurrently (the supervisor batches
        concurrent reads); a run deleted since it was listed is left out."""
        found: list[DagRunRecord | None] = [None] * len(runs)

        async def fetch(index: int, run: DagRunRecord) -> None:
            found[index] = await self.rt.runs.get(run.dag_id, run.run_id)

        async with trio.open_nursery() as nursery:
            for index, run in enumerate(runs):
                nursery.start_soon(fetch, index, run)
        return [run for run in found if run is not None]

    async def instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int
    ) -> TaskInstanceRecord | None:
        """The recorded task instance, or ``None`` (unknown, or state seeded without a run)."""
        return await self.rt.runs.get_instance(dag_id, run_id, task_id, map_index)

    async def require_instance(
        self, dag_id: str, run_id: str, task_id: str, map_index: int | None
    ) -> None:
        """Raise 404 unless the task instance is recorded or has state (seeded, say).

        ``map_index`` None: any map index of the task. One keyed read of the instance's
        record (of the run's, for any map index), and when there is none a read of at
        most one of its keys (expired keys count: it existed).
        """
        if map_index is not None:
            if await self.instance(dag_id, run_id, task_id, map_index) is not None:
                return
        else:
            found = await self.rt.runs.get(dag_id, run_id)
            if any(ti.task_id == task_id for ti in (found.instances if found else ())):
                return
        held = await self.rt.state.list(
            scope="task", dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
            include_expired=True, limit=1,
        )  # fmt: skip
        if held:
            return
        index = "" if map_index is None or map_index < 0 else f" map index {map_index}"
        msg = (
            f"no task instance {task_id!r}{index} in run {run_id!r} of Dag {dag_id!r}: "
            "neither recorded nor holding state"
        )
        raise NotFoundError(msg)

    # -- task state ---------------------------------------------------------------------

    async def task_page(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, limit: int, offset: int
    ) -> tuple[list[StateEntry], int]:
        """A page of the instance's live keys, by key, and how many it holds in all
        (404 unless the instance is recorded or holds state). The store reads the page
        and counts; it does not read every key."""
        await self.require_instance(dag_id, run_id, task_id, map_index)
        state = self.rt.state
        page = await state.list(
            scope="task", dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
            limit=limit, offset=offset,
        )  # fmt: skip
        total = await state.count(
            scope="task", dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index
        )
        return page, total

    async def task_entry(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str
    ) -> StateEntry:
        """One live key of the instance, with its metadata (one keyed read)."""
        found = await self.rt.state.list(
            scope="task", dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index,
            key=key,
        )  # fmt: skip
        if found:
            return found[0]
        await self.require_instance(dag_id, run_id, task_id, map_index)
        msg = f"no key {key!r} in the task state of {dag_id}/{run_id}/{task_id}"
        raise NotFoundError(msg)

    async def set_task(
        self,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int,
        key: str,
        value: Any,
        expiry: Expiry = DEFAULT_EXPIRY,
    ) -> None:
        """Write a key of the instance out of band (404 for an unknown instance)."""
        key = checked_key(key)
        check_value(value)
        retention = self._retention(expiry)
        await self.require_instance(dag_id, run_id, task_id, map_index)
        accessor = self.rt.state.task(dag_id, run_id, task_id, map_index)
        try:
            await accessor.aset(key, value, retention=retention)
        except (StateValueError, StateTypeError) as exc:
            raise InvalidError(str(exc)) from None

    async def delete_task(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str
    ) -> None:
        """Delete a key (absent: nothing to do)."""
        key = checked_key(key)
        await self.require_instance(dag_id, run_id, task_id, map_index)
        await self.rt.state.task(dag_id, run_id, task_id, map_index).adelete(key)

    async def clear_task(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, *, all_map_indices: bool
    ) -> None:
        """Delete every key of the instance (or of every map index of the task)."""
        await self.require_instance(dag_id, run_id, task_id, None if all_map_indices else map_index)
        accessor = self.rt.state.task(dag_id, run_id, task_id, map_index)
        await accessor.aclear(all_map_indices=all_map_indices)

    def _retention(self, expiry: Expiry) -> RetentionLike:
        if expiry == DEFAULT_EXPIRY:
            return None
        if expiry is None:
            return NEVER_EXPIRE
        assert isinstance(expiry, float)
        seconds = expiry - self.rt.wall_clock()
        if seconds <= 0:
            msg = f"expires_at {iso(expiry)} is in the past; delete the key to drop it now"
            raise InvalidError(msg, ("body", "expires_at"))
        return seconds

    # -- assets ---------------------------------------------------------------------------

    async def asset_by_ref(self, name: str | None = None, uri: str | None = None) -> AssetInfo:
        """The registered asset with this name or URI."""
        response = await self.rt.admin.request(m.GetAssetByRef(name, uri))
        info: AssetInfo | None = response.asset
        if info is None:
            what = f"name {name!r}" if name is not None else f"URI {uri!r}"
            msg = f"no asset with {what} is registered"
            raise NotFoundError(msg)
        self._assets[asset_id(info.name)] = info
        return info

    async def asset(self, ident: int) -> AssetInfo:
        """The asset with API id ``ident``."""
        if ident not in self._assets:
            for entry in await self.rt.state.list(scope="asset", include_expired=True):
                if entry.asset_name is not None:
                    info = AssetInfo(entry.asset_name, entry.asset_uri or entry.asset_name)
                    self._assets.setdefault(asset_id(info.name), info)
        if ident not in self._assets:
            msg = (
                f"no asset with id {ident}; look an asset up by name or URI with "
                "/api/v2/stateward/assets?name=NAME to get its id"
            )
            raise NotFoundError(msg)
        # The name is the asset's identity; re-read it in case it was deleted or renamed.
        return await self.asset_by_ref(name=self._assets[ident].name)

    async def asset_page(
        self, info: AssetInfo, limit: int, offset: int
    ) -> tuple[list[StateEntry], int]:
        """A page of the asset's live keys, by key, and how many it holds in all."""
        page = await self.rt.state.list(
            scope="asset", asset_name=info.name, limit=limit, offset=offset
        )
        total = await self.rt.state.count(scope="asset", asset_name=info.name)
        return page, total

    async def asset_entry(self, info: AssetInfo, key: str) -> StateEntry:
        """One live key of the asset (one keyed read)."""
        found = await self.rt.state.list(scope="asset", asset_name=info.name, key=key)
        if found:
            return found[0]
        msg = f"no key {key!r} in the state of asset {info.name!r}"
        raise NotFoundError(msg)

    async def set_asset(self, info: AssetInfo, key: str, value: Any) -> None:
        """Write a key of the asset out of band (the asset's default retention)."""
        key = checked_key(key)
        check_value(value)
        try:
            await self.rt.state.asset(name=info.name, uri=info.uri).aset(key, value)
        except (StateValueError, StateTypeError) as exc:
            raise InvalidError(str(exc)) from None

    async def delete_asset(self, info: AssetInfo, key: str) -> None:
        """Delete a key of the asset (absent: nothing to do)."""
        key = checked_key(key)
        await self.rt.state.asset(name=info.name, uri=info.uri).adelete(key)

    async def clear_asset(self, info: AssetInfo) -> None:
        """Delete every key of the asset."""
        await self.rt.state.asset(name=info.name, uri=info.uri).aclear()

    async def asset_events(self, info: AssetInfo, limit: int = 100) -> list[AssetEvent]:
        """The events emitted to the asset, newest first, at most ``limit``."""
        return await self.rt.state.asset_events(name=info.name, limit=limit)

    async def asset_names(self) -> list[AssetInfo]:
        """The assets that have state, by name (for search and the grid's asset list)."""
        found: dict[str, AssetInfo] = {}
        for entry in await self.rt.state.list(scope="asset"):
            if entry.asset_name is not None:
                info = AssetInfo(entry.asset_name, entry.asset_uri or entry.asset_name)
                found.setdefault(info.name, info)
                self._assets.setdefault(asset_id(info.name), info)
        return sorted(found.values(), key=lambda a: a.name)

    # -- history and rollback -------------------------------------------------------------

    async def task_history(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str
    ) -> list[StateVersion]:
        """The kept versions of a key of the instance, newest first (404: none kept)."""
        key = checked_key(key)
        await self.require_instance(dag_id, run_id, task_id, map_index)
        accessor = self.rt.state.task(dag_id, run_id, task_id, map_index)
        versions = await accessor.ahistory(key)
        index = f"[{map_index}]" if map_index >= 0 else ""
        return _found(versions, key, f"the task state of {dag_id}/{run_id}/{task_id}{index}")

    async def task_histories(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, keys: list[str]
    ) -> dict[str, list[StateVersion]]:
        """Each key's kept versions, read concurrently (for a page of keys)."""
        accessor = self.rt.state.task(dag_id, run_id, task_id, map_index)
        return await _histories(accessor.ahistory, keys)

    async def rollback_task(
        self, dag_id: str, run_id: str, task_id: str, map_index: int, key: str, version: int
    ) -> None:
        """Write a kept version of the instance's key again (404: no such version)."""
        versions = await self.task_history(dag_id, run_id, task_id, map_index, key)
        index = f"[{map_index}]" if map_index >= 0 else ""
        _check_version(versions, key, version, f"{dag_id}/{run_id}/{task_id}{index}")
        accessor = self.rt.state.task(dag_id, run_id, task_id, map_index)
        try:
            await accessor.arollback(key, version)
        except (StateValueError, StateTypeError) as exc:
            raise InvalidError(str(exc), ("body", "version")) from None

    async def asset_history(self, info: AssetInfo, key: str) -> list[StateVersion]:
        """The kept versions of a key of the asset, newest first (404: none kept)."""
        key = checked_key(key)
        accessor = self.rt.state.asset(name=info.name, uri=info.uri)
        return _found(await accessor.ahistory(key), key, f"the state of asset {info.name!r}")

    async def asset_histories(
        self, info: AssetInfo, keys: list[str]
    ) -> dict[str, list[StateVersion]]:
        """Each key's kept versions, read concurrently (for a page of keys)."""
        accessor = self.rt.state.asset(name=info.name, uri=info.uri)
        return await _histories(accessor.ahistory, keys)

    async def rollback_asset(self, info: AssetInfo, key: str, version: int) -> None:
        """Write a kept version of the asset's key again (404: no such version)."""
        versions = await self.asset_history(info, key)
        _check_version(versions, key, version, f"asset {info.name!r}")
        accessor = self.rt.state.asset(name=info.name, uri=info.uri)
        try:
            await accessor.arollback(key, version)
        except (StateValueError, StateTypeError) as exc:
            raise InvalidError(str(exc), ("body", "version")) from None


def _found(versions: list[StateVersion], key: str, where: str) -> list[StateVersion]:
    if not versions:
        msg = (
            f"no history of key {key!r} in {where}: "
            "it was never written, or its history was removed"
        )
        raise NotFoundError(msg)
    return versions


def _check_version(versions: list[StateVersion], key: str, version: int, where: str) -> None:
    if all(v.version != version for v in versions):
        kept = ", ".join(str(v.version) for v in versions)
        msg = f"key {key!r} of {where} has no version {version}; its history holds {kept}"
        raise NotFoundError(msg)


async def _histories(
    read: Callable[[str], Awaitable[list[StateVersion]]], keys: list[str]
) -> dict[str, list[StateVersion]]:
    found: dict[str, list[StateVersion]] = {}

    async def fetch(key: str) -> None:
        found[key] = await read(key)

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(fetch, key)
    return {key: found[key] for key in keys}
