"""`stateward run` of a one-task Dag as a whole process: wall time and peak RSS.

The baseline, measured in the same run, is a bare `python -c` doing the same state work
with raw sqlite3 (the floor of any Python tool). stateward's bytecode is compiled first,
as installing a wheel does: an editable install run with PYTHONDONTWRITEBYTECODE would
otherwise compile every module from source on every start. ``import_seconds`` is the
median start of ``python -c "import stateward._cli"`` less that of ``python -c pass``.
Usage::

    python bench/cli_run.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import emit, machine, tmp_db

DAG = """
from stateward import Dag

dag = Dag("one")

@dag.task
def hello(task_state):
    task_state.set("greeting", "hello")
    return task_state.get("greeting")
"""

RAW = """
import sqlite3, json, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode = WAL"); c.execute("PRAGMA synchronous = FULL")
c.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v TEXT)")
c.execute("BEGIN IMMEDIATE")
c.execute("INSERT OR REPLACE INTO kv VALUES ('greeting', ?)", (json.dumps("hello"),))
c.execute("COMMIT")
print(json.loads(c.execute("SELECT v FROM kv").fetchone()[0]))
"""


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one child process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return elapsed, max(after, before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    dag_file = tmp_db("one.py")
    Path(dag_file).write_text(DAG)
    import stateward as package

    compileall.compile_dir(Path(package.__file__).parent, quiet=1)
    stateward = str(Path(sys.executable).with_name("stateward"))
    if not os.path.exists(stateward):
        stateward = "stateward"
    ours = [
        timed([stateward, "run", str(dag_file), "--db", str(tmp_db("s.db"))])
        for _ in range(args.repeat)
    ]
    raw = [timed([sys.executable, "-c", RAW, str(tmp_db("r.db"))]) for _ in range(args.repeat)]
    imports = [timed([sys.executable, "-c", "import stateward._cli"]) for _ in range(args.repeat)]
    bare = [timed([sys.executable, "-c", "pass"]) for _ in range(args.repeat)]
    ours_s = statistics.median(t for t, _ in ours)
    raw_s = statistics.median(t for t, _ in raw)
    # ru_maxrss of children is the largest child so far; measure ours first, alone.
    emit(
        "cli_run",
        repeat=args.repeat,
        stateward_run_seconds=round(ours_s, 3),
        stateward_peak_rss_mb=round(max(r for _, r in ours), 1),
        import_seconds=round(
            statistics.median(t for t, _ in imports) - statistics.median(t for t, _ in bare), 3
        ),
        raw_python_sqlite_seconds=round(raw_s, 3),
        ratio_vs_raw=round(ours_s / raw_s, 2),
        **machine(),
    )


if __name__ == "__main__":
    main()
