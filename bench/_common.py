"""Shared helpers for the benchmarks: the raw sqlite3 baseline and JSON output."""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def emit(name: str, **figures: Any) -> None:
    """Print the one JSON line a benchmark reports."""
    print(json.dumps({"bench": name, **figures}, sort_keys=False))
    sys.stdout.flush()


def tmp_db(name: str) -> Path:
    """A fresh database path in a temporary folder (on the same disk as the baseline)."""
    folder = Path(tempfile.mkdtemp(prefix="stateward-bench-"))
    return folder / name


def per_op_ms(n: int, fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) / n * 1000


def raw_sqlite_baseline(n: int, synchronous: str = "FULL") -> dict[str, float]:
    """Raw sqlite3 with stateward's pragmas: upsert committed per write, batched, read."""
    path = tmp_db("raw.db")
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(
        "CREATE TABLE kv (scope TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
        "updated_at REAL NOT NULL, PRIMARY KEY (scope, key)) WITHOUT ROWID"
    )
    upsert = (
        "INSERT INTO kv VALUES (?, ?, ?, ?) ON CONFLICT (scope, key) DO UPDATE SET "
        "value = excluded.value, updated_at = excluded.updated_at"
    )

    def commit_per_write() -> None:
        for i in range(n):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(upsert, ("s", f"k{i % 10}", json.dumps(i), time.time()))
            conn.execute("COMMIT")

    def batched() -> None:
        for start in range(0, n, 100):
            conn.execute("BEGIN IMMEDIATE")
            for i in range(start, min(n, start + 100)):
                conn.execute(upsert, ("s", f"k{i % 10}", json.dumps(i), time.time()))
            conn.execute("COMMIT")

    def reads() -> None:
        for i in range(n):
            row = conn.execute(
                "SELECT value FROM kv WHERE scope = ? AND key = ?", ("s", f"k{i % 10}")
            ).fetchone()
            json.loads(row[0])

    figures = {
        "raw_commit_per_write_ms": per_op_ms(n, commit_per_write),
        "raw_batched_100_ms": per_op_ms(n, batched),
        "raw_read_ms": per_op_ms(n, reads),
    }
    conn.close()
    return figures


def median(values: list[float]) -> float:
    return statistics.median(values)


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
