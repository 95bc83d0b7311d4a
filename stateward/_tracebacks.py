"""Tracebacks trimmed to the user's code, for the pytest plugin and the CLI.

A task's traceback starts in the runner, trio and the thread pool; a Dag file's in the
loader and Python's import system. Those frames say nothing about the failure, so the
user's first frame is put first, and the import system's frames are left out anywhere.
"""

from __future__ import annotations

import functools
import os
from types import TracebackType
from typing import Final

#: Modules whose frames are the runtime's machinery, not the user's code.
MACHINERY: Final = ("stateward", "trio", "outcome")
#: Python's import system, whose frames sit between a module and what it imports.
_IMPORT_SYSTEM: Final = ("importlib", "_frozen_importlib", "_frozen_importlib_external")
#: A Dag file's own ``__import__`` (serving ``airflow.sdk``), part of the import system too.
_DAG_FILE_IMPORT: Final = "stateward._airflow"


@functools.cache
def _library_paths() -> tuple[str, ...]:
    """Where the standard library and installed packages live (asked when a traceback
    is first trimmed: ``sysconfig`` is not otherwise imported)."""
    import sysconfig

    return tuple(
        {
            os.path.normcase(os.path.realpath(path)) + os.sep
            for key in ("stdlib", "platstdlib", "purelib", "platlib")
            if (path := sysconfig.get_paths().get(key))
        }
    )


def _package(tb: TracebackType) -> str:
    module = tb.tb_frame.f_globals.get("__name__", "")
    return module.partition(".")[0] if isinstance(module, str) else ""


def trim_to_user_code(error: BaseException) -> BaseException:
    """``error`` with its traceback starting at the first frame of the user's code.

    Frames of :data:`MACHINERY` before it are dropped, and the import system's frames
    (a Dag file's own ``__import__`` among them) wherever they are. An error with no
    frame outside them (say, a template that fails to render) keeps its whole traceback.
    """
    frames: list[TracebackType] = []
    tb = error.__traceback__
    while tb is not None:
        package = _package(tb)
        importing = (
            package in _IMPORT_SYSTEM or tb.tb_frame.f_globals.get("__name__") == _DAG_FILE_IMPORT
        )
        if not importing and (frames or package not in MACHINERY):
            frames.append(tb)
        tb = tb.tb_next
    if not frames:
        return error
    joined: TracebackType | None = None
    for node in reversed(frames):
        joined = TracebackType(joined, node.tb_frame, node.tb_lasti, node.tb_lineno)
    return error.with_traceback(joined)


def raised_at(error: BaseException) -> tuple[str, int] | None:
    """The file and line of the innermost frame in the user's own code, if any.

    Frames of :data:`MACHINERY`, of the import system, of the standard library and of
    installed packages are not the user's code.
    """
    place: tuple[str, int] | None = None
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        package = _package(tb)
        own = package not in MACHINERY and package not in _IMPORT_SYSTEM
        if own and not os.path.normcase(os.path.realpath(filename)).startswith(_library_paths()):
            place = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return place
