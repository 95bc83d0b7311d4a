"""Assets, asset references and asset aliases: what tasks declare as inlets and outlets."""

from __future__ import annotations

from typing import Any, TypeAlias, overload

import attrs


def _check_ident(kind: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        msg = f"an asset {kind} must be a non-empty str, got {value!r}"
        raise TypeError(msg) if not isinstance(value, str) else ValueError(msg)
    return value


def _check_name(value: object) -> str:
    return _check_ident("name", value)


def _check_uri(value: object) -> str:
    return _check_ident("uri", value)


def _check_alias(value: object) -> str:
    return _check_ident("alias name", value)


@attrs.frozen(init=False)
class Asset:
    """A data asset, known by a unique name and a unique URI.

    If only one of ``name`` and ``uri`` is given, the other takes the same value (as in
    Airflow). Two declarations with the same name must have the same URI, and the
    other way round; the store refuses a clash at run time.
    """

    #: The asset's unique name.
    name: str
    #: The asset's unique URI.
    uri: str

    def __init__(self, name: str | None = None, uri: str | None = None) -> None:
        if name is None and uri is None:
            msg = "Asset() needs a name or a uri (or both), e.g. Asset('orders')"
            raise TypeError(msg)
        name = _check_ident("name", name if name is not None else uri)
        uri = _check_ident("uri", uri if uri is not None else name)
        self.__attrs_init__(name, uri)

    @overload
    @staticmethod
    def ref(*, name: str) -> AssetNameRef: ...
    @overload
    @staticmethod
    def ref(*, uri: str) -> AssetUriRef: ...
    @staticmethod
    def ref(*, name: str | None = None, uri: str | None = None) -> AssetNameRef | AssetUriRef:
        """A reference to an asset by its name or by its URI (exactly one).

        Raises:
            TypeError: neither or both are given.
        """
        if (name is None) == (uri is None):
            msg = "Asset.ref() takes exactly one of name= or uri="
            raise TypeError(msg)
        if name is not None:
            return AssetNameRef(name)
        assert uri is not None
        return AssetUriRef(uri)


@attrs.frozen
class AssetNameRef:
    """A reference to an asset by name, resolved by the store."""

    name: str = attrs.field(converter=_check_name)


@attrs.frozen
class AssetUriRef:
    """A reference to an asset by URI, resolved by the store."""

    uri: str = attrs.field(converter=_check_uri)


@attrs.frozen
class AssetAlias:
    """A name under which producers emit events for assets chosen at run time.

    As an inlet, it gives state access to the assets it resolves to when the task
    starts; as an outlet, it is for emitting events
    (``context["outlet_events"][alias].add(asset)``) and gives no state access.
    """

    name: str = attrs.field(converter=_check_alias)


#: What a task may list in its ``inlets`` and ``outlets``.
AssetLike: TypeAlias = Asset | AssetNameRef | AssetUriRef | AssetAlias
#: What ``asset_state[...]`` accepts.
AssetKey: TypeAlias = Asset | AssetNameRef | AssetUriRef | AssetAlias | str


def describe(asset: Any) -> str:
    """How messages show an asset-like object."""
    match asset:
        case Asset(name, uri):
            return f"Asset({name!r})" if name == uri else f"Asset({name!r}, uri={uri!r})"
        case AssetNameRef(name):
            return f"Asset.ref(name={name!r})"
        case AssetUriRef(uri):
            return f"Asset.ref(uri={uri!r})"
        case AssetAlias(name):
            return f"AssetAlias({name!r})"
        case _:
            return repr(asset)
