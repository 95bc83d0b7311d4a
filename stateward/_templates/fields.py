"""What a template field holds, decided without jinja: whether it needs rendering.

Most task attempts render nothing (their fields hold no template marker), so this
module answers that question and the ``{{ }}`` warning without loading jinja; only an
attempt that renders imports :mod:`.environment` and :mod:`.render`.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Final

__all__ = ["SYNTAXES", "is_template", "markers", "needs_rendering", "warn_unrendered_braces"]

logger = logging.getLogger("stateward.templates")

#: Template delimiters (value, statement, comment; each start and end) by the name a
#: Dag's ``template_syntax`` gives: stateward's own, which leave ``{{ }}`` to shells and
#: SQL, and Airflow's, for Dag files written for Airflow.
SYNTAXES: Final = {
    "stateward": ("<<", ">>", "<%", "%>", "<#", "#>"),
    "airflow": ("{{", "}}", "{%", "%}", "{#", "#}"),
}

_AIRFLOW_VALUE: Final = re.compile(r"\{\{.*?\}\}", re.DOTALL)

# Bounded: one entry per task and field that warned.
_WARNED_CACHE_SIZE: Final = 1024


def markers(syntax: str) -> tuple[str, ...]:
    """What opens a value, a statement and a comment in ``syntax``: a string holding
    none of them is not a template."""
    return SYNTAXES[syntax][::2]


def is_template(source: str, opening: Sequence[str] = SYNTAXES["stateward"][::2]) -> bool:
    """Whether ``source`` holds one of the ``opening`` markers."""
    return any(marker in source for marker in opening)


def _strings(value: Any) -> Iterator[str]:
    # The strings rendering would look at, walking containers as it does.
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _strings(item)


def holds_strings(values: Iterable[Any]) -> bool:
    """Whether any of ``values`` is or holds a string (walking as rendering does): if
    none does, there is nothing to render and nothing to warn about."""
    for value in values:
        if isinstance(value, str):
            return True
        if isinstance(value, dict | list | tuple | set | frozenset) and value:
            for _ in _strings(value):
                return True
    return False


def warn_unrendered_braces(values: Mapping[str, Any], *, task: str) -> None:
    """Warn, once per task and field, about Airflow's ``{{ ... }}`` in a template field
    that has no ``<< >>``-style template: stateward passes it through unrendered.

    Args:
        values: Field name to the field's raw value.
        task: The task's label, named in the warning.
    """
    for field, value in values.items():
        strings = list(_strings(value))
        if any(_AIRFLOW_VALUE.search(text) for text in strings) and not any(
            is_template(text) for text in strings
        ):
            _warn_once(task, field)


@functools.lru_cache(maxsize=_WARNED_CACHE_SIZE)
def _warn_once(task: str, field: str) -> None:
    # Cached: a field warns once per process, not on every attempt and run.
    logger.warning(
        "template field %r of task %r holds {{ ... }}, which stateward passes through "
        "unrendered: its templates write values as << name >> and statements as "
        "<%% ... %%> (ignore this if the braces are meant for the command itself)",
        field,
        task,
    )


def needs_rendering(
    value: Any,
    template_ext: Sequence[str] = (),
    *,
    markers: Sequence[str] = SYNTAXES["stateward"][::2],
) -> bool:
    """Whether rendering could change ``value``.

    True when a string in it (walking lists, tuples, sets and dict values) holds a
    template marker (``markers``: stateward's ``<<``, ``<%``, ``<#`` unless those of
    another syntax are given, see :func:`markers`) or names a ``template_ext`` file.
    Lets callers skip preparing a template context, and loading jinja, for fields that
    hold no template.
    """
    if isinstance(value, str):
        return is_template(value, markers) or (
            bool(template_ext) and value.endswith(tuple(template_ext))
        )
    if isinstance(value, dict):
        return any(needs_rendering(v, template_ext, markers=markers) for v in value.values())
    if isinstance(value, list | tuple | set | frozenset):
        return any(needs_rendering(v, template_ext, markers=markers) for v in value)
    return False
