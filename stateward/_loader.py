"""Loading Dags from a Python file, as ``stateward run FILE`` and ``stateward dags FILE`` do.

The file is executed as a module of its own (under a unique name, so loading a file
twice gives two independent sets of Dags), with its folder on ``sys.path`` while it
runs so that it can import helper modules next to it. Every :class:`~stateward.Dag`
made while it runs is collected, whatever name it is bound to (or none: a
``with DAG(...):`` block, a ``@dag`` function's Dag), as are the Dags among its
globals. A file written for Airflow imports ``airflow.sdk``: if Airflow is not
installed, those imports (the file's own, when it loads and when its tasks run, and
those of modules it imports while it loads) are served by stateward (see
:mod:`stateward._airflow` and docs/airflow.md).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import re
import sys
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Final

from ._airflow import airflow_names, is_stand_in
from ._dag import Dag, collecting_dags
from ._errors import TaskLoadError
from ._tracebacks import raised_at

_counter: Final = itertools.count(1)
_NOT_IDENTIFIER: Final = re.compile(r"\W")


def load_dags(path: str | os.PathLike[str]) -> dict[str, Dag]:
    """Execute the Python file at ``path`` and return the Dags it defines, by id.

    Args:
        path: A Python file defining one or more :class:`~stateward.Dag` objects (a
            file written for Airflow 3's ``airflow.sdk`` too; see docs/airflow.md).

    Returns:
        The Dags the file makes (whatever names they are bound to) and those among its
        globals, keyed by ``dag_id``, in the order the file makes them.

    Raises:
        TaskLoadError: the file does not exist or is not a file; running it raised
            (the message gives the file and line, the exception type and message);
            it defines no Dag; or two of its Dags share an id.
    """
    file = Path(path)
    shown = os.fspath(path)
    if not file.exists():
        msg = f"Dag file {shown!r} does not exist; check the path"
        raise TaskLoadError(msg, path=shown)
    if not file.is_file():
        msg = f"Dag file {shown!r} is not a file; give the path of a Python file defining Dags"
        raise TaskLoadError(msg, path=shown)
    with collecting_dags() as made:
        module = _execute(file.resolve(), shown)
    dags: dict[str, Dag] = {}
    for value in [*made, *vars(module).values()]:
        if not isinstance(value, Dag) or dags.get(value.dag_id) is value:
            continue
        if value.dag_id in dags:
            msg = (
                f"Dag file {shown!r} defines two different Dags with id {value.dag_id!r}; "
                "give each Dag a unique dag_id"
            )
            raise TaskLoadError(msg, path=shown)
        dags[value.dag_id] = value
    if not dags:
        if _uses_real_airflow(module):
            msg = (
                f"Dag file {shown!r} defines Airflow's own Dags: Airflow is installed "
                "here, so its airflow.sdk was imported and stateward converts nothing; "
                "run the file where Airflow is not installed (see docs/airflow.md)"
            )
            raise TaskLoadError(msg, path=shown)
        msg = (
            f"Dag file {shown!r} defines no Dag; create one at module level, "
            "e.g. dag = Dag('my_dag')"
        )
        raise TaskLoadError(msg, path=shown)
    return dags


def _uses_real_airflow(module: ModuleType) -> bool:
    """Whether a file that made no Dag used Airflow's own modules (Airflow is installed).

    Its globals may hold an Airflow object, or only a function (a ``@dag`` wrapper) or
    an alias (``import airflow.sdk as af``) while its Dags were never bound: then the
    ``airflow`` in ``sys.modules`` tells, when it is not stateward's stand-in.
    """
    if any(type(v).__module__.startswith("airflow.") for v in vars(module).values()):
        return True
    real = sys.modules.get("airflow")
    return real is not None and not is_stand_in(real)


def pick_dag(dags: Mapping[str, Dag], dag_id: str | None, *, source: str = "the file") -> Dag:
    """Choose one Dag of those a file defines.

    Args:
        dags: The Dags, by id (as :func:`load_dags` returns them).
        dag_id: The Dag wanted; ``None`` is enough when there is exactly one.
        source: How messages name where the Dags come from.

    Returns:
        The Dag.

    Raises:
        TaskLoadError: ``dag_id`` is not among them, or it is ``None`` and there are
            several; the message lists the ids there are.
    """
    known = ", ".join(repr(known_id) for known_id in dags) or "none"
    if dag_id is None:
        if len(dags) == 1:
            return next(iter(dags.values()))
        msg = f"{source} defines {len(dags)} Dags ({known}); choose one with --dag ID"
        raise TaskLoadError(msg)
    try:
        return dags[dag_id]
    except KeyError:
        msg = f"no Dag {dag_id!r} in {source}; it defines {known}"
        raise TaskLoadError(msg) from None


def _execute(file: Path, shown: str) -> ModuleType:
    """Run ``file`` as a fresh module; turn anything it raises into a TaskLoadError."""
    name = f"_stateward_dagfile_{next(_counter)}_{_NOT_IDENTIFIER.sub('_', file.stem)}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        msg = f"Dag file {shown!r} cannot be imported as Python; give a .py file"
        raise TaskLoadError(msg, path=shown)
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs, as a normal import is (dataclasses, pickling and
    # typing.get_type_hints look the module up by name).
    sys.modules[name] = module
    try:
        with _on_sys_path(str(file.parent)), airflow_names(module):
            spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        msg = _message(exc, file, shown)
        raise TaskLoadError(msg, path=shown) from exc
    return module


@contextmanager
def _on_sys_path(folder: str) -> Iterator[None]:
    """Put ``folder`` first on ``sys.path`` for the duration, unless it is there."""
    added = folder not in sys.path
    if added:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        if added and folder in sys.path:
            sys.path.remove(folder)


def _message(exc: BaseException, file: Path, shown: str) -> str:
    """What failed and where, for the error of a Dag file that cannot be loaded.

    The place is a syntax error's own, else the innermost frame of the user's code.
    In the Dag file: ``cannot load Dag file 'dag.py', line 7: Type: text``. In a
    module it imports, that module's place follows, with the Dag file's line that
    imported it.
    """
    if isinstance(exc, SyntaxError) and exc.filename:
        raised: tuple[str, int | None] | None = (exc.filename, exc.lineno)
    else:
        raised = raised_at(exc)
    lines = [
        frame.lineno
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename == str(file)
    ]
    in_file = f"{shown!r}, line {lines[-1]}" if lines else repr(shown)
    if raised is None or Path(raised[0]) == file:
        if raised is not None and isinstance(exc, SyntaxError):
            in_file = f"{shown!r}, line {raised[1]}" if raised[1] else repr(shown)
        return f"cannot load Dag file {in_file}: {_describe(exc)}"
    place = repr(_shown_path(raised[0], file, shown))
    if raised[1]:
        place += f", line {raised[1]}"
    imported = f" (imported at line {lines[-1]} of the Dag file)" if lines else ""
    return f"cannot load Dag file {shown!r}: {_describe(exc)}, raised at {place}{imported}"


def _shown_path(filename: str, file: Path, shown: str) -> str:
    """``filename`` as the user would write it: next to the Dag file as it was given."""
    try:
        inside = Path(filename).resolve().relative_to(file.parent)
    except ValueError:
        return filename
    return os.path.join(os.path.dirname(shown), inside)


def _describe(exc: BaseException) -> str:
    """``Type: message`` on one line."""
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    text = " ".join(text.split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
