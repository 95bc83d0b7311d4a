"""A Dag whose first task fails after a retry, so its downstream task never runs."""

from __future__ import annotations

from stateward import Dag

dag = Dag("flaky", default_args={"retries": 1})


@dag.task
def submit(task_state):
    task_state.set("attempts", task_state.get("attempts", 0) + 1)
    raise RuntimeError("the cluster is down")


@dag.task
def report():
    return "never"


submit >> report
