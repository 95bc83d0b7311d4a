"""Durable state: the Store protocol, the one door that opens a store, and the stores.

The PostgreSQL store is not imported here (asyncpg is an optional extra): ``open_store``
imports it when a ``postgresql://`` URL is opened.
"""

from __future__ import annotations

from .base import AssetScope as AssetScope
from .base import Store as Store
from .base import TaskScope as TaskScope
from .base import Writer as Writer
from .memory import MemoryStore as MemoryStore
from .registry import open_store as open_store
from .registry import register_backend as register_backend
from .sqlite import SqliteStore as SqliteStore

__all__ = [
    "AssetScope",
    "MemoryStore",
    "SqliteStore",
    "Store",
    "TaskScope",
    "Writer",
    "open_store",
    "register_backend",
]
