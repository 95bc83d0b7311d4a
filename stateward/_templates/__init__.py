"""Sandboxed jinja templating of task fields, with read-only access to state."""

from __future__ import annotations

from .environment import NativeStateSandbox as NativeStateSandbox
from .environment import StateSandbox as StateSandbox
from .environment import get_environment as get_environment
from .render import needs_rendering as needs_rendering
from .render import render_fields as render_fields
from .render import warn_unrendered_braces as warn_unrendered_braces

__all__ = [
    "NativeStateSandbox",
    "StateSandbox",
    "get_environment",
    "needs_rendering",
    "render_fields",
    "warn_unrendered_braces",
]
