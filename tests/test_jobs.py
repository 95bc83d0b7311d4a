"""ResumableJobOperator: submit once; reattach, return, or resubmit on retry."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
import trio
import trio.testing

from stateward import Dag, ExternalJobFailedError, JobStatus, ResumableJobOperator, Runtime


class FakeService:
    """An external job service whose jobs follow scripted status sequences."""

    def __init__(self) -> None:
        self.submitted: list[str] = []
        self.scripts: dict[str, list[JobStatus]] = {}
        self.next_script: list[JobStatus] = [JobStatus.RUNNING, JobStatus.SUCCEEDED]
        self.polls: list[str] = []

    def submit(self) -> str:
        job_id = f"job-{len(self.submitted) + 1}"
        self.submitted.append(job_id)
        self.scripts[job_id] = list(self.next_script)
        return job_id

    def status(self, job_id: str) -> JobStatus:
        self.polls.append(job_id)
        script = self.scripts.get(job_id)
        if not script:
            return JobStatus.UNKNOWN
        return script.pop(0) if len(script) > 1 else script[0]


class RunJob(ResumableJobOperator):
    poll_interval: ClassVar[float] = 3600.0

    def __init__(self, service: FakeService, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.service = service

    def submit_job(self, context: Any) -> str:
        return self.service.submit()

    async def job_status(self, job_id: str, context: Any) -> JobStatus:
        return self.service.status(job_id)

    def job_result(self, job_id: str, context: Any) -> Any:
        return {"job": job_id, "try": context["ti"].try_number}


def make(service: FakeService, retries: int = 0) -> RunJob:
    return RunJob(service, task_id="run_job", dag=Dag("jobs"), retries=retries)


async def test_submits_once_and_stores_the_id_before_polling(
    rt: Runtime, autojump_clock: trio.testing.MockClock
) -> None:
    """The first try submits, stores the id, then polls until the job succeeds."""
    service = FakeService()
    result = await rt.run_task(make(service), run_id="r")
    assert result.result == {"job": "job-1", "try": 1}
    assert service.submitted == ["job-1"]
    assert service.polls == ["job-1", "job-1"]
    assert await rt.state.task("jobs", "r", "run_job").aget("job_id") == "job-1"


async def test_retry_reattaches_to_a_running_job(rt: Runtime, autojump_clock: Any) -> None:
    """A stored id of a running job is polled again, not resubmitted."""
    service = FakeService()
    service.scripts["job-7"] = [JobStatus.RUNNING, JobStatus.RUNNING, JobStatus.SUCCEEDED]
    await rt.state.task("jobs", "r", "run_job").aset("job_id", "job-7")
    result = await rt.run_task(make(service), run_id="r", try_number=2)
    assert result.result == {"job": "job-7", "try": 2}
    assert service.submitted == []


async def test_retry_returns_an_already_finished_jobs_result(rt: Runtime) -> None:
    """A stored id of a job that already succeeded returns its result at once."""
    service = FakeService()
    service.scripts["job-7"] = [JobStatus.SUCCEEDED]
    await rt.state.task("jobs", "r", "run_job").aset("job_id", "job-7")
    result = await rt.run_task(make(service), run_id="r", try_number=2)
    assert result.result == {"job": "job-7", "try": 2}
    assert (service.submitted, service.polls) == ([], ["job-7"])


@pytest.mark.parametrize("last", [JobStatus.FAILED, JobStatus.UNKNOWN])
async def test_retry_resubmits_after_a_failed_job(
    rt: Runtime, autojump_clock: Any, last: JobStatus
) -> None:
    """A stored id of a failed (or forgotten) job leads to a new submission."""
    service = FakeService()
    if last is JobStatus.FAILED:
        service.scripts["job-0"] = [JobStatus.FAILED]
    await rt.state.task("jobs", "r", "run_job").aset("job_id", "job-0")
    result = await rt.run_task(make(service), run_id="r", try_number=2)
    assert result.result == {"job": "job-1", "try": 2}
    assert service.submitted == ["job-1"]
    assert await rt.state.task("jobs", "r", "run_job").aget("job_id") == "job-1"


async def test_failed_job_fails_the_try_and_the_retry_resubmits(
    rt: Runtime, autojump_clock: Any
) -> None:
    """A job that fails fails its try; the task's retry submits a new job and succeeds."""
    service = FakeService()
    service.next_script = [JobStatus.RUNNING, JobStatus.FAILED]
    task = make(service, retries=1)
    original_submit = service.submit

    def submit_then_succeed() -> str:
        job_id = original_submit()
        service.next_script = [JobStatus.SUCCEEDED]
        return job_id

    service.submit = submit_then_succeed  # type: ignore[method-assign]
    result = await rt.run_dag(task.dag, run_id="r")
    ti = result.ti("run_job")
    assert (ti.state, ti.try_number, ti.result) == ("success", 2, {"job": "job-2", "try": 2})
    assert isinstance(ti.attempts[0].error, ExternalJobFailedError)
    assert "external job 'job-1' of task 'run_job' ended failed" in str(ti.attempts[0].error)


async def test_crash_while_polling_keeps_the_id(rt: Runtime, autojump_clock: Any) -> None:
    """If polling raises after the submission, the id is already in task state."""
    service = FakeService()

    class Flaky(RunJob):
        async def job_status(self, job_id: str, context: Any) -> JobStatus:
            if context["ti"].try_number == 1:
                raise ConnectionError("lost the service")
            return await super().job_status(job_id, context)

    task = Flaky(service, task_id="run_job", dag=Dag("jobs"), retries=1)
    result = await rt.run_dag(task.dag, run_id="r")
    assert result.ti("run_job").result == {"job": "job-1", "try": 2}
    assert service.submitted == ["job-1"]


async def test_bad_subclass_return_values_are_clear(rt: Runtime) -> None:
    """submit_job must return a str id and job_status a JobStatus."""
    service = FakeService()

    class NoId(RunJob):
        def submit_job(self, context: Any) -> str:
            return 42  # type: ignore[return-value]

    result = await rt.run_task(NoId(service, task_id="t", dag=Dag("j")), run_id="r")
    assert "NoId.submit_job() must return a job id str, got 42" in str(result.error)
