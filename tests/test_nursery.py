"""Unwrapping the one error a nursery wrapped, however deep its groups nest."""

from __future__ import annotations

import pytest

from stateward._nursery import raise_sole, sole_exception


def test_sole_exception_unwraps_nested_single_groups() -> None:
    """Groups of one are peeled to their error; a group of several is kept whole."""
    error = ValueError("inner")
    assert sole_exception(ExceptionGroup("a", [ExceptionGroup("b", [error])])) is error
    assert sole_exception(error) is error
    several = ExceptionGroup("b", [ValueError("x"), KeyError("y")])
    assert sole_exception(ExceptionGroup("a", [several])) is several


def test_raise_sole_raises_the_error_with_its_cause() -> None:
    """The one error is raised as itself, keeping its cause; several raise the group."""
    cause = OSError("disk")
    error = ValueError("inner")
    error.__cause__ = cause
    with pytest.raises(ValueError, match=r"^inner$") as info:
        raise_sole(ExceptionGroup("a", [ExceptionGroup("b", [error])]))
    assert info.value is error
    assert info.value.__cause__ is cause
    group = ExceptionGroup("a", [ValueError("x"), KeyError("y")])
    with pytest.raises(ExceptionGroup) as raised:
        raise_sole(group)
    assert raised.value is group
