"""Error texts that every store must word the same way."""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from .._errors import AssetConflictError
from .._records import AssetInfo


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


@attrs.frozen
class KnownAsset:
    """A registered asset as a store holds it: a side not bound yet is ``None``.

    An asset first referenced by name only (``rt.state.asset(name=...)``) has no URI
    until a declaration gives one, and the other way round; it reads as Airflow's rule
    says (the missing side takes the other's value) but binds nothing.
    """

    id: int
    name: str | None
    uri: str | None

    @property
    def info(self) -> AssetInfo:
        """The asset as readers see it."""
        name = self.name if self.name is not None else self.uri
        assert name is not None, "a registered asset has a name or a URI"
        return AssetInfo(name, self.uri if self.uri is not None else name)

    def bound(self, asset: AssetInfo) -> bool:
        """Whether this row already binds both of ``asset``'s name and URI."""
        return (self.name, self.uri) == (asset.name, asset.uri)


def resolve_declaration(asset: AssetInfo, known: Iterable[KnownAsset]) -> KnownAsset | None:
    """Which registered asset the declaration ``asset`` is: ``None`` if none (a new one);
    else the one whose bound name or URI it matches, which the caller completes if it
    has a side not bound yet.

    Args:
        asset: The declared asset (name and URI both given).
        known: The registered assets whose name or URI is ``asset``'s (others are ignored).

    Raises:
        AssetConflictError: a name or URI is bound to another asset, or the name and the
            URI each belong to an asset that was used apart from the other.
    """
    matches = [k for k in known if k.name == asset.name or k.uri == asset.uri]
    for k in matches:
        if (k.name is not None and k.name != asset.name) or (
            k.uri is not None and k.uri != asset.uri
        ):
            raise AssetConflictError(asset_conflict_message(asset, k.info))
    if len(matches) > 1:
        msg = (
            f"asset declared as Asset(name={asset.name!r}, uri={asset.uri!r}) joins two "
            f"assets that were used apart before it was declared: one by name {asset.name!r} "
            f"and one by URI {asset.uri!r}, each with state of its own; clear the state of "
            "one of them (stateward state clear) before declaring the asset"
        )
        raise AssetConflictError(msg)
    return matches[0] if matches else None
