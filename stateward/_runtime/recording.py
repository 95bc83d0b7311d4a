"""What the runner records of a run as it goes: the run, its instances, their attempts.

Every record is an administrative request to the supervisor, so it is written by the
store's one owner and shares its group commit with the tasks' own state writes. An
attempt's record is written when it starts (``running``; in a run, by taking the lease
that lets it start) and again when it ends (giving the lease up if the instance is done).

Instance and attempt records are queued without waiting for their commit: the
supervisor serves requests in order, so a record is committed no later than the next
write the task makes, and an instance does not hold its slot for a commit of its own.
Their answers are collected by :meth:`Recorder.flush` before the run's final record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import traceback
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from .._dag import Dag
from .._errors import StaleAttemptError, StatewardError, StoreError
from .._protocol import messages as m
from .._records import AttemptRecord, LeaseAnswer, TaskNode
from .client import SupervisorClient
from .supervisor import Envelope

#: The longest result kept as JSON text, and the longest repr kept otherwise (chars).
RESULT_LIMIT: Final = 64 * 1024

_HOST: Final = socket.gethostname()
#: A str result shorter than this is within RESULT_LIMIT as JSON however it escapes
#: (at most 6 characters each, and the quotes): kept as it is, without a round trip.
_PLAIN_STR: Final = RESULT_LIMIT // 6 - 1

#: A record the store failed to write is logged here (WARNING) and the run goes on.
logger = logging.getLogger("stateward.runner")


def result_for_record(value: Any) -> tuple[Any, bool]:
    """``(value, True)`` for a JSON result within :data:`RESULT_LIMIT`, else
    ``(its repr, cut to the limit, False)``."""
    if value is None or type(value) is bool or (type(value) is int and abs(value) < 2**63):
        return value, True
    if type(value) is str and len(value) < _PLAIN_STR:
        return value, True
    try:
        text = json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and len(text) <= RESULT_LIMIT:
        return json.loads(text), True
    shown = repr(value)
    if len(shown) > RESULT_LIMIT:
        shown = f"{shown[:RESULT_LIMIT]}... ({len(shown)} characters in all)"
    return shown, False


@attrs.define
class Recorder:
    """Records one run through the runner's own (administrative) client."""

    client: SupervisorClient
    wall_clock: Callable[[], float]
    dag_id: str
    run_id: str
    _pending: list[Envelope] = attrs.Factory(list)
    #: Acquisitions queued whose answer no caller has taken yet, with their instance:
    #: what a run call that ends by an error may have to give up (:meth:`unclaimed`).
    _acquiring: dict[Envelope, tuple[str, int]] = attrs.Factory(dict)
    #: This process's id, as each attempt's record names it.
    _pid: int = attrs.Factory(os.getpid)

    async def _send(self, request: Any) -> None:
        """Queue one record (see the module's doc)."""
        self._pending.append(await self._submit(request))

    async def _submit(self, request: Any) -> Envelope:
        """Queue ``request``. A runtime being cancelled ends here: the closed
        supervisor's refusal must not hide the cancellation."""
        try:
            return self.client.submit(request)
        except StatewardError:
            await trio.lowlevel.checkpoint_if_cancelled()
            raise

    async def flush(self) -> None:
        """Wait until every queued record is answered. A store failure is logged and
        the run goes on: a record missed costs at most a re-run of that instance on
        resume. The output of an attempt that lost its lease is refused (stale) and
        logged likewise."""
        pending, self._pending = self._pending, []
        for envelope in pending:
            try:
                await self.client.response(envelope)
            except (StoreError, StaleAttemptError) as exc:
                logger.warning("could not record %s: %s", type(envelope.request).__name__, exc)

    async def run(
        self,
        state: str,
        started_at: float,
        ended_at: float | None = None,
        graph: tuple[TaskNode, ...] | None = None,
    ) -> None:
        """Record the run's state (and the Dag's graph, when given: at each start);
        once it has ended, wait for every record queued."""
        request = m.RecordDagRun(self.dag_id, self.run_id, state, started_at, ended_at, graph)
        await self._send(request)
        if ended_at is not None:
            await self.flush()

    async def ended_run(
        self, started_at: float, instances: tuple[tuple[str, int], ...]
    ) -> str | None:
        """Record the end of a run none of whose ``instances`` (all it has) failed:
        ``success`` once each reads ``success``, else ``queued``, decided in the store
        after the records queued so far; wait for every record queued. Returns the
        state recorded, ``None`` if the store refused the record (logged)."""
        request = m.EndDagRun(self.dag_id, self.run_id, started_at, self.wall_clock(), instances)
        envelope = await self._submit(request)
        await self.flush()
        try:
            state: str = (await self.client.response(envelope)).state
        except StoreError as exc:
            logger.warning("could not record the end of the run: %s", exc)
            return None
        return state

    async def items(self, task_id: str, places: tuple[tuple[int, str, str | None], ...]) -> None:
        """Record where the items of a mapped task's instances stand (``(map_index,
        item, label)``), before those instances start."""
        await self._send(m.RecordTaskItems(self.dag_id, self.run_id, task_id, places))

    async def not_run(self, task_id: str, map_index: int, state: str) -> None:
        """Record an instance that runs no attempt (``upstream_failed``)."""
        await self._send(
            m.RecordTaskInstance(self.dag_id, self.run_id, task_id, map_index, state, 0)
        )

    async def attempt_started(self, task_id: str, map_index: int, try_number: int) -> float:
        """Record a try as ``running``; return its start (wall-clock) time."""
        started_at = self.wall_clock()
        attempt = AttemptRecord(try_number, "running", started_at, host=_HOST, pid=self._pid)
        await self._send(
            m.RecordTaskAttempt(self.dag_id, self.run_id, task_id, map_index, "running", attempt)
        )
        return started_at

    async def acquire(
        self, task_id: str, map_index: int, holder: str, lease_timeout: float, seen_try: int,
        started_at: float, *, again: bool = False, try_number: int | None = None,
    ) -> LeaseAnswer:  # fmt: skip
        """Take the instance's lease for its next try, which is recorded ``running``
        from ``started_at`` (waits for the commit: the attempt must not start without
        it). ``again``: whatever its record says, at ``try_number`` if given (see
        ``AcquireTaskLease``)."""
        envelope = self.submit_acquire(
            task_id, map_index, holder, lease_timeout, seen_try, started_at,
            again=again, try_number=try_number,
        )  # fmt: skip
        return await self.acquired(envelope)

    def submit_acquire(
        self, task_id: str, map_index: int, holder: str, lease_timeout: float, seen_try: int,
        started_at: float, *, again: bool = False, try_number: int | None = None,
    ) -> Envelope:  # fmt: skip
        """Queue :meth:`acquire`'s request without waiting (no checkpoint);
        :meth:`acquired` waits for its answer."""
        attempt = AttemptRecord(0, "running", started_at, host=_HOST, pid=self._pid)
        request = m.AcquireTaskLease(
            self.dag_id, self.run_id, task_id, map_index, holder, lease_timeout, seen_try,
            attempt, again, try_number,
        )  # fmt: skip
        envelope = self.client.submit(request)
        self._acquiring[envelope] = (task_id, map_index)
        return envelope

    async def acquired(self, envelope: Envelope) -> LeaseAnswer:
        """The answer to an acquisition :meth:`submit_acquire` queued (a caller
        cancelled while it waits leaves it :meth:`unclaimed`)."""
        assert envelope.done is not None
        await envelope.done.wait()
        self._acquiring.pop(envelope, None)
        answer: LeaseAnswer = self.client.result(envelope).answer
        return answer

    async def unclaimed(self) -> list[tuple[str, int, int]]:
        """The instances (``(task_id, map_index, try)``) whose lease an acquisition
        queued took but whose answer no caller took (it was asked for ahead, or its
        caller was cancelled while it waited): waits for those answers."""
        taken = []
        for envelope, (task_id, map_index) in list(self._acquiring.items()):
            try:
                answer = await self.acquired(envelope)
            except StatewardError:
                continue  # nothing taken
            if answer.outcome == "acquired":
                taken.append((task_id, map_index, answer.try_number))
        return taken

    async def attempt_output(
        self, task_id: str, map_index: int, try_number: int, started_at: float, log: str,
        holder: str | None = None,
    ) -> None:  # fmt: skip
        """Record what a running try has written so far (for ``stateward logs --follow``).

        Queued without a checkpoint before the submit, so a caller that checked that the
        try is still running knows this record goes before the try's end record.
        """
        attempt = AttemptRecord(
            try_number, "running", started_at, host=_HOST, pid=self._pid, log=log
        )
        await self._send(
            m.RecordTaskAttempt(
                self.dag_id, self.run_id, task_id, map_index, "running", attempt, holder
            )
        )

    async def attempt_ended(
        self, task_id: str, map_index: int, instance_state: str, try_number: int,
        started_at: float, rendered: dict[str, Any], error: BaseException | None, result: Any,
        log: str, holder: str | None = None,
    ) -> Envelope | None:  # fmt: skip
        """Record how a try ended, and the instance's state after it. A leased try's
        (``holder``: its runtime) is written only while the lease holds, a final state
        gives the lease up, and its envelope is returned for :meth:`ended` to wait on;
        others are queued like every record."""
        value, is_json = result_for_record(result)
        failure: dict[str, Any] = {}
        if error is not None:
            failure = {
                "error_type": type(error).__name__,
                "error_message": str(error),
                "error_traceback": "".join(traceback.format_exception(error)),
            }
        attempt = AttemptRecord(
            try_number, "success" if error is None else "failed", started_at,
            self.wall_clock(), rendered=dict(rendered), result=value, result_is_json=is_json,
            host=_HOST, pid=self._pid, log=log, **failure,
        )  # fmt: skip
        request = m.RecordTaskAttempt(
            self.dag_id, self.run_id, task_id, map_index, instance_state, attempt, holder
        )
        if holder is None:
            await self._send(request)
            return None
        return await self._submit(request)

    async def ended(self, envelope: Envelope) -> bool:
        """Wait for a leased attempt's end record; :meth:`recorded` says what it means."""
        assert envelope.done is not None
        if not envelope.done.is_set():
            await envelope.done.wait()
        return self.recorded(envelope)

    def recorded(self, envelope: Envelope) -> bool:
        """Whether a leased attempt's end record, answered, holds: ``False`` if it was
        refused because the attempt no longer held its instance (another runtime took
        it over). A store failure is logged and counts as recorded (see :meth:`flush`)."""
        try:
            self.client.result(envelope)
        except StaleAttemptError:
            return False
        except StoreError as exc:
            logger.warning("could not record the end of an attempt: %s", exc)
        return True


def dag_graph(dag: Dag) -> tuple[TaskNode, ...]:
    """The Dag's tasks in topological order, with their upstream task ids, as a run
    records them."""
    return tuple(
        TaskNode(task.task_id, tuple(sorted(task.upstream_task_ids)), task.is_mapped)
        for task in dag.topological_order()
    )
