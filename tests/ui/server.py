"""A real ``stateward ui`` process on an SQLite file holding one run of the etl Dag."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlencode

from .conftest import FIXTURES

#: How long a process may take to start and print its URL.
START_DEADLINE = 30.0


def stateward(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from stateward._cli import main; sys.exit(main())",
        *args,
    ]


TALKY = Path(__file__).parent / "dags" / "talky.py"


def seed(db: Path, *files: Path) -> None:
    """Run the etl Dag (and each of ``files``) once as run 'r1' into ``db``."""
    for path in (FIXTURES / "etl.py", *files):
        subprocess.run(
            stateward("run", str(path), "--run-id", "r1", "--db", str(db)),
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip


@contextmanager
def running_ui(db: Path, token: str | None, *extra: str) -> Iterator[str]:
    """Start ``stateward ui`` on a free port; yield the URL it printed, less the token
    (``token`` None: the printed URL, token and all); stop it at the end."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    given = ("--token", token) if token is not None else ()
    process = subprocess.Popen(
        stateward("ui", "--db", str(db), "--port", "0", *given, *extra),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + START_DEADLINE
        line = ""
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if line.startswith("stateward ui: ") or not line:
                break
        assert line.startswith("stateward ui: http://"), (
            line,
            process.stderr and process.stderr.read(),
        )
        url = line.removeprefix("stateward ui: ").strip()
        if token is None:
            yield url
        else:
            query = "/?" + urlencode({"token": token})
            assert url.endswith(query), url
            yield url.removesuffix(query)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
