"""``airflow.sdk`` for Dag files written for Airflow, served by stateward when it loads them.

When Airflow itself cannot be imported, a Dag file loaded by :func:`stateward.load_dags`
(the CLI, the pytest harness and task processes use it) gets stateward's stand-in for
the modules of Airflow's Task SDK it imports (``airflow.sdk``,
``airflow.sdk.execution_time.context``, ...), made of :mod:`stateward._airflow.sdk`, in
two ways:

- The Dag file's own code imports through an ``__import__`` of its own
  (:func:`airflow_names` puts it in the module's ``__builtins__``): its ``airflow``
  imports are served from modules private to that file, never put in ``sys.modules``,
  at load time and when a task body imports at run time, in whatever thread runs it.
- Modules the file imports (a helper next to it) import through ``sys.meta_path``: a
  finder is there while loads are in progress and serves only the loading context (a
  context variable), so another thread's ``import airflow`` at the same moment finds
  nothing. The modules it makes leave ``sys.modules`` when the last load ends.

Nothing named ``airflow`` is installed in site-packages. A name or module of Airflow
that stateward does not have fails with an ``ImportError`` (``AttributeError`` for an
attribute) naming it as not supported by stateward and saying what to use instead.
With Airflow installed its own modules are imported and stateward converts nothing
(such a file defines Airflow's Dags, which stateward does not find).
"""

from __future__ import annotations

import builtins
import contextvars
import importlib.abc
import importlib.machinery
import importlib.util
import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Final

import attrs

__all__ = ["MODULES", "UnsupportedAirflowName", "airflow_names", "is_stand_in"]

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

_DOCS: Final = "see 'What does not run, and why' in docs/airflow.md"
_PROVIDERS: Final = (
    "Airflow's providers (operators and hooks of apache-airflow-providers-*) need "
    "Airflow's connections and internals; call the library itself in a @task (or a "
    "BaseOperator subclass), or use stateward.ShellOperator for a command"
)
_SERVICES: Final = (
    "Airflow's Connections and Variables are not there; read configuration in the task "
    "(environment variables, a file) or pass it as params"
)
#: What to do instead, for names of Airflow's SDK a Dag file may ask for.
_NAME_HINTS: Final[Mapping[str, str]] = {
    "TaskGroup": "task groups are not there; put the tasks in the Dag itself",
    "task_group": "task groups are not there; put the tasks in the Dag itself",
    "Variable": _SERVICES,
    "Connection": _SERVICES,
    "BaseHook": _SERVICES,
    "BaseSensorOperator": "sensors are not there; poll in a @task with retries",
    "PokeReturnValue": "sensors are not there; poll in a @task with retries",
    "TriggerRule": "trigger rules are not there; every task runs after its upstream succeed",
    "Param": "params are plain values in stateward: DAG(params={'name': value})",
    "Label": "edge labels are not there; use >> alone",
    "XComArg": "results travel as a @task call's return value, not through XCom",
    "setup": "setup and teardown tasks are not there; use plain tasks",
    "teardown": "setup and teardown tasks are not there; use plain tasks",
}
#: What to do instead, for modules of Airflow a Dag file may import (longest prefix).
_MODULE_HINTS: Final[Mapping[str, str]] = {
    "airflow.providers": _PROVIDERS,
    "airflow.operators.bash": "use stateward.ShellOperator for a command",
    "airflow.operators.python": "use @task (from airflow.sdk) for a Python function",
    "airflow.operators": _PROVIDERS,
    "airflow.sensors": "sensors are not there; poll in a @task with retries",
    "airflow.hooks": _SERVICES,
    "airflow.models.variable": _SERVICES,
    "airflow.models.connection": _SERVICES,
    "airflow.utils.task_group": "task groups are not there; put the tasks in the Dag itself",
    "airflow.utils.trigger_rule": _NAME_HINTS["TriggerRule"],
}

# A marker on the modules made here, so that only they are removed afterwards.
_MARK: Final = "__stateward_airflow__"
_lock = threading.Lock()
_users = 0
#: The names the finder made modules for, removed from sys.modules by the last load.
_served: set[str] = set()


@attrs.frozen
class _Load:
    """The Dag file this context is loading (the finder serves only such contexts)."""

    #: The Dag file's folder, with a separator at the end; ``None``: no file.
    folder: str | None
    #: The Dag file's ``__import__``, given to the modules it imports from its folder.
    imports: _DagFileImports


_loading: contextvars.ContextVar[_Load | None] = contextvars.ContextVar(
    "stateward_airflow_loading", default=None
)


class UnsupportedAirflowName(AttributeError):
    """A name of Airflow's SDK that stateward's stand-in does not have.

    An ``AttributeError``, so that ``hasattr`` and ``getattr(module, name, default)``
    answer as for any missing attribute; ``from airflow.sdk import Name`` in a Dag file
    raises an ``ImportError`` with the same message.
    """


def name_message(module: str, name: str) -> str:
    """Why ``module.name`` is not there and what to do instead."""
    hint = _NAME_HINTS.get(name, "stateward serves only the names docs/airflow.md lists")
    return f"{module}.{name} is not supported by stateward: {hint} ({_DOCS})"


def module_message(fullname: str) -> str:
    """Why the module ``fullname`` of Airflow is not there and what to do instead."""
    hints = [prefix for prefix in _MODULE_HINTS if (fullname + ".").startswith(prefix + ".")]
    hint = (
        _MODULE_HINTS[max(hints, key=len)]
        if hints
        else "stateward serves only the modules of airflow.sdk that docs/airflow.md lists"
    )
    return (
        f"module {fullname!r} is not supported by stateward (Airflow is not installed): "
        f"{hint} ({_DOCS})"
    )


def _module_getattr(module_name: str) -> Callable[[str], Any]:
    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__"):
            msg = f"module {module_name!r} has no attribute {name!r}"
            raise AttributeError(msg, name=name)
        raise UnsupportedAirflowName(name_message(module_name, name), name=name)

    return __getattr__


def _fill(module: ModuleType) -> None:
    """Give a served module the names of :mod:`.sdk` it holds."""
    from . import sdk

    setattr(module, _MARK, True)
    module.__doc__ = (
        f"stateward's stand-in for {module.__name__} (Airflow is not installed); "
        "see docs/airflow.md"
    )
    held = MODULES[module.__name__] or ()
    names = list(sdk.__all__ if held is _EVERY_NAME else held)
    for name in names:
        setattr(module, name, getattr(sdk, name))
    module.__all__ = names  # type: ignore[attr-defined]
    module.__getattr__ = _module_getattr(module.__name__)  # type: ignore[method-assign]


class _DagFileImports:
    """The ``__import__`` of one Dag file: its ``airflow`` imports get private modules."""

    def __init__(self) -> None:
        self._modules: dict[str, ModuleType] = {}
        # Task bodies in several threads may import at once: each module is made once.
        self._lock = threading.Lock()

    def __call__(
        self,
        name: str,
        globals: Mapping[str, Any] | None = None,
        locals: Mapping[str, Any] | None = None,
        fromlist: Sequence[str] | None = (),
        level: int = 0,
    ) -> ModuleType:
        if level != 0 or (name != "airflow" and not name.startswith("airflow.")):
            return builtins.__import__(name, globals, locals, fromlist, level)
        if name not in MODULES:
            raise ModuleNotFoundError(module_message(name), name=name)
        with self._lock:
            module = self._module(name)
            if not fromlist:
                return self._module(name.partition(".")[0])
            for wanted in fromlist:
                if f"{name}.{wanted}" in MODULES:
                    self._module(f"{name}.{wanted}")
        for wanted in fromlist:
            if wanted != "*" and not hasattr(module, wanted):
                raise ImportError(name_message(name, wanted), name=name)
        return module

    def _module(self, fullname: str) -> ModuleType:
        """The served module ``fullname``, made on first use with its parents (under
        the lock)."""
        module = self._modules.get(fullname)
        if module is None:
            module = ModuleType(fullname)
            module.__package__ = fullname if _is_package(fullname) else fullname.rpartition(".")[0]
            _fill(module)
            self._modules[fullname] = module
            parent, _, child = fullname.rpartition(".")
            if parent:
                setattr(self._module(parent), child, module)
        return module


def _is_package(fullname: str) -> bool:
    return any(name.startswith(fullname + ".") for name in MODULES)


class _Refuser(importlib.abc.Loader):
    """Loads an ``airflow`` module stateward does not serve: raises saying so."""

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        raise ModuleNotFoundError(module_message(module.__name__), name=module.__name__)


class _HelperLoader(importlib.abc.Loader):
    """A loader of a module next to a Dag file: the module it makes has the file's
    ``__import__``, and the module's own loader runs it (no frame of ours in between)."""

    def __init__(self, loader: importlib.abc.Loader, imports: _DagFileImports) -> None:
        self._loader = loader
        self._imports = imports
        self.exec_module = loader.exec_module  # type: ignore[method-assign]

    def __getattr__(self, name: str) -> Any:
        # get_source, get_filename, ... (linecache and inspect ask the loader).
        return getattr(self._loader, name)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        module = self._loader.create_module(spec) or ModuleType(spec.name)
        module.__builtins__ = _builtins_with(self._imports)  # type: ignore[attr-defined]
        return module


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves a loading context: :data:`MODULES`, and the modules next to its Dag file.

    It is first on ``sys.meta_path`` while loads are in progress, and answers only in
    their contexts: there it serves :data:`MODULES` (to a module that imports them
    other than by an ``import`` statement of code given the Dag file's ``__import__``,
    e.g. ``importlib.import_module``, or code outside the Dag file's folder) and
    refuses other ``airflow`` modules; a module found in the Dag file's folder is
    loaded as it is, given the Dag file's ``__import__``.
    """

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        load = _loading.get()
        if load is None:
            return None
        if fullname in MODULES:
            return importlib.util.spec_from_loader(fullname, self, is_package=_is_package(fullname))
        if fullname.startswith("airflow."):
            return importlib.util.spec_from_loader(fullname, _REFUSER)
        if load.folder is None:
            return None
        spec = _found_by_others(fullname, path, target)
        if spec is not None and spec.loader is not None and _is_helper(spec.origin, load.folder):
            spec.loader = _HelperLoader(spec.loader, load.imports)
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None

    def exec_module(self, module: ModuleType) -> None:
        _fill(module)
        with _lock:
            _served.add(module.__name__)


def _is_helper(origin: str | None, folder: str) -> bool:
    """Whether ``origin`` is a module of the Dag file's folder, not of an environment in
    it (a ``.venv``'s site-packages, say, whose libraries keep the import they have)."""
    if origin is None:
        return False
    origin = os.path.abspath(origin)
    if not origin.startswith(folder):
        return False
    parts = origin[len(folder) :].split(os.sep)[:-1]
    return not any(p.startswith(".") or p in ("site-packages", "dist-packages") for p in parts)


def _found_by_others(
    fullname: str, path: Sequence[str] | None, target: ModuleType | None
) -> importlib.machinery.ModuleSpec | None:
    """The spec the finders after :data:`_FINDER` give ``fullname``, as import would."""
    for finder in list(sys.meta_path):
        find_spec = getattr(finder, "find_spec", None)
        if finder is _FINDER or find_spec is None:
            continue
        spec: importlib.machinery.ModuleSpec | None = find_spec(fullname, path, target)
        if spec is not None:
            return spec
    return None


def _builtins_with(imports: _DagFileImports) -> dict[str, Any]:
    return {**vars(builtins), "__import__": imports}


_FINDER: Final = _Finder()
_REFUSER: Final = _Refuser()


def is_stand_in(module: object) -> bool:
    """Whether ``module`` is one of the modules stateward serves as Airflow's."""
    return bool(getattr(module, _MARK, False))


def airflow_installed() -> bool:
    """Whether Airflow itself can be imported (stateward then serves nothing)."""
    module = sys.modules.get("airflow")
    if module is not None:
        return not is_stand_in(module)
    return any(
        finder.find_spec("airflow", None) is not None
        for finder in sys.meta_path
        if finder is not _FINDER and hasattr(finder, "find_spec")
    )


@contextmanager
def airflow_names(module: ModuleType | None = None) -> Iterator[None]:
    """Serve ``airflow.sdk`` imports in this context inside the block, unless Airflow is
    installed.

    Args:
        module: A Dag file's module, about to run: its own imports of ``airflow``, and
            those of the modules it imports from its folder, are served from modules
            private to it, while it loads and when its tasks run.
    """
    global _users
    if airflow_installed():
        yield
        return
    imports = _DagFileImports()
    folder = None
    if module is not None:
        module.__builtins__ = _builtins_with(imports)  # type: ignore[attr-defined]
        file = getattr(module, "__file__", None)
        if file is not None:
            folder = os.path.join(os.path.dirname(os.path.abspath(file)), "")
    with _lock:
        if _users == 0:
            sys.meta_path.insert(0, _FINDER)
        _users += 1
    token = _loading.set(_Load(folder, imports))
    try:
        yield
    finally:
        _loading.reset(token)
        with _lock:
            _users -= 1
            if _users == 0:
                sys.meta_path.remove(_FINDER)
                for name in _served:
                    if is_stand_in(sys.modules.get(name)):
                        del sys.modules[name]
                _served.clear()
