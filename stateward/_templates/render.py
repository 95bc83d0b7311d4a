"""Render a task's template fields with the live context, once per attempt."""

from __future__ import annotations

import copy
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import jinja2
from jinja2.exceptions import (
    SecurityError,
    TemplateNotFound,
    TemplateSyntaxError,
    UndefinedError,
)

from stateward._errors import TemplateError, TemplateKeyError, TemplateWriteError
from stateward._templates.environment import StateKeyUndefinedError, StateSandbox
from stateward._templates.fields import is_template
from stateward._values import MAX_DEPTH

__all__ = ["render_fields"]

# Bounded so that templates built from changing values (ids, dates) cannot grow the
# cache without limit; the size is ample for the fields of a large Dag.
_TEMPLATE_CACHE_SIZE = 1024

_SYNTAX_HINT = (
    "templates write values as << name >>, statements as <% if ... %> and comments "
    "as <# ... #>; to write a literal '<<' use << '<<' >>"
)

_AIRFLOW_SYNTAX_HINT = (
    "this Dag's template_syntax is 'airflow': templates write values as {{ name }}, "
    "statements as {% if ... %} and comments as {# ... #}"
)


@functools.lru_cache(maxsize=_TEMPLATE_CACHE_SIZE)
def _compile(env: StateSandbox, source: str) -> jinja2.Template:
    return env.from_string(source)


def render_fields(
    values: Mapping[str, Any],
    context: Mapping[str, Any],
    *,
    env: StateSandbox,
    task: str,
    template_ext: Sequence[str] = (),
) -> dict[str, Any]:
    """Render template fields with a task attempt's context.

    Strings are rendered as templates; lists, tuples, dicts (their values, not their
    keys), sets and frozensets are walked and rebuilt with the same type; other values
    are returned unchanged. A string ending in one of ``template_ext`` names a template
    file, loaded through ``env``'s searchpath and rendered. A string without ``<<``,
    ``<%`` or ``<#`` is returned as it is.

    Args:
        values: Field name to the field's raw value.
        context: The variables templates see, e.g. ``task_state`` and ``asset_state``.
        env: The environment to render with (see
            :func:`~stateward._templates.get_environment`).
        task: The task's id, named in error messages.
        template_ext: File name endings that mark a string as a template file name
            (a single string is one ending).

    Returns:
        Field name to the rendered value.

    Raises:
        TemplateKeyError: A template read a state key that is not set.
        TemplateWriteError: A template called a method that writes state.
        TemplateError: A template has a syntax error, uses an undefined name, reaches
            something the sandbox refuses, or names a file that cannot be found.
    """
    # A lone string is one ending, not a sequence of one-character endings.
    endings = (template_ext,) if isinstance(template_ext, str) else tuple(template_ext)
    renderer = _Renderer(env, dict(context), task, endings)
    return {field: renderer.render(value, field, ()) for field, value in values.items()}


class _Renderer:
    __slots__ = ("context", "env", "task", "template_ext")

    def __init__(
        self,
        env: StateSandbox,
        context: dict[str, Any],
        task: str,
        template_ext: tuple[str, ...],
    ) -> None:
        self.env = env
        self.context = context
        self.task = task
        self.template_ext = template_ext

    def render(self, value: Any, field: str, path: tuple[Any, ...]) -> Any:
        if isinstance(value, str):
            return self.render_string(value, field, path)
        if isinstance(value, dict):
            return self.render_dict(value, field, path)
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            # A named tuple takes its items as separate arguments.
            items = [self.render(item, field, (*path, i)) for i, item in enumerate(value)]
            return type(value)(*items)
        if isinstance(value, list | tuple):
            return type(value)(self.render(item, field, (*path, i)) for i, item in enumerate(value))
        if isinstance(value, set | frozenset):
            return type(value)(self.render(item, field, path) for item in value)
        return value

    def render_dict(self, value: dict[Any, Any], field: str, path: tuple[Any, ...]) -> Any:
        if type(value) is dict:
            return {key: self.render(item, field, (*path, key)) for key, item in value.items()}
        # A shallow copy keeps what the constructor would not be given again, such as
        # a defaultdict's default factory.
        rendered = copy.copy(value)
        for key, item in value.items():
            rendered[key] = self.render(item, field, (*path, key))
        return rendered

    def render_string(self, source: str, field: str, path: tuple[Any, ...]) -> Any:
        is_file = bool(self.template_ext) and source.endswith(self.template_ext)
        if not is_file and not is_template(source, self.env.markers):
            return source
        if is_file and self.env.loader is None:
            msg = (
                f"{self.where(field, path)} names the template file {source!r} (it ends "
                f"in one of {list(self.template_ext)!r}), but there is no template "
                f"searchpath to load it from; set template_searchpath to the folders "
                f"that hold it"
            )
            raise TemplateError(msg, task=self.task, field=field)
        try:
            template = self.env.get_template(source) if is_file else _compile(self.env, source)
            return template.render(self.context)
        except StateKeyUndefinedError as exc:
            msg = (
                f"{self.where(field, path)} reads {exc.reference}, which is not set; "
                f"{exc.keys_summary}; read it with {exc.label}.get({exc.key!r}) if it may "
                f"be absent"
            )
            raise TemplateKeyError(msg, key=exc.key, task=self.task, field=field) from exc
        except UndefinedError as exc:
            msg = (
                f"{self.where(field, path)} uses a value that is not defined: "
                f"{exc.message}; the template can use {sorted(self.context)!r}"
            )
            raise TemplateError(msg, task=self.task, field=field) from exc
        except TemplateSyntaxError as exc:
            in_file = f" of {exc.name!r}" if exc.name else ""
            msg = (
                f"{self.where(field, path)} has a syntax error on line {exc.lineno}"
                f"{in_file}: {exc.message}; "
                f"{_SYNTAX_HINT if self.env.syntax == 'stateward' else _AIRFLOW_SYNTAX_HINT}"
            )
            raise TemplateError(msg, task=self.task, field=field) from exc
        except SecurityError as exc:
            msg = f"{self.where(field, path)} reached something the sandbox refuses: {exc}"
            raise TemplateError(msg, task=self.task, field=field) from exc
        except TemplateNotFound as exc:
            msg = (
                f"{self.where(field, path)} needs the template file {exc.name!r}, which "
                f"is not in the template searchpath {list(self.env.searchpath)!r}; put "
                f"the file in one of those folders or fix the name"
            )
            raise TemplateError(msg, task=self.task, field=field) from exc
        except TemplateWriteError as exc:
            msg = f"{self.where(field, path)}: {exc}"
            raise TemplateWriteError(msg, task=self.task, field=field) from exc
        except jinja2.TemplateError as exc:
            msg = f"{self.where(field, path)} cannot be rendered: {exc}"
            raise TemplateError(msg, task=self.task, field=field) from exc
        except RecursionError:
            # A state value an older release stored past the depth limit.
            msg = (
                f"{self.where(field, path)} reached a value nested too deep to render; "
                f"state values may nest lists and dicts at most {MAX_DEPTH} levels deep, so "
                "overwrite or delete the value it reads"
            )
            raise TemplateError(msg, task=self.task, field=field) from None
        except Exception as exc:
            # Errors from the values a template works on keep their type; the note
            # says which field was being rendered.
            exc.add_note(f"while rendering {self.where(field, path)}")
            raise

    def where(self, field: str, path: tuple[Any, ...]) -> str:
        spelled = field + "".join(f"[{step!r}]" for step in path)
        return f"template field {spelled!r} of task {self.task!r}"
