"""The public surface is exactly the documented names."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

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
