"""This checkout against an earlier release, side by side in one run.

Durable runs may cost only so much against the release before them: per-op
``set``/``get`` unchanged within noise, a one-task ``stateward run`` (wall and RSS)
and 10,000 mapped instances each within 1.3 times. Figures from another day do not
compare (this machine's raw baselines move by 1.5 times between days), so this script
installs the release into a virtualenv of its own and runs both sides' own benchmark
scripts in alternating rounds: each side's ``state_ops.py``,
``concurrent_writers.py``, ``mapped.py`` and ``cli_run.py`` (on PostgreSQL too, when
a server answers), then
prints one JSON line: the median of each figure per side and their ratios. Usage::

    python bench/against_release.py [--release d655987] [--rounds 3] [--no-postgres]

The release's tree and virtualenv are kept in ``~/.cache/stateward-bench/`` and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from _common import emit, machine, postgres_answers

ROOT = Path(__file__).resolve().parent.parent
#: The last commit before durable runs, history and leases (2026-11-26).
RELEASE = "d655987"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "stateward-bench"
LOCAL_PG = "postgresql://postgres@127.0.0.1:5432/test"

#: (script, arguments, the figures kept from its line). Lower is better for all but
#: the writes per second.
OPS = ("sync_set_ms", "sync_get_ms", "async_aset_ms", "async_aget_ms")
RUNS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("sqlite", "state_ops.py", (), OPS),
    ("sqlite", "concurrent_writers.py", (), ("stateward_writes_per_s",)),
    ("sqlite", "mapped.py", (), ("run_seconds", "peak_rss_mb")),
    ("sqlite", "cli_run.py", ("--repeat", "3"), ("stateward_run_seconds", "stateward_peak_rss_mb")),
]  # fmt: skip
POSTGRES_RUNS: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    ("postgres", "state_ops.py", (), OPS),
    ("postgres", "concurrent_writers.py", (), ("stateward_writes_per_s",)),
]  # fmt: skip


def release_python(commit: str) -> tuple[Path, Path]:
    """The release's interpreter and bench folder, installed on first use."""
    sha = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short=12", commit],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    home = CACHE / f"release-{sha}"
    python = home / "venv" / "bin" / "python"
    if not (home / ".installed").exists():
        tree = home / "tree"
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", sha], check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
        subprocess.run([sys.executable, "-m", "venv", str(home / "venv")], check=True)
        subprocess.run(
            [str(python), "-m", "pip", "install", "--quiet", f"{tree}[postgres]"], check=True
        )
        (home / ".installed").touch()
    return python, home / "tree" / "bench"


def run(python: Path, bench: Path, script: str, args: tuple[str, ...]) -> dict[str, Any]:
    # From an empty folder: a checkout in the working directory would shadow the
    # installed package of the side being measured.
    with tempfile.TemporaryDirectory(prefix="stateward-against-") as cwd:
        out = subprocess.run(
            [str(python), str(bench / script), *args],
            check=True, capture_output=True, text=True, cwd=cwd,
        )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--release", default=RELEASE, help="the commit to compare against")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--db", default=os.environ.get("STATEWARD_BENCH_PG_DSN") or LOCAL_PG)
    args = parser.parse_args()
    release = release_python(args.release)
    sides = {"release": release, "current": (Path(sys.executable), ROOT / "bench")}
    runs = list(RUNS)
    if not args.no_postgres and postgres_answers(args.db):
        runs += POSTGRES_RUNS
    samples: dict[tuple[str, str], list[float]] = {}
    for round_number in range(args.rounds):
        # Alternate which side goes first, so a drift in the machine's load is shared.
        order = ["release", "current"] if round_number % 2 == 0 else ["current", "release"]
        for store, script, extra, figures in runs:
            for side in order:
                python, bench = sides[side]
                db_args = ("--db", args.db) if store == "postgres" else ()
                line = run(python, bench, script, (*extra, *db_args))
                for figure in figures:
                    name = f"{store}_{script.removesuffix('.py')}_{figure}"
                    samples.setdefault((name, side), []).append(float(line[figure]))
    out: dict[str, Any] = {"release": args.release, "rounds": args.rounds}
    for name in dict.fromkeys(name for name, _ in samples):
        release_value = statistics.median(samples[(name, "release")])
        current_value = statistics.median(samples[(name, "current")])
        out[f"{name}_release"] = round(release_value, 4)
        out[f"{name}_current"] = round(current_value, 4)
        out[f"{name}_ratio"] = round(current_value / release_value, 2)
        spread = samples[(name, "current")]
        out[f"{name}_current_spread"] = round((max(spread) - min(spread)) / current_value, 2)
    emit("against_release", **out, **machine())


if __name__ == "__main__":
    main()
