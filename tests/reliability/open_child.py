"""Child process for test_multiprocess: opens new SQLite files together with its siblings.

Usage: ``python open_child.py``. For each line ``open PATH`` on stdin it opens a runtime
on ``PATH`` (a file that may not exist yet, opened by every sibling at the same moment),
closes it, and prints ``ok`` or ``error <type>: <message>``; ``exit`` ends it.
"""

from __future__ import annotations

import sys

import trio

from stateward import open_runtime


async def open_once(path: str) -> None:
    async with open_runtime(path):
        pass


def main() -> None:
    for line in sys.stdin:
        command, _, path = line.rstrip("\n").partition(" ")
        if command == "exit":
            return
        try:
            trio.run(open_once, path)
        except Exception as exc:  # reported to the test, which fails on it
            print(f"error {type(exc).__name__}: {exc}", flush=True)
        else:
            print("ok", flush=True)


if __name__ == "__main__":
    main()
