"""The frames between a task process and its parent: one closed union of attrs classes.

Each frame's wire form is a JSON object whose ``kind`` tag says which frame it is
(:func:`stateward._protocol.converter.encode_frame` and ``decode_frame``, the same strict
converter as the messages); :mod:`stateward._protocol.wire` carries them over a stream.

========== ========= ==================================================================
kind       direction what it holds
========== ========= ==================================================================
start      to child  :class:`StartFrame`: which task instance and try to run
request    to parent ``id`` (chosen by the child) and a request message
response   to child  ``id`` of the request answered, and its response message
rendered   to parent the rendered template fields, for ``.rendered``
result     to parent the returned value (JSON) and the outlet events
error      to parent the type, message and formatted traceback of what the task raised
load_error to parent why the task could not be loaded from its file
========== ========= ==================================================================
"""

from __future__ import annotations

from typing import Any, Final, TypeAlias

import attrs

from .._records import AssetInfo
from .messages import AddAssetEvent, JsonValue, Request, Response


@attrs.frozen(kw_only=True)
class StartFrame:
    """The first frame: which task instance and try the child runs, and its settings."""

    #: The Dag file the child loads the task from.
    dag_file: str
    dag_id: str
    run_id: str
    task_id: str
    map_index: int
    try_number: int
    max_tries: int
    #: The run's params (JSON).
    params: dict[str, JsonValue]
    #: The concrete assets the task declared (asset refs already resolved).
    assets: tuple[AssetInfo, ...]
    #: Default retentions in seconds (``None``: forever).
    task_retention: float | None
    asset_retention: float | None
    #: The runtime's wall clock minus the child's ``time.time()`` at start: the child
    #: computes expiry times on the supervisor's clock.
    clock_offset: float


@attrs.frozen
class RequestFrame:
    """A request of the task, to be served as the task instance the parent bound."""

    #: Chosen by the child; the response carries it back.
    id: int
    msg: Request


@attrs.frozen
class ResponseFrame:
    """The answer to the request frame with the same ``id``."""

    id: int
    msg: Response


@attrs.frozen
class RenderedFrame:
    """The rendered template fields (as JSON), sent just before ``execute``."""

    fields: dict[str, JsonValue]


@attrs.frozen
class ResultFrame:
    """The attempt succeeded: what ``execute`` returned, and the outlet events."""

    value: JsonValue
    events: tuple[AddAssetEvent, ...]


@attrs.frozen
class ErrorFrame:
    """The task raised: the exception's qualified type name, text and traceback."""

    type: str
    message: str
    traceback: str


@attrs.frozen
class LoadErrorFrame:
    """The task could not be loaded from its Dag file."""

    message: str


#: The frames that end an attempt (the child sends exactly one, last).
FinalFrame: TypeAlias = ResultFrame | ErrorFrame | LoadErrorFrame
Frame: TypeAlias = (
    StartFrame | RequestFrame | ResponseFrame | RenderedFrame | ResultFrame | ErrorFrame
    | LoadErrorFrame
)  # fmt: skip

#: Every frame class, by its ``kind`` tag.
FRAME_KINDS: Final[dict[str, type[Any]]] = {
    "start": StartFrame,
    "request": RequestFrame,
    "response": ResponseFrame,
    "rendered": RenderedFrame,
    "result": ResultFrame,
    "error": ErrorFrame,
    "load_error": LoadErrorFrame,
}
#: The tag of each frame class.
KIND_OF: Final[dict[type[Any], str]] = {cls: kind for kind, cls in FRAME_KINDS.items()}
