"""A Dag file that starts a thread when it is loaded: it cannot be forked from safely."""

from __future__ import annotations

import os
import threading

from stateward import Dag

_stop = threading.Event()
threading.Thread(target=_stop.wait, name="started-at-import", daemon=True).start()

threaded = Dag("threaded", default_args={"isolation": "process"})


@threaded.task
def where_am_i() -> list[int]:
    return [os.getpid(), os.getppid()]
