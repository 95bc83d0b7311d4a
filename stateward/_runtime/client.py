"""A task actor's handle on the supervisor: async requests, and a sync bridge.

``async def`` tasks (and the runner) call :meth:`SupervisorClient.request` in the trio
thread. Plain-function tasks run in worker threads and call
:meth:`SupervisorClient.request_sync`, which queues the request into trio's thread
(``run_sync_soon``) and waits on a thread event the supervisor sets when it answers.
Calling the sync form from the trio thread would deadlock
the event loop, so it raises :class:`~stateward.AsyncContextError` naming the
async method to await instead. Once its attempt has ended (:meth:`SupervisorClient.end`),
a client refuses every request with :class:`~stateward.AttemptEndedError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final, NoReturn

import attrs
import trio

from .._errors import (
    AsyncContextError,
    AttemptEndedError,
    RuntimeClosedError,
    StateTypeError,
    StateValueError,
    StatewardError,
    UndeclaredAssetError,
)
from .._protocol import messages as m
from .._records import instance_label
from .supervisor import Caller, Envelope, Supervisor, ThreadWaiter

#: How often a waiting worker thread checks that the runtime is still there.
_POLL_SECONDS: Final = 0.5

# The first class listed for an error type is the one raised (reversed: first wins).
_EXCEPTIONS: Final = {error: kind for error, kind in reversed(m.ERROR_EXCEPTIONS)}
# The answer to a request queued by a worker thread just as its attempt ended.
_ENDED: Final = object()


def raise_error(response: m.ErrorResponse, request: Any = None) -> NoReturn:
    """Raise the exception an :class:`~stateward._protocol.messages.ErrorResponse` reports.

    A value error's ``.key`` is the response's key or, when the response has none (a key
    that is not a str cannot travel in it), the key of the ``request`` it answers.
    """
    kind = _EXCEPTIONS.get(response.error, StatewardError)
    key = response.key if response.key is not None else getattr(request, "key", None)
    if kind is StateTypeError:
        raise StateTypeError(response.detail, key=key, path=response.path)
    if kind is StateValueError:
        raise StateValueError(response.detail, key=key)
    if kind is UndeclaredAssetError:
        raise UndeclaredAssetError(response.detail)
    raise kind(response.detail)


def _check_cancelled() -> None:
    """In a task's worker thread, raise ``trio.Cancelled`` once the task is cancelled.

    A thread cannot be interrupted, so a cancelled (or timed-out) plain-function task
    stops at its next state call instead. Threads trio did not start have nothing to check.
    """
    try:
        trio.from_thread.check_cancelled()
    except RuntimeError:
        return


def refuse_in_trio_thread(what: str) -> None:
    """Raise if a blocking accessor method ``what`` (``"task_state.get"``) is called
    from trio's thread, naming its async twin (``await task_state.aget(...)``).

    Raises:
        AsyncContextError: the caller runs in trio's thread.
    """
    if in_trio_thread():
        owner, _, method = what.rpartition(".")
        twin = f"await {owner}.a{method}(...)" if owner else "the async twin"
        msg = (
            f"{what}() blocks, so it cannot be called from async code (an async def "
            f"task, or any code in trio's thread); use {twin} instead"
        )
        raise AsyncContextError(msg)


def attempt_ended_error(task: str, try_number: int) -> AttemptEndedError:
    """The refusal of a request made after attempt ``try_number`` of ``task`` ended."""
    msg = (
        f"{task} try {try_number} has ended, so its task_state and asset_state can no "
        "longer be read or written (a thread the task started, or an accessor it kept, "
        "outlived the attempt); finish such work before the task returns"
    )
    return AttemptEndedError(msg, task=task, try_number=try_number)


def in_trio_thread() -> bool:
    """Whether the caller runs in trio's thread (where blocking calls must not be made)."""
    return trio.lowlevel.in_trio_run()


@attrs.define(eq=False, slots=True)
class _Notifying(Envelope):
    """An envelope that calls ``on_answer`` when it is answered (once)."""

    on_answer: Callable[[Envelope], None] = attrs.field(kw_only=True)

    def answer(self, response: Any) -> None:
        if self.response is None:
            super().answer(response)
            self.on_answer(self)


@attrs.define(eq=False, slots=True)
class _FromThread(Envelope):
    """A worker thread's request: refused when the serve loop takes it in if its client's
    attempt ended while it was on its way."""

    client: SupervisorClient = attrs.field(kw_only=True)

    def admitted(self) -> bool:
        if self.client._ended:
            self.answer(_ENDED)
            return False
        return True


class SupervisorClient:
    """Sends requests to the supervisor on behalf of one caller.

    Only the runtime creates clients: the identity a client speaks for is fixed by the
    runtime, never claimed by the task. An attempt's client is ended with the attempt.
    """

    __slots__ = ("_caller", "_ended", "_supervisor", "_token")

    def __init__(
        self, supervisor: Supervisor, caller: Caller, token: trio.lowlevel.TrioToken
    ) -> None:
        self._supervisor = supervisor
        self._caller = caller
        self._token = token
        self._ended = False

    def __repr__(self) -> str:
        return f"<SupervisorClient for {self._caller.label}>"

    @property
    def caller(self) -> Caller:
        """The identity and rights this client speaks for."""
        return self._caller

    def end(self) -> None:
        """End the attempt this client serves: every later request is refused."""
        self._ended = True

    def _ended_error(self) -> AttemptEndedError:
        task, writer = self._caller.task, self._caller.writer
        label = (
            "an attempt"
            if task is None
            else instance_label(task.dag_id, task.task_id, task.map_index)
        )
        return attempt_ended_error(label, writer.try_number if writer is not None else 0)

    async def request(self, request: Any) -> Any:
        """Send ``request`` and return its response; an error response is raised.

        Raises:
            AttemptEndedError: the client's attempt has ended.
            StatewardError: the subclass that matches the refusal (see
                :mod:`stateward._errors`).
        """
        return await self.response(self.submit(request))

    def submit(self, request: Any, on_answer: Callable[[Envelope], None] | None = None) -> Envelope:
        """Queue ``request`` without waiting; :meth:`response` waits for its answer.

        Requests are served in the order they are queued, so a later request of any
        client is committed no earlier than this one.

        Args:
            request: The request message.
            on_answer: Called with the envelope, in trio's thread, as soon as it is
                answered (by the supervisor's task: it must not raise or block); for a
                caller that answers many requests without a task each (the relay of
                a task process).
        """
        if self._ended:
            raise self._ended_error()
        if on_answer is None:
            envelope = Envelope(request, self._caller)
        else:
            envelope = _Notifying(request, self._caller, on_answer=on_answer)
        self._supervisor.submit(envelope)
        return envelope

    async def read_now(self, request: Any, on_answer: Callable[[Envelope], None]) -> None:
        """Serve the read ``request`` at once (:meth:`Supervisor.read_now`); ``on_answer``
        is called with its envelope when it is answered, as :meth:`submit` calls it.

        For a caller with no other request in flight, whose writes are therefore all
        answered: a read queued behind other callers' batches would see the same.

        Raises:
            AttemptEndedError: the client's attempt has ended.
        """
        if self._ended:
            raise self._ended_error()
        await self._supervisor.read_now(_Notifying(request, self._caller, on_answer=on_answer))

    async def response(self, envelope: Envelope) -> Any:
        """Wait for the answer to a request :meth:`submit` queued; raise its error."""
        assert envelope.done is not None
        await envelope.done.wait()
        return self.result(envelope)

    def result(self, envelope: Envelope) -> Any:
        """The answer to a request :meth:`submit` queued, once it is in; raise its error."""
        return self._unwrap(envelope.response, envelope.request)

    def _unwrap(self, response: Any, request: Any) -> Any:
        if response is _ENDED:
            raise self._ended_error()
        if isinstance(response, m.ErrorResponse):
            if response.error is m.ErrorType.SHUTTING_DOWN and self._supervisor.failure:
                raise self._supervisor.died_error() from self._supervisor.failure
            raise_error(response, request)
        return response

    def request_sync(self, request: Any, what: str = "state access") -> Any:
        """Send ``request`` from a worker thread and wait for its response.

        Args:
            request: The request message.
            what: The accessor method called, e.g. ``"task_state.get"``: errors name it
                and its async twin (``task_state.aget``).

        Raises:
            AsyncContextError: called from the trio thread (async code).
            AttemptEndedError: the client's attempt has ended.
        """
        refuse_in_trio_thread(what)
        if self._ended:
            raise self._ended_error()
        _check_cancelled()
        # Cheaper than trio.from_thread.run: queue the request for the supervisor's next
        # batch (waking it through trio's thread only if it waits for requests) and
        # wait on a thread event that the supervisor sets when it answers.
        waiter = ThreadWaiter()
        envelope = _FromThread(request, self._caller, done=None, waiter=waiter, client=self)
        try:
            if self._supervisor.submit_from_thread(envelope):
                self._token.run_sync_soon(self._supervisor.wake)
        except trio.RunFinishedError:
            msg = "the runtime has finished; state can no longer be reached from this thread"
            raise RuntimeClosedError(msg) from None
        while not waiter.wait(_POLL_SECONDS):
            if self._supervisor.stopped.is_set() and envelope.response is None:
                # Stopped without taking the request in: nobody will answer it.
                if self._supervisor.failure is not None:
                    raise self._supervisor.died_error() from self._supervisor.failure
                msg = "the runtime closed before this request was served"
                raise RuntimeClosedError(msg)
        return self._unwrap(envelope.response, envelope.request)
