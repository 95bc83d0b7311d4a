from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import pytest
from jinja2.exceptions import SecurityError, UndefinedError
from jinja2.sandbox import SandboxedEnvironment, unsafe

from stateward._errors import TemplateWriteError
from stateward._templates.environment import (
    NativeStateSandbox,
    StateKeyUndefinedError,
    StateSandbox,
    StateUndefined,
    get_environment,
)


class Keyed:
    """A minimal state view: keys as attributes and items, one write method."""

    def __init__(self, label: str, **data: Any) -> None:
        self._label = label
        self._data = data

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            raise AttributeError(key) from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def _template_keys(self) -> tuple[str, list[str]]:
        return self._label, sorted(self._data)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    set.alters_data = True  # type: ignore[attr-defined]

    @unsafe
    def secret(self) -> str:
        return "hidden"


def render(source: str, *, native: bool = False, **context: Any) -> Any:
    return get_environment(native=native).from_string(source).render(**context)


def test_state_sandbox_is_a_jinja_sandbox():
    """StateSandbox is a SandboxedEnvironment with the strict StateUndefined."""
    env = get_environment()
    assert isinstance(env, SandboxedEnvironment)
    assert env.undefined is StateUndefined
    assert issubclass(StateUndefined, jinja2.StrictUndefined)


def test_angle_delimiters_render_and_curly_braces_pass_through():
    """<< >>, <% %> and <# #> are template syntax; {{ }}, {% %} and {# #} are text."""
    source = "<# note #><% if n %><< n >><% endif %> {{ n }} {% if n %} {# c #}"
    assert render(source, n=2) == "2 {{ n }} {% if n %} {# c #}"


def test_trailing_newline_kept_and_output_not_escaped():
    """A trailing newline survives and HTML is not escaped."""
    assert render("<< v >>\n", v="<b>&</b>") == "<b>&</b>\n"


def test_plain_undefined_name_fails_as_strict_undefined():
    """An unknown top-level name raises jinja's UndefinedError, not the state error."""
    with pytest.raises(UndefinedError, match="'nope' is undefined") as info:
        render("<< nope >>")
    assert not isinstance(info.value, StateKeyUndefinedError)


@pytest.mark.parametrize("source", ["<< s.job_id >>", "<< s['job_id'] >>", "<< s.job_id.x >>"])
def test_missing_state_key_raises_state_key_error(source):
    """A missing key on a view with _template_keys() names the key and existing keys."""
    state = Keyed("task_state", attempts=1, watermark="2024")
    with pytest.raises(StateKeyUndefinedError) as info:
        render(source, s=state)
    error = info.value
    assert (error.key, error.label, error.existing) == (
        "job_id",
        "task_state",
        ["attempts", "watermark"],
    )
    assert str(error) == (
        "task_state.job_id is not set; task_state has keys ['attempts', 'watermark']"
    )


def test_missing_key_that_is_not_an_identifier_is_shown_as_item():
    """A key that cannot be an attribute name is shown with brackets."""
    with pytest.raises(StateKeyUndefinedError, match=r"^task_state\['my-key'\] is not set"):
        render("<< s['my-key'] >>", s=Keyed("task_state"))


def test_missing_key_on_empty_view_says_no_keys():
    """An empty view is described as having no keys."""
    with pytest.raises(StateKeyUndefinedError, match=r"task_state has no keys$"):
        render("<< s.a >>", s=Keyed("task_state"))


def test_defined_test_does_not_fail_on_missing_key():
    """`is defined` checks a key without failing the render."""
    source = "<% if s.a is defined %>yes<% else %>no<% endif %>"
    assert render(source, s=Keyed("task_state")) == "no"


def test_write_method_call_raises_template_write_error():
    """Calling an alters_data method raises TemplateWriteError and does not write."""
    state = Keyed("task_state", a=1)
    expected = (
        "templates can read state but not write it: 'set' writes state; call it from "
        'the task\'s code (e.g. context["task_state"].set(...)) instead'
    )
    with pytest.raises(TemplateWriteError) as info:
        render("<< s.set('a', 2) >>", s=state)
    assert str(info.value) == expected
    assert state._data == {"a": 1}


def test_other_unsafe_calls_keep_security_error():
    """A callable marked unsafe (not alters_data) still raises jinja's SecurityError."""
    with pytest.raises(SecurityError, match="not safely callable"):
        render("<< s.secret() >>", s=Keyed("task_state"))


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize(
    "source", ["<< s.__class__ >>", "<< ().__class__.__mro__ >>", "<< s._data >>"]
)
def test_private_attributes_are_refused(source, native):
    """Attributes starting with '_' fail the render, in both modes."""
    with pytest.raises(SecurityError, match="is private"):
        render(source, native=native, s=Keyed("task_state", a=1))


@pytest.mark.parametrize(
    ("source", "expected"),
    [("<< n >>", 3), ("<< [n, n] >>", [3, 3]), ("<< {'n': n} >>", {"n": 3})],
)
def test_native_environment_returns_python_objects(source, expected):
    """NativeStateSandbox yields the expression's Python value."""
    env = get_environment(native=True)
    assert isinstance(env, NativeStateSandbox)
    result = env.from_string(source).render(n=3)
    assert result == expected
    assert type(result) is type(expected)


def test_native_environment_fails_on_missing_key():
    """A single undefined expression fails in native mode instead of being returned."""
    with pytest.raises(StateKeyUndefinedError, match=r"task_state\.b is not set"):
        render("<< s.b >>", native=True, s=Keyed("task_state", a=1))


def test_get_environment_is_cached():
    """The same arguments give the same environment; other arguments another one."""
    assert get_environment() is get_environment(native=False, searchpath=())
    assert get_environment(native=True) is get_environment(native=True)
    assert get_environment(native=True) is not get_environment()


def test_get_environment_resolves_searchpath(tmp_path, monkeypatch):
    """A relative and an absolute spelling of one folder share an environment."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sql").mkdir()
    relative = get_environment(searchpath=["sql"])
    assert relative is get_environment(searchpath=[tmp_path / "sql"])
    assert relative is not get_environment(searchpath=[tmp_path])
    assert isinstance(relative.loader, jinja2.FileSystemLoader)
    assert relative.searchpath == (str((tmp_path / "sql").resolve()),)


def test_environment_without_searchpath_has_no_loader():
    """Without a searchpath there is nothing to load files from."""
    env = StateSandbox()
    assert env.loader is None
    assert env.searchpath == ()


def test_environment_loads_files_from_searchpath(tmp_path: Path):
    """Files in the searchpath load by name and use the same delimiters."""
    (tmp_path / "q.sql").write_text("SELECT << n >> -- {{ raw }}\n")
    env = get_environment(searchpath=[tmp_path])
    assert env.get_template("q.sql").render(n=1) == "SELECT 1 -- {{ raw }}\n"
