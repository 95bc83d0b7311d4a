"""``stateward ui`` as a command: its printed URL, a random token, --read-only, errors."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from .server import running_ui, seed, stateward


def request(url: str, token: str, method: str = "GET", body: object = None) -> tuple[int, str]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Authorization", f"Bearer {token}")
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_random_token_is_printed_and_read_only_refuses_writes(tmp_path: Path) -> None:
    """Without --token one is made and printed in the URL (127.0.0.1); --read-only: 403."""
    db = tmp_path / "state.db"
    seed(db)
    with running_ui(db, None, "--read-only") as printed:
        parts = urlsplit(printed)
        assert parts.hostname == "127.0.0.1"
        (token,) = parse_qs(parts.query)["token"]
        assert len(token) >= 24
        base = f"{parts.scheme}://{parts.netloc}"
        state = f"{base}/api/v2/dags/etl/dagRuns/r1/taskInstances/load/state-store"
        status, text = request(state, token)
        assert status == 200
        assert json.loads(text)["total_entries"] == 1
        assert request(state, "wrong")[0] == 401
        status, text = request(f"{state}/k", token, "PUT", {"value": 1})
        assert status == 403
        assert "read-only" in json.loads(text)["detail"]


def test_a_token_with_url_characters_is_quoted_in_the_printed_url(tmp_path: Path) -> None:
    """``--token 'a&b c%'``: the printed URL still carries the whole token."""
    db = tmp_path / "state.db"
    seed(db)
    with running_ui(db, None, "--token", "a&b c%") as printed:
        parts = urlsplit(printed)
        assert parse_qs(parts.query)["token"] == ["a&b c%"]
        base = f"{parts.scheme}://{parts.netloc}"
        assert request(f"{base}/api/v2/stateward/runs", "a&b c%")[0] == 200


def test_a_missing_database_is_an_error(tmp_path: Path) -> None:
    """`stateward ui` on no database says so and exits 1, creating nothing."""
    missing = tmp_path / "missing.db"
    done = subprocess.run(
        stateward("ui", "--db", str(missing), "--port", "0"),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "no database at" in done.stderr
    assert not missing.exists()


@pytest.mark.parametrize("port", ["-1", "70000"])
def test_a_bad_port_is_a_usage_error(tmp_path: Path, port: str) -> None:
    """--port takes 0 to 65535."""
    done = subprocess.run(
        stateward("ui", "--db", str(tmp_path / "x.db"), "--port", port),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2


def test_changes_made_through_the_ui_are_recorded_as_api(tmp_path: Path) -> None:
    """The server's runtime writes as "api": a key's history says so, and a rollback too."""
    db = tmp_path / "state.db"
    seed(db)
    with running_ui(db, "t0ken") as base:
        key = f"{base}/api/v2/dags/etl/dagRuns/r1/taskInstances/load/state-store/params"
        assert request(key, "t0ken", "PUT", {"value": 1})[0] == 204
        own = f"{base}/api/v2/stateward/runs/etl/r1/tasks/load/state/params"
        status, text = request(f"{own}/rollback", "t0ken", "POST", {"version": 1})
        assert status == 200
        newest, edit, task = json.loads(text)["versions"]
    assert (newest["updated_by"]["kind"], newest["updated_by"]["rollback_to"]) == ("api", 1)
    assert edit["updated_by"]["kind"] == "api"
    assert edit["updated_by"]["user"] is not None
    assert task["updated_by"]["kind"] == "task"
    assert newest["value"] == task["value"]
