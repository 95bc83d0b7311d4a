"""Error texts that every store must word the same way."""

from __future__ import annotations

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
