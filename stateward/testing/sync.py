"""SyncHarness: the StateHarness helpers for plain ``def`` tests, in a background trio."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trio

from .._assets import Asset, AssetAlias
from .._dag import Dag, Operator
from .._errors import AsyncContextError, RuntimeClosedError
from .._runtime.runner import DagRunResult, TaskInstanceResult
from .._runtime.runtime import Runtime, RuntimeState, open_runtime
from ..store.base import Store
from ..store.memory import MemoryStore
from .harness import DEFAULT_RUN_ID, AssetTarget, StateHarness


class SyncHarness:
    """A :class:`StateHarness` for synchronous code: a runtime on a thread of its own.

    ``with SyncHarness() as sw:`` starts a thread that runs trio with an open runtime;
    each method is the blocking twin of the :class:`StateHarness` method of the same
    name and runs on that thread. Leaving the block closes the runtime and joins the
    thread; an error that ended the runtime is raised there. The ``sw_sync`` fixture
    makes one on a ``MemoryStore``.

    Args:
        db: A SQLite file for the runtime (default: a fresh ``MemoryStore``).
        store: A store object instead of ``db``.
        run_id: The run id of calls that name none.
        clock: The clock trio runs on, e.g. ``trio.testing.MockClock(autojump_threshold=0)``
            to make retry delays instant.
        **runtime_options: More arguments of :func:`~stateward.open_runtime`.
    """

    def __init__(
        self,
        db: str | Path | None = None,
        *,
        store: Store | None = None,
        run_id: str = DEFAULT_RUN_ID,
        clock: trio.abc.Clock | None = None,
        **runtime_options: Any,
    ) -> None:
        if db is None and store is None:
            store = MemoryStore()
        self._db = db
        self._store = store
        self._run_id = run_id
        self._clock = clock
        self._options = runtime_options
        #: Unopened, open (inside the ``with`` block) or closed.
        self.status = RuntimeState.UNOPENED
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._harness: StateHarness | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._error: BaseException | None = None

    def __repr__(self) -> str:
        return f"<SyncHarness {self.status.value} run_id={self._run_id!r}>"

    def __enter__(self) -> Self:
        if self.status is not RuntimeState.UNOPENED:
            msg = f"this SyncHarness is {self.status.value}; make a new one for each 'with' block"
            raise RuntimeClosedError(msg)
        _refuse_async("SyncHarness()", "in an async test use the sw fixture, a StateHarness")
        self.status = RuntimeState.OPEN
        self._thread = threading.Thread(
            target=self._main, name="stateward-sync-harness", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if self._harness is None:
            self._finish()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.status is RuntimeState.OPEN and self._harness is not None:
            assert self._stop is not None
            assert self._token is not None
            with contextlib.suppress(trio.RunFinishedError):
                self._token.run_sync_soon(self._stop.set)
        self._finish()

    def _finish(self) -> None:
        self.status = RuntimeState.CLOSED
        if self._thread is not None:
            self._thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self._clock)
        except BaseException as exc:
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        options = {"out_of_band_writer": "test", **self._options}
        async with open_runtime(self._db, store=self._store, **options) as rt:
            self._stop = trio.Event()
            self._token = trio.lowlevel.current_trio_token()
            self._harness = StateHarness(rt, run_id=self._run_id)
            self._ready.set()
            await self._stop.wait()

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.status is not RuntimeState.OPEN or self._harness is None:
            msg = (
                f"SyncHarness.{method}() needs an open harness; "
                f"it is {self.status.value}: use 'with SyncHarness() as sw:'"
            )
            raise RuntimeClosedError(msg)
        _refuse_async(
            f"SyncHarness.{method}()",
            f"in an async test use the sw fixture: 'await sw.{method}(...)'",
        )
        function = functools.partial(getattr(self._harness, method), *args, **kwargs)
        try:
            return trio.from_thread.run(function, trio_token=self._token)
        except trio.RunFinishedError:
            msg = f"SyncHarness.{method}(): the harness's runtime has stopped"
            raise RuntimeClosedError(msg) from self._error

    @property
    def harness(self) -> StateHarness:
        """The async harness on the runtime's thread (await its methods only there)."""
        if self._harness is None:
            msg = "the SyncHarness is not open; use 'with SyncHarness() as sw:'"
            raise RuntimeClosedError(msg)
        return self._harness

    @property
    def rt(self) -> Runtime:
        """The runtime; from this thread use its sync accessors (``rt.state.task(...).get``)."""
        return self.harness.rt

    @property
    def run_id(self) -> str:
        """The run id of calls that name none."""
        return self._run_id

    @property
    def results(self) -> list[TaskInstanceResult]:
        """Every task instance result of the runs made through this harness, in order."""
        return self.harness.results

    def load_dag(self, path: str | os.PathLike[str], dag_id: str | None = None) -> Dag:
        """Load a Dag file and pick a Dag: :meth:`StateHarness.load_dag`."""
        return self.harness.load_dag(path, dag_id)

    def seed_task_state(
        self,
        task: Operator,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        **more: Any,
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_task_state`."""
        self._call("seed_task_state", task, values, run_id=run_id, map_index=map_index, **more)

    def task_state(
        self, task: Operator, *, run_id: str | None = None, map_index: int = -1
    ) -> dict[str, Any]:
        """Blocking twin of :meth:`StateHarness.task_state`."""
        state: dict[str, Any] = self._call("task_state", task, run_id=run_id, map_index=map_index)
        return state

    def seed_asset_state(
        self, asset: AssetTarget, values: Mapping[str, Any] | None = None, /, **more: Any
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_asset_state`."""
        self._call("seed_asset_state", asset, values, **more)

    def asset_state(self, asset: AssetTarget) -> dict[str, Any]:
        """Blocking twin of :meth:`StateHarness.asset_state`."""
        state: dict[str, Any] = self._call("asset_state", asset)
        return state

    def seed_asset_event(
        self,
        asset: Asset,
        *,
        alias: AssetAlias | str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Blocking twin of :meth:`StateHarness.seed_asset_event`."""
        self._call("seed_asset_event", asset, alias=alias, extra=extra)

    def run_task(
        self,
        task: Operator,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Blocking twin of :meth:`StateHarness.run_task`."""
        result: TaskInstanceResult = self._call(
            "run_task",
            task,
            run_id=run_id,
            map_index=map_index,
            try_number=try_number,
            params=params,
        )
        return result

    def run_dag(
        self, dag: Dag, *, run_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> DagRunResult:
        """Blocking twin of :meth:`StateHarness.run_dag`."""
        result: DagRunResult = self._call("run_dag", dag, run_id=run_id, params=params)
        return result


def _refuse_async(what: str, instead: str) -> None:
    if trio.lowlevel.in_trio_run():
        msg = f"{what} blocks, so it cannot be used from async code (trio's thread); {instead}"
        raise AsyncContextError(msg)
