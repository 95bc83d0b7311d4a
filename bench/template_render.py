"""Rendering a template field that reads three state keys, once per attempt.

Prints one JSON line: the cost per attempt of rendering a ShellOperator-like field
`<< task_state.a >> << task_state.b >> << asset_state.c >>` through the runtime (the
snapshot requests and the render) against a plain jinja2 render of the same template
with a dict (the floor). Usage::

    python bench/template_render.py [--n 2000]
"""

from __future__ import annotations

import argparse
import time
from typing import Any, ClassVar

import jinja2
import trio

from _common import emit, machine
from stateward import Asset, Dag, MemoryStore, Operator, open_runtime

SOURCE = "load --job << task_state.a >> --since << task_state.b >> --rows << asset_state.c >>"


class Echo(Operator):
    template_fields: ClassVar[tuple[str, ...]] = ("command",)

    def __init__(self, *, command: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.command = command

    async def execute(self, context: Any) -> str:
        return self.command


async def measure(n: int) -> dict[str, float]:
    dag = Dag("render")
    plain = Echo(task_id="plain", dag=dag, command="load --job 1 --since 2 --rows 3")
    templated = Echo(task_id="templated", dag=dag, command=SOURCE, outlets=[Asset("rows")])
    async with open_runtime(store=MemoryStore()) as rt:
        state = rt.state.task("render", "r", "templated")
        await state.aset("a", "job-1")
        await state.aset("b", "2024-01-01")
        await rt.state.asset("rows").aset("c", 42)
        figures = {}
        for name, task in (("plain", plain), ("templated", templated)):
            start = time.perf_counter()
            for _ in range(n):
                result = await rt.run_task(task, run_id="r")
            figures[name] = (time.perf_counter() - start) / n * 1000
        assert result.result == "load --job job-1 --since 2024-01-01 --rows 42", result
    return figures


def jinja_floor(n: int) -> float:
    env = jinja2.Environment(variable_start_string="<<", variable_end_string=">>")
    values = {"task_state": {"a": "job-1", "b": "2024-01-01"}, "asset_state": {"c": 42}}
    start = time.perf_counter()
    for _ in range(n):
        env.from_string(SOURCE).render(values)
    return (time.perf_counter() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    ours = trio.run(measure, args.n)
    floor = jinja_floor(args.n)
    render_cost = ours["templated"] - ours["plain"]
    emit(
        "template_render",
        n=args.n,
        attempt_plain_ms=round(ours["plain"], 4),
        attempt_templated_ms=round(ours["templated"], 4),
        render_cost_per_attempt_ms=round(render_cost, 4),
        jinja_compile_and_render_ms=round(floor, 4),
        ratio_render_vs_jinja=round(render_cost / floor, 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
