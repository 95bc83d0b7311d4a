"""Unwrapping what a trio nursery raised: the one error inside nested exception groups.

Internal (the leading underscore): used by the runtime, process isolation, the PostgreSQL
store and the CLI, which each run work in a nursery and report a single failure as
itself rather than as a group per nursery level.
"""

from __future__ import annotations

from typing import NoReturn


def sole_exception(exc: BaseException) -> BaseException:
    """The one exception inside nested exception groups that each hold one (how trio's
    nurseries wrap a single error); ``exc`` itself otherwise."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def raise_sole(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Raise the one error ``group`` wraps as it was raised, or ``group`` if it holds more."""
    error = sole_exception(group)
    raise error from error.__cause__
