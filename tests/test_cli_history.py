"""``stateward state history`` and ``stateward state rollback``, as a real subprocess."""

from __future__ import annotations

import getpass
import json
import socket
from pathlib import Path
from typing import Any

from stateward import Asset
from stateward._loader import load_dags
from tests.test_cli import FIXTURES, stateward, with_rt

ORDERS = Asset("orders", uri="s3://lake/orders")


def test_history_and_rollback_of_an_asset_key(tmp_path: Path) -> None:
    """history lists versions newest first with their writer; rollback restores one as
    a new version by the CLI's user and host; --json gives the same as objects."""
    db = tmp_path / "s.db"

    async def seed(rt: object) -> None:
        watermark = rt.state.asset(ORDERS)  # type: ignore[attr-defined]
        for value in (10, 20, 5):
            await watermark.aset("watermark", value)

    with_rt(db, seed)
    done = stateward(
        "state", "rollback", "watermark", "--asset", "orders", "--to-version", "2", db=db
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout == "rolled 'watermark' in the state of asset 'orders' back to version 2: 20\n"
    )
    shown = stateward("state", "history", "watermark", "--asset", "orders", db=db)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "watermark in the state of asset 'orders'"
    assert [line.split()[:2] for line in lines[3:]] == [
        ["4", "20"],
        ["3", "5"],
        ["2", "20"],
        ["1", "10"],
    ]
    assert "rollback to version 2 by cli" in lines[3]
    listed = json.loads(
        stateward("state", "history", "watermark", "--asset", "orders", "--json", db=db).stdout
    )
    newest = listed[0]
    assert (newest["version"], newest["value"], newest["deleted"]) == (4, 20, False)
    by = newest["updated_by"]
    assert (by["kind"], by["user"], by["host"], by["rollback_to"]) == (
        "cli", getpass.getuser(), socket.gethostname(), 2,
    )  # fmt: skip
    assert by["label"] == f"rollback to version 2 by cli {getpass.getuser()}@{socket.gethostname()}"


def test_rollback_to_a_tombstone_and_an_unknown_version(tmp_path: Path) -> None:
    """Rolling back to a removal removes the key; an unknown version is an error, exit 1."""
    db = tmp_path / "s.db"
    selector = ["--dag", "d", "--run-id", "r", "--task", "t"]
    assert stateward("state", "set", "k", "1", *selector, db=db).returncode == 0
    assert stateward("state", "delete", "k", *selector, db=db).returncode == 0
    assert stateward("state", "set", "k", "2", *selector, db=db).returncode == 0
    done = stateward("state", "rollback", "k", *selector, "--to-version", "2", db=db)
    assert done.stdout == "rolled 'k' in the task state of d/r/t back to version 2: removed\n"
    wrong = stateward("state", "rollback", "k", *selector, "--to-version", "9", db=db)
    assert wrong.returncode == 1
    assert "has no version 9: its history holds versions 1 to 4" in wrong.stderr
    shown = stateward("state", "history", "k", *selector, db=db).stdout
    assert "(deleted)" in shown
    empty = stateward("state", "history", "nope", *selector, db=db)
    assert empty.stdout == "no history of 'nope' in the task state of d/r/t\n"


def test_runs_show_and_state_list_give_each_instances_item(tmp_path: Path) -> None:
    """runs show adds an item column (and --json an "item" per instance); state list
    --json gives each mapped entry's item label."""
    db = tmp_path / "s.db"
    dag = load_dags(FIXTURES / "etl.py")["etl"]
    with_rt(db, lambda rt: rt.run_dag(dag, run_id="r1"))
    shown = stateward("runs", "show", "etl", "r1", db=db)
    assert shown.returncode == 0, shown.stderr
    rows = {
        line.split()[0] + line.split()[1]: line.split() for line in shown.stdout.splitlines()[2:5]
    }
    assert rows["extract0"][2] == '"a"'
    assert rows["extract1"][2] == '"b"'
    document = json.loads(stateward("runs", "show", "etl", "r1", "--json", db=db).stdout)
    assert [i["item"] for i in document["instances"]] == ['"a"', '"b"', None]
    listed = json.loads(stateward("state", "list", "--dag", "etl", "--json", db=db).stdout)
    assert {(e["task_id"], e["map_index"], e["item"]) for e in listed} >= {
        ("extract", 0, '"a"'), ("extract", 1, '"b"'),
    }  # fmt: skip


def test_state_events_lists_an_assets_events(tmp_path: Path) -> None:
    """state events lists an asset's events newest first with the emitting try, by
    name or URI, limited; --json gives them as objects; one asset option is required."""
    db = tmp_path / "s.db"
    dag = load_dags(FIXTURES / "etl.py")["etl"]

    async def seed(rt: Any) -> None:
        for run_id in ("n1", "n2"):
            await rt.run_dag(dag, run_id=run_id)

    with_rt(db, seed)
    shown = stateward("state", "events", "--asset", "orders", db=db)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == "events of asset 'orders'"
    assert [line.split()[2:4] for line in lines[3:]] == [
        ["etl/n2/load", "try"], ["etl/n1/load", "try"],
    ]  # fmt: skip
    listed = json.loads(
        stateward("state", "events", "--asset-uri", "s3://lake/orders", "--limit", "1",
                  "--json", db=db).stdout
    )  # fmt: skip
    assert [(e["run_id"], e["task_id"], e["try_number"], e["extra"]) for e in listed] == [
        ("n2", "load", 1, {}),
    ]
    assert listed[0]["timestamp"].endswith("Z") or "+00:00" in listed[0]["timestamp"]
    none = stateward("state", "events", "--asset", "nobody", db=db)
    assert none.stdout == "no events of asset 'nobody'\n"
    assert stateward("state", "events", db=db).returncode == 2
