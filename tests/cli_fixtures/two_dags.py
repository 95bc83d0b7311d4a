"""Two Dags in one file: ``stateward run`` needs --dag to choose."""

from __future__ import annotations

from stateward import Dag

first = Dag("first")
second = Dag("second")


@first.task
def hello():
    return "hello"


@second.task
def world():
    return "world"
