"""Sandboxed jinja templating of task fields, with read-only access to state.

The package itself loads no jinja: :mod:`.fields` decides whether a field needs
rendering; :mod:`.environment` (the sandbox) and :mod:`.render` are imported by the
attempts that render.
"""

from __future__ import annotations

from .fields import SYNTAXES as SYNTAXES
from .fields import holds_strings as holds_strings
from .fields import markers as markers
from .fields import needs_rendering as needs_rendering
from .fields import warn_unrendered_braces as warn_unrendered_braces

__all__ = ["SYNTAXES", "holds_strings", "markers", "needs_rendering", "warn_unrendered_braces"]
