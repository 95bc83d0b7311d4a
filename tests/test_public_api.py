"""The public surface is exactly the documented names."""

from __future__ import annotations

import tomllib
from pathlib import Path

import stateward

DOCUMENTED = {
    # domain
    "Asset", "AssetAlias", "AssetNameRef", "AssetUriRef", "Dag", "Operator", "ShellOperator",
    "ResumableJobOperator", "JobStatus",
    # runtime
    "open_runtime", "run_dag", "Runtime", "DagRunResult", "TaskInstanceResult",
    "DagRunState", "TaskInstanceState",
    "MemoryStore", "SqliteStore",
    # context
    "Context", "TaskInstanceInfo", "TaskStateAccessor", "AssetStateAccessor",
    "AssetStateAccessors", "NEVER_EXPIRE",
    # errors
    "StatewardError", "StateValueError", "StateTypeError", "StateScopeError",
    "UndeclaredAssetError", "AssetConflictError", "AsyncContextError", "AttemptEndedError",
    "ProtocolError",
    "StoreError", "NotAStatewardDatabaseError", "RuntimeClosedError", "SupervisorDiedError",
    "DagDefinitionError", "TaskLoadError", "TaskFailedError", "TemplateError",
    "TemplateKeyError", "TemplateWriteError", "ShellCommandError", "ExternalJobFailedError",
    "TaskProcessError", "TaskTimeoutError",
}  # fmt: skip


def test_all_is_the_documented_api() -> None:
    """__all__ lists exactly the documented public names."""
    assert set(stateward.__all__) == DOCUMENTED


def test_every_name_in_all_exists() -> None:
    """Every name in __all__ is importable from stateward."""
    for name in stateward.__all__:
        assert hasattr(stateward, name), name


def test_pyproject_license_is_an_spdx_expression() -> None:
    """The license is the SPDX string setuptools >= 77 reads without a deprecation warning."""
    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert pyproject["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in pyproject["build-system"]["requires"]
