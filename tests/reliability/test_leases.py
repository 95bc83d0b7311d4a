"""One live attempt per task instance across processes: leases and fencing.

Each runtime is a child process (``lease_child.py``) on one SQLite file or PostgreSQL
schema. What ran is counted outside the store: every try appends a line to a file.
"""

from __future__ import annotations

import signal
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.pg import PgDatabase

from ._support import Child

#: Short leases, so a dead or paused runtime is taken over within about a second.
LEASE = "1.0"


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the children's runtimes keep state: an SQLite file, or a fresh
    PostgreSQL schema (``dsn#schema``)."""
    if request.param == "sqlite":
        return str(tmp_path / "state.db")
    database: PgDatabase = request.getfixturevalue("pg_database")
    return f"{database.dsn}#{database.new_schema()}"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Child]]:
    """Start lease_child.py runtimes; every one is killed and closed at the end."""
    children: list[Child] = []

    def start(target: str, mode: str, count: int = 1, lease: str = LEASE) -> Child:
        n = len(children)
        side = str(tmp_path / "ran.txt")
        child = Child(
            "lease_child.py", target, "shared", mode, side, lease, str(count),
            stderr_path=tmp_path / f"child{n}.err", deadline=90,
        )  # fmt: skip
        children.append(child)
        assert child.readline() == "ready"
        return child

    yield start
    for child in children:
        child.close()


def ran(tmp_path: Path) -> list[tuple[str, int, int]]:
    """Every try that started: (instance, try, pid)."""
    lines = (tmp_path / "ran.txt").read_text().splitlines()
    return [(a, int(b), int(c)) for a, b, c in (line.split() for line in lines)]


def finish(child: Child) -> str:
    """The child's final line (``result ...``) once it exits."""
    line = child.readline()
    while not line.startswith("result "):
        line = child.readline()
    assert child.proc.wait(timeout=60) == 0, child.stderr()
    return line


async def attempts_of(target: str) -> list[tuple[int, str]]:
    """The recorded attempts of the one instance of the ``hang``/``beat`` runs."""
    from stateward import open_runtime
    from stateward.store.postgres import PostgresStore

    if target.startswith("postgresql://"):
        dsn, _, schema = target.partition("#")
        opened = open_runtime(store=PostgresStore(dsn, schema=schema))
    else:
        opened = open_runtime(target)
    async with opened as rt:
        record = await rt.runs.get("leases", "shared")
        beat = await rt.state.task("leases", "shared", "one").aget("beat")
    assert record is not None
    (ti,) = record.instances
    return [(a.try_number, a.state) for a in ti.attempts] + [(0, repr(beat))]


@pytest.mark.parametrize("runtimes", [2, 3])
def test_runtimes_on_one_run_id_split_it_and_run_each_instance_once(
    target: str, spawn: Callable[..., Child], tmp_path: Path, runtimes: int
) -> None:
    """Runtimes started together on one run id of 200 mapped instances (and a task
    after them) run every instance exactly once between them, and each ends with the
    run succeeded."""
    if runtimes == 3 and not target.startswith("postgresql://"):
        pytest.skip("three runtimes are shown on PostgreSQL")
    # Leases long enough that no runtime loses one while it is slow (a loaded machine).
    children = [spawn(target, "split", 200, lease="20") for _ in range(runtimes)]
    for child in children:
        child.send("go")
    assert [finish(child) for child in children] == ["result success"] * runtimes
    tries = ran(tmp_path)
    per_instance = Counter(instance for instance, _, _ in tries)
    assert per_instance == Counter([str(i) for i in range(200)] + ["after"]), tries
    assert all(try_number == 1 for _, try_number, _ in tries)


@pytest.mark.long
def test_stress_three_runtimes_with_one_second_leases_run_each_instance_once(
    target: str, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """The split above under stress: three runtimes, 600 instances, 1 s leases (renewed
    every third of a second, so acquisitions, renewals, waits and fenced end records
    all interleave): still every instance exactly once, all on try 1."""
    children = [spawn(target, "split", 600) for _ in range(3)]
    for child in children:
        child.send("go")
    assert [finish(child) for child in children] == ["result success"] * 3
    tries = ran(tmp_path)
    per_instance = Counter(instance for instance, _, _ in tries)
    assert per_instance == Counter([str(i) for i in range(600)] + ["after"]), tries
    assert all(try_number == 1 for _, try_number, _ in tries)
    assert len({pid for _, _, pid in tries}) > 1, "the runtimes did not split the run"


def test_a_killed_runtimes_instance_is_taken_over_as_the_next_try(
    target: str, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """SIGKILL of a runtime mid-attempt: a second runtime on the run id waits for the
    lease to expire, runs the instance as try 2, and the first try is recorded
    abandoned."""
    first = spawn(target, "hang")
    first.send("go")
    assert first.readline() == "started"
    first.kill()
    second = spawn(target, "hang")
    second.send("go")
    assert finish(second) == "result success"
    assert [t for _, t, _ in ran(tmp_path)] == [1, 2]
    got = trio_run(attempts_of, target)
    assert got == [(1, "abandoned"), (2, "success"), (0, "'taken over'")]


def test_a_paused_runtime_cannot_write_after_its_instance_was_taken_over(
    target: str, spawn: Callable[..., Child], tmp_path: Path
) -> None:
    """A runtime paused (SIGSTOP) past its lease while its attempt writes; another
    runtime takes the instance over and finishes it; woken (SIGCONT), the paused
    attempt's next write is refused with StaleAttemptError and nothing of it lands,
    and its run ends with the other runtime's outcome."""
    paused = spawn(target, "beat")
    paused.send("go")
    assert paused.readline() == "wrote 0"
    assert paused.readline() == "wrote 1"
    paused.proc.send_signal(signal.SIGSTOP)
    try:
        other = spawn(target, "beat")
        other.send("go")
        assert finish(other) == "result success"
    finally:
        paused.proc.send_signal(signal.SIGCONT)
    lines = []
    line = paused.readline()
    while not line.startswith("result "):
        lines.append(line)
        line = paused.readline()
    assert line == "result success"
    assert lines[-1:] == ["refused"]
    got = trio_run(attempts_of, target)
    assert got == [(1, "abandoned"), (2, "success"), (0, "'taken over'")]


def trio_run(fn: Callable[..., object], *args: object) -> object:
    import trio

    return trio.run(fn, *args)


def test_the_side_effect_file_is_not_in_the_store(tmp_path: Path) -> None:
    """(Sanity) the SQLite file the children share is a stateward database."""
    path = tmp_path / "x.db"
    sqlite3.connect(path).close()
    assert path.exists()
