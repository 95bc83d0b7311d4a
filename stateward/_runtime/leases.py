"""The leases a runtime holds on task instances, and the task that keeps them alive.

An attempt runs while its runtime holds the lease on its instance (see "Decision (leases
and fencing)" in DESIGN.md). The runner takes a lease through the store
(``AcquireTaskLease``) and registers it here as a :class:`Holding`, which the attempt's
:class:`~stateward._runtime.supervisor.Caller` carries: the supervisor fences every write
of the attempt with it, and refuses every request once the holding is ``lost``. One
task of the runtime renews all its leases in one write every ``timeout / 3`` seconds
of trio's clock (none when neither the wall clock nor real time moved half that since
the last renewal: a test's MockClock jumping through a retry delay); a lease the
renewal no longer finds was taken over, and its holding is marked lost.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING

import attrs
import trio

from .._errors import StatewardError
from .._protocol import messages as m
from .._records import Lease

if TYPE_CHECKING:
    from .client import SupervisorClient

#: A renewal the store refused is logged here (WARNING); the next one tries again.
logger = logging.getLogger("stateward.runner")

#: How long a silent runtime keeps its leases unless told otherwise (seconds).
DEFAULT_LEASE_TIMEOUT = 30.0


def check_lease_timeout(value: object) -> float:
    """``value`` (seconds or a timedelta) as positive seconds.

    Raises:
        TypeError: it is neither a number nor a timedelta.
        ValueError: it is not a positive, finite duration.
    """
    seconds: object = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        msg = (
            f"lease_timeout must be seconds (an int or float) or a timedelta, got "
            f"{type(value).__name__} {value!r}"
        )
        raise TypeError(msg)
    if not math.isfinite(seconds) or seconds <= 0:
        msg = (
            f"lease_timeout must be a positive, finite duration, got {value!r}; it is how "
            "long a runtime that stops renewing keeps its task instances (default 30 s)"
        )
        raise ValueError(msg)
    return float(seconds)


def _is_hex(text: str) -> bool:
    return len(text) >= 8 and all(c in "0123456789abcdef" for c in text[:8])


@attrs.define(eq=False)
class Holding:
    """One attempt's lease as its runtime holds it."""

    lease: Lease
    #: What took it (a run call), whose end by an error gives it up (:meth:`LeaseKeeper.taken_by`).
    owner: object = None
    #: Set when a renewal found the lease taken over: the attempt's requests are refused.
    lost: bool = False
    #: Set once the attempt's end is on its way (which may give the lease up): a
    #: renewal no longer judges it.
    ending: bool = False


class LeaseKeeper:
    """A runtime's leases: its id, the holdings of its running attempts, their renewal."""

    def __init__(
        self,
        timeout: float,
        holder: str | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        #: The runtime's id in the store (a UUID).
        self.holder = holder or uuid.uuid4().hex
        self.timeout = timeout
        #: The clock the runtime gives the store (a lease expires by it, or by the
        #: server's on PostgreSQL, which runs with real time).
        self._wall_clock = wall_clock
        self._held: dict[tuple[str, str, str, int], Holding] = {}
        #: Instances waited for (another runtime holds them), each with the try number
        #: its waiter saw: :meth:`_watch` sets the event once one is no longer held.
        self._waiting: dict[trio.Event, tuple[str, str, str, int, int]] = {}
        #: Set while :meth:`_watch` idles (nothing is waited for) by the next waiter.
        self._wanted: trio.Event | None = None
        self._renewal = trio.CancelScope()
        #: Set once the runtime may hold a lease no holding names: the runner asked for
        #: one ahead (see runner.AHEAD_BELOW), which no holding names until its attempt
        #: starts, or a run call that ended by an error could not give its leases up
        #: (the store failed or was slow); closing then releases every lease it holds.
        self.unnamed = False
        #: Starts :meth:`keep`, until it is started (see :meth:`keep_when_needed`).
        self._start_keeping: Callable[[], None] | None = None

    @property
    def holding(self) -> bool:
        """Whether the runtime holds any lease (or may: see :attr:`unnamed`)."""
        return bool(self._held) or self.unnamed

    def keep_when_needed(self, nursery: trio.Nursery, admin: SupervisorClient) -> None:
        """Run :meth:`keep` in ``nursery`` from the first time the runtime holds or
        waits for a lease: a runtime that never does (one that only reads and writes
        state, a test) starts no task for it."""
        self._start_keeping = functools.partial(nursery.start_soon, self.keep, admin)

    def _keeping(self) -> None:
        start, self._start_keeping = self._start_keeping, None
        if start is not None:
            start()

    def stop(self) -> None:
        """End :meth:`keep` (the runtime is closing)."""
        self._start_keeping = None
        self._renewal.cancel()

    @property
    def poll_interval(self) -> float:
        """How often a runtime waiting for another's instance looks at its record."""
        return min(1.0, self.timeout / 4)

    def start_order(self, indices: list[int]) -> list[int]:
        """``indices`` (one task's map indices) in the order this runtime starts them:
        rotated by an offset drawn from the runtime's id, so runtimes joining one run
        start at different places and split its instances instead of all reaching for
        the same next one (each skips what it finds held)."""
        if len(indices) < 2:
            return indices
        offset = int(self.holder[:8], 16) % len(indices) if _is_hex(self.holder) else 0
        return indices[offset:] + indices[:offset]

    async def wait_unheld(self, instance: tuple[str, str, str, int], seen_try: int) -> None:
        """Return once ``instance``, which another runtime held, may be acquired or has
        finished: the runtime looks at every instance it waits for in one read per
        :attr:`poll_interval`. Returns after ``timeout`` at the latest whatever was seen
        (the caller's acquisition decides; this only saves it looking in vain)."""
        self._keeping()
        event = trio.Event()
        self._waiting[event] = (*instance, seen_try)
        if self._wanted is not None:
            self._wanted.set()
            self._wanted = None
        try:
            with trio.move_on_after(self.timeout):
                await event.wait()
        finally:
            del self._waiting[event]

    def hold(self, lease: Lease, owner: object = None) -> Holding:
        """Register a lease just acquired (replacing the instance's previous try's) by
        ``owner`` (a run call)."""
        self._keeping()
        holding = Holding(lease, owner)
        self._held[lease.instance] = holding
        return holding

    def taken_by(self, owner: object) -> list[Holding]:
        """The holdings ``owner`` registered that are still held."""
        return [holding for holding in self._held.values() if holding.owner is owner]

    def drop(self, holding: Holding) -> None:
        """Forget ``holding`` (its instance ended, or the lease was lost)."""
        if self._held.get(holding.lease.instance) is holding:
            del self._held[holding.lease.instance]

    def renewed(
        self,
        held: tuple[tuple[str, str, str, int, int], ...],
        asked: dict[tuple[str, str, str, int], Holding],
    ) -> None:
        """Mark lost every holding of ``asked`` the renewal did not extend (a holding
        taken or replaced while the renewal was on its way is not judged by it)."""
        extended = {(d, r, t, i): n for d, r, t, i, n in held}
        for key, holding in asked.items():
            if (
                holding.ending
                or self._held.get(key) is not holding
                or extended.get(key) == holding.lease.try_number
            ):
                continue
            holding.lost = True
            self.drop(holding)
            logger.warning(
                "%s try %d lost its lease (another runtime took the instance over); "
                "its further state requests are refused",
                key, holding.lease.try_number,
            )  # fmt: skip

    async def keep(self, admin: SupervisorClient) -> None:
        """Renew this runtime's leases every ``timeout / 3`` seconds, in one write each
        time (none while it holds none), unless trio's clock ran ahead (see the module's
        docstring); runs until :meth:`stop`."""
        with self._renewal:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch, admin)
                await self._keep(admin)

    async def _watch(self, admin: SupervisorClient) -> None:
        while True:
            if not self._waiting:
                # Idle until something is waited for (no timer ticks meanwhile: a test
                # on trio's MockClock with autojump would spin through them).
                self._wanted = wanted = trio.Event()
                await wanted.wait()
            await trio.sleep(self.poll_interval)
            if not self._waiting:
                continue
            asked = list(self._waiting.items())
            request = m.FindUnheldInstances(self.holder, tuple(i for _, i in asked))
            try:
                answer = await admin.request(request)
                ready = [asked[i][0] for i in answer.positions]
            except StatewardError as exc:
                # The acquisitions themselves will say what is wrong.
                logger.debug("could not look at the instances waited for: %s", exc)
                ready = [event for event, _ in asked]
            for event in ready:
                event.set()

    async def _keep(self, admin: SupervisorClient) -> None:
        every = self.timeout / 3
        wall, real = self._wall_clock(), time.monotonic()
        while True:
            await trio.sleep(every)
            if not self._held:
                continue
            if max(self._wall_clock() - wall, time.monotonic() - real) < every / 2:
                # trio's clock ran ahead of both the wall clock and real time (a test's
                # MockClock, jumping through a retry delay): no lease came any closer
                # to expiring, on the store's clock or PostgreSQL's, so no write.
                continue
            # Read before the request: the store's now is no earlier, so the leases
            # last at least this long. Kept only once the renewal went through.
            sent = self._wall_clock(), time.monotonic()
            asked = dict(self._held)
            try:
                answer = await admin.request(m.RenewTaskLeases(self.holder, self.timeout))
            except StatewardError as exc:
                logger.warning("could not renew leases: %s", exc)
                continue
            wall, real = sent
            self.renewed(answer.held, asked)
