"""Which mapped item a mapped task instance is: the identity its task state is kept by.

A mapped instance's task state belongs to its *item* (the arguments it was expanded
with), not its position, so a list that changes between a run and its resume (or a
cleared run's re-expansion) gives each instance the state its item had, wherever the
item stood. :func:`mapped_item` is the one place an identity is made; the runner calls
it for literal ``expand()`` lists, and code that expands at run time calls it the same
way with the arguments it resolved.
"""

from __future__ import annotations

import hashlib
import logging
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol, TypeAlias

import attrs

from ._values import canonical_json, shorten

logger = logging.getLogger("stateward.runner")

#: The identity of an unmapped instance's task state.
UNMAPPED: Final = ""
#: How many hex digits of the SHA-256 of the arguments' canonical JSON an identity
#: keeps (128 bits: no two items of one task collide in practice).
_DIGITS: Final = 32
#: The longest label kept (the rest is cut with "…").
_LABEL_CHARS: Final = 60
#: The longest identity a key function may return, in characters (as a state key).
MAX_ITEM_KEY: Final = 512

#: What a key function given to ``expand(map_key=...)`` returns, and the function.
ItemKey: TypeAlias = str | int
MapKey: TypeAlias = Callable[[dict[str, Any]], ItemKey]


@attrs.frozen
class MappedItem:
    """A mapped instance's item: the identity its task state is kept under, and a label.

    ``key`` starts with ``j:`` (a fingerprint of the arguments' canonical JSON), ``k:``
    (what the task's key function returned) or ``#`` (the position: arguments that are
    not JSON and no key function). The label is what listings show.
    """

    key: str
    label: str | None

    @classmethod
    def at_position(cls, map_index: int) -> MappedItem:
        """The identity of an instance kept by position."""
        return cls(f"#{map_index}", None)


def mapped_item(arguments: Mapping[str, Any], map_key: MapKey | None = None) -> MappedItem | None:
    """The item of an instance expanded with ``arguments``; ``None`` if its arguments
    are not JSON and no key function names it (the caller then keeps it by position).

    Args:
        arguments: The instance's expansion arguments, by name.
        map_key: The task's key function (``expand(..., map_key=...)``): it gets the
            arguments as a dict and returns a str or int naming the item.

    Raises:
        TypeError: the key function returned something other than a str or an int.
        ValueError: it returned a str longer than MAX_ITEM_KEY characters.
    """
    if map_key is not None:
        named = map_key(dict(arguments))
        if type(named) not in (str, int):
            msg = (
                f"map_key must return a str or an int naming the item, got "
                f"{type(named).__name__} {shorten(named)} for arguments {shorten(dict(arguments))}"
            )
            raise TypeError(msg)
        label = str(named)
        if len(label) > MAX_ITEM_KEY:
            msg = (
                f"map_key returned {len(label)} characters; an item's name has at most "
                f"{MAX_ITEM_KEY}: return a shorter id"
            )
            raise ValueError(msg)
        return MappedItem(f"k:{canonical_json(named)}", _cut(label))
    try:
        canonical = canonical_json(dict(arguments))
    except (TypeError, ValueError):
        return None
    digest = hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:_DIGITS]
    values = list(arguments.values())
    shown = canonical_json(values[0]) if len(values) == 1 else canonical
    return MappedItem(f"j:{digest}", _cut(shown))


def _cut(text: str) -> str:
    return text if len(text) <= _LABEL_CHARS else text[: _LABEL_CHARS - 1] + "…"


class _Mapped(Protocol):
    """What :func:`instance_item` needs of a task (an Operator)."""

    map_key: MapKey | None

    def map_arguments(self, map_index: int) -> dict[str, Any]: ...


#: Tasks already logged as keeping their mapped state by position (once per task).
_LOGGED_POSITIONAL: Final[weakref.WeakSet[Any]] = weakref.WeakSet()


def instance_item(task: _Mapped, map_index: int) -> MappedItem:
    """The item of ``task``'s instance ``map_index`` (``-1``: unmapped) from its literal
    expansion; arguments that are not JSON and no key function: its position, which is
    logged once per task."""
    if map_index < 0:
        return MappedItem(UNMAPPED, None)
    found = mapped_item(task.map_arguments(map_index), task.map_key)
    if found is not None:
        return found
    if task not in _LOGGED_POSITIONAL:
        _LOGGED_POSITIONAL.add(task)
        logger.warning(
            "%r is expanded over arguments that are not JSON, so its mapped task state is "
            "kept by position (map_index), not by item; give expand(..., map_key=...) a "
            "function naming each item to keep state with its item",
            task,
        )
    return MappedItem.at_position(map_index)
