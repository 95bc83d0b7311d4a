"""``frozen``: :func:`attrs.frozen` with one shared ``__repr__``.

attrs generates and compiles each class's methods when the class is made; the
``__repr__`` is the largest part of that source. The messages, the records and the
store's operations are over a hundred frozen classes, all made by ``import stateward``:
one ``__repr__`` written once here, reading the same as attrs' own
(``Name(field=value, ...)``, without the fields declared ``repr=False``), makes
importing them measurably cheaper (see DESIGN.md, start-up). Type checkers see
:func:`attrs.frozen` itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

__all__ = ["frozen"]

#: Per class: the fields its ``__repr__`` shows, each with how to show its value.
_SHOWN: dict[type[Any], tuple[tuple[str, Callable[[Any], str]], ...]] = {}


def _shown(cls: type[Any]) -> tuple[tuple[str, Callable[[Any], str]], ...]:
    shown = _SHOWN.get(cls)
    if shown is None:
        shown = _SHOWN[cls] = tuple(
            (field.name, repr if field.repr is True else field.repr)
            for field in attrs.fields(cls)
            if field.repr is not False
        )
    return shown


def _repr(self: Any) -> str:
    cls = type(self)
    fields = ", ".join(f"{name}={show(getattr(self, name))}" for name, show in _shown(cls))
    return f"{cls.__qualname__.rsplit('>.', 1)[-1]}({fields})"


if TYPE_CHECKING:
    from attrs import frozen as frozen
else:

    def frozen(maybe_cls: type[Any] | None = None, /, **options: Any) -> Any:
        """:func:`attrs.frozen` (same options), with the shared ``__repr__`` unless the
        class writes its own or asks for ``repr=...`` itself."""

        def make(cls: type[Any]) -> type[Any]:
            if "repr" in options or "__repr__" in cls.__dict__:
                return attrs.frozen(cls, **options)
            made = attrs.frozen(cls, repr=False, **options)
            made.__repr__ = _repr
            return made

        return make if maybe_cls is None else make(maybe_cls)
