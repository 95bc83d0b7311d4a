"""Charts drawn on the server as SVG: a run's tasks in start order and its Gantt chart.

Every text that comes from data (task ids, states) goes through ``escape``.
"""

from __future__ import annotations

from typing import Final

from markupsafe import Markup, escape

from .._records import DagRunRecord, TaskInstanceRecord

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
