"""Run every benchmark and write the docs' figures from their JSON lines.

Usage: ``python bench/run_all.py [--docs-only] [--no-postgres]`` (``make bench``). Each
script runs in its own process; its one JSON line is kept in ``bench/results.jsonl``,
from which ``bench/pages.py`` writes every figure the docs quote (``--docs-only``
rewrites the docs from the existing file without measuring). When a PostgreSQL
server answers (``$STATEWARD_BENCH_PG_DSN``, else the local one at 127.0.0.1:5432,
database ``test``), ``state_ops.py``, ``concurrent_writers.py`` and ``history.py``
also run with ``--db`` on it, and their figures get rows of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _common import postgres_answers
from pages import RESULTS, ROOT, load_results, pages

HERE = Path(__file__).resolve().parent
SCRIPTS = [
    "state_ops.py",
    "concurrent_writers.py",
    "mapped.py",
    "cli_run.py",
    "template_render.py",
    "harness.py",
    "isolation.py",
    "ui_pages.py",
    "history.py",
    "against_release.py",
]
#: Scripts that need something stateward does not install, run only when the variable
#: names it; otherwise their last line in the results file is kept.
OPTIONAL_SCRIPTS = {"airflow_compare.py": "STATEWARD_BENCH_AIRFLOW_VENV"}
#: The scripts that also run on PostgreSQL when a server answers.
POSTGRES_SCRIPTS = ["state_ops.py", "concurrent_writers.py", "history.py"]
#: The scripts that run only on PostgreSQL (several runtimes sharing one database).
POSTGRES_ONLY_SCRIPTS = ["runtimes.py"]
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"


def run(script: str, *args: str) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / script), *args], check=True, capture_output=True, text=True
    )
    line = out.stdout.strip().splitlines()[-1]
    result: dict[str, Any] = json.loads(line)
    print(line, flush=True)
    return result


def postgres_dsn() -> str | None:
    """The PostgreSQL server to measure, if one answers."""
    dsn = os.environ.get("STATEWARD_BENCH_PG_DSN") or LOCAL_PG
    return dsn if postgres_answers(dsn) else None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run every benchmark, keep their JSON lines in bench/results.jsonl and "
        "write the docs' figures (docs/performance.md, and the bench regions of "
        "docs/isolation.md, docs/scaling.md and docs/ui.md) from that file."
    )
    parser.add_argument(
        "--docs-only",
        action="store_true",
        help="measure nothing: rewrite the docs from the existing bench/results.jsonl",
    )
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="skip the PostgreSQL runs even when a server answers",
    )
    return parser.parse_args(argv)


def measure(postgres: bool) -> None:
    """Run the scripts and write their lines, stamped with the date and machine."""
    stamp = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "machine": platform.machine()}
    lines = [run(script) for script in SCRIPTS]
    dsn = postgres_dsn() if postgres else None
    if dsn is not None:
        lines += [run(script, "--db", dsn) for script in POSTGRES_SCRIPTS]
        lines += [run(script, "--db", dsn) for script in POSTGRES_ONLY_SCRIPTS]
    kept = []
    for script, variable in OPTIONAL_SCRIPTS.items():
        if os.environ.get(variable):
            lines.append(run(script))
        else:
            kept += [line for line in _last_lines() if line["bench"] == script.removesuffix(".py")]
    # Written only once every script succeeded, so a failed run keeps the last results.
    text = "".join(json.dumps({**line, **stamp}) + "\n" for line in lines)
    RESULTS.write_text(text + "".join(json.dumps(line) + "\n" for line in kept))


def _last_lines() -> list[dict[str, Any]]:
    if not RESULTS.exists():
        return []
    return [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if not args.docs_only:
        measure(postgres=not args.no_postgres)
    for path, text in pages(load_results()).items():
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
