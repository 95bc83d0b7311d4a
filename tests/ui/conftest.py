"""An open runtime with a recorded run of the ``etl`` fixture Dag, and a UI on it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from stateward import Runtime
from stateward._loader import load_dags
from stateward._ui.app import make_app

TOKEN = "s3cret-token"
FIXTURES = Path(__file__).parent.parent / "cli_fixtures"


@pytest.fixture
async def ran(rt: Runtime) -> Runtime:
    """The runtime after one run 'r1' of the etl Dag (mapped extract, load of 'orders')."""
    dag = load_dags(FIXTURES / "etl.py")["etl"]
    await rt.run_dag(dag, run_id="r1")
    return rt


def client_for(
    rt: Runtime, *, read_only: bool = False, token: str | None = TOKEN
) -> httpx.AsyncClient:
    app = make_app(rt, token=TOKEN, read_only=read_only)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ui", headers=headers
    )


@pytest.fixture
async def api(ran: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """An API client with the bearer token."""
    async with client_for(ran) as client:
        yield client
