"""Durable state: the Store protocol and its implementations."""

from __future__ import annotations

from .base import AssetScope as AssetScope
from .base import Store as Store
from .base import TaskScope as TaskScope
from .base import Writer as Writer
from .memory import MemoryStore as MemoryStore
from .sqlite import SqliteStore as SqliteStore

__all__ = ["AssetScope", "MemoryStore", "SqliteStore", "Store", "TaskScope", "Writer"]
