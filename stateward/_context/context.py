"""The Context mapping a task instance receives, and the pieces it holds."""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from typing import Any, ClassVar

import attrs

from .._assets import Asset, AssetAlias, describe
from .._construction import NoPublicConstructor
from .._context_keys import AIRFLOW_ONLY_KEYS
from .._errors import StateTypeError, UndeclaredAssetError


@attrs.frozen(kw_only=True)
class TaskInstanceInfo:
    """``context["ti"]``: which task instance and which try this is.

    Made with keywords only, its identity in the order used everywhere: ``dag_id``,
    ``run_id``, ``task_id``, ``map_index``.
    """

    dag_id: str
    run_id: str
    task_id: str
    #: 0..n-1 for a mapped task's instances, -1 for an unmapped task.
    map_index: int
    #: The attempt, from 1.
    try_number: int
    #: How many attempts at most (retries + 1).
    max_tries: int


@attrs.define(eq=False)
class AssetEventRecord:
    """An asset event a task emits; recorded when the task succeeds."""

    asset: Asset
    extra: dict[str, Any]
    alias: AssetAlias | None = None


@attrs.define(eq=False)
class OutletEventAccessor:
    """``context["outlet_events"][outlet]``: the events one outlet emits."""

    outlet: Asset | AssetAlias
    #: For an Asset outlet: the ``extra`` of the event emitted when the task succeeds.
    extra: dict[str, Any] = attrs.Factory(dict)
    #: For an AssetAlias outlet: the assets added through it.
    events: list[AssetEventRecord] = attrs.Factory(list)

    def add(self, asset: Asset, extra: dict[str, Any] | None = None) -> None:
        """Emit an event for ``asset`` through this alias (recorded on success).

        Raises:
            TypeError: the outlet is not an alias, ``asset`` is not an Asset, or
                ``extra`` is not a dict.
        """
        if not isinstance(self.outlet, AssetAlias):
            msg = (
                f"add() emits through an AssetAlias outlet; {describe(self.outlet)} is an "
                "asset, so set outlet_events[asset].extra instead"
            )
            raise TypeError(msg)
        if not isinstance(asset, Asset):
            msg = f"add() takes an Asset, got {type(asset).__name__} {asset!r}"
            raise TypeError(msg)
        if extra is not None and not isinstance(extra, dict):
            msg = f"extra must be a dict, got {type(extra).__name__} {extra!r}"
            raise StateTypeError(msg)
        self.events.append(AssetEventRecord(asset, dict(extra or {}), self.outlet))

    # Emitting is a write: templates (jinja's sandbox) refuse to call it.
    add.alters_data = True  # type: ignore[attr-defined]
    # How the refusal shows the call to make from the task's code instead.
    _template_owner: ClassVar[str] = 'context["outlet_events"][alias]'


class OutletEventAccessors:
    """``context["outlet_events"]``: keyed by the task's Asset and AssetAlias outlets."""

    __slots__ = ("_accessors",)

    def __init__(self, outlets: tuple[Asset | AssetAlias, ...]) -> None:
        self._accessors = {outlet: OutletEventAccessor(outlet) for outlet in outlets}

    def __getitem__(self, outlet: Asset | AssetAlias) -> OutletEventAccessor:
        try:
            return self._accessors[outlet]
        except (KeyError, TypeError):
            declared = ", ".join(describe(o) for o in self._accessors) or "no outlets"
            msg = f"{describe(outlet)} is not an outlet of this task; its outlets: {declared}"
            raise UndeclaredAssetError(msg, asset=outlet) from None

    def __iter__(self) -> Iterator[Asset | AssetAlias]:
        return iter(self._accessors)

    def __len__(self) -> int:
        return len(self._accessors)

    def emitted(self) -> list[AssetEventRecord]:
        """Every event to record for the task: one per Asset outlet, plus alias adds."""
        records: list[AssetEventRecord] = []
        for outlet, accessor in self._accessors.items():
            if isinstance(outlet, Asset):
                records.append(AssetEventRecord(outlet, accessor.extra))
            records.extend(accessor.events)
        return records


_current: contextvars.ContextVar[Context | None] = contextvars.ContextVar(
    "stateward_current_context", default=None
)


def current_context() -> Context:
    """The context of the attempt running in this task (Airflow's ``get_current_context``).

    Raises:
        RuntimeError: called outside a running task.
    """
    context = _current.get()
    if context is None:
        msg = (
            "get_current_context() was called outside a running task; call it from a "
            "task's code while the runtime runs it"
        )
        raise RuntimeError(msg)
    return context


def set_current_context(context: Context | None) -> contextvars.Token[Context | None]:
    """Make ``context`` what :func:`current_context` returns (the runtime, per attempt)."""
    return _current.set(context)


def reset_current_context(token: contextvars.Token[Context | None]) -> None:
    """Undo :func:`set_current_context`."""
    _current.reset(token)


class Context(dict[str, Any], metaclass=NoPublicConstructor):
    """What a task instance sees: ``context["task_state"]``, ``context["ti"]``, ...

    A dict, so ``**context`` works; a missing key says what the context holds. Only the
    runtime creates one, for each attempt.
    """

    _how_to_get: ClassVar[str] = (
        "the runtime builds one for each attempt and passes it to the task (by parameter "
        "name or **context); to call a task's code by hand, pass a plain dict"
    )

    def __missing__(self, key: str) -> Any:
        hint = ""
        if key in ("asset_state", "asset_state_store"):
            hint = (
                f"; {key} is there only when the task declares an Asset (or an "
                "AssetAlias inlet) in its inlets or outlets"
            )
        elif key in AIRFLOW_ONLY_KEYS:
            hint = f" (an Airflow context key: {AIRFLOW_ONLY_KEYS[key]})"
        elif isinstance(key, str):
            import difflib  # only for this message

            close = difflib.get_close_matches(key, list(self), n=1)
            if close:
                hint = f"; did you mean {close[0]!r}?"
        msg = f"the context has no {key!r}{hint}; it has {sorted(self)}"
        raise KeyError(msg)
