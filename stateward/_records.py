"""Plain records shared by every layer (messages, store, CLI): values with no behaviour."""

from __future__ import annotations

from typing import Any

import attrs


def instance_label(dag_id: str, task_id: str, map_index: int = -1) -> str:
    """How messages name a task instance: ``dag.task``, or ``dag.task[2]`` when mapped."""
    return f"{dag_id}.{task_id}[{map_index}]" if map_index >= 0 else f"{dag_id}.{task_id}"


@attrs.frozen
class AssetInfo:
    """A concrete asset as the store knows it."""

    #: The asset's unique name.
    name: str
    #: The asset's unique URI.
    uri: str


@attrs.frozen
class StateEntry:
    """One stored key with its provenance, as listed for the CLI and admin tools."""

    #: ``"task"`` or ``"asset"``.
    scope: str
    key: str
    value: Any
    #: Unix time of the last write.
    updated_at: float
    #: Unix time at which the key expires; ``None``: never.
    expires_at: float | None = None
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    map_index: int | None = None
    asset_name: str | None = None
    asset_uri: str | None = None
    #: The task instance that last wrote the key (``dag/run/task[i] try n``); ``None``
    #: for an out-of-band write (CLI, admin code, test seeding).
    writer: str | None = None
