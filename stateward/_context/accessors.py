"""The state accessors a task sees: ``context["task_state"]`` and ``context["asset_state"]``.

Each accessor talks to the supervisor through a client bound to the task instance, so
it can only reach what the task owns. Every method has an async twin prefixed ``a``:
call the plain one from a sync task (it runs in a worker thread) and ``await`` the twin
from an ``async def`` task. Keys are also reachable as items (``task_state["k"]``,
missing: ``KeyError``) and attributes (``task_state.k``, missing: ``AttributeError``);
a key named like a method is reached as an item.

Templates get read-only snapshots (:class:`StateView`) instead, taken just before
rendering, so a template reads state without a round trip per key and cannot write.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar, Final, Generic, NoReturn, TypeAlias, TypeVar

import sniffio

from .._assets import Asset, AssetAlias, AssetKey, AssetNameRef, AssetUriRef, describe
from .._construction import NoPublicConstructor
from .._errors import StateTypeError, StateValueError, TemplateWriteError, UndeclaredAssetError
from .._protocol import messages as m
from .._records import AssetInfo, StateVersion
from .._values import check_key
from .client import StateClient


class Retention(enum.Enum):
    """Special retention values."""

    #: Keep the key until it is deleted or cleared.
    NEVER_EXPIRE = "never_expire"


#: ``set(..., retention=NEVER_EXPIRE)`` keeps a key forever.
NEVER_EXPIRE: Final = Retention.NEVER_EXPIRE
#: What ``retention=`` accepts: a duration, seconds, NEVER_EXPIRE, or None (the default).
RetentionLike: TypeAlias = timedelta | float | Retention | None
#: The default retention of task state.
DEFAULT_TASK_RETENTION: Final = timedelta(days=30)

_MISSING: Final = object()


def expires_at(
    retention: RetentionLike,
    default: timedelta | None,
    now: Callable[[], float],
    key: object = None,
) -> float | None:
    """Turn a ``retention=`` argument into the Unix time the key expires (None: never).

    ``key`` is the key being written, carried by the error as ``.key``.

    Raises:
        StateValueError: a retention that is not positive.
        TypeError: a retention of another type.
    """
    if retention is None:
        if default is None:
            return None
        retention = default
    if retention is NEVER_EXPIRE:
        return None
    if isinstance(retention, timedelta):
        seconds = retention.total_seconds()
    elif isinstance(retention, int | float) and not isinstance(retention, bool):
        seconds = float(retention)
    else:
        msg = (
            f"retention must be a timedelta, a number of seconds, NEVER_EXPIRE or None, "
            f"got {type(retention).__name__} {retention!r}"
        )
        raise TypeError(msg)
    if not seconds > 0:
        msg = f"retention must be positive, got {retention!r}; delete the key to drop it now"
        raise StateValueError(msg, key=key)
    return now() + seconds


def _writes(method: Callable[..., Any]) -> Callable[..., Any]:
    # jinja's sandbox refuses to call anything marked alters_data.
    method.alters_data = True  # type: ignore[attr-defined]
    return method


class _StateAccessor(metaclass=NoPublicConstructor):
    """The methods shared by task-state and asset-state accessors."""

    __slots__ = ("_client", "_default_retention", "_label", "_now")

    def __init__(
        self,
        client: StateClient,
        label: str,
        default_retention: timedelta | None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._label = label
        self._default_retention = default_retention
        self._now = now

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self._label}>"

    # Each subclass says which messages its operations are.
    def _get_msg(self, key: str) -> Any:
        raise NotImplementedError

    def _set_msg(self, key: str, value: Any, expires: float | None) -> Any:
        raise NotImplementedError

    def _delete_msg(self, key: str) -> Any:
        raise NotImplementedError

    def _increment_msg(self, key: str, by: int, expires: float | None) -> Any:
        raise NotImplementedError

    def _cas_msg(self, key: str, expected: Any, new: Any, expires: float | None) -> Any:
        raise NotImplementedError

    def _list_msg(self) -> Any:
        raise NotImplementedError

    def _history_msg(self, key: str) -> Any:
        raise NotImplementedError

    def _rollback_msg(self, key: str, version: int, expires: float | None) -> Any:
        raise NotImplementedError

    def _sync(self, request: Any, method: str) -> Any:
        return self._client.request_sync(request, f"{self._label}.{method}")

    async def _arequest(self, request: Any, method: str) -> Any:
        # Asyncio task code (Airflow's async tasks) runs on a loop of its own in a worker
        # thread: it reaches the runtime through the sync bridge, in a thread of
        # asyncio's so that the loop keeps running while it waits.
        if sniffio.current_async_library() == "asyncio":
            import asyncio  # loaded already: the caller runs on it

            return await asyncio.to_thread(self._sync, request, method)
        return await self._client.request(request)

    def _expires(self, retention: RetentionLike, key: object) -> float | None:
        return expires_at(retention, self._default_retention, self._now, key)

    # -- reading ------------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of ``key``, or ``default`` if it is absent or expired."""
        value = self._sync(self._get_msg(key), "get").value
        return default if value is None else value

    async def aget(self, key: str, default: Any = None) -> Any:
        """Async twin of :meth:`get`."""
        value = (await self._arequest(self._get_msg(key), "get")).value
        return default if value is None else value

    def items(self) -> list[tuple[str, Any]]:
        """Return every live ``(key, value)`` pair."""
        return list(self._sync(self._list_msg(), "items").items.items())

    async def aitems(self) -> list[tuple[str, Any]]:
        """Async twin of :meth:`items`."""
        return list((await self._arequest(self._list_msg(), "items")).items.items())

    def history(self, key: str) -> list[StateVersion]:
        """Return the kept versions of ``key``, newest first.

        Every change of the key (set, increment, a compare-and-set that won, delete,
        clear, expiry removed by cleanup, rollback) added one; the runtime keeps the
        newest ``history`` of them (``open_runtime(history=10)``). A task reads only
        its own task state's history and that of the assets it declared.
        """
        return list(self._sync(self._history_msg(key), "history").versions)

    async def ahistory(self, key: str) -> list[StateVersion]:
        """Async twin of :meth:`history`."""
        return list((await self._client.request(self._history_msg(key))).versions)

    # -- writing ------------------------------------------------------------------------

    @_writes
    def rollback(self, key: str, version: int, *, retention: RetentionLike = None) -> None:
        """Write version ``version`` of ``key`` again, as a new version (out of band only).

        A version that removed the key removes it again. The new version's provenance
        says it is a rollback to ``version``, and by whom.

        Args:
            key: The key.
            version: A version its :meth:`history` holds.
            retention: As for :meth:`set` (the restored value's expiry starts now).

        Raises:
            StateValueError: the history holds no such version.
            StateScopeError: called from a task; tasks cannot roll back.
        """
        request = self._rollback_msg(key, version, self._expires(retention, key))
        self._sync(request, "rollback")

    @_writes
    async def arollback(self, key: str, version: int, *, retention: RetentionLike = None) -> None:
        """Async twin of :meth:`rollback`."""
        await self._client.request(self._rollback_msg(key, version, self._expires(retention, key)))

    @_writes
    def set(self, key: str, value: Any, *, retention: RetentionLike = None) -> None:
        """Store ``value`` (a JSON value, not None) under ``key``.

        Args:
            key: A non-empty str of at most 512 characters.
            value: str, int, finite float, bool, list, or dict with str keys, nested.
            retention: How long to keep it: a timedelta or seconds, ``NEVER_EXPIRE``,
                or None for the runtime's default for this kind of state.

        Raises:
            StateValueError: ``None``, NaN/infinity, a bad key, or a value too large.
            StateTypeError: a value that is not JSON; the message says where.
        """
        self._sync(self._set_msg(key, value, self._expires(retention, key)), "set")

    @_writes
    async def aset(self, key: str, value: Any, *, retention: RetentionLike = None) -> None:
        """Async twin of :meth:`set`."""
        await self._arequest(self._set_msg(key, value, self._expires(retention, key)), "set")

    @_writes
    def delete(self, key: str) -> None:
        """Delete ``key``; deleting an absent key is not an error."""
        self._sync(self._delete_msg(key), "delete")

    @_writes
    async def adelete(self, key: str) -> None:
        """Async twin of :meth:`delete`."""
        await self._arequest(self._delete_msg(key), "delete")

    @_writes
    def increment(self, key: str, by: int = 1, *, retention: RetentionLike = None) -> int:
        """Atomically add ``by`` to an int key (absent counts as 0); return the new value.

        Raises:
            StateTypeError: the key holds something other than an int.
        """
        request = self._increment_msg(key, by, self._expires(retention, key))
        value: int = self._sync(request, "increment").value
        return value

    @_writes
    async def aincrement(self, key: str, by: int = 1, *, retention: RetentionLike = None) -> int:
        """Async twin of :meth:`increment`."""
        request = self._increment_msg(key, by, self._expires(retention, key))
        value: int = (await self._arequest(request, "increment")).value
        return value

    @_writes
    def compare_and_set(
        self, key: str, expected: Any, new: Any, *, retention: RetentionLike = None
    ) -> bool:
        """Atomically set ``key`` to ``new`` if it holds ``expected``; return whether it did.

        ``expected=None`` means "the key is absent". Values compare as JSON, exactly:
        ``True`` does not equal ``1``, nor ``1`` equal ``1.0``.
        """
        request = self._cas_msg(key, expected, new, self._expires(retention, key))
        swapped: bool = self._sync(request, "compare_and_set").swapped
        return swapped

    @_writes
    async def acompare_and_set(
        self, key: str, expected: Any, new: Any, *, retention: RetentionLike = None
    ) -> bool:
        """Async twin of :meth:`compare_and_set`."""
        request = self._cas_msg(key, expected, new, self._expires(retention, key))
        swapped: bool = (await self._arequest(request, "compare_and_set")).swapped
        return swapped

    # -- mapping and attribute access ---------------------------------------------------

    def __getitem__(self, key: str) -> Any:
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    @_writes
    def __setitem__(self, key: str, value: Any) -> None:
        self.set(key, value)

    @_writes
    def __delitem__(self, key: str) -> None:
        self.delete(key)

    def __contains__(self, key: object) -> bool:
        # As on a mapping: a key that could never be stored is simply not there.
        try:
            key = check_key(key)
        except (StateTypeError, StateValueError):
            return False
        return self.get(key, _MISSING) is not _MISSING

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not methods or slots.
        if name.startswith("_"):
            raise AttributeError(name)
        value = self.get(name, _MISSING)
        if value is _MISSING:
            msg = f"{self._label} has no key {name!r}"
            raise AttributeError(msg, name=name, obj=self)
        return value


class TaskStateAccessor(_StateAccessor):
    """``context["task_state"]``: the state of one task instance, shared by its retries.

    Only the runtime creates accessors (``context["task_state"]`` in a task,
    ``rt.state.task(...)`` out of band): calling the class raises ``TypeError``.
    """

    __slots__ = ()
    _how_to_get: ClassVar[str] = (
        "the runtime binds it to a task instance; use context['task_state'] in a task, "
        "or rt.state.task(dag_id, run_id, task_id, map_index) out of band"
    )

    def _get_msg(self, key: str) -> Any:
        return m.GetTaskState(key)

    def _set_msg(self, key: str, value: Any, expires: float | None) -> Any:
        return m.SetTaskState(key, value, expires)

    def _delete_msg(self, key: str) -> Any:
        return m.DeleteTaskState(key)

    def _increment_msg(self, key: str, by: int, expires: float | None) -> Any:
        return m.IncrementTaskState(key, by, expires)

    def _cas_msg(self, key: str, expected: Any, new: Any, expires: float | None) -> Any:
        return m.CompareAndSetTaskState(key, expected, new, expires)

    def _list_msg(self) -> Any:
        return m.ListTaskState()

    def _history_msg(self, key: str) -> Any:
        return m.GetTaskStateHistory(key)

    def _rollback_msg(self, key: str, version: int, expires: float | None) -> Any:
        return m.RollbackTaskState(key, version, expires)

    @_writes
    def clear(self, *, all_map_indices: bool = False) -> None:
        """Delete every key of this task instance.

        Args:
            all_map_indices: Also clear every other map index of the same task in the
                same run (the whole mapped fleet).
        """
        self._sync(m.ClearTaskState(all_map_indices), "clear")

    @_writes
    async def aclear(self, *, all_map_indices: bool = False) -> None:
        """Async twin of :meth:`clear`."""
        await self._arequest(m.ClearTaskState(all_map_indices), "clear")


class AssetStateAccessor(_StateAccessor):
    """The state of one asset, shared by every run and task that declares it.

    Reached as ``context["asset_state"][asset]`` (or directly as
    ``context["asset_state"]`` when the task has exactly one inlet, or no inlets and
    exactly one outlet), or ``rt.state.asset(...)`` out of band; only the runtime
    creates it.
    """

    __slots__ = ("_asset", "_by_uri")
    _how_to_get: ClassVar[str] = (
        "the runtime binds it to a caller; use context['asset_state'][asset] in a task "
        "that declares the asset, or rt.state.asset(asset) out of band"
    )

    def __init__(
        self,
        client: StateClient,
        asset: AssetInfo,
        default_retention: timedelta | None = None,
        now: Callable[[], float] = time.time,
        *,
        by_uri: bool = False,
    ) -> None:
        label = f"asset_state[{asset.uri if by_uri else asset.name!r}]"
        super().__init__(client, label, default_retention, now)
        self._asset = asset
        self._by_uri = by_uri

    @property
    def asset(self) -> Asset:
        """The asset this accessor reads and writes."""
        return Asset(self._asset.name, self._asset.uri)

    def _get_msg(self, key: str) -> Any:
        a = self._asset
        return (
            m.GetAssetStateByUri(a.uri, key) if self._by_uri else m.GetAssetStateByName(a.name, key)
        )

    def _set_msg(self, key: str, value: Any, expires: float | None) -> Any:
        a = self._asset
        if self._by_uri:
            return m.SetAssetStateByUri(a.uri, key, value, expires)
        return m.SetAssetStateByName(a.name, key, value, expires)

    def _delete_msg(self, key: str) -> Any:
        a = self._asset
        if self._by_uri:
            return m.DeleteAssetStateByUri(a.uri, key)
        return m.DeleteAssetStateByName(a.name, key)

    def _increment_msg(self, key: str, by: int, expires: float | None) -> Any:
        a = self._asset
        if self._by_uri:
            return m.IncrementAssetStateByUri(a.uri, key, by, expires)
        return m.IncrementAssetStateByName(a.name, key, by, expires)

    def _cas_msg(self, key: str, expected: Any, new: Any, expires: float | None) -> Any:
        a = self._asset
        if self._by_uri:
            return m.CompareAndSetAssetStateByUri(a.uri, key, expected, new, expires)
        return m.CompareAndSetAssetStateByName(a.name, key, expected, new, expires)

    def _list_msg(self) -> Any:
        a = self._asset
        return m.ListAssetStateByUri(a.uri) if self._by_uri else m.ListAssetStateByName(a.name)

    def _history_msg(self, key: str) -> Any:
        a = self._asset
        if self._by_uri:
            return m.GetAssetStateHistoryByUri(a.uri, key)
        return m.GetAssetStateHistoryByName(a.name, key)

    def _rollback_msg(self, key: str, version: int, expires: float | None) -> Any:
        a = self._asset
        if self._by_uri:
            return m.RollbackAssetStateByUri(a.uri, key, version, expires)
        return m.RollbackAssetStateByName(a.name, key, version, expires)

    def _clear_msg(self) -> Any:
        a = self._asset
        return m.ClearAssetStateByUri(a.uri) if self._by_uri else m.ClearAssetStateByName(a.name)

    @_writes
    def clear(self) -> None:
        """Delete every key of this asset's state."""
        self._sync(self._clear_msg(), "clear")

    @_writes
    async def aclear(self) -> None:
        """Async twin of :meth:`clear`."""
        await self._arequest(self._clear_msg(), "clear")


# -- read-only snapshots for templates -----------------------------------------------------


def _refuse_write(name: str) -> Callable[..., NoReturn]:
    # One function per writer, so that the sandbox's refusal names the method called.
    def refuse(self: StateView, *args: Any, **kwargs: Any) -> NoReturn:
        msg = (
            f"templates can read state but not write it ({self._label}.{name}); "
            "write from the task's code instead"
        )
        raise TemplateWriteError(msg)

    refuse.__name__ = refuse.__qualname__ = name
    return _writes(refuse)


class StateView:
    """A read-only snapshot of one scope's state, as templates see it."""

    __slots__ = ("_items", "_label")

    def __init__(self, label: str, items: dict[str, Any]) -> None:
        self._label = label
        self._items = items

    def __repr__(self) -> str:
        return f"<StateView {self._label} {sorted(self._items)}>"

    def _template_keys(self) -> tuple[str, list[str]]:
        return self._label, sorted(self._items)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default``."""
        return self._items.get(key, default)

    def items(self) -> list[tuple[str, Any]]:
        """Every ``(key, value)`` pair."""
        return list(self._items.items())

    def keys(self) -> list[str]:
        """Every key."""
        return list(self._items)

    def __getitem__(self, key: str) -> Any:
        return self._items[key]

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name not in self._items:
            msg = f"{self._label} has no key {name!r}"
            raise AttributeError(msg, name=name, obj=self)
        return self._items[name]

    set, aset = _refuse_write("set"), _refuse_write("aset")
    delete, adelete = _refuse_write("delete"), _refuse_write("adelete")
    clear, aclear = _refuse_write("clear"), _refuse_write("aclear")
    increment, aincrement = _refuse_write("increment"), _refuse_write("aincrement")
    compare_and_set = _refuse_write("compare_and_set")
    acompare_and_set = _refuse_write("acompare_and_set")
    rollback, arollback = _refuse_write("rollback"), _refuse_write("arollback")


class AssetStateView(StateView):
    """A read-only snapshot of one asset's state; ``.asset`` is the asset, as in code."""

    __slots__ = ("_asset",)

    def __init__(self, asset: AssetInfo, items: dict[str, Any]) -> None:
        super().__init__(f"asset_state[{asset.name!r}]", items)
        self._asset = asset

    @property
    def asset(self) -> Asset:
        """The asset whose state this is (a state key named ``asset``: ``get('asset')``)."""
        return Asset(self._asset.name, self._asset.uri)


# -- asset_state: the accessible assets, keyed -----------------------------------------------

T = TypeVar("T")


class AssetStateAccessors(Generic[T], metaclass=NoPublicConstructor):
    """``context["asset_state"]``: the task's accessible assets, keyed.

    Keys: an :class:`Asset`, ``Asset.ref(name=...)``, ``Asset.ref(uri=...)``, an
    :class:`AssetAlias` inlet that resolved to exactly one asset, or a str (an asset
    name, then a URI). ``len()``, iteration and ``keys()`` (the assets), ``in`` and
    ``dict(asset_state)`` work as on a mapping. As in Airflow, the methods and keys of
    one asset are reachable directly (``asset_state.get("watermark")``,
    ``asset_state.watermark``) when the task has exactly one concrete inlet (an alias
    inlet counts as the assets it resolves to), or no inlets and exactly one outlet.
    Only the runtime creates it.
    """

    __slots__ = ("_aliases", "_assets", "_inlets", "_members", "_single")
    _how_to_get: ClassVar[str] = (
        "the runtime builds it for a task that declares assets; use context['asset_state']"
    )

    def __init__(
        self,
        assets: tuple[AssetInfo, ...],
        aliases: dict[str, tuple[AssetInfo, ...]],
        member: Callable[[AssetInfo], T],
        *,
        inlets: Sequence[object],
    ) -> None:
        self._assets = assets
        self._aliases = aliases
        self._members = {asset.name: member(asset) for asset in assets}
        self._inlets = self._concrete(inlets)
        self._single: AssetInfo | None = None
        if len(self._inlets) == 1:
            self._single = self._inlets[0]
        elif not inlets and len(assets) == 1:  # no inlets: the one outlet
            self._single = assets[0]

    def _concrete(self, inlets: Sequence[object]) -> tuple[AssetInfo, ...]:
        found: list[AssetInfo] = []
        for inlet in inlets:
            if isinstance(inlet, AssetAlias):
                found += self._aliases.get(inlet.name, ())
            elif isinstance(inlet, Asset | AssetNameRef | AssetUriRef):
                asset = self._find(inlet)
                if asset is not None:
                    found.append(asset)
        return tuple(dict.fromkeys(found))

    def __repr__(self) -> str:
        return f"<AssetStateAccessors {[a.name for a in self._assets]}>"

    def _template_keys(self) -> tuple[str, list[str]]:
        # With one asset, asset_state.key reads that asset's keys: list those.
        if self._single is not None:
            member = self._members[self._single.name]
            member_keys = getattr(type(member), "_template_keys", None)
            if callable(member_keys):
                return "asset_state", list(member_keys(member)[1])
        return "asset_state", [a.name for a in self._assets]

    def _declared(self) -> str:
        shown = [describe(Asset(a.name, a.uri)) for a in self._assets]
        shown += [describe(AssetAlias(alias)) for alias in self._aliases]
        return ", ".join(shown) or "nothing"

    def _find(self, key: object) -> AssetInfo | None:
        assets = self._assets
        match key:
            case Asset(name, uri):
                return next((a for a in assets if (a.name, a.uri) == (name, uri)), None)
            case AssetNameRef(name):
                return next((a for a in assets if a.name == name), None)
            case AssetUriRef(uri):
                return next((a for a in assets if a.uri == uri), None)
            case AssetAlias(name) if name in self._aliases:
                resolved = self._aliases[name]
                if len(resolved) != 1:
                    names = [a.name for a in resolved]
                    if resolved:
                        msg = (
                            f"AssetAlias({name!r}) resolves to {len(resolved)} assets "
                            f"{names}; index asset_state with one of them "
                            "(asset_state['name']) instead"
                        )
                    else:
                        msg = (
                            f"AssetAlias({name!r}) resolves to no asset yet: no producer "
                            "has emitted through it"
                        )
                    raise UndeclaredAssetError(msg, asset=key)
                return resolved[0]
            case str():
                found = next((a for a in assets if a.name == key), None)
                return found or next((a for a in assets if a.uri == key), None)
            case _:
                return None

    def __getitem__(self, key: AssetKey) -> T:
        if not isinstance(key, Asset | AssetNameRef | AssetUriRef | AssetAlias | str):
            msg = (
                "asset_state is keyed by Asset, Asset.ref(name=...|uri=...), AssetAlias or "
                f"a str, got {type(key).__name__} {key!r}"
            )
            raise TypeError(msg)
        found = self._find(key)
        if found is None:
            msg = (
                f"{describe(key)} is not an asset this task declared; it declared "
                f"{self._declared()}. Add it to the task's inlets or outlets"
            )
            raise UndeclaredAssetError(msg, asset=key)
        return self._members[found.name]

    def __contains__(self, key: object) -> bool:
        try:
            return self._find(key) is not None
        except UndeclaredAssetError:
            return False

    def __iter__(self) -> Iterator[Asset]:
        return (Asset(a.name, a.uri) for a in self._assets)

    def __len__(self) -> int:
        return len(self._assets)

    def keys(self) -> list[Asset]:
        """The accessible assets, as iteration gives them (so ``dict(asset_state)`` works)."""
        return list(self)

    def __getattr__(self, name: str) -> Any:
        # Only reached for names that are not methods or slots.
        if name.startswith("_"):
            raise AttributeError(name)
        if self._single is None:
            msg = self._no_single_asset(name)
            raise AttributeError(msg, name=name, obj=self)
        return getattr(self._members[self._single.name], name)

    def _template_missing(self, name: str) -> Exception | None:
        # A template reading asset_state.k on a task without the single-asset sugar.
        if self._single is None:
            return AttributeError(self._no_single_asset(name), name=name, obj=self)
        return None

    def _no_single_asset(self, name: str) -> str:
        names = [a.name for a in self._assets]
        inlets = [a.name for a in self._inlets]
        if inlets:
            has = f"{len(inlets)} inlet assets {inlets}"
        elif len(names) > len(inlets):
            has = f"no concrete inlet, and assets {names}"
        else:
            has = "no assets"
        example = f"asset_state[{names[0]!r}].{name}" if names else "asset_state[...]"
        return (
            f"asset_state.{name} works only when the task has exactly one inlet asset (or no "
            f"inlets and one outlet); it has {has}. Index it instead: {example}"
        )
