"""The lifecycles of a task instance and of a Dag run, as string enums.

A member is a ``str`` equal to its value, so ``ti.state == "success"`` holds and
``str()``, f-strings and ``json.dumps`` show the bare value (``success``), as before
the states were enums.
"""

from __future__ import annotations

import enum


class TaskInstanceState(enum.StrEnum):
    """Where a task instance is: a result's final state, or a progress event's."""

    #: An attempt started (progress events only).
    RUNNING = "running"
    #: An attempt failed and another will follow after ``retry_delay`` (events only).
    UP_FOR_RETRY = "up_for_retry"
    #: The last attempt returned.
    SUCCESS = "success"
    #: The last attempt raised and no retry was left.
    FAILED = "failed"
    #: Not run: an upstream task did not succeed.
    UPSTREAM_FAILED = "upstream_failed"


class DagRunState(enum.StrEnum):
    """How a Dag run ended."""

    #: Every task instance succeeded.
    SUCCESS = "success"
    #: At least one task instance failed or was not run.
    FAILED = "failed"
