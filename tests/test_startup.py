"""``stateward run`` of an in-process Dag loads only what it uses: the task-process
machinery, jinja, cattrs, asyncio, the PostgreSQL store and the UI stay unimported until
something needs them (their cost is start-up time; see DESIGN.md, start-up)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

#: Modules a one-task in-process run must not import (nor ``import stateward``).
NOT_LOADED = (
    "asyncio",
    "asyncpg",
    "cattrs",
    "hypercorn",
    "jinja2",
    "rich.progress",
    "starlette",
    "trio_asyncio",
    "stateward._airflow.sdk",
    "stateward._cli.runs",
    "stateward._cli.state",
    "stateward._cli.ui",
    "stateward._protocol.converter",
    "stateward._protocol.wire",
    "stateward._runtime.child",
    "stateward._runtime.isolation",
    "stateward._runtime.rehearsal",
    "stateward._runtime.template",
    "stateward._templates.environment",
    "stateward._templates.render",
    "stateward._ui",
    "stateward.store.postgres",
)

ONE_TASK = """
from stateward import Dag

dag = Dag("one")

@dag.task
def hello(task_state):
    task_state.set("greeting", "hello")
    return task_state.get("greeting")
"""

TEMPLATED = """
from stateward import Dag, ShellOperator

dag = Dag("templated", params={"word": "hi"})
ShellOperator(task_id="echo", dag=dag, command="echo << params.word >>")
"""


def loaded_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    program = code + "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def heavy(modules: set[str]) -> list[str]:
    return sorted(
        name
        for name in modules
        if any(name == heavy or name.startswith(heavy + ".") for heavy in NOT_LOADED)
    )


def test_import_stateward_loads_none_of_them() -> None:
    """``import stateward`` imports none of the modules only some runs need."""
    assert heavy(loaded_after("import stateward")) == []


def test_an_in_process_cli_run_loads_none_of_them(tmp_path: Path) -> None:
    """``stateward run`` of a one-task Dag, off a terminal, imports none of them."""
    dag_file = tmp_path / "one.py"
    dag_file.write_text(ONE_TASK)
    code = textwrap.dedent(f"""
        import contextlib, io
        from stateward._cli import main
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert main(["run", {str(dag_file)!r}, "--db", {str(tmp_path / "s.db")!r}]) == 0
    """)
    assert heavy(loaded_after(code)) == []


def test_an_in_process_run_dag_loads_none_of_them(tmp_path: Path) -> None:
    """``run_dag`` of a one-task Dag from a script imports none of them."""
    dag_file = tmp_path / "one.py"
    dag_file.write_text(ONE_TASK)
    code = textwrap.dedent(f"""
        import stateward
        (dag,) = stateward.load_dags({str(dag_file)!r}).values()
        result = stateward.run_dag(dag, db={str(tmp_path / "s.db")!r})
        assert result.state == "success", result
    """)
    assert heavy(loaded_after(code)) == []


@pytest.mark.parametrize(
    ("dag", "loaded"),
    [
        (TEMPLATED, {"jinja2", "stateward._templates.render"}),
    ],
    ids=["templated"],
)
def test_what_a_run_needs_is_loaded_when_it_needs_it(
    tmp_path: Path, dag: str, loaded: set[str]
) -> None:
    """A Dag whose field holds a template loads jinja and renders it (the check above
    sees modules that are really imported on use)."""
    dag_file = tmp_path / "dag.py"
    dag_file.write_text(dag)
    code = textwrap.dedent(f"""
        import stateward
        (dag,) = stateward.load_dags({str(dag_file)!r}).values()
        result = stateward.run_dag(dag, db={str(tmp_path / "s.db")!r})
        assert result.state == "success", result
        (echo,) = result.task_instances
        assert echo.rendered["command"] == "echo hi", echo.rendered
    """)
    assert loaded <= loaded_after(code)
