"""stateward: an embeddable trio task runtime with durable task state and asset state.

The public API is what this module exports (``__all__``), plus the ``stateward.store``
package for store backends and the ``stateward.testing`` pytest plugin. Every other
module is internal: its name starts with ``_`` and it may change in any release.
"""

from ._assets import Asset as Asset
from ._assets import AssetAlias as AssetAlias
from ._assets import AssetNameRef as AssetNameRef
from ._assets import AssetUriRef as AssetUriRef
from ._context.accessors import NEVER_EXPIRE as NEVER_EXPIRE
from ._context.accessors import AssetStateAccessor as AssetStateAccessor
from ._context.accessors import AssetStateAccessors as AssetStateAccessors
from ._context.accessors import TaskStateAccessor as TaskStateAccessor
from ._context.context import Context as Context
from ._context.context import TaskInstanceInfo as TaskInstanceInfo
from ._dag import Dag as Dag
from ._dag import Operator as Operator
from ._errors import AssetConflictError as AssetConflictError
from ._errors import AsyncContextError as AsyncContextError
from ._errors import AttemptEndedError as AttemptEndedError
from ._errors import DagDefinitionError as DagDefinitionError
from ._errors import ExternalJobFailedError as ExternalJobFailedError
from ._errors import NotAStatewardDatabaseError as NotAStatewardDatabaseError
from ._errors import ProtocolError as ProtocolError
from ._errors import RecordedTaskError as RecordedTaskError
from ._errors import RunNotFoundError as RunNotFoundError
from ._errors import RuntimeClosedError as RuntimeClosedError
from ._errors import ShellCommandError as ShellCommandError
from ._errors import StaleAttemptError as StaleAttemptError
from ._errors import StateScopeError as StateScopeError
from ._errors import StateTypeError as StateTypeError
from ._errors import StateValueError as StateValueError
from ._errors import StatewardError as StatewardError
from ._errors import StoreError as StoreError
from ._errors import SupervisorDiedError as SupervisorDiedError
from ._errors import TaskFailedError as TaskFailedError
from ._errors import TaskLoadError as TaskLoadError
from ._errors import TaskProcessError as TaskProcessError
from ._errors import TaskTimeoutError as TaskTimeoutError
from ._errors import TemplateError as TemplateError
from ._errors import TemplateKeyError as TemplateKeyError
from ._errors import TemplateWriteError as TemplateWriteError
from ._errors import UndeclaredAssetError as UndeclaredAssetError
from ._errors import UpstreamResultError as UpstreamResultError
from ._jobs import JobStatus as JobStatus
from ._jobs import ResumableJobMixin as ResumableJobMixin
from ._jobs import ResumableJobOperator as ResumableJobOperator
from ._loader import load_dags as load_dags
from ._operators import ShellOperator as ShellOperator
from ._records import AssetEvent as AssetEvent
from ._records import AttemptRecord as AttemptRecord
from ._records import DagRunRecord as DagRunRecord
from ._records import StateVersion as StateVersion
from ._records import StateWriter as StateWriter
from ._records import TaskInstanceRecord as TaskInstanceRecord
from ._records import TaskNode as TaskNode
from ._runtime.runner import DagRunResult as DagRunResult
from ._runtime.runner import TaskInstanceResult as TaskInstanceResult
from ._runtime.runtime import Runtime as Runtime
from ._runtime.runtime import open_runtime as open_runtime
from ._runtime.runtime import run_dag as run_dag
from ._states import DagRunState as DagRunState
from ._states import TaskInstanceState as TaskInstanceState
from .store import Store as Store
from .store import open_store as open_store
from .store.memory import MemoryStore as MemoryStore
from .store.sqlite import SqliteStore as SqliteStore

__version__ = "0.1.0"

__all__ = [
    "NEVER_EXPIRE",
    "Asset",
    "AssetAlias",
    "AssetConflictError",
    "AssetEvent",
    "AssetNameRef",
    "AssetStateAccessor",
    "AssetStateAccessors",
    "AssetUriRef",
    "AsyncContextError",
    "AttemptEndedError",
    "AttemptRecord",
    "Context",
    "Dag",
    "DagDefinitionError",
    "DagRunRecord",
    "DagRunResult",
    "DagRunState",
    "ExternalJobFailedError",
    "JobStatus",
    "MemoryStore",
    "NotAStatewardDatabaseError",
    "Operator",
    "ProtocolError",
    "RecordedTaskError",
    "ResumableJobMixin",
    "ResumableJobOperator",
    "RunNotFoundError",
    "Runtime",
    "RuntimeClosedError",
    "ShellCommandError",
    "ShellOperator",
    "SqliteStore",
    "StaleAttemptError",
    "StateScopeError",
    "StateTypeError",
    "StateValueError",
    "StateVersion",
    "StateWriter",
    "StatewardError",
    "Store",
    "StoreError",
    "SupervisorDiedError",
    "TaskFailedError",
    "TaskInstanceInfo",
    "TaskInstanceRecord",
    "TaskInstanceResult",
    "TaskInstanceState",
    "TaskLoadError",
    "TaskNode",
    "TaskProcessError",
    "TaskStateAccessor",
    "TaskTimeoutError",
    "TemplateError",
    "TemplateKeyError",
    "TemplateWriteError",
    "UndeclaredAssetError",
    "UpstreamResultError",
    "load_dags",
    "open_runtime",
    "open_store",
    "run_dag",
]


def _present_as_public() -> None:
    # Public classes and functions say they are ``stateward.X`` (in reprs, tracebacks
    # and ``TaskProcessError.remote_type``), not the internal module that defines them.
    for name in __all__:
        obj = globals()[name]
        if getattr(obj, "__module__", "").startswith("stateward._"):
            obj.__module__ = __name__


_present_as_public()
