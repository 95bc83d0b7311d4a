"""Charts drawn on the server as SVG: a run's task graph (or, for a run recorded
without its graph, its tasks in start order) and its Gantt chart.

Every text that comes from data (task ids, states) goes through ``escape``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Final

from markupsafe import Markup, escape

from .._records import DagRunRecord, TaskInstanceRecord, TaskNode

#: Fill colour of each state (the CSS uses the same ones).
COLOURS: Final = {
    "success": "#2e9e4f",
    "failed": "#d2372c",
    "running": "#4a90d9",
    "up_for_retry": "#e6c229",
    "queued": "#8a8fd1",
    "upstream_failed": "#e8a33d",
}
NONE_COLOUR: Final = "#b8b8b8"
#: Which state a group of instances (a mapped task) shows: the first one present.
SEVERITY: Final = ("failed", "upstream_failed", "up_for_retry", "running", "queued", "success")
_ROW: Final = 22
_LABEL: Final = 180
_WIDTH: Final = 720


def colour(state: str | None) -> str:
    return COLOURS.get(state or "", NONE_COLOUR)


def label(ti: TaskInstanceRecord) -> str:
    return f"{ti.task_id}[{ti.map_index}]" if ti.map_index >= 0 else ti.task_id


def _ordered(run: DagRunRecord) -> list[TaskInstanceRecord]:
    never = float("inf")
    return sorted(run.instances, key=lambda ti: (ti.started_at or never, ti.task_id, ti.map_index))


def start_order(run: DagRunRecord) -> Markup:
    """The run's task instances as boxes, in columns (waves) of the order they ran.

    Run records keep no edges between tasks, so this is the order the run took, not
    the Dag's graph: an instance that started before every instance of the current
    column had ended runs beside them; one that started after starts a new column.
    """
    columns: list[list[TaskInstanceRecord]] = []
    column_end = float("-inf")
    for ti in _ordered(run):
        start = ti.started_at if ti.started_at is not None else float("inf")
        if not columns or start >= column_end:
            columns.append([])
            column_end = float("-inf")
        columns[-1].append(ti)
        column_end = max(column_end, ti.ended_at if ti.ended_at is not None else float("inf"))
    box_w, box_h, gap = 150, 26, 30
    height = max((len(c) for c in columns), default=1) * (box_h + 10) + 10
    width = len(columns) * (box_w + gap) + gap
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="task instances in start order">'
    ]
    for x_index, column in enumerate(columns):
        x = gap + x_index * (box_w + gap)
        if x_index:
            parts.append(
                f'<line x1="{x - gap}" y1="{height / 2}" x2="{x}" y2="{height / 2}" '
                'stroke="#999" marker-end="url(#arrow)"/>'
            )
        for y_index, ti in enumerate(column):
            y = 10 + y_index * (box_h + 10)
            name = escape(label(ti))
            parts.append(
                f"<g><title>{name}: {escape(ti.state)}</title>"
                f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="4" '
                f'fill="{colour(ti.state)}"/>'
                f'<text x="{x + 8}" y="{y + 17}" fill="#fff">{name}</text></g>'
            )
    parts.append(
        '<defs><marker id="arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#999"/></marker></defs></svg>'
    )
    return Markup("".join(parts))


def summary(instances: list[TaskInstanceRecord]) -> tuple[str | None, str]:
    """The state a task's instances show together (the most severe; ``None``: no
    instance recorded) and, for a mapped task, ``succeeded/all``."""
    if not instances:
        return None, ""
    counts = Counter(ti.state for ti in instances)
    worst = next((s for s in SEVERITY if counts[s]), instances[0].state)
    mapped = any(ti.map_index >= 0 for ti in instances)
    return worst, f"{counts['success']}/{len(instances)}" if mapped else ""


def _layers(nodes: tuple[TaskNode, ...]) -> list[list[TaskNode]]:
    """Columns of the graph: each task one column right of its furthest upstream
    task; within a column, tasks ordered by where their upstream tasks stand."""
    depth: dict[str, int] = {}
    for node in nodes:  # topological order
        depth[node.task_id] = 1 + max(
            (depth.get(u, -1) for u in node.upstream_task_ids), default=-1
        )
    columns: list[list[TaskNode]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    row: dict[str, float] = {}
    for node in nodes:
        columns[depth[node.task_id]].append(node)
    for column in columns:
        column.sort(
            key=lambda n: (
                sum(row.get(u, 0.0) for u in n.upstream_task_ids) / len(n.upstream_task_ids)
                if n.upstream_task_ids else 0.0,
                n.task_id,
            )
        )  # fmt: skip
        row.update((n.task_id, float(i)) for i, n in enumerate(column))
    return columns


def _short(text: str, most: int = 20) -> str:
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def graph(run: DagRunRecord, url: Callable[[TaskNode], str]) -> Markup:
    """The Dag's graph as the run recorded it: a box per task, coloured by its
    instance's state (a mapped task by its most severe instance, with ``done/all``),
    an arrow per edge, each box a link to ``url(node)``."""
    by_task: dict[str, list[TaskInstanceRecord]] = {}
    for ti in run.instances:
        by_task.setdefault(ti.task_id, []).append(ti)
    columns = _layers(run.graph)
    box_w, box_h, gap_x, gap_y, pad = 170, 30, 50, 14, 10
    place: dict[str, tuple[float, float]] = {}
    for x_index, column in enumerate(columns):
        for y_index, node in enumerate(column):
            place[node.task_id] = (pad + x_index * (box_w + gap_x), pad + y_index * (box_h + gap_y))
    width = pad * 2 + len(columns) * (box_w + gap_x) - gap_x
    height = pad * 2 + max((len(c) for c in columns), default=1) * (box_h + gap_y) - gap_y
    parts = [
        f'<svg class="chart graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" role="img" aria-label="task graph">'
        '<defs><marker id="graph-arrow" markerWidth="8" markerHeight="8" refX="8" refY="4" '
        'orient="auto"><path d="M0,0 L8,4 L0,8 z" fill="#888"/></marker></defs>'
    ]
    for node in run.graph:
        x2, y2 = place[node.task_id]
        for upstream in node.upstream_task_ids:
            if upstream not in place:
                continue
            x1, y1 = place[upstream]
            x1, y1, y2c = x1 + box_w, y1 + box_h / 2, y2 + box_h / 2
            middle = (x1 + x2) / 2
            parts.append(
                f'<path d="M{x1:.0f},{y1:.0f} C{middle:.0f},{y1:.0f} {middle:.0f},{y2c:.0f} '
                f'{x2:.0f},{y2c:.0f}" fill="none" stroke="#888" marker-end="url(#graph-arrow)"/>'
            )
    for node in run.graph:
        x, y = place[node.task_id]
        state, counted = summary(by_task.get(node.task_id, []))
        shown = state or "no status"
        name = escape(node.task_id)
        if node.mapped:
            text = escape(_short(node.task_id, 14)) + Markup(f" [{escape(counted) or ' '}]")
        else:
            text = escape(_short(node.task_id))
        ink = "#fff" if state else "#333"
        mapped = " (mapped)" if node.mapped else ""
        dashed = ' stroke="#555" stroke-dasharray="4 2"' if node.mapped else ""
        succeeded = f" {escape(counted)} succeeded" if counted else ""
        parts.append(
            f'<a href="{escape(url(node))}" data-task="{name}" data-state="{escape(shown)}">'
            f"<title>{name}{mapped}: {escape(shown)}{succeeded}</title>"
            f'<rect x="{x}" y="{y}" width="{box_w}" height="{box_h}" rx="5" '
            f'fill="{colour(state)}"{dashed}/>'
            f'<text x="{x + 8}" y="{y + 20}" fill="{ink}">{text}</text></a>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


def gantt(run: DagRunRecord, now: float) -> Markup:
    """One row per task instance, one bar per attempt, on the run's time axis."""
    rows = _ordered(run)
    start = run.started_at
    end = max([run.ended_at or now] + [a.ended_at or now for ti in rows for a in ti.attempts])
    span = max(end - start, 1e-3)
    scale = (_WIDTH - _LABEL - 10) / span
    height = len(rows) * _ROW + 30
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" '
        f'height="{height}" role="img" aria-label="Gantt chart of attempts">'
    ]
    for index, ti in enumerate(rows):
        y = index * _ROW + 4
        parts.append(f'<text x="4" y="{y + 14}">{escape(label(ti))}</text>')
        for attempt in ti.attempts:
            x = _LABEL + (attempt.started_at - start) * scale
            w = max(((attempt.ended_at or now) - attempt.started_at) * scale, 2)
            seconds = (attempt.ended_at or now) - attempt.started_at
            parts.append(
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{_ROW - 6}" '
                f'fill="{colour(attempt.state)}"><title>{escape(label(ti))} try '
                f"{attempt.try_number}: {escape(attempt.state)}, {seconds:.2f}s</title></rect>"
            )
    axis_y = len(rows) * _ROW + 18
    parts.append(
        f'<text x="{_LABEL}" y="{axis_y}">0s</text>'
        f'<text x="{_WIDTH - 10}" y="{axis_y}" text-anchor="end">{span:.2f}s</text></svg>'
    )
    return Markup("".join(parts))
