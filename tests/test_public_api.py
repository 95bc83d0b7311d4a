"""The public surface: what ``import stateward`` binds is exactly ``__all__`` (and the
public subpackages), and no module reaches into another's private names."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import stateward

PACKAGE = Path(stateward.__file__).parent
DOCS = PACKAGE.parent / "docs"
#: Subpackages a user imports by name: store backends and the pytest plugin.
PUBLIC_SUBPACKAGES = {"store", "testing"}


def bound_by_import() -> set[str]:
    """The public-looking names a fresh ``import stateward`` binds."""
    code = (
        "import json, stateward; "
        "print(json.dumps([n for n in vars(stateward) if not n.startswith('_')]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_import_binds_exactly_all() -> None:
    """``import stateward`` binds the names of ``__all__`` and no module or helper besides."""
    assert bound_by_import() - PUBLIC_SUBPACKAGES == set(stateward.__all__)


def test_all_is_sorted() -> None:
    """``__all__`` is sorted as ruff sorts it: constants, then classes, then functions."""

    def order(name: str) -> tuple[int, str]:
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert stateward.__all__ == sorted(stateward.__all__, key=order)


def test_every_public_name_is_documented() -> None:
    """Each exported name appears in the user guide (docs/)."""
    text = "\n".join(page.read_text() for page in DOCS.glob("*.md"))
    assert [name for name in stateward.__all__ if name not in text] == []


def test_public_objects_name_the_public_module() -> None:
    """Exported classes and functions present themselves as ``stateward.X`` (or as the
    public ``stateward.store`` module that defines them), never as an internal module."""
    for name in stateward.__all__:
        obj = getattr(stateward, name)
        if isinstance(obj, type) or callable(obj):
            module = obj.__module__
            assert module == "stateward" or module.startswith("stateward.store"), name


def test_internal_modules_are_marked() -> None:
    """Every module and subpackage but the public ones starts with ``_``."""
    unmarked = [
        entry.name
        for entry in PACKAGE.iterdir()
        if not entry.name.startswith(("_", "."))
        and entry.name not in PUBLIC_SUBPACKAGES
        and (entry.suffix == ".py" or (entry.is_dir() and (entry / "__init__.py").exists()))
    ]
    assert unmarked == []


def private_imports(path: Path) -> list[str]:
    """``from stateward... import _name`` statements in one module (dunders allowed)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
            continue
        inside = node.level > 0 or (node.module or "").startswith("stateward")
        for alias in node.names:
            name = alias.name
            if inside and name.startswith("_") and not name.startswith("__"):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {name}")
    return found


def test_no_module_imports_another_modules_private_name() -> None:
    """A helper two modules share has a public name in an internal module."""
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in private_imports(path)]
    assert found == []


def test_pyproject_license_is_an_spdx_expression() -> None:
    """The license is the SPDX string setuptools >= 77 reads without a deprecation warning."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]


@pytest.mark.parametrize(
    ("cls", "how"),
    [
        (stateward.Runtime, r"open_runtime\(\.\.\.\) as rt"),
        (stateward.DagRunResult, r"rt\.run_dag\(\.\.\.\)"),
        (stateward.TaskInstanceResult, r"rt\.run_task\(\.\.\.\) returns one"),
        (stateward.TaskStateAccessor, r"context\['task_state'\] in a task, or rt\.state\.task"),
        (stateward.AssetStateAccessor, r"context\['asset_state'\]\[asset\].*rt\.state\.asset"),
        (stateward.AssetStateAccessors, r"use context\['asset_state'\]"),
        (stateward.Context, r"passes it to the task .*pass a plain dict"),
    ],
    ids=lambda value: getattr(value, "__name__", ""),
)
def test_objects_only_the_runtime_makes_refuse_a_direct_call(cls: type, how: str) -> None:
    """Calling a runtime-made class raises TypeError naming it and saying how to get one."""
    name = re.escape(f"{cls.__module__}.{cls.__qualname__}")
    with pytest.raises(TypeError, match=rf"^{name} has no public constructor: .*{how}"):
        cls()


def test_values_a_user_may_build_still_construct() -> None:
    """Records a test builds by hand (by keyword) are not sealed."""
    ti = stateward.TaskInstanceInfo(
        dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1, max_tries=1
    )
    assert ti.task_id == "t"
    assert stateward.Asset("orders").uri == "orders"
