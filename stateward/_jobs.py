"""ResumableJobOperator: submit an external job once; retries reattach to it.

The pattern task state exists for, packaged: the operator stores the job id in task
state *before* it starts polling, so a retry (after a worker crash, a timeout, a lost
connection) finds the id and, depending on the job's status,

- reattaches and keeps polling if the job is still running,
- returns the result at once if the job already succeeded,
- submits a new job if the previous one failed (or the service no longer knows it).
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import trio

from ._dag import Operator
from ._errors import ExternalJobFailedError


class JobStatus(enum.Enum):
    """What the external service says about a job."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: The service does not know the job (expired, purged): treated like FAILED.
    UNKNOWN = "unknown"


async def _call(method: Callable[..., Any], *args: Any) -> Any:
    # Job clients are often blocking (boto3, requests): run those in a worker thread.
    if inspect.iscoroutinefunction(method):
        return await method(*args)
    return await trio.to_thread.run_sync(method, *args)


class ResumableJobOperator(Operator):
    """Base for operators that run one external job per task instance.

    Subclasses implement :meth:`submit_job`, :meth:`job_status` and :meth:`job_result`,
    each either plain (run in a worker thread) or ``async def``. The job id is kept in
    the task instance's task state under :attr:`job_id_key`.

    Attributes:
        poll_interval: Seconds between status checks (on trio's clock, so a test with
            an autojump MockClock does not wait).
        job_id_key: The task-state key holding the job id.
    """

    poll_interval: ClassVar[float] = 10.0
    job_id_key: ClassVar[str] = "job_id"

    def submit_job(self, context: Mapping[str, Any]) -> str:
        """Submit the job and return its id (str)."""
        raise NotImplementedError

    def job_status(self, job_id: str, context: Mapping[str, Any]) -> JobStatus:
        """Return the job's status."""
        raise NotImplementedError

    def job_result(self, job_id: str, context: Mapping[str, Any]) -> Any:
        """Return what the task returns once the job succeeded (default: the job id)."""
        return job_id

    async def execute(self, context: Mapping[str, Any]) -> Any:
        """Reattach to the stored job or submit one; poll until it ends."""
        task_state = context["task_state"]
        job_id = await task_state.aget(self.job_id_key)
        if job_id is not None:
            status = await self._status(job_id, context)
            if status is JobStatus.SUCCEEDED:
                return await _call(self.job_result, job_id, context)
            if status is not JobStatus.RUNNING:
                job_id = None  # failed or forgotten: submit a new one
        if job_id is None:
            job_id = await _call(self.submit_job, context)
            if not isinstance(job_id, str) or not job_id:
                msg = f"{type(self).__name__}.submit_job() must return a job id str, got {job_id!r}"
                raise TypeError(msg)
            # Stored before the first poll: whatever happens next, a retry finds it.
            await task_state.aset(self.job_id_key, job_id)
        while True:
            status = await self._status(job_id, context)
            if status is JobStatus.SUCCEEDED:
                return await _call(self.job_result, job_id, context)
            if status is not JobStatus.RUNNING:
                msg = (
                    f"external job {job_id!r} of task {self.task_id!r} ended {status.value}; "
                    "a retry of this task submits a new job"
                )
                raise ExternalJobFailedError(msg, job_id=job_id)
            await trio.sleep(self.poll_interval)

    async def _status(self, job_id: str, context: Mapping[str, Any]) -> JobStatus:
        status = await _call(self.job_status, job_id, context)
        if not isinstance(status, JobStatus):
            msg = f"{type(self).__name__}.job_status() must return a JobStatus, got {status!r}"
            raise TypeError(msg)
        return status


class ResumableJobMixin:
    """Airflow 3.3's ``ResumableJobMixin``, over stateward's task state.

    Mix it into an operator (``class SparkSubmit(ResumableJobMixin, Operator)``) and call
    :meth:`execute_resumable` from a plain ``def execute``. The job's external id is
    stored in task state under :attr:`external_id_key` before polling starts; a later
    try reads it back and asks :meth:`get_job_status`: a job still active is polled
    again (:meth:`poll_until_complete`), one that succeeded gives its result at once
    (:meth:`get_job_result`), and one that ended otherwise is submitted anew. The
    subclass implements the six methods, with Airflow's names and arguments.

    Unlike :class:`ResumableJobOperator` (async, polls on trio's clock), this runs in
    the task's worker thread and leaves polling to :meth:`poll_until_complete`.

    Args:
        durable: ``False`` submits and polls without task state (no reattaching).
    """

    #: The task-state key holding the external id. Renaming it breaks reattaching
    #: for tries already under way: they stored the id under the old key.
    external_id_key: str = "remote_job_id"

    def __init__(self, *, durable: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.durable = durable

    @property
    def _job_log(self) -> logging.Logger:
        log = getattr(self, "log", None)
        return log if isinstance(log, logging.Logger) else logging.getLogger(__name__)

    def execute_resumable(self, context: Mapping[str, Any]) -> Any:
        """Reattach to the stored job, or submit one and store its id; return its result."""
        store = context.get("task_state_store") if self.durable else None
        if self.durable and store is None:
            self._job_log.warning("no task_state_store in the context: a retry cannot reattach")
        if store is not None:
            external_id = store.get(self.external_id_key)
            if external_id is not None:
                status = self.get_job_status(external_id, context)
                if self.is_job_active(status):
                    self._job_log.info("reattaching to job %r (status %r)", external_id, status)
                    self.poll_until_complete(external_id, context)
                    return self.get_job_result(external_id, context)
                if self.is_job_succeeded(status):
                    self._job_log.info("job %r already succeeded; not submitting", external_id)
                    return self.get_job_result(external_id, context)
                self._job_log.warning(
                    "job %r ended with status %r; submitting a new one", external_id, status
                )
        external_id = self.submit_job(context)
        if store is not None and external_id is not None:
            # Stored before the first poll: whatever happens next, a retry finds it.
            store.set(self.external_id_key, external_id)
        self.poll_until_complete(external_id, context)
        return self.get_job_result(external_id, context)

    def submit_job(self, context: Mapping[str, Any]) -> Any:
        """Submit the job; return its external id (a JSON value; ``None`` is not stored)."""
        raise NotImplementedError

    def get_job_status(self, external_id: Any, context: Mapping[str, Any]) -> str:
        """The job's status as the external system words it."""
        raise NotImplementedError

    def is_job_active(self, status: str) -> bool:
        """Whether a job with ``status`` is still running (and can be polled again)."""
        raise NotImplementedError

    def is_job_succeeded(self, status: str) -> bool:
        """Whether a job with ``status`` succeeded."""
        raise NotImplementedError

    def poll_until_complete(self, external_id: Any, context: Mapping[str, Any]) -> None:
        """Wait until the job ends; raise if it failed."""
        raise NotImplementedError

    def get_job_result(self, external_id: Any, context: Mapping[str, Any]) -> Any:
        """What the task returns once the job succeeded (``None`` if nothing)."""
        raise NotImplementedError
