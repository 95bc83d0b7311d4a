"""Error texts that every store must word the same way."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import AssetConflictError
from ..records import AssetInfo


def asset_conflict_message(declared: AssetInfo, known: AssetInfo) -> str:
    """The message for a declaration that clashes with an asset already registered."""
    return (
        f"asset declared as Asset(name={declared.name!r}, uri={declared.uri!r}) clashes with "
        f"Asset(name={known.name!r}, uri={known.uri!r}) declared before; an asset's name and "
        "URI are each unique and bound to each other, so use the same pair everywhere "
        "(or rename one of them)"
    )


def increment_type_message(key: str, current: object) -> str:
    """The message for an increment of a key that does not hold an int."""
    return (
        f"cannot increment key {key!r}: it holds {type(current).__name__} {current!r:.60}, "
        "not an int; delete it or set it to an int first"
    )


def check_declarations(assets: Iterable[AssetInfo]) -> None:
    """Refuse declarations that clash among themselves (one name, two URIs, or the
    other way round), before any of them is registered.

    Raises:
        AssetConflictError: the message names both declarations.
    """
    by_name: dict[str, AssetInfo] = {}
    by_uri: dict[str, AssetInfo] = {}
    for asset in assets:
        for seen in (by_name.get(asset.name), by_uri.get(asset.uri)):
            if seen is not None and seen != asset:
                raise AssetConflictError(asset_conflict_message(asset, seen))
        by_name[asset.name] = by_uri[asset.uri] = asset


def store_error_message(store: str, text: str, hint: str) -> str:
    """The message of a StoreError: which store failed, the driver's words, what to do.

    Args:
        store: The store as messages name it, e.g. ``SQLite store 'state.db'``.
        text: What the driver said.
        hint: What the user can do about it.
    """
    return f"{store} failed: {text} ({hint})"
