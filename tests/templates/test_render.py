from __future__ import annotations

import collections
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from stateward._errors import (
    StatewardError,
    TemplateError,
    TemplateKeyError,
    TemplateWriteError,
)
from stateward._templates.environment import StateKeyUndefinedError, get_environment
from stateward._templates.render import render_fields


class FakeStateView:
    """Mimics the template-facing API of the task and asset state accessors."""

    def __init__(self, label: str = "task_state", **data: Any) -> None:
        self._label = label
        self._data = data

    def __getattr__(self, key: str) -> Any:
        try:
            return self._data[key]
        except KeyError:
            msg = f"{self._label} has no key {key!r}"
            raise AttributeError(msg) from None

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def items(self) -> Iterator[tuple[str, Any]]:
        return iter(sorted(self._data.items()))

    def _template_keys(self) -> tuple[str, list[str]]:
        return self._label, sorted(self._data)

    def set(self, key: str, value: Any) -> None:
        self._data[key] = value

    def delete(self, key: str) -> None:
        del self._data[key]

    def clear(self) -> None:
        self._data.clear()

    def increment(self, key: str, by: int = 1) -> int:
        self._data[key] = self._data.get(key, 0) + by
        return int(self._data[key])

    def compare_and_set(self, key: str, expected: Any, value: Any) -> bool:
        if self._data.get(key) != expected:
            return False
        self._data[key] = value
        return True

    for _method in (set, delete, clear, increment, compare_and_set):
        _method.alters_data = True  # type: ignore[attr-defined]
    del _method


class FakeAssetStates:
    """Mimics asset_state for a task with several assets: one view per asset name."""

    def __init__(self, **views: FakeStateView) -> None:
        self._views = views

    def __getitem__(self, name: str) -> FakeStateView:
        return self._views[name]

    def _template_keys(self) -> tuple[str, list[str]]:
        return "asset_state", sorted(self._views)


class Point(NamedTuple):
    x: Any
    y: Any


def make_context(**data: Any) -> dict[str, Any]:
    return {"task_state": FakeStateView(**data), "ds": "2024-05-01"}


def render_one(
    value: Any, *, native: bool = False, context: dict[str, Any] | None = None, **kwargs: Any
) -> Any:
    env = get_environment(native=native, searchpath=kwargs.pop("searchpath", ()))
    ctx = make_context(attempts=2, watermark="2024-04-30") if context is None else context
    return render_fields({"command": value}, ctx, env=env, task="etl.load", **kwargs)["command"]


def test_attribute_access_reads_task_state():
    """<< task_state.key >> renders the stored value."""
    assert render_one("since << task_state.watermark >>") == "since 2024-04-30"


def test_key_access_reads_task_state():
    """<< task_state['key'] >> renders the stored value."""
    assert render_one("n=<< task_state['attempts'] >>") == "n=2"


def test_read_methods_are_allowed():
    """get(), items() and `in` work from templates."""
    source = (
        "<< task_state.get('job_id', 'none') >>;"
        "<% for k, v in task_state.items() %><< k >>=<< v >>,<% endfor %>;"
        "<< 'attempts' in task_state >>"
    )
    assert render_one(source) == "none;attempts=2,watermark=2024-04-30,;True"


def test_asset_state_reads_by_asset_name():
    """<< asset_state['orders'].watermark >> reads one asset's state."""
    context = {
        "asset_state": FakeAssetStates(
            orders=FakeStateView("asset_state['orders']", watermark=7),
        )
    }
    assert render_one("<< asset_state['orders'].watermark >>", context=context) == "7"


def test_for_and_if_statements_and_comments():
    """<% for %> and <% if %> run and <# #> comments are dropped."""
    source = "<# skip me #><% for i in range(3) %><% if i != 1 %><< i >><% endif %><% endfor %>"
    assert render_one(source) == "02"


def test_curly_brace_syntax_is_left_untouched():
    """{{ }}, {% %} and {# #} reach the rendered value as written."""
    source = "echo {{ run_id }} {% raw %} {# x #} << ds >>"
    assert render_one(source) == "echo {{ run_id }} {% raw %} {# x #} 2024-05-01"


def test_string_without_template_markers_is_returned_unchanged():
    """A string without <<, <% or <# is returned as the same object."""
    value = "SELECT {{ not a template }} FROM t WHERE a > 1"
    assert render_one(value) is value


def test_plain_string_is_not_parsed_as_a_literal_in_native_mode():
    """In native mode a string without markers stays a string."""
    assert render_one("42", native=True) == "42"


@pytest.mark.parametrize("value", [None, 3, 2.5, True, b"<< x >>", object()])
def test_other_objects_are_returned_unchanged(value):
    """Values that are not strings or containers pass through as they are."""
    assert render_one(value) is value


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<< task_state.attempts >>", 2),
        ("<< [task_state.attempts, 5] >>", [2, 5]),
        ("<< {'n': task_state.attempts} >>", {"n": 2}),
        ("<< task_state.attempts >> files", "2 files"),
    ],
)
def test_native_mode_returns_python_objects(source, expected):
    """A single expression renders to its Python value in native mode."""
    result = render_one(source, native=True)
    assert result == expected
    assert type(result) is type(expected)


def test_string_mode_returns_strings():
    """Without native mode an int-valued expression renders as text."""
    assert render_one("<< task_state.attempts >>") == "2"


def test_nested_values_render_recursively_and_keep_types():
    """Lists, tuples, named tuples, dicts, sets and frozensets are walked; types stay."""
    value = {
        "<< keys are not rendered >>": ["<< ds >>", ("<< task_state.attempts >>", 1)],
        "set": {"<< ds >>"},
        "frozen": frozenset({"<< ds >>"}),
        "point": Point("<< ds >>", 2),
        "counts": collections.Counter({"a": 1}),
    }
    result = render_one(value)
    assert result == {
        "<< keys are not rendered >>": ["2024-05-01", ("2", 1)],
        "set": {"2024-05-01"},
        "frozen": frozenset({"2024-05-01"}),
        "point": Point("2024-05-01", 2),
        "counts": collections.Counter({"a": 1}),
    }
    assert type(result["<< keys are not rendered >>"][1]) is tuple
    assert type(result["frozen"]) is frozenset
    assert type(result["point"]) is Point
    assert type(result["counts"]) is collections.Counter


def test_rendering_does_not_modify_the_raw_value():
    """The raw field value is left as it was, so every attempt renders it afresh."""
    value = {"args": ["<< ds >>"]}
    render_one(value)
    assert value == {"args": ["<< ds >>"]}


def test_every_field_is_rendered():
    """render_fields returns every field name with its rendered value."""
    result = render_fields(
        {"a": "<< ds >>", "b": 1},
        make_context(),
        env=get_environment(),
        task="t",
    )
    assert result == {"a": "2024-05-01", "b": 1}


def test_template_ext_loads_file_from_searchpath(tmp_path: Path):
    """A string ending in a template_ext names a file that is loaded and rendered."""
    (tmp_path / "sql").mkdir()
    (tmp_path / "sql" / "load.sql").write_text(
        "SELECT * FROM t WHERE ts > '<< task_state.watermark >>' -- {{ kept }}\n"
    )
    result = render_one(
        ["load.sql", "plain.txt"], searchpath=[tmp_path / "sql"], template_ext=[".sql", ".sh"]
    )
    assert result == ["SELECT * FROM t WHERE ts > '2024-04-30' -- {{ kept }}\n", "plain.txt"]


def test_missing_template_file_names_file_field_task_and_searchpath(tmp_path: Path):
    """A template_ext string naming an absent file fails with a TemplateError."""
    searchpath = str(tmp_path.resolve())
    with pytest.raises(TemplateError) as info:
        render_one("missing.sql", searchpath=[tmp_path], template_ext=[".sql"])
    assert str(info.value) == (
        f"template field 'command' of task 'etl.load' needs the template file "
        f"'missing.sql', which is not in the template searchpath [{searchpath!r}]; put "
        f"the file in one of those folders or fix the name"
    )
    assert (info.value.task, info.value.field) == ("etl.load", "command")


def test_template_file_without_searchpath_fails():
    """A template_ext string with no searchpath to load it from fails clearly."""
    with pytest.raises(TemplateError, match="no template searchpath to load it from"):
        render_one("load.sql", template_ext=[".sql"])


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize("source", ["<< task_state.job_id >>", "<< task_state['job_id'] >>"])
def test_missing_key_error_names_key_field_task_and_existing_keys(source, native):
    """Reading an absent key raises TemplateKeyError naming key, field, task, keys."""
    with pytest.raises(
        TemplateKeyError,
        match=(
            r"^template field 'command' of task 'etl\.load' reads task_state\.job_id, "
            r"which is not set; task_state has keys \['attempts', 'watermark'\]; read it "
            r"with task_state\.get\('job_id'\) if it may be absent$"
        ),
    ) as info:
        render_one(source, native=native)
    error = info.value
    assert (error.key, error.task, error.field) == ("job_id", "etl.load", "command")
    assert isinstance(error, KeyError)
    assert isinstance(error, StatewardError)
    assert isinstance(error.__cause__, StateKeyUndefinedError)


def test_missing_key_error_names_the_nested_position():
    """A failure inside a container names where in the field it happened."""
    with pytest.raises(
        TemplateKeyError, match=r"template field \"command\['args'\]\[1\]\" of task"
    ) as info:
        render_one({"args": ["ok", "<< task_state.job_id >>"]})
    assert info.value.field == "command"


def test_missing_asset_key_names_the_asset():
    """A missing key of one asset's state names that asset's view."""
    context = {"asset_state": FakeAssetStates(orders=FakeStateView("asset_state['orders']"))}
    with pytest.raises(
        TemplateKeyError,
        match=r"reads asset_state\['orders'\]\.watermark, which is not set; "
        r"asset_state\['orders'\] has no keys",
    ):
        render_one("<< asset_state['orders'].watermark >>", context=context)


def test_undefined_name_raises_template_error():
    """A name that is not in the context raises TemplateError naming field and task."""
    with pytest.raises(
        TemplateError,
        match=(
            r"^template field 'command' of task 'etl\.load' uses a value that is not "
            r"defined: 'run_idd' is undefined; the template can use \['ds', 'task_state'\]$"
        ),
    ) as info:
        render_one("<< run_idd >>")
    assert not isinstance(info.value, TemplateKeyError)


@pytest.mark.parametrize(
    "source",
    [
        "<< task_state.set('attempts', 9) >>",
        "<< task_state.delete('attempts') >>",
        "<< task_state.clear() >>",
        "<< task_state.increment('attempts') >>",
        "<< task_state.compare_and_set('attempts', 2, 9) >>",
        "<% set _ = task_state.set('attempts', 9) %>done",
    ],
)
def test_write_attempts_are_refused_and_state_unchanged(source):
    """Calling a method that writes state raises TemplateWriteError and writes nothing."""
    context = make_context(attempts=2)
    name = source.split("task_state.")[1].split("(")[0]
    with pytest.raises(
        TemplateWriteError,
        match=(
            rf"^template field 'command' of task 'etl\.load': templates can read state but "
            rf"not write it: '{name}' writes state; call it from the task's code "
            rf"\(e\.g\. context\[\"task_state\"\]\.{name}\(\.\.\.\)\) instead$"
        ),
    ) as info:
        render_one(source, context=context)
    assert (info.value.task, info.value.field) == ("etl.load", "command")
    assert not isinstance(info.value, OSError)
    assert context["task_state"]._data == {"attempts": 2}


@pytest.mark.parametrize("native", [False, True])
@pytest.mark.parametrize(
    ("source", "attribute"),
    [
        ("<< task_state.__class__ >>", "__class__"),
        ("<< ().__class__.__mro__ >>", "__class__"),
        ("<< task_state._data >>", "_data"),
        ("<< task_state['_data'] >>", "_data"),
    ],
)
def test_sandbox_escapes_are_refused(source, attribute, native):
    """Private and dunder attributes fail the render with a TemplateError."""
    with pytest.raises(
        TemplateError,
        match=(
            rf"^template field 'command' of task 'etl\.load' reached something the "
            rf"sandbox refuses: access to attribute '{attribute}' of '\w+' object is refused: it "
            rf"is private \(it starts with '_' or is a Python internal\); templates read only "
            rf"public names$"
        ),
    ):
        render_one(source, native=native)


def test_syntax_error_names_field_task_and_line():
    """A malformed template raises TemplateError with the line of the error."""
    with pytest.raises(
        TemplateError,
        match=(
            r"^template field 'command' of task 'etl\.load' has a syntax error on line 2: "
            r".*; templates write values as << name >>"
        ),
    ):
        render_one("echo ok\necho << task_state.attempts >")


def test_syntax_error_in_template_file_names_the_file(tmp_path: Path):
    """A syntax error inside a template file names the file."""
    (tmp_path / "bad.sh").write_text("<% if %>\n")
    with pytest.raises(TemplateError, match=r"syntax error on line 1 of 'bad\.sh'"):
        render_one("bad.sh", searchpath=[tmp_path], template_ext=[".sh"])


def test_other_errors_keep_their_type_and_gain_a_note():
    """An error raised by the template's own operations names the field in a note."""
    with pytest.raises(ZeroDivisionError) as info:
        render_one("<< task_state.attempts // 0 >>")
    assert info.value.__notes__ == ["while rendering template field 'command' of task 'etl.load'"]


def test_single_template_ext_string_is_one_ending(tmp_path: Path):
    """template_ext=".sql" means the one ending, not its characters."""
    (tmp_path / "q.sql").write_text("SELECT << task_state.attempts >>")
    assert render_one("q.sql", searchpath=str(tmp_path), template_ext=".sql") == "SELECT 2"
    assert render_one("notes.txt", searchpath=str(tmp_path), template_ext=".sql") == "notes.txt"


@pytest.mark.parametrize(
    ("values", "held"),
    [
        ([{}, [], ()], False),
        ([{"a": 1}, 2, None, [1.5, (True,)]], False),
        ([{"a": "x"}], True),
        (["<< ds >>"], True),
        ([[1, [2, ("deep",)]]], True),
        ([{"k": {"k": ["s"]}}], True),
    ],
)
def test_holds_strings_walks_containers_as_rendering_does(values: list[Any], held: bool) -> None:
    """Fields holding no string at any depth skip the template checks of an attempt."""
    from stateward._templates import holds_strings

    assert holds_strings(values) is held
