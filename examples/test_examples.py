"""Tests a user would write for the example pipelines, with stateward's pytest plugin.

They run in ``make test``: the plugin's fixtures (``sw`` for async tests, ``sw_sync``
for plain ones) come from the installed ``pytest11`` entry point, with no conftest.
"""

from __future__ import annotations

from typing import Any

import external_job
import resumable_job
import templated
import trio.testing
import watermark

from stateward.testing import StateHarness, SyncHarness, assert_success


async def test_resumable_job_first_try_submits_and_stores_the_id(
    sw: StateHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """Try 1 submits a job, keeps its id in task state and crashes; try 2 reattaches."""
    before = len(resumable_job.SERVICE.submissions)
    result = assert_success(await sw.run_task(resumable_job.run_report))
    assert isinstance(result.attempts[0].error, ConnectionError)
    job_id = (await sw.task_state(resumable_job.run_report))["job_id"]
    assert resumable_job.SERVICE.submissions[before:] == [job_id]
    assert result.result["job_id"] == job_id


async def test_resumable_job_retry_reattaches(sw: StateHarness) -> None:
    """A retry that finds a job id in task state waits for it and submits nothing."""
    before = len(resumable_job.SERVICE.submissions)
    await sw.seed_task_state(resumable_job.run_report, job_id="nightly-report-7")
    result = assert_success(await sw.run_task(resumable_job.run_report, try_number=2))
    assert result.result["job_id"] == "nightly-report-7"
    assert len(resumable_job.SERVICE.submissions) == before


async def test_resumable_job_whole_dag_retries_once(
    sw: StateHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """The whole Dag succeeds on try 2, with one submission (the retry delay is instant)."""
    before = len(resumable_job.SERVICE.submissions)
    run = assert_success(await sw.run_dag(resumable_job.dag))
    assert run.ti("run_report").try_number == 2
    assert len(resumable_job.SERVICE.submissions) == before + 1


async def test_watermark_continues_from_the_stored_value(sw: StateHarness) -> None:
    """The load reads the watermark on the asset and moves it on by one batch."""
    await sw.seed_asset_state(watermark.ORDERS, watermark=40, runs=3)
    result = assert_success(await sw.run_task(watermark.load_orders))
    assert result.result == {"loaded": watermark.BATCH, "watermark": 45, "runs": 4}
    assert await sw.asset_state(watermark.ORDERS) == {"watermark": 45, "runs": 4}


def test_watermark_across_two_runs_in_a_sync_test(sw_sync: SyncHarness) -> None:
    """Two runs of the Dag from a plain test: the second continues from the first."""
    first = assert_success(sw_sync.run_dag(watermark.dag, run_id="one"))
    second = assert_success(sw_sync.run_dag(watermark.dag, run_id="two"))
    assert first.ti("load_orders").result["watermark"] == 5
    assert second.ti("load_orders").result["watermark"] == 10
    assert sw_sync.asset_state(watermark.ORDERS)["runs"] == 2


async def test_templated_command_reads_the_watermark(sw: StateHarness) -> None:
    """Try 1 renders the asset's watermark; its retry renders the job id try 1 stored."""
    await sw.seed_asset_state(templated.INVOICES, watermark=300)
    result = assert_success(await sw.run_task(templated.extract))
    first: Any = result.attempts[0].rendered["command"]
    assert "submitting an export of $BATCH invoices after 300" in first
    assert isinstance(result.attempts[0].error, ConnectionError)
    assert f"reattaching to {result.result}" in result.attempts[1].rendered["command"]


async def test_templated_retry_renders_the_stored_job_id(sw: StateHarness) -> None:
    """On a retry, the command is rendered with the job id the first try stored."""
    await sw.seed_asset_state(templated.INVOICES, watermark=0)
    await sw.seed_task_state(templated.extract, job_id="job-42")
    result = assert_success(await sw.run_task(templated.extract, try_number=2))
    assert result.result == "job-42"
    assert "reattaching to job-42" in result.rendered["command"]
    assert await sw.task_state(templated.extract) == {}  # cleared on success


async def test_templated_dag_moves_the_watermark(sw: StateHarness) -> None:
    """The whole Dag runs green and advances the invoices watermark by one batch."""
    assert_success(await sw.run_dag(templated.dag, run_id="first"))
    assert_success(await sw.run_dag(templated.dag, run_id="second"))
    assert (await sw.asset_state(templated.INVOICES))["watermark"] == 2 * templated.BATCH


async def test_external_job_retry_reattaches_to_the_submitted_job(
    sw: StateHarness, autojump_clock: trio.testing.MockClock
) -> None:
    """Try 1 submits and loses the connection; try 2 polls the same job to its end."""
    before = set(external_job.SERVICE.polls)
    result = assert_success(await sw.run_task(external_job.export))
    [job_id] = set(external_job.SERVICE.polls) - before
    assert isinstance(result.attempts[0].error, ConnectionError)
    assert result.try_number == 2
    assert result.result == {"job_id": job_id, "rows": 4200}
    assert await sw.task_state(external_job.export) == {"job_id": job_id}


async def test_resumable_job_rerun_of_a_run_reattaches_at_try_1(sw: StateHarness) -> None:
    """Running a run id again finds the job id its first run kept: try 1 reattaches."""
    await sw.seed_task_state(resumable_job.run_report, job_id="nightly-report-9")
    before = len(resumable_job.SERVICE.submissions)
    result = assert_success(await sw.run_task(resumable_job.run_report))
    assert (result.try_number, result.result["job_id"]) == (1, "nightly-report-9")
    assert len(resumable_job.SERVICE.submissions) == before
