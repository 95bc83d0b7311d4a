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
