"""The sandboxed jinja environment that renders template fields.

Templates use ``<< >>`` for values, ``<% %>`` for statements and ``<# #>`` for
comments, so that ``{{ }}`` and ``{% %}`` reach shell scripts, SQL and other tools
untouched. Templates may read state but never write it, and reading a state key that
is not set fails the render with a message that names the key and the keys that exist.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

import jinja2
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.nativetypes import NativeCodeGenerator, NativeTemplate, native_concat
from jinja2.runtime import Context
from jinja2.sandbox import (
    ImmutableSandboxedEnvironment,
    is_internal_attribute,
    modifies_known_mutable,
)
from jinja2.utils import internalcode

from stateward._errors import TemplateWriteError, UndeclaredAssetError
from stateward._templates.fields import SYNTAXES

__all__ = [
    "SYNTAXES",
    "NativeStateSandbox",
    "StateKeyUndefinedError",
    "StateSandbox",
    "StateUndefined",
    "get_environment",
]

# Environments are few (one per searchpath and mode) and each costs milliseconds to
# build, while rendering happens on every task attempt.
_ENVIRONMENT_CACHE_SIZE = 128


def _state_reference(label: str, key: str) -> str:
    """Spell how a template reads ``key`` from the state view called ``label``.

    Args:
        label: The view's name in templates, e.g. ``task_state``.
        key: The state key.

    Returns:
        ``label.key`` when the key is a Python identifier, else ``label['key']``.
    """
    if key.isidentifier():
        return f"{label}.{key}"
    return f"{label}[{key!r}]"


class StateKeyUndefinedError(UndefinedError):
    """A template read a state key that is not set.

    Attributes:
        key: The key the template looked up.
        label: The state view's name in templates, e.g. ``task_state``.
        existing: The keys the view does have.
    """

    def __init__(self, *, key: str, label: str, existing: Sequence[str]) -> None:
        self.key = key
        self.label = label
        self.existing = list(existing)
        super().__init__(f"{self.reference} is not set; {self.keys_summary}")

    @property
    def reference(self) -> str:
        """How the template spelled the read, e.g. ``task_state.job_id``."""
        return _state_reference(self.label, self.key)

    @property
    def keys_summary(self) -> str:
        """The keys that do exist, e.g. ``task_state has keys ['a', 'b']``."""
        if not self.existing:
            return f"{self.label} has no keys"
        return f"{self.label} has keys {self.existing!r}"


class StateUndefined(jinja2.StrictUndefined):
    """A strict undefined that names the missing state key and the keys that exist.

    When the object the name was looked up on offers ``_template_missing(name)`` and it
    returns an exception, using the undefined value raises that (the object explains why
    it has no such attribute); else when it offers ``_template_keys()`` (returning
    ``(label, keys)``), :class:`StateKeyUndefinedError`; otherwise it fails as
    ``StrictUndefined`` does.
    """

    __slots__ = ()

    @internalcode
    def _fail_with_undefined_error(self, *args: Any, **kwargs: Any) -> NoReturn:
        error = self._state_key_error()
        if error is not None:
            raise error
        super()._fail_with_undefined_error(*args, **kwargs)

    def _state_key_error(self) -> Exception | None:
        # Only a plain lookup miss is a missing key: the sandbox also builds undefined
        # values (with a hint and SecurityError) for attributes it refuses.
        if self._undefined_exception is not UndefinedError or self._undefined_hint:
            return None
        name = self._undefined_name
        if not isinstance(name, str):
            return None
        # Looked up on the type so that a view exposing keys as attributes cannot
        # shadow the method with a state key of the same name.
        template_missing = getattr(type(self._undefined_obj), "_template_missing", None)
        if callable(template_missing):
            explained: Exception | None = template_missing(self._undefined_obj, name)
            if explained is not None:
                return explained
        template_keys = getattr(type(self._undefined_obj), "_template_keys", None)
        if not callable(template_keys):
            return None
        label, existing = template_keys(self._undefined_obj)
        return StateKeyUndefinedError(key=name, label=label, existing=existing)


# jinja binds the failing dunders (__str__, __iter__, __add__, ...) to the base
# class's function object, so overriding the method alone would not reach them.
for _name, _member in {**vars(jinja2.Undefined), **vars(jinja2.StrictUndefined)}.items():
    if _member is jinja2.Undefined._fail_with_undefined_error:
        setattr(StateUndefined, _name, StateUndefined._fail_with_undefined_error)
del _name, _member


def _write_refused_message(obj: object) -> str:
    name = getattr(obj, "__name__", None) or type(obj).__name__
    # A bound method of a state view: name the view written to, e.g. asset_state['orders'].
    view = getattr(obj, "__self__", None)
    template_keys = getattr(type(view), "_template_keys", None)
    if not callable(template_keys):
        # Not state: an object that records something, e.g. an outlet's events.
        owner = getattr(type(view), "_template_owner", None) or type(view).__name__
        return (
            f"templates cannot call {name!r}: it changes what the task records; call it "
            f"from the task's code (e.g. {owner}.{name}(...)) instead"
        )
    head, bracket, rest = template_keys(view)[0].partition("[")
    return (
        f"templates can read state but not write it: {name!r} writes state; call it "
        f'from the task\'s code (e.g. context["{head}"]{bracket}{rest}.{name}(...)) instead'
    )


def _dag_method_refusal(obj: object, name: str, allowed: frozenset[str]) -> str:
    kind = type(obj).__name__
    return (
        f"{kind}.{name} could change the Dag or run task code; templates may call only "
        f"{sorted(allowed)} on a {kind}, so wire and map tasks in the Dag file"
    )


def _read_only_methods(obj: object) -> frozenset[str] | None:
    # Objects that make up the Dag (a Dag, its tasks) list the methods templates may call;
    # every other callable attribute of theirs could change the Dag or run user code.
    allowed = getattr(type(obj), "_template_methods", None)
    return allowed if isinstance(allowed, frozenset) else None


class StateSandbox(ImmutableSandboxedEnvironment):
    """A sandboxed environment with ``<< >>`` / ``<% %>`` / ``<# #>`` delimiters.

    Undefined values are strict (:class:`StateUndefined`), output is not escaped, and
    a trailing newline is kept. Calling a method marked ``alters_data = True`` raises
    :class:`~stateward.TemplateWriteError`; attributes starting with ``_``
    stay refused as in jinja's default sandbox.

    Use :func:`get_environment` rather than building one per render.

    Args:
        searchpath: Folders that template files (``template_ext``) are loaded from.
    """

    def __init__(
        self, *, searchpath: Sequence[str | os.PathLike[str]] = (), syntax: str = "stateward"
    ) -> None:
        self.searchpath: tuple[str, ...] = tuple(os.fspath(path) for path in searchpath)
        self.syntax = syntax
        delimiters = SYNTAXES[syntax]
        #: What opens a value, a statement and a comment: a string holding none of
        #: them is not a template.
        self.markers: tuple[str, ...] = delimiters[::2]
        super().__init__(
            variable_start_string=delimiters[0],
            variable_end_string=delimiters[1],
            block_start_string=delimiters[2],
            block_end_string=delimiters[3],
            comment_start_string=delimiters[4],
            comment_end_string=delimiters[5],
            undefined=StateUndefined,
            autoescape=False,
            keep_trailing_newline=True,
            loader=jinja2.FileSystemLoader(self.searchpath) if self.searchpath else None,
            finalize=self._output_finalize(),
        )

    def _output_finalize(self) -> Callable[[Any], Any] | None:
        return None

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        """Refuse what jinja's immutable sandbox refuses, and methods that change the Dag.

        A Dag or task object (one whose type lists ``_template_methods``) gives
        templates only the callables in that list; other attributes stay readable.
        """
        if not super().is_safe_attribute(obj, attr, value):
            return False
        allowed = _read_only_methods(obj)
        if allowed is None or not callable(value) or _read_only_methods(value) is not None:
            return True  # a task reached from the Dag (callable itself) may be read
        return attr in allowed

    def is_safe_callable(self, obj: Any) -> bool:
        """Refuse what jinja refuses, and methods of Dag and task objects not listed as
        read-only however the template reached them."""
        if not super().is_safe_callable(obj):
            return False
        allowed = _read_only_methods(getattr(obj, "__self__", None))
        return allowed is None or getattr(obj, "__name__", None) in allowed

    def unsafe_undefined(self, obj: Any, attribute: str) -> jinja2.Undefined:
        """The value of an attribute the sandbox refuses, failing with why it is refused."""
        kind = type(obj).__name__
        if attribute.startswith("_") or is_internal_attribute(obj, attribute):
            why = (
                "it is private (it starts with '_' or is a Python internal); templates read "
                "only public names"
            )
        elif modifies_known_mutable(obj, attribute):
            why = (
                f"{kind}.{attribute}() would change the {kind}; templates read values but do "
                "not change them, so do it in the task's code"
            )
        else:
            why = _dag_method_refusal(obj, attribute, _read_only_methods(obj) or frozenset())
        why = f"access to attribute {attribute!r} of {kind!r} object is refused: {why}"
        return self.undefined(why, name=attribute, obj=obj, exc=SecurityError)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """Look up ``obj[argument]`` as jinja does, keeping undeclared-asset errors.

        jinja retries a failed item lookup as an attribute; for ``asset_state['name']``
        that would hide the message naming the assets the task declared.

        Raises:
            UndeclaredAssetError: ``asset_state`` was indexed with an asset the task
                did not declare.
        """
        try:
            return obj[argument]
        except UndeclaredAssetError:
            raise
        except (TypeError, LookupError):
            return super().getitem(obj, argument)

    def call(
        self,
        context: Context,
        obj: Any,
        /,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call ``obj`` from template code, refusing methods that write state.

        Args:
            context: The template's runtime context.
            obj: The callable.
            *args: Positional arguments of the call.
            **kwargs: Keyword arguments of the call.

        Returns:
            What the callable returns.

        Raises:
            TemplateWriteError: ``obj`` is marked ``alters_data = True``.
            jinja2.exceptions.SecurityError: ``obj`` is otherwise unsafe to call.
        """
        if getattr(obj, "alters_data", False):
            msg = _write_refused_message(obj)
            raise TemplateWriteError(msg)
        owner = getattr(obj, "__self__", None)
        allowed = _read_only_methods(owner)
        if allowed is not None and getattr(obj, "__name__", None) not in allowed:
            raise SecurityError(_dag_method_refusal(owner, obj.__name__, allowed))
        return super().call(context, obj, *args, **kwargs)


def _refuse_undefined_output(value: Any) -> Any:
    # Native output is not passed through str(), so an undefined value would be
    # returned as an object instead of failing the render.
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()
    return value


class NativeStateSandbox(StateSandbox):
    """A :class:`StateSandbox` that renders to Python objects instead of strings.

    A template that is a single expression yields that expression's value
    (``<< task_state.count >>`` gives ``3``, an ``int``); other output is joined into a
    string and parsed as a Python literal when it is one, as
    :class:`jinja2.nativetypes.NativeEnvironment` does.
    """

    code_generator_class = NativeCodeGenerator
    template_class = NativeTemplate
    concat = staticmethod(native_concat)  # type: ignore[assignment]

    def _output_finalize(self) -> Callable[[Any], Any] | None:
        return _refuse_undefined_output


@functools.lru_cache(maxsize=_ENVIRONMENT_CACHE_SIZE)
def _build_environment(native: bool, searchpath: tuple[str, ...], syntax: str) -> StateSandbox:
    if native:
        return NativeStateSandbox(searchpath=searchpath, syntax=syntax)
    return StateSandbox(searchpath=searchpath, syntax=syntax)


def get_environment(
    *,
    native: bool = False,
    searchpath: Sequence[str | os.PathLike[str]] = (),
    syntax: str = "stateward",
) -> StateSandbox:
    """Return the shared environment for a rendering mode and template searchpath.

    Environments are cached per ``(native, resolved searchpath, syntax)``, so repeated
    calls with the same arguments return the same object.

    Args:
        native: Render to Python objects (:class:`NativeStateSandbox`) instead of
            strings.
        searchpath: Folders that template files are loaded from (a single string is
            one folder); relative folders are resolved against the current directory.
        syntax: ``"stateward"`` (``<< >>``) or ``"airflow"`` (``{{ }}``): see
            :data:`SYNTAXES`.

    Returns:
        The environment.
    """
    # A lone path is one folder, not a sequence of one-character folder names.
    paths = [searchpath] if isinstance(searchpath, str) else searchpath
    resolved = tuple(str(Path(path).resolve()) for path in paths)
    return _build_environment(native, resolved, syntax)
