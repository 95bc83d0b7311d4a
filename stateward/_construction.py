"""Classes only the runtime may instantiate: calling one raises ``TypeError``.

Internal (the leading underscore). An accessor is bound to a task instance's client, a
result reports what a run did, a :class:`~stateward.Runtime` owns a supervisor: a user
who builds one by hand gets an object that lies. So their classes use
:class:`NoPublicConstructor` as metaclass, say how to get one instead in a class
attribute ``_how_to_get``, and the runtime makes them with ``Class._create(...)``.
"""

from __future__ import annotations

from typing import Any, NoReturn, TypeVar

T = TypeVar("T")


class NoPublicConstructor(type):
    """Metaclass whose classes refuse to be called; ``_create`` makes an instance."""

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        how = getattr(cls, "_how_to_get", "")
        msg = f"{cls.__module__}.{cls.__qualname__} has no public constructor: {how}"
        raise TypeError(msg)

    def _create(cls: type[T], *args: Any, **kwargs: Any) -> T:
        """Make an instance, as calling the class would (for the runtime's own code)."""
        instance: T = super().__call__(*args, **kwargs)  # type: ignore[misc]
        return instance
