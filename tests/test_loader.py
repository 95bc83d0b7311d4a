"""Loading Dags from Python files: ``load_dags`` and ``pick_dag``."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from stateward import Dag, TaskLoadError
from stateward._loader import load_dags, pick_dag

FIXTURES = Path(__file__).parent / "cli_fixtures"


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def test_collects_every_dag_by_id_in_file_order():
    """Every module-level Dag is returned, keyed by dag_id, in definition order."""
    dags = load_dags(FIXTURES / "two_dags.py")
    assert list(dags) == ["first", "second"]
    assert all(isinstance(dag, Dag) for dag in dags.values())
    assert list(dags["first"].tasks) == ["hello"]


def test_each_load_is_independent():
    """Loading a file twice gives two fresh modules, hence distinct Dag objects."""
    first = load_dags(FIXTURES / "etl.py")["etl"]
    second = load_dags(FIXTURES / "etl.py")["etl"]
    assert first is not second
    assert first.tasks["extract"].is_mapped


def test_the_files_folder_is_importable_while_loading(tmp_path: Path):
    """A Dag file imports helpers next to it; sys.path is restored afterwards."""
    write(tmp_path, "cli_helper_for_loader.py", "DAG_ID = 'from_helper'\n")
    path = write(
        tmp_path,
        "with_helper.py",
        "from stateward import Dag\nfrom cli_helper_for_loader import DAG_ID\ndag = Dag(DAG_ID)\n",
    )
    assert list(load_dags(path)) == ["from_helper"]
    assert str(tmp_path) not in sys.path
    sys.modules.pop("cli_helper_for_loader", None)


def test_main_guard_does_not_run(tmp_path: Path):
    """The file is not run as __main__, so its script block stays quiet."""
    path = write(
        tmp_path,
        "guarded.py",
        "from stateward import Dag\ndag = Dag('g')\n"
        "if __name__ == '__main__':\n    raise SystemExit('ran as a script')\n",
    )
    assert list(load_dags(path)) == ["g"]


def test_missing_file(tmp_path: Path):
    """A path that does not exist is a TaskLoadError naming it."""
    with pytest.raises(TaskLoadError, match=r"Dag file '.*nope\.py' does not exist"):
        load_dags(tmp_path / "nope.py")


def test_directory_is_not_a_dag_file(tmp_path: Path):
    """A folder is refused with a message asking for a Python file."""
    with pytest.raises(TaskLoadError, match="is not a file; give the path of a Python file"):
        load_dags(tmp_path)


def test_syntax_error_shows_file_line_type_and_message(tmp_path: Path):
    """A syntax error is one line: the file and line, SyntaxError, and its message."""
    path = write(tmp_path, "broken.py", "from stateward import Dag\n\ndef f(:\n    pass\n")
    with pytest.raises(TaskLoadError) as info:
        load_dags(path)
    message = str(info.value)
    assert "\n" not in message
    assert "broken.py', line 3: SyntaxError: " in message
    assert isinstance(info.value, ImportError)
    assert info.value.path == str(path)


def test_import_error_shows_the_line_in_the_dag_file(tmp_path: Path):
    """A failing import names the Dag file's line and the exception; the module is dropped."""
    path = write(tmp_path, "needs.py", "from stateward import Dag\nimport no_such_module_xyz\n")
    before = set(sys.modules)
    with pytest.raises(
        TaskLoadError,
        match=r"needs\.py', line 2: ModuleNotFoundError: No module named 'no_such_module_xyz'",
    ):
        load_dags(path)
    assert not {name for name in set(sys.modules) - before if "stateward_dagfile" in name}


def test_error_raised_in_an_imported_helper_names_its_file_and_line(tmp_path: Path):
    """An error raised while the Dag file imports a helper names the helper's line."""
    folder = tmp_path / "deep"
    folder.mkdir()
    write(folder, "loader_helper_zero.py", "X = 1\n\n\ndef f():\n    return 1 / 0\n\n\nY = f()\n")
    path = write(folder, "dagfile.py", "from stateward import Dag\nimport loader_helper_zero\n")
    shown = str(path.parent / "dagfile.py")
    try:
        with pytest.raises(TaskLoadError) as info:
            load_dags(shown)
    finally:
        sys.modules.pop("loader_helper_zero", None)
    assert str(info.value) == (
        f"cannot load Dag file {shown!r}: ZeroDivisionError: division by zero, raised at "
        f"{str(folder / 'loader_helper_zero.py')!r}, line 5 (imported at line 2 of the Dag file)"
    )


def test_syntax_error_in_an_imported_helper_names_the_helper(tmp_path: Path):
    """A helper that does not parse is named, with its line, rather than the import line."""
    write(tmp_path, "loader_helper_syntax.py", "x = 1\ndef f(:\n")
    path = write(tmp_path, "uses.py", "import json\nimport loader_helper_syntax\n")
    with pytest.raises(
        TaskLoadError,
        match=r"uses\.py': SyntaxError: .*, raised at '.*loader_helper_syntax\.py', line 2 "
        r"\(imported at line 2 of the Dag file\)",
    ):
        load_dags(path)


def test_error_raised_while_defining_a_dag(tmp_path: Path):
    """An exception raised by the file's code (a bad Dag) is reported with its line."""
    path = write(tmp_path, "dup.py", "from stateward import Dag\n\nDag('has space')\n")
    with pytest.raises(TaskLoadError, match=r"dup\.py', line 3: DagDefinitionError: dag_id must"):
        load_dags(path)


def test_file_without_dags(tmp_path: Path):
    """A file that defines no Dag says how to define one."""
    path = write(tmp_path, "empty.py", "X = 1\n")
    with pytest.raises(TaskLoadError, match=r"defines no Dag; create one at module level"):
        load_dags(path)


def test_two_dags_with_one_id(tmp_path: Path):
    """Two different Dag objects sharing a dag_id are refused."""
    path = write(tmp_path, "twice.py", "from stateward import Dag\na = Dag('x')\nb = Dag('x')\n")
    with pytest.raises(TaskLoadError, match=r"two different Dags with id 'x'"):
        load_dags(path)


def test_one_dag_under_two_names_counts_once(tmp_path: Path):
    """The same Dag bound to two globals is one Dag."""
    path = write(tmp_path, "alias.py", "from stateward import Dag\na = Dag('x')\nb = a\n")
    assert list(load_dags(path)) == ["x"]


def test_pick_dag():
    """One Dag needs no id; several need one; an unknown id lists the known ones."""
    two = load_dags(FIXTURES / "two_dags.py")
    one = {"first": two["first"]}
    assert pick_dag(one, None) is two["first"]
    assert pick_dag(two, "second") is two["second"]
    with pytest.raises(TaskLoadError, match=r"the file defines 2 Dags \('first', 'second'\)"):
        pick_dag(two, None)
    with pytest.raises(TaskLoadError, match=r"no Dag 'third' in 'x\.py'; it defines 'first'"):
        pick_dag(two, "third", source="'x.py'")
