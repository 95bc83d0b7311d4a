"""The supervisor actor: the one owner of the store, serving typed requests.

Task actors reach it through a :class:`~stateward._runtime.client.SupervisorClient`
bound to a :class:`Caller` (who they are and which assets they declared): a request
never says who sent it, so no task can pass itself off as another.

The serve loop takes the first request waiting, then every other request already
queued (up to ``max_batch``), and executes them in arrival order as one store batch:
one transaction for all the writes (group commit). Every reply is sent only after the
batch committed, so no task ever reads or acts on a write that could still be rolled
back. A request that is refused gets an :class:`ErrorResponse`; the others in its
batch go on. If the store fails for the whole batch, each request is tried again on
its own so that one bad write cannot fail its neighbours.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import getpass
import inspect
import math
import socket
import threading
import time
from collections.abc import Callable
from typing import Any, Final

import attrs
import trio

from .._errors import (
    AsyncContextError,
    ProtocolError,
    RuntimeClosedError,
    StateScopeError,
    StateTypeError,
    StateValueError,
    SupervisorDiedError,
    UndeclaredAssetError,
)
from .._protocol import messages as m
from .._records import AssetInfo, StateWriter
from .._values import (
    DEFAULT_MAX_VALUE_BYTES,
    check_int_digits,
    check_key,
    decode_value,
    encode_value,
)
from ..store import base as ops
from ..store.base import AssetScope, Store, TaskScope, Writer
from .leases import Holding

#: The host this runtime runs on, as history provenance names it.
HOST: Final = socket.gethostname()
#: The most requests executed as one batch.
DEFAULT_MAX_BATCH: Final = 512
#: Makes "first answer wins" atomic for envelopes a store thread may answer too.
_ANSWER_LOCK: Final = threading.Lock()


@attrs.define(eq=False, on_setattr=attrs.setters.frozen)
class Caller:
    """Who a client speaks for: the supervisor's record of one task actor's rights.

    Its fields cannot be reassigned once made (only alias resolution adds to
    ``assets``). Scope holds against every message a task sends; it is not a sandbox
    for hostile code, which shares the interpreter in process and the user (and so
    the database file) in a task process.
    """

    #: The task instance whose task state the caller owns; ``None``: none.
    task: TaskScope | None
    #: The try that writes (provenance); ``None`` for out-of-band writes.
    writer: Writer | None
    #: Concrete assets the caller may read and write, by name (aliases add theirs).
    assets: dict[str, AssetInfo] = attrs.Factory(dict)
    #: Alias names the caller declared as inlets.
    aliases: frozenset[str] = frozenset()
    #: Alias names the caller declared as outlets (it may emit asset events through them).
    outlet_aliases: frozenset[str] = frozenset()
    #: Out-of-band callers (admin tools, tests, the CLI) may reach any asset.
    unrestricted: bool = False
    #: Who an out-of-band caller's changes name in the history (None: the supervisor's
    #: out-of-band writer); a task's changes name its try.
    who: StateWriter | None = None
    #: The lease the caller's attempt holds: its writes are fenced with it, and once it
    #: is lost every request is refused. ``None``: not fenced (an attempt run without
    #: a lease because the store refuses writes).
    lease: Holding | None = None
    #: A task's try as history names it (made once: every write of the try names it).
    _try_writer: StateWriter | None = attrs.field(init=False, default=None, repr=False)

    def __attrs_post_init__(self) -> None:
        if self.writer is not None:  # fields are frozen once made: set it past the hook
            # Not through history_writer's shared cache: a caller is one try, kept here.
            object.__setattr__(self, "_try_writer", self.writer.new_history_writer(HOST))

    @property
    def label(self) -> str:
        """How errors name the caller."""
        if self.task is not None:
            return f"task {self.task.label}"
        return "the out-of-band client"

    def grant(self, asset: AssetInfo) -> None:
        """Let the caller reach ``asset`` (an alias inlet resolved to it)."""
        self.assets[asset.name] = asset


class ThreadWaiter:
    """What a worker thread waits on for its answer: a lock held from the start and
    released by the answer (one call on each side, where a ``threading.Event`` takes a
    condition and its lock). :meth:`set` may be called once."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def set(self) -> None:
        self._lock.release()

    def wait(self, timeout: float) -> bool:
        """Whether the answer came within ``timeout`` seconds."""
        return self._lock.acquire(timeout=timeout)


@attrs.define(eq=False, slots=True)
class Envelope:
    """A request in flight, with where to put its response (a one-shot reply)."""

    request: Any
    caller: Caller
    #: Set when the response is in; what async callers wait on.
    done: trio.Event | None = attrs.Factory(trio.Event)
    #: For callers in worker threads instead of ``done``: set when the response is in.
    waiter: ThreadWaiter | None = None
    response: Any = None

    def admitted(self) -> bool:
        """Whether the request may still be served, asked in trio's thread when the
        serve loop takes it from a worker thread (:meth:`Supervisor.submit_from_thread`);
        one that may not is answered here."""
        return True

    def answer(self, response: Any) -> None:
        """Deliver ``response``; the first answer wins.

        From trio's thread; an envelope of a worker-thread caller (``waiter`` set,
        ``done`` None) may also be answered from the store's thread once its batch
        committed (see :meth:`Supervisor._answer_threads`).
        """
        if self.waiter is None:
            if self.response is None:
                self.response = response
                if self.done is not None:
                    self.done.set()
            return
        with _ANSWER_LOCK:
            if self.response is not None:
                return
            self.response = response
        if self.done is not None:
            self.done.set()
        self.waiter.set()


@attrs.define
class SupervisorStats:
    """Counters for tests and benchmarks (group commit shows here)."""

    requests: int = 0
    batches: int = 0
    write_batches: int = 0
    largest_batch: int = 0


def error_response(exc: BaseException) -> m.ErrorResponse:
    """The response that reports ``exc`` to the client."""
    for error, kind in m.ERROR_EXCEPTIONS:
        if isinstance(exc, kind):
            key = getattr(exc, "key", None)
            path = getattr(exc, "path", None)
            return m.ErrorResponse(error, str(exc), key if isinstance(key, str) else None, path)
    return m.ErrorResponse(m.ErrorType.INTERNAL, f"{type(exc).__name__}: {exc}")


class Supervisor:
    """Serves state requests from task actors; the only code that touches the store.

    Args:
        store: The open store it owns.
        max_value_bytes: The largest value accepted, JSON-encoded.
        max_batch: The most requests grouped into one batch.
        wall_clock: Unix time now; decides expiry and ``updated_at`` (tests replace it).
        out_of_band: Who changes by out-of-band callers name in the history.
    """

    def __init__(
        self,
        store: Store,
        *,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        max_batch: int = DEFAULT_MAX_BATCH,
        wall_clock: Callable[[], float] = time.time,
        out_of_band: StateWriter | None = None,
    ) -> None:
        self.store = store
        self.out_of_band = out_of_band or local_writer("api")
        self.max_value_bytes = max_value_bytes
        self.max_batch = max_batch
        self.wall_clock = wall_clock
        self.stats = SupervisorStats()
        # A subclass that overrides execute() without on_commit keeps the plain path.
        self._answers_on_commit = getattr(
            store, "answers_on_commit", False
        ) is True and _takes_on_commit(store.execute)
        # read_now() shields a batch as the serve loop does, unless the store's reads
        # cannot be left half done (a shielded cancel scope costs about a fifth of a
        # task process's relayed get).
        self._shield_reads = not _declares_on_execute(store, "reads_cancel_safe")
        # None in the channel only wakes the serve loop for requests of worker threads.
        self._send, self._receive = trio.open_memory_channel[Envelope | None](math.inf)
        #: Requests of worker threads, taken into the next batch (no hop through trio's
        #: thread): see submit_from_thread().
        self._from_threads: collections.deque[Envelope] = collections.deque()
        #: Set while the serve loop waits for a request: a worker thread's must wake it.
        self._waiting = False
        self._stopped = trio.Event()
        self._closed = False
        # Set while read_now() serves a batch in its caller's task.
        self._direct: trio.Event | None = None
        self._in_flight: list[Envelope] = []
        #: Why the supervisor stopped, if it died rather than being closed.
        self.failure: BaseException | None = None

    # -- the client side -------------------------------------------------------------------

    def submit(self, envelope: Envelope) -> None:
        """Queue ``envelope``; its answer arrives on ``envelope.done``."""
        try:
            self._send.send_nowait(envelope)
        except trio.ClosedResourceError:
            msg = "the runtime is closed; open a new one to reach state"
            raise RuntimeClosedError(msg) from None
        except trio.BrokenResourceError:
            if self.failure is not None:
                raise self.died_error() from self.failure
            msg = "the runtime has stopped; open a new one to reach state"
            raise RuntimeClosedError(msg) from None
        except RuntimeError as exc:
            msg = (
                "state was reached from a thread without going through trio; "
                "call the sync accessor methods from the task's worker thread"
            )
            raise AsyncContextError(msg) from exc
        self.stats.requests += 1

    def submit_from_thread(self, envelope: Envelope) -> bool:
        """Queue ``envelope`` from a worker thread. The serve loop takes it into its
        next batch without a hop through trio's thread, and asks it :meth:`Envelope.admitted`
        then; returns whether the loop waits for requests, and so must be woken with
        :meth:`wake` (from trio's thread).

        Raises:
            SupervisorDiedError: the supervisor died.
            RuntimeClosedError: the runtime is closed.
        """
        if self.failure is not None:
            raise self.died_error() from self.failure
        if self._closed or self._stopped.is_set():
            msg = "the runtime is closed; open a new one to reach state"
            raise RuntimeClosedError(msg)
        self._from_threads.append(envelope)
        if self._stopped.is_set():
            # Stopped since the look above: its last drain may have missed this one.
            envelope.answer(self._refusal())
            return False
        # The loop sets _waiting before it looks at the queue a last time, and this
        # reads it after appending: one of the two sees the other's step.
        if self._waiting:
            self._waiting = False
            return True
        return False

    def wake(self) -> None:
        """Wake the serve loop waiting for requests (in trio's thread; never raises)."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._send.send_nowait(None)

    async def read_now(self, envelope: Envelope) -> None:
        """Serve ``envelope``'s read in the calling task, as a batch of its own, when
        the supervisor is idle (nothing queued, no batch running); else queue it as
        :meth:`submit` does. A task process's relay does this for a get: it saves the
        hop to the supervisor's task. Its answer arrives as a queued one's does.

        A caller with earlier requests still in flight must :meth:`submit` instead, to
        read what they write. The serve loop starts no batch while this one runs.
        """
        queued = self._receive.statistics().current_buffer_used
        busy = self._in_flight or self._direct is not None or queued or self._from_threads
        if busy or self._closed or self._stopped.is_set():
            self.submit(envelope)
            return
        self.stats.requests += 1
        self._direct = done = trio.Event()
        try:
            if self._shield_reads:
                with trio.CancelScope(shield=True):  # as the serve loop runs a batch
                    await self._serve_batch([envelope])
            else:
                await self._serve_batch([envelope])
        finally:
            self._direct = None
            done.set()

    def died_error(self) -> SupervisorDiedError:
        """The error clients see once the supervisor has died."""
        reason = f"{type(self.failure).__name__}: {self.failure}" if self.failure else "stopped"
        msg = f"the state supervisor died ({reason}); the run was stopped"
        return SupervisorDiedError(msg)

    @property
    def stopped(self) -> trio.Event:
        """Set when the serve loop has ended (closed or died)."""
        return self._stopped

    def close(self) -> None:
        """Accept no new requests; the serve loop answers the queued ones and ends."""
        self._closed = True
        self._send.close()

    # -- the serve loop --------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve until :meth:`close` (then drain) or cancellation (then fail the rest)."""
        task_status.started()
        try:
            while True:
                # Cancelled: what is still queued is failed, not served (below).
                await trio.lowlevel.checkpoint_if_cancelled()
                batch = self._take()
                if not batch:
                    waited = await self._wait_for_requests()
                    if waited is None:
                        break  # closed, and everything queued was served
                    if not waited:
                        continue  # a wake-up for a request taken since, or not admitted
                    batch = waited
                self._in_flight = batch
                if self._direct is not None:  # a read served in its caller's task
                    await self._direct.wait()
                # A batch, once started, runs to its end and is answered, even if the
                # runtime is being cancelled: a write is applied whole or not at all.
                with trio.CancelScope(shield=True):
                    await self._serve_batch(batch)
                self._in_flight = []
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                self.failure = exc
            raise
        finally:
            # Drain before closing (no await between them, so nothing slips in): every
            # queued request is answered, and later submits see a closed channel.
            refusal = self._fail_queued()
            self._receive.close()
            self._stopped.set()
            # Worker threads' queue after the flag: a thread that appends later sees it
            # set (submit_from_thread), so none is left unanswered.
            while self._from_threads:
                self._from_threads.popleft().answer(refusal)

    def _take(self, first: Envelope | None = None) -> list[Envelope]:
        """The next batch: ``first``, then what trio's thread queued, then what worker
        threads did (those still admitted), up to ``max_batch``."""
        batch = [] if first is None else [first]
        receive = self._receive
        while len(batch) < self.max_batch:
            try:
                received = receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if received is not None:
                batch.append(received)
        threads = self._from_threads
        while threads and len(batch) < self.max_batch:
            envelope = threads.popleft()
            self.stats.requests += 1
            if envelope.admitted():
                batch.append(envelope)
        return batch

    async def _wait_for_requests(self) -> list[Envelope] | None:
        """The next batch, once a request is queued; ``None`` once the channel is closed
        and everything queued has been taken."""
        self._waiting = True
        try:
            first = None
            if not self._from_threads:
                try:
                    first = await self._receive.receive()
                except trio.EndOfChannel:
                    return None
        finally:
            self._waiting = False
        return self._take(first)

    def _refusal(self) -> m.ErrorResponse:
        """The answer to a request the supervisor will not serve (closing or dead)."""
        reason = self.died_error() if self.failure else RuntimeClosedError("runtime closing")
        return m.ErrorResponse(m.ErrorType.SHUTTING_DOWN, str(reason))

    def _fail_queued(self) -> m.ErrorResponse:
        """Answer what is in flight or queued in trio's channel with the refusal it
        returns (answer() keeps the first answer, so served requests are not touched);
        worker threads' queue is answered after the stopped flag is set."""
        refusal = self._refusal()
        for envelope in self._in_flight:
            envelope.answer(refusal)
        self._in_flight = []
        while True:
            try:
                received = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return refusal
            if received is not None:
                received.answer(refusal)

    async def _serve_batch(self, batch: list[Envelope]) -> None:
        self.stats.batches += 1
        self.stats.largest_batch = max(self.stats.largest_batch, len(batch))
        planned: list[tuple[Envelope, ops.Op, Callable[[Any], Any]]] = []
        writes = False
        for envelope in batch:
            try:
                op, finish = self.plan(envelope.request, envelope.caller)
                write = ops.is_write(op)
                holding = envelope.caller.lease
                if holding is not None:
                    # A leased attempt's request: refused at once if its lease was lost;
                    # a write is checked against the lease in the store, in its
                    # transaction (reads are not: they change nothing, and the
                    # attempt's next write is refused).
                    if holding.lost:
                        raise ops.stale_error(holding.lease)
                    if write:
                        op = ops.Fenced(holding.lease, op)
            except Exception as exc:  # a refusal, or a bug: answer it, keep serving
                envelope.answer(error_response(exc))
            else:
                writes = writes or write
                planned.append((envelope, op, finish))
        if not planned:
            return
        if writes:
            self.stats.write_batches += 1
        await self._execute(planned, isolate=len(planned) > 1)

    async def _execute(self, planned: list[tuple[Envelope, ops.Op, Any]], *, isolate: bool) -> None:
        batch = [op for _, op, _ in planned]
        try:
            if self._answers_on_commit and any(e.done is None for e, _, _ in planned):
                on_commit = functools.partial(self._answer_threads, planned)
                store: Any = self.store
                results = await store.execute(batch, now=self.wall_clock(), on_commit=on_commit)
            else:
                results = await self.store.execute(batch, now=self.wall_clock())
        except Exception as exc:
            # A failure of the whole store (a lock held past the timeout) would meet each
            # request again, after as long a wait: answer them all with it at once.
            affects_all = getattr(exc, "affects_all", False)
            reads = [one for one in planned if not ops.is_write(one[1])]
            if affects_all and reads and len(reads) < len(planned):
                # The reads need no write lock: serve them on their own, so a read
                # batched with a write (a run's records, another task's set) still works
                # while another process holds the lock.
                for envelope, op, _ in planned:
                    if ops.is_write(op):
                        envelope.answer(error_response(exc))
                await self._execute(reads, isolate=False)
                return
            if not isolate or affects_all:
                for envelope, _, _ in planned:
                    envelope.answer(error_response(exc))
                return
            # Find the culprit: each request alone, so the others still succeed.
            for one in planned:
                await self._execute([one], isolate=False)
            return
        self._finish(planned, results)

    @staticmethod
    def _answer_threads(planned: list[tuple[Envelope, ops.Op, Any]], results: list[Any]) -> None:
        """In the store's thread, right after the batch committed: answer the callers
        that wait in worker threads, so their answer does not wait for trio's thread
        (the others, and anything that fails here, are answered by :meth:`_finish`)."""
        for (envelope, _, finish), result in zip(planned, results, strict=True):
            if envelope.done is not None:
                continue
            try:
                response = (
                    error_response(result) if isinstance(result, BaseException) else finish(result)
                )
            except Exception:
                continue
            envelope.answer(response)

    def _finish(self, planned: list[tuple[Envelope, ops.Op, Any]], results: list[Any]) -> None:
        for (envelope, _, finish), result in zip(planned, results, strict=True):
            if envelope.response is not None:
                continue  # answered from the store's thread
            if isinstance(result, BaseException):
                envelope.answer(error_response(result))
                continue
            try:
                envelope.answer(finish(result))
            except Exception as exc:
                envelope.answer(error_response(exc))

    # -- from a request to a store operation ------------------------------------------------

    def plan(self, request: Any, caller: Caller) -> tuple[ops.Op, Callable[[Any], Any]]:
        """Check ``request`` against ``caller``'s rights; return its operation and finisher.

        Raises:
            StatewardError: the request is refused (bad key or value, out of scope).
        """
        expires = getattr(request, "expires_at", None)
        if expires is not None:
            _check_expires(expires, getattr(request, "key", None))
        encode = self._encode
        ok = _ok
        who = self._who(caller)
        scope: ops.Scope
        op: ops.Op
        match request:
            case m.GetTaskState(key):
                key = check_key(key)
                return ops.Get(self._task(caller), key), lambda v: m.TaskStateResult(key, v)
            case m.SetTaskState(key, value, expires_at):
                key = check_key(key)
                scope = self._task(caller)
                op = ops.Put(scope, key, encode(key, value), expires_at, caller.writer, who)
                return op, ok
            # A run records each attempt twice: these come before the rarer requests.
            case m.RecordTaskAttempt(d, r, t, i, state, attempt, holder):
                self._admin(caller, request)
                return ops.RecordAttempt(d, r, t, i, state, attempt, holder), ok
            case m.AcquireTaskLease(d, r, t, i, holder, timeout, seen_try, attempt, again, n):
                self._admin(caller, request)
                op = ops.AcquireLease(d, r, t, i, holder, timeout, seen_try, attempt, again, n)
                return op, m.LeaseResult
            case m.DeleteTaskState(key):
                return ops.Delete(self._task(caller), check_key(key), who), ok
            case m.ClearTaskState(all_map_indices):
                return ops.Clear(self._task(caller), all_map_indices, who), ok
            case m.IncrementTaskState(key, by, expires_at):
                key = check_key(key)
                scope = self._task(caller)
                op = ops.Increment(scope, key, _by(key, by), expires_at, caller.writer, who)
                return op, lambda v: m.IncrementResult(key, v)
            case m.CompareAndSetTaskState(key, expected, new, expires_at):
                scope = self._task(caller)
                op = self._cas(scope, key, expected, new, expires_at, caller.writer, who)
                return op, lambda swapped: m.CompareAndSetResult(key, swapped)
            case m.ListTaskState():
                return ops.Items(self._task(caller)), m.StateItemsResult
            case m.GetTaskStateHistory(key):
                key = check_key(key)
                return ops.History(self._task(caller), key), _history_result(key)
            case m.RollbackTaskState(key, version, expires_at):
                self._admin(caller, request)
                key = check_key(key)
                scope = self._task(caller)
                op = ops.Rollback(scope, key, _version(key, version), expires_at, None, who)
                return op, ok
            case m.GetAssetStateByName(_, key) | m.GetAssetStateByUri(_, key):
                key = check_key(key)
                scope = self._asset(caller, request)
                return ops.Get(scope, key), lambda v: m.AssetStateResult(key, v)
            case m.SetAssetStateByName(_, key, value, expires_at) | m.SetAssetStateByUri(
                _, key, value, expires_at
            ):
                key = check_key(key)
                scope = self._asset(caller, request)
                op = ops.Put(scope, key, encode(key, value), expires_at, caller.writer, who)
                return op, ok
            case m.DeleteAssetStateByName(_, key) | m.DeleteAssetStateByUri(_, key):
                return ops.Delete(self._asset(caller, request), check_key(key), who), ok
            case m.ClearAssetStateByName() | m.ClearAssetStateByUri():
                return ops.Clear(self._asset(caller, request), who=who), ok
            case m.IncrementAssetStateByName(_, key, by, expires_at) | m.IncrementAssetStateByUri(
                _, key, by, expires_at
            ):
                key = check_key(key)
                scope = self._asset(caller, request)
                op = ops.Increment(scope, key, _by(key, by), expires_at, caller.writer, who)
                return op, lambda v: m.IncrementResult(key, v)
            case m.CompareAndSetAssetStateByName(
                _, key, expected, new, expires_at
            ) | m.CompareAndSetAssetStateByUri(_, key, expected, new, expires_at):
                scope = self._asset(caller, request)
                op = self._cas(scope, key, expected, new, expires_at, caller.writer, who)
                return op, lambda swapped: m.CompareAndSetResult(key, swapped)
            case m.ListAssetStateByName() | m.ListAssetStateByUri():
                return ops.Items(self._asset(caller, request)), m.StateItemsResult
            case m.GetAssetStateHistoryByName(_, key) | m.GetAssetStateHistoryByUri(_, key):
                key = check_key(key)
                scope = self._asset(caller, request)
                return ops.History(scope, key), _history_result(key)
            case m.RollbackAssetStateByName(
                _, key, version, expires_at
            ) | m.RollbackAssetStateByUri(_, key, version, expires_at):
                self._admin(caller, request)
                key = check_key(key)
                scope = self._asset(caller, request)
                op = ops.Rollback(scope, key, _version(key, version), expires_at, None, who)
                return op, ok
            case m.GetAssetsByAlias(alias_name):
                if not caller.unrestricted and alias_name not in caller.aliases:
                    msg = (
                        f"{caller.label} did not declare AssetAlias({alias_name!r}) as an "
                        "inlet; add it to the task's inlets to read through it"
                    )
                    raise StateScopeError(msg)

                def resolved(assets: tuple[AssetInfo, ...]) -> m.AssetsByAliasResult:
                    for asset in assets:
                        caller.grant(asset)
                    return m.AssetsByAliasResult(assets)

                return ops.ResolveAlias(alias_name), resolved
            case m.AddAssetEvent(name, uri, extra, alias_name):
                extra_text = encode("extra", extra) if extra else "{}"
                if not isinstance(extra, dict):
                    msg = f"asset event extra must be a dict, got {type(extra).__name__}"
                    raise StateTypeError(msg)
                asset = AssetInfo(name, uri)
                # An event through an alias maps the asset to it, and the alias's consumers
                # are granted the asset: only a declared outlet alias (or asset) may emit.
                if alias_name is not None and not caller.unrestricted:
                    if alias_name not in caller.outlet_aliases:
                        msg = (
                            f"{caller.label} did not declare AssetAlias({alias_name!r}) as an "
                            "outlet; add it to the task's outlets to emit events through it"
                        )
                        raise StateScopeError(msg)
                elif not caller.unrestricted and caller.assets.get(name) != asset:
                    msg = (
                        f"{caller.label} did not declare Asset({name!r}, uri={uri!r}); "
                        "add it to the task's outlets to emit events for it"
                    )
                    raise UndeclaredAssetError(msg, asset=name)
                return ops.AddEvent(asset, extra_text, alias_name, caller.writer), ok
            case m.ListState():
                self._admin(caller, request)
                fields = attrs.asdict(request, recurse=False)
                return ops.ListEntries(**fields), m.StateEntriesResult
            case m.CountState(filters):
                self._admin(caller, request)
                fields = attrs.asdict(filters, recurse=False)
                return ops.CountEntries(ops.ListEntries(**fields)), m.CountResult
            case m.DeclareAssets(assets):
                self._admin(caller, request)
                return ops.RegisterAssets(tuple(assets)), ok
            case m.GetAssetByRef(name, uri):
                self._admin(caller, request)
                if (name is None) == (uri is None):
                    msg = "GetAssetByRef takes exactly one of name and uri"
                    raise ProtocolError(msg)
                return ops.LookupAsset(name, uri), m.AssetResult
            case m.CleanupExpired(dry_run, orphans_before):
                self._admin(caller, request)
                return ops.Cleanup(dry_run, orphans_before), m.CleanupResult
            case m.ListTaskItems(dag_id, run_id):
                self._admin(caller, request)
                return ops.ListItems(dag_id, run_id), m.TaskItemsResult
            case m.RecordTaskItem():
                self._admin(caller, request)
                return ops.RecordItem(**attrs.asdict(request, recurse=False)), ok
            case m.RecordTaskItems(dag_id, run_id, task_id, places):
                self._admin(caller, request)
                return ops.RecordItems(dag_id, run_id, task_id, places), ok
            case m.RecordDagRun(dag_id, run_id, state, started_at, ended_at, graph):
                self._admin(caller, request)
                return ops.RecordRun(dag_id, run_id, state, started_at, ended_at, graph), ok
            case m.EndDagRun(dag_id, run_id, started_at, ended_at, instances):
                self._admin(caller, request)
                op = ops.EndRun(dag_id, run_id, started_at, ended_at, instances)
                return op, m.DagRunEndedResult
            case m.RecordTaskInstance():
                self._admin(caller, request)
                return ops.RecordInstance(**attrs.asdict(request, recurse=False)), ok
            case m.FindUnheldInstances(holder, instances):
                self._admin(caller, request)
                return ops.FindUnheld(holder, instances), m.UnheldResult
            case m.RenewTaskLeases(holder, timeout):
                self._admin(caller, request)
                return ops.RenewLeases(holder, timeout), m.RenewedLeasesResult
            case m.ReleaseTaskLeases(holder, leases):
                self._admin(caller, request)
                return ops.ReleaseLeases(holder, leases), ok
            case m.ListDagRuns(dag_id, state, limit):
                self._admin(caller, request)
                return ops.ListRuns(dag_id, state, limit), m.DagRunsResult
            case m.GetDagRun(dag_id, run_id, attempts):
                self._admin(caller, request)
                return ops.GetRun(dag_id, run_id, attempts), m.DagRunRecordResult
            case m.ListAssetEvents(name, uri, limit):
                self._admin(caller, request)
                return ops.ListAssetEvents(AssetScope(name, uri), limit), m.AssetEventsResult
            case m.GetTaskInstanceRecord(dag_id, run_id, task_id, map_index):
                self._admin(caller, request)
                op = ops.GetInstance(dag_id, run_id, task_id, map_index)
                return op, m.TaskInstanceRecordResult
            case m.ClearDagRun():
                self._admin(caller, request)

                def cleared(found: list[tuple[str, int]] | None) -> m.ClearedResult:
                    return m.ClearedResult(None if found is None else tuple(found))

                return ops.ClearRun(**attrs.asdict(request, recurse=False)), cleared
            case m.CleanupDagRuns(ended_before, dry_run):
                self._admin(caller, request)
                return ops.CleanupRuns(ended_before, dry_run), m.CleanupResult
            case _:
                msg = f"the supervisor does not serve {type(request).__name__} ({request!r:.80})"
                raise ProtocolError(msg)

    def _encode(self, key: str, value: object) -> str:
        return encode_value(check_key(key), value, self.max_value_bytes)

    def _who(self, caller: Caller) -> StateWriter:
        """Who ``caller``'s changes name in the history."""
        return caller._try_writer or caller.who or self.out_of_band

    def _cas(
        self, scope: ops.Scope, key: str, expected: object, new: object,
        expires_at: float | None, writer: Writer | None, who: StateWriter,
    ) -> ops.CompareAndSet:  # fmt: skip
        key = check_key(key)
        new_text = self._encode(key, new)
        if expected is not None:
            # Compared as stored: set() keeps an IntEnum as an int, a str subclass as a str.
            expected = decode_value(self._encode(key, expected))
        return ops.CompareAndSet(scope, key, expected, new_text, expires_at, writer, who)

    @staticmethod
    def _task(caller: Caller) -> TaskScope:
        if caller.task is None:
            msg = (
                f"{caller.label} is bound to no task instance; use "
                "rt.state.task(dag_id, run_id, task_id, map_index) to reach task state"
            )
            raise StateScopeError(msg)
        return caller.task

    @staticmethod
    def _admin(caller: Caller, request: object) -> None:
        if not caller.unrestricted:
            msg = (
                f"{caller.label} may not send {type(request).__name__}: it is for "
                "out-of-band clients (rt.state, the CLI) only"
            )
            raise StateScopeError(msg)

    @staticmethod
    def _asset(caller: Caller, request: Any) -> AssetScope:
        name: str | None = getattr(request, "name", None)
        uri: str | None = getattr(request, "uri", None)
        for declared in caller.assets.values():
            if declared.name == name or declared.uri == uri:
                return AssetScope(declared.name, declared.uri)
        if caller.unrestricted:
            return AssetScope(name, uri)
        shown = f"name={name!r}" if name is not None else f"uri={uri!r}"
        declared_list = ", ".join(
            f"Asset({a.name!r}, uri={a.uri!r})" for a in caller.assets.values()
        )
        msg = (
            f"{caller.label} did not declare the asset with {shown}; it declared: "
            f"{declared_list or 'no assets'}. Add the asset to the task's inlets or outlets"
        )
        raise UndeclaredAssetError(msg, asset=name or uri)


_OK: Final = m.OkResponse()


def _ok(_: object) -> m.OkResponse:
    return _OK  # frozen: one instance serves every answer


def _check_expires(expires: object, key: object) -> None:
    # A hand-built message can carry anything here; the accessor sends a float.
    if type(expires) not in (int, float):
        msg = (
            f"expires_at must be a Unix time (an int or float) or None (never), got "
            f"{type(expires).__name__} {expires!r}; pass retention= to the accessor instead"
        )
        raise StateTypeError(msg, key=key)
    if not math.isfinite(expires):  # type: ignore[arg-type]
        msg = f"expires_at must be a finite Unix time or None (never), got {expires!r}"
        raise StateValueError(msg, key=key)


def _declares_on_execute(store: Any, flag: str) -> bool:
    """Whether the class that defines the ``execute`` ``store`` uses sets ``flag`` to
    True (a subclass that overrides ``execute`` promises nothing until it says so too)."""
    owner = next((c for c in type(store).__mro__ if "execute" in vars(c)), None)
    return owner is not None and vars(owner).get(flag) is True


def local_writer(kind: str) -> StateWriter:
    """An out-of-band writer of this process: ``kind`` with the OS user and host."""
    return StateWriter(kind=kind, user=_os_user(), host=HOST)


@functools.cache
def _os_user() -> str | None:
    """The OS user running this process, looked up once (it does not change)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for the uid (a container)
        return None


def _takes_on_commit(execute: Callable[..., Any]) -> bool:
    """Whether a store's ``execute`` takes ``on_commit``; one look per class's method."""
    function = getattr(execute, "__func__", None)
    if function is None:  # not a plain method: look each time
        return "on_commit" in inspect.signature(execute).parameters
    return _function_takes_on_commit(function)


@functools.cache
def _function_takes_on_commit(function: Callable[..., Any]) -> bool:
    return "on_commit" in inspect.signature(function).parameters


def _history_result(key: str) -> Callable[[Any], m.StateHistoryResult]:
    return lambda versions: m.StateHistoryResult(key, versions)


def _version(key: str, version: object) -> int:
    if type(version) is not int:
        msg = f"a version of {key!r} is an int, got {type(version).__name__} {version!r}"
        raise StateTypeError(msg, key=key)
    return version


def _by(key: str, by: object) -> int:
    if type(by) is not int:
        msg = f"increment of {key!r} takes an int 'by', got {type(by).__name__} {by!r}"
        raise StateTypeError(msg, key=key)
    return check_int_digits(key, by, "the amount")
