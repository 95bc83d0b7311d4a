"""``_frozen.frozen`` makes the classes ``attrs.frozen`` makes, with a shared ``__repr__``
that reads as attrs' own."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from stateward._frozen import frozen
from stateward._protocol import messages as m
from stateward._records import StateWriter


def _pair(decorator: Any) -> type[Any]:
    @decorator
    class Value:
        key: str
        value: Any = None
        hidden: str = attrs.field(default="secret", repr=False)
        items: tuple[int, ...] = attrs.field(default=(), repr=lambda v: f"<{len(v)} items>")

        @decorator
        class Inner:
            n: int = 0

    return Value


def test_the_repr_reads_as_attrs_own() -> None:
    """Field order, hidden fields, custom field reprs and nested names match attrs'."""
    ours, theirs = _pair(frozen), _pair(attrs.frozen)
    for args in [("k",), ("k", [1, {"a": None}], "x", (1, 2, 3))]:
        assert repr(ours(*args)) == repr(theirs(*args))
    assert repr(ours("k", 1, "x", (1,))) == "Value(key='k', value=1, items=<1 items>)"
    assert repr(ours.Inner(3)) == repr(theirs.Inner(3)) == "Value.Inner(n=3)"


def test_it_is_still_a_frozen_attrs_class() -> None:
    """Equality, hashing, immutability and keyword-only options are attrs'."""
    cls = _pair(frozen)
    value = cls("k", 1)
    assert cls("k", 1) == value
    assert hash(cls("k", 1)) == hash(value)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        value.key = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        StateWriter("task")  # type: ignore[misc]  # kw_only=True was passed through


def test_a_class_writing_its_own_repr_keeps_it() -> None:
    """A ``__repr__`` in the class body wins over the shared one."""

    @frozen
    class Custom:
        n: int

        def __repr__(self) -> str:
            return "custom"

    assert repr(Custom(1)) == "custom"


def test_messages_use_it() -> None:
    """The protocol's messages read as before: ``Name(field=value, ...)``."""
    assert repr(m.GetTaskState("k")) == "GetTaskState(key='k')"
