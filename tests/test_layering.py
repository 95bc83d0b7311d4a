"""The subpackages import downward only, as DESIGN.md's layering section draws them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import stateward

PACKAGE = Path(stateward.__file__).parent

#: What each layer may import from stateward (its own modules always). The shared
#: bottom (errors, records, values, states, and the _nursery and _construction helpers)
#: is below every subpackage.
BOTTOM = {
    "_errors",
    "_records",
    "_values",
    "_states",
    "_nursery",
    "_construction",
    "_frozen",
    "_context_keys",
}
ALLOWED = {
    "_protocol": BOTTOM,
    "store": BOTTOM,
    "_context": BOTTOM | {"_protocol", "_assets"},
    "_templates": BOTTOM,
}


def stateward_imports(path: Path) -> set[str]:
    """The top-level stateward modules and subpackages ``path`` imports (``"_runtime"``)."""
    package = path.relative_to(PACKAGE.parent).parts[:-1]  # ("stateward", "_context")
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = [*base, *(node.module.split(".") if node.module else [])]
                names = [target] if node.module else [[*base, alias.name] for alias in node.names]
            else:
                names = [node.module.split(".")] if node.module else []
        elif isinstance(node, ast.Import):
            names = [alias.name.split(".") for alias in node.names]
        else:
            continue
        found.update(name[1] for name in names if len(name) > 1 and name[0] == "stateward")
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_is_below_it(layer: str) -> None:
    """No module of the layer imports runtime, cli, or anything else above it."""
    modules = sorted((PACKAGE / layer).rglob("*.py"))
    assert modules
    upward = {
        str(path.relative_to(PACKAGE)): sorted(stateward_imports(path) - ALLOWED[layer] - {layer})
        for path in modules
    }
    assert {path: names for path, names in upward.items() if names} == {}


def test_the_import_parser_sees_relative_and_absolute_imports() -> None:
    """The checker itself: relative imports resolve against the module's package."""
    probe = PACKAGE / "_context" / "accessors.py"
    assert {"_protocol", "_errors", "_assets", "_records"} <= stateward_imports(probe)
    assert "_runtime" in stateward_imports(PACKAGE / "_runtime" / "runner.py")
    assert "_errors" in stateward_imports(PACKAGE / "_templates" / "render.py")


@pytest.mark.parametrize("module", sorted(BOTTOM))
def test_the_bottom_imports_nothing_of_stateward_above_it(module: str) -> None:
    """A bottom module imports only other bottom modules."""
    assert stateward_imports(PACKAGE / f"{module}.py") <= BOTTOM
