"""``airflow.sdk`` for Dag files written for Airflow, while stateward loads them.

:func:`airflow_names` installs a finder on ``sys.meta_path`` that resolves the modules
of Airflow's Task SDK a Dag file imports (``airflow.sdk``,
``airflow.sdk.execution_time.context``, ...) to :mod:`stateward._airflow.sdk`. It is
installed only while a Dag file loads (:func:`stateward.load_dags`, which the CLI, the
pytest harness and task processes use) and only when Airflow itself cannot be imported:
with Airflow installed, its own modules are imported and stateward converts nothing
(such a file defines Airflow's Dags, which stateward does not find). Nothing named
``airflow`` is ever installed in site-packages. When loading ends, the finder and the
modules it made leave ``sys.modules``; the Dag file keeps the objects it imported, so
its tasks run as they were written. An ``import airflow...`` made only when a task runs
(inside a function) is not served: import the names at the top of the Dag file.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Final

__all__ = ["MODULES", "airflow_names"]

_EXECUTION_CONTEXT: Final = ("NEVER_EXPIRE", "get_current_context", "Context")
#: ``airflow.sdk`` itself holds every name of :mod:`.sdk`.
_EVERY_NAME: Final = ("*",)
#: The modules served, each with the names of :mod:`.sdk` it holds (``None``: a package
#: holding only its submodules). :mod:`.sdk` is imported by the first module served, so
#: a Dag file that imports nothing of Airflow never loads it.
MODULES: Final[dict[str, tuple[str, ...] | None]] = {
    "airflow": None,
    "airflow.sdk": _EVERY_NAME,
    "airflow.sdk.execution_time": None,
    "airflow.sdk.execution_time.context": _EXECUTION_CONTEXT,
    "airflow.sdk.definitions": None,
    "airflow.sdk.definitions.context": ("Context", "get_current_context"),
    "airflow.sdk.definitions.dag": ("DAG", "dag"),
    "airflow.sdk.definitions.asset": ("Asset", "AssetAlias"),
    "airflow.sdk.bases": None,
    "airflow.sdk.bases.operator": ("BaseOperator", "chain"),
    "airflow.sdk.bases.resumablejobmixin": ("ResumableJobMixin",),
    # Airflow 2's spellings, still common in Dag files.
    "airflow.decorators": ("dag", "task"),
    "airflow.models": ("DAG", "BaseOperator"),
    "airflow.models.dag": ("DAG",),
    "airflow.models.baseoperator": ("BaseOperator", "chain"),
}

# A marker on the modules made here, so that only they are removed afterwards.
_MARK: Final = "__stateward_airflow__"
_lock = threading.Lock()
_users = 0


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves :data:`MODULES` from :mod:`stateward._airflow.sdk`."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in MODULES:
            return None
        is_package = any(name.startswith(fullname + ".") for name in MODULES)
        return importlib.util.spec_from_loader(fullname, self, is_package=is_package)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        setattr(module, _MARK, True)
        module.__doc__ = (
            f"stateward's stand-in for {module.__name__} (Airflow is not installed); "
            "see docs/airflow.md"
        )
        from . import sdk

        names = MODULES[module.__name__] or ()
        for name in sdk.__all__ if names is _EVERY_NAME else names:
            setattr(module, name, getattr(sdk, name))


_FINDER: Final = _Finder()


def airflow_installed() -> bool:
    """Whether Airflow itself can be imported (stateward then serves nothing)."""
    module = sys.modules.get("airflow")
    if module is not None:
        return not getattr(module, _MARK, False)
    with _lock:
        served = _FINDER in sys.meta_path
    if served:
        # Another load is serving: look past the finder for a real installation.
        return any(
            finder.find_spec("airflow", None) is not None
            for finder in sys.meta_path
            if finder is not _FINDER and hasattr(finder, "find_spec")
        )
    return importlib.util.find_spec("airflow") is not None


@contextmanager
def airflow_names() -> Iterator[None]:
    """Serve ``airflow.sdk`` imports inside the block, unless Airflow is installed."""
    global _users
    if airflow_installed():
        yield
        return
    with _lock:
        if _users == 0:
            sys.meta_path.append(_FINDER)
        _users += 1
    try:
        yield
    finally:
        with _lock:
            _users -= 1
            if _users == 0:
                sys.meta_path.remove(_FINDER)
                for name in [n for n, m in list(sys.modules.items()) if getattr(m, _MARK, False)]:
                    del sys.modules[name]
