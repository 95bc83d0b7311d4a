"""StateHarness: seed and read state by task object, run one task or a whole Dag."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Final

from .._assets import Asset, AssetAlias, AssetNameRef, AssetUriRef
from .._context.accessors import AssetStateAccessor
from .._dag import Dag, Operator
from .._loader import load_dags, pick_dag
from .._protocol import messages as m
from .._records import AssetInfo
from .._runtime.runner import DagRunResult, TaskInstanceResult
from .._runtime.runtime import Runtime

#: The run id a harness uses when a call names none, so seeding and running agree.
DEFAULT_RUN_ID: Final = "test_run"

#: What the asset helpers accept.
AssetTarget = Asset | AssetNameRef | AssetUriRef | str


class StateHarness:
    """Seed state, run one task or a Dag, and read state back, by task object.

    A thin layer over an open :class:`~stateward.Runtime` (``.rt``, whose ``rt.state``
    and ``rt.run_task`` stay available): tasks are named by their object instead of
    ``(dag_id, task_id)``, and every call uses one run id unless told otherwise. The
    ``sw`` and ``sw_sqlite`` fixtures make one; outside pytest, wrap any runtime.

    Args:
        rt: An open runtime.
        run_id: The run id of calls that name none.
    """

    __slots__ = ("results", "rt", "run_id")

    def __init__(self, rt: Runtime, *, run_id: str = DEFAULT_RUN_ID) -> None:
        #: The runtime the harness drives.
        self.rt = rt
        #: The run id of calls that name none.
        self.run_id = run_id
        #: Every task instance result of the runs made through this harness, in order.
        self.results: list[TaskInstanceResult] = []

    def __repr__(self) -> str:
        return f"<StateHarness run_id={self.run_id!r} on {self.rt!r}>"

    # -- Dag files ----------------------------------------------------------------------

    def load_dag(self, path: str | os.PathLike[str], dag_id: str | None = None) -> Dag:
        """Load a Dag file (one written for Airflow's ``airflow.sdk`` too) and pick a Dag.

        The file is run afresh on each call, as ``stateward run`` runs it: see
        :func:`stateward.load_dags`.

        Args:
            path: The Dag file.
            dag_id: Which of its Dags; ``None`` when it defines exactly one.

        Raises:
            TaskLoadError: the file cannot be loaded, or ``dag_id`` does not pick one Dag.
        """
        return pick_dag(load_dags(path), dag_id, source=f"Dag file {os.fspath(path)!r}")

    # -- task state ---------------------------------------------------------------------

    async def seed_task_state(
        self,
        task: Operator,
        values: Mapping[str, Any] | None = None,
        /,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        **more: Any,
    ) -> None:
        """Write task state for ``task``'s instance, as an earlier try would have.

        ``await sw.seed_task_state(submit, job_id="j-42")``; keys that are not
        identifiers (or are ``run_id``/``map_index``) go in ``values``.

        Args:
            task: The task whose instance owns the state.
            values: Keys and values to write.
            run_id: The run (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
            **more: More keys and values.

        Raises:
            StateValueError: a value that cannot be stored (``None``, NaN, too large).
            StateTypeError: a value that is not JSON.
        """
        accessor = self.rt.state.task(
            task.dag.dag_id, run_id or self.run_id, task.task_id, map_index
        )
        for key, value in {**(values or {}), **more}.items():
            await accessor.aset(key, value)

    async def task_state(
        self, task: Operator, *, run_id: str | None = None, map_index: int = -1
    ) -> dict[str, Any]:
        """Every live key of ``task``'s instance, as a dict (empty if it has none).

        Args:
            task: The task.
            run_id: The run (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
        """
        accessor = self.rt.state.task(
            task.dag.dag_id, run_id or self.run_id, task.task_id, map_index
        )
        return dict(await accessor.aitems())

    # -- asset state --------------------------------------------------------------------

    async def seed_asset_state(
        self, asset: AssetTarget, values: Mapping[str, Any] | None = None, /, **more: Any
    ) -> None:
        """Write state on ``asset``, as earlier runs would have.

        ``await sw.seed_asset_state(ORDERS, watermark=3)``. Pass the
        :class:`~stateward.Asset` the tasks declare: an asset no Dag has declared yet
        is registered by this write, and a bare name registers it with the name as its
        URI too.

        Args:
            asset: The asset, a reference to it, or its name.
            values: Keys and values to write.
            **more: More keys and values.

        Raises:
            StateValueError: a value that cannot be stored.
            StateTypeError: a value that is not JSON.
        """
        if isinstance(asset, Asset):
            # Register it with its own URI: a write by name alone would give it the
            # name as URI, and the Dag declaring the real pair would then clash.
            declare = m.DeclareAssets((AssetInfo(asset.name, asset.uri),))
            await self.rt.admin.request(declare)
        accessor = self._asset(asset)
        for key, value in {**(values or {}), **more}.items():
            await accessor.aset(key, value)

    async def asset_state(self, asset: AssetTarget) -> dict[str, Any]:
        """Every live key of ``asset``'s state, as a dict (empty if it has none).

        Args:
            asset: The asset, a reference to it, or its name.
        """
        return dict(await self._asset(asset).aitems())

    async def seed_asset_event(
        self,
        asset: Asset,
        *,
        alias: AssetAlias | str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record an event on ``asset``, as a producer task would, through ``alias`` if given.

        An alias inlet resolves to the assets produced through it, so this is how a
        test prepares what a consumer with ``inlets=[AssetAlias(...)]`` sees.

        Args:
            asset: The asset produced.
            alias: The alias the producer emitted through.
            extra: The event's extra (a JSON dict).
        """
        alias_name = alias.name if isinstance(alias, AssetAlias) else alias
        request = m.AddAssetEvent(asset.name, asset.uri, dict(extra or {}), alias_name)
        await self.rt.admin.request(request)

    def _asset(self, asset: AssetTarget) -> AssetStateAccessor:
        match asset:
            case AssetNameRef(name=name):
                return self.rt.state.asset(name=name)
            case AssetUriRef(uri=uri):
                return self.rt.state.asset(uri=uri)
            case Asset() | str():
                return self.rt.state.asset(asset)
            case _:
                msg = (
                    f"expected an Asset, Asset.ref(...) or an asset name, got {asset!r}; "
                    "pass the Asset your tasks declare"
                )
                raise TypeError(msg)

    # -- running ------------------------------------------------------------------------

    async def run_task(
        self,
        task: Operator,
        *,
        run_id: str | None = None,
        map_index: int = -1,
        try_number: int = 1,
        params: Mapping[str, Any] | None = None,
    ) -> TaskInstanceResult:
        """Run one instance of ``task`` (not its upstream tasks), with its retries.

        Its Dag's assets are declared and its alias inlets resolved, as in a Dag run.
        A failing task does not raise: check ``.state`` or call :func:`assert_success`.

        Args:
            task: The task.
            run_id: The run whose task state it uses (default: the harness's run id).
            map_index: Which mapped instance (-1 for an unmapped task).
            try_number: The first try's number, to test what a retry does.
            params: Overrides of the Dag's params.

        Returns:
            The instance's result, with ``.rendered`` holding its rendered template
            fields.
        """
        result = await self.rt.run_task(
            task,
            run_id=run_id or self.run_id,
            map_index=map_index,
            try_number=try_number,
            params=params,
        )
        self.results.append(result)
        return result

    async def run_dag(
        self, dag: Dag, *, run_id: str | None = None, params: Mapping[str, Any] | None = None
    ) -> DagRunResult:
        """Run every task of ``dag`` as one Dag run.

        Args:
            dag: The Dag.
            run_id: The run's id (default: the harness's run id).
            params: Overrides of the Dag's params.

        Returns:
            The run's result; ``.ti(task_id, map_index)`` gives each instance's.
        """
        result = await self.rt.run_dag(dag, run_id=run_id or self.run_id, params=params)
        self.results.extend(result.task_instances)
        return result
