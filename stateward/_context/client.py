"""What the accessors need from whoever carries their requests: the client protocol.

The accessors of :mod:`stateward._context.accessors` speak the typed messages of
:mod:`stateward._protocol.messages` through a :class:`StateClient`. The runtime gives
each attempt one bound to its task instance: in process, a client of the supervisor;
in a task process, a client whose requests cross the socket to the parent. The context
knows only this protocol, never the runtime.
"""

from __future__ import annotations

from typing import Any, Protocol

from .._protocol.messages import Request


class StateClient(Protocol):
    """Sends requests for one caller and returns their responses.

    An error response is raised as the matching :class:`~stateward.StatewardError`.
    """

    async def request(self, request: Request) -> Any:
        """Send ``request`` from trio's thread (async code) and return its response."""

    def request_sync(self, request: Request, what: str = "state access") -> Any:
        """Send ``request`` from a worker thread and wait for its response.

        ``what`` names the accessor method called (``"task_state.get"``), so that a call
        from trio's thread, which would block it, is refused naming the async twin.
        """
