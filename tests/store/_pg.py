"""One-operation shorthands the PostgreSQL store tests share."""

from __future__ import annotations

from typing import Any

from stateward.store import base as ops
from stateward.store.postgres import PostgresStore


async def one(store: PostgresStore, op: ops.Op, now: float = 100.0) -> Any:
    (result,) = await store.execute([op], now=now)
    return result


def put(scope: ops.Scope, key: str, text: str) -> ops.Put:
    return ops.Put(scope, key, text, None, None)
