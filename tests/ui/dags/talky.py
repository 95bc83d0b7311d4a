"""A Dag whose one task prints a line (its log) and keeps a key of task state."""

from __future__ import annotations

from stateward import Dag

dag = Dag("talky")


@dag.task
def speak(task_state):
    print("hello from speak")
    task_state.set("said", "hello")
