"""Child process for test_store_faults: holds an SQLite file's write lock until told.

Usage: ``python lock_child.py DB``. Takes the write lock (``BEGIN IMMEDIATE``), prints
``locked``, waits for a line on stdin, rolls back, prints ``released`` and waits for
another line before exiting.
"""

from __future__ import annotations

import sqlite3
import sys

conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
print("released", flush=True)
sys.stdin.readline()
conn.close()
