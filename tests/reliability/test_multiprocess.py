"""Many processes, one file: atomic increments and compare-and-set across processes.

Every child opens its own runtime on one new SQLite file at the same moment (a barrier on
stdin), then all start writing together. Writes take the write lock up front
(``BEGIN IMMEDIATE``), so a read-modify-write in one process cannot interleave with
another's.
"""

from __future__ import annotations

import collections
import sqlite3
from pathlib import Path

import pytest
import trio

from stateward import open_runtime
from stateward.store.sqlite.schema import SCHEMA_VERSION

from ._support import Child


def run_children(
    tmp_path: Path, processes: int, lanes: int, per_lane: int, rounds: int
) -> tuple[list[int], dict[int, list[str]]]:
    """Start the children behind two barriers; return every increment's value and each
    round's winners."""
    db = tmp_path / "shared.db"
    names = [f"p{i}" for i in range(processes)]
    children = [
        Child("mp_child.py", str(db), name, str(lanes), str(per_lane), str(rounds),
              stderr_path=tmp_path / f"{name}.err")
        for name in names
    ]  # fmt: skip
    values: list[int] = []
    winners: dict[int, list[str]] = collections.defaultdict(list)
    try:
        for barrier, reply in (("loaded", "open"), ("ready", "go")):
            for child in children:
                assert child.readline() == barrier
            for child in children:
                child.send(reply)
        for name, child in zip(names, children, strict=True):
            while (line := child.readline()) != "done":
                kind, *rest = line.split()
                if kind == "inc":
                    values.append(int(rest[0]))
                elif kind == "cas" and rest[1] == "1":
                    winners[int(rest[0])].append(name)
            assert child.proc.wait() == 0, child.stderr()
    finally:
        for child in children:
            child.close()
    return values, winners


async def read_back(db: Path, rounds: int) -> tuple[int, list[str]]:
    """The shared counter and each round's stored leader, through a fresh runtime."""
    async with open_runtime(db) as rt:
        shared = rt.state.asset(name="shared")
        leaders = [await shared.aget(f"leader-{r}") for r in range(rounds)]
        hits = await shared.aget("hits")
        # History numbered every concurrent increment once, in commit order.
        history = await shared.ahistory("hits")
        assert [(v.version, v.value) for v in history] == [
            (n, n) for n in range(hits, hits - 10, -1)
        ]
        return hits, leaders


def check(tmp_path: Path, processes: int, lanes: int, per_lane: int, rounds: int) -> None:
    """The counter is exact, every increment returned a distinct value, one winner a round."""
    values, winners = run_children(tmp_path, processes, lanes, per_lane, rounds)
    total = processes * lanes * per_lane
    hits, leaders = trio.run(read_back, tmp_path / "shared.db", rounds)
    print(f"\n[multiprocess] {processes} processes: {len(values)} increments -> {hits}; "
          f"{rounds} CAS rounds, {sum(map(len, winners.values()))} winners")  # fmt: skip
    assert hits == total
    assert sorted(values) == list(range(1, total + 1))  # no lost or doubled update
    assert sorted(winners) == list(range(rounds))
    for r in range(rounds):
        assert len(winners[r]) == 1, (r, winners[r])
        assert leaders[r] == winners[r][0]
    conn = sqlite3.connect(tmp_path / "shared.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("SELECT COUNT(*) FROM schema_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_four_processes_increment_one_key_exactly(tmp_path: Path) -> None:
    """4 processes x 150 increments give exactly 600; each CAS round has one winner."""
    check(tmp_path, processes=4, lanes=3, per_lane=50, rounds=20)


@pytest.mark.long
def test_many_processes_increment_one_key_exactly(tmp_path: Path) -> None:
    """8 processes x 600 increments and 200 contended compare-and-set rounds."""
    check(tmp_path, processes=8, lanes=4, per_lane=150, rounds=200)


def open_new_files_together(tmp_path: Path, processes: int, files: int) -> list[str]:
    """Have ``processes`` children open each of ``files`` new files at the same moment;
    return every failure they reported."""
    children = [
        Child("open_child.py", stderr_path=tmp_path / f"open{i}.err") for i in range(processes)
    ]
    failures: list[str] = []
    try:
        for n in range(files):
            path = tmp_path / f"new{n}.db"
            for child in children:  # every child is blocked on stdin until now
                child.send(f"open {path}")
            for child in children:
                if (line := child.readline()) != "ok":
                    failures.append(f"{path.name}: {line}")
        for child in children:
            child.send("exit")
            assert child.proc.wait() == 0, child.stderr()
    finally:
        for child in children:
            child.close()
    return failures


def test_processes_opening_one_new_file_all_succeed(tmp_path: Path) -> None:
    """Four processes opening one new file at once never take it for a foreign database
    (a migration can commit between another opener's reads; the deterministic version
    is in tests/store/test_sqlite.py)."""
    assert open_new_files_together(tmp_path, processes=4, files=10) == []


@pytest.mark.long
def test_processes_opening_one_new_file_stress(tmp_path: Path) -> None:
    """The same for 6 processes and 400 new files (2,400 opens)."""
    assert open_new_files_together(tmp_path, processes=6, files=400) == []
