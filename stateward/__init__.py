"""stateward: an embeddable trio task runtime with durable task state and asset state.

The public API is what this module exports; everything else may change.
"""

from __future__ import annotations

from .assets import Asset as Asset
from .assets import AssetAlias as AssetAlias
from .assets import AssetNameRef as AssetNameRef
from .assets import AssetUriRef as AssetUriRef
from .context.accessors import NEVER_EXPIRE as NEVER_EXPIRE
from .context.accessors import AssetStateAccessor as AssetStateAccessor
from .context.accessors import AssetStateAccessors as AssetStateAccessors
from .context.accessors import TaskStateAccessor as TaskStateAccessor
from .context.context import Context as Context
from .context.context import TaskInstanceInfo as TaskInstanceInfo
from .dag import Dag as Dag
from .dag import Operator as Operator
from .errors import AssetConflictError as AssetConflictError
from .errors import AsyncContextError as AsyncContextError
from .errors import AttemptEndedError as AttemptEndedError
from .errors import DagDefinitionError as DagDefinitionError
from .errors import ExternalJobFailedError as ExternalJobFailedError
from .errors import NotAStatewardDatabaseError as NotAStatewardDatabaseError
from .errors import ProtocolError as ProtocolError
from .errors import RuntimeClosedError as RuntimeClosedError
from .errors import ShellCommandError as ShellCommandError
from .errors import StateScopeError as StateScopeError
from .errors import StateTypeError as StateTypeError
from .errors import StateValueError as StateValueError
from .errors import StatewardError as StatewardError
from .errors import StoreError as StoreError
from .errors import SupervisorDiedError as SupervisorDiedError
from .errors import TaskFailedError as TaskFailedError
from .errors import TaskLoadError as TaskLoadError
from .errors import TaskProcessError as TaskProcessError
from .errors import TaskTimeoutError as TaskTimeoutError
from .errors import TemplateError as TemplateError
from .errors import TemplateKeyError as TemplateKeyError
from .errors import TemplateWriteError as TemplateWriteError
from .errors import UndeclaredAssetError as UndeclaredAssetError
from .jobs import JobStatus as JobStatus
from .jobs import ResumableJobOperator as ResumableJobOperator
from .operators import ShellOperator as ShellOperator
from .runtime.runner import DagRunResult as DagRunResult
from .runtime.runner import TaskInstanceResult as TaskInstanceResult
from .runtime.runtime import Runtime as Runtime
from .runtime.runtime import open_runtime as open_runtime
from .runtime.runtime import run_dag as run_dag
from .states import DagRunState as DagRunState
from .states import TaskInstanceState as TaskInstanceState
from .store.memory import MemoryStore as MemoryStore
from .store.sqlite import SqliteStore as SqliteStore

__version__ = "0.1.0"

__all__ = [
    "NEVER_EXPIRE",
    "Asset",
    "AssetAlias",
    "AssetConflictError",
    "AssetNameRef",
    "AssetStateAccessor",
    "AssetStateAccessors",
    "AssetUriRef",
    "AsyncContextError",
    "AttemptEndedError",
    "Context",
    "Dag",
    "DagDefinitionError",
    "DagRunResult",
    "DagRunState",
    "ExternalJobFailedError",
    "JobStatus",
    "MemoryStore",
    "NotAStatewardDatabaseError",
    "Operator",
    "ResumableJobOperator",
    "ProtocolError",
    "Runtime",
    "RuntimeClosedError",
    "ShellCommandError",
    "ShellOperator",
    "SqliteStore",
    "StateScopeError",
    "StateTypeError",
    "StateValueError",
    "StatewardError",
    "StoreError",
    "SupervisorDiedError",
    "TaskFailedError",
    "TaskInstanceInfo",
    "TaskInstanceResult",
    "TaskInstanceState",
    "TaskLoadError",
    "TaskProcessError",
    "TaskTimeoutError",
    "TaskStateAccessor",
    "TemplateError",
    "TemplateKeyError",
    "TemplateWriteError",
    "UndeclaredAssetError",
    "open_runtime",
    "run_dag",
]
