"""The docs say what the code does: their marked code blocks run as written.

See tests/docs_blocks.py for the marker convention (and DESIGN.md, "Docs that run").
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import pytest

from .docs_blocks import (
    PAGES,
    Block,
    excerpts,
    expected_output,
    missing_from,
    output_matches,
    sessions,
    unknown_words,
)

pytest_plugins = ["pytester"]

SESSIONS = sessions()


def test_the_docs_mark_blocks_to_run():
    """The user-guide pages mark blocks to run; a typo in a marker would silently skip one."""
    assert [word for page in PAGES for word in unknown_words(page)] == []
    pages = {key.split("::")[0] for key in SESSIONS}
    for page in ["README.md", "getting-started.md", "task-state.md", "asset-state.md"]:
        assert page in pages
    for page in ["templates.md", "testing.md", "isolation.md", "architecture.md"]:
        assert page in pages


@pytest.mark.parametrize("key", sorted(SESSIONS))
def test_doc_session_runs(
    key: str, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each session's blocks run in order in a fresh folder; its test files pass."""
    blocks = SESSIONS[key]
    folder = pytester.path
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for block in blocks:  # a module of that name imported before is not the page's
        if block.file is not None and block.file.endswith(".py"):
            monkeypatch.delitem(sys.modules, block.file.removesuffix(".py"), raising=False)
    before = set(sys.modules)
    sys.path.insert(0, str(folder))
    try:
        for block in blocks:
            run_block(block, folder, namespace)
    finally:
        sys.path.remove(str(folder))
        for name in set(sys.modules) - before:
            if str(folder) in str(getattr(sys.modules[name], "__file__", "") or ""):
                del sys.modules[name]
    tests = sorted(path.name for path in folder.glob("test_*.py"))
    if tests:
        outcome = pytester.runpytest("-p", "no:cacheprovider", *tests)
        outcome.assert_outcomes(passed=count_tests(folder, tests))


def run_block(block: Block, folder: Path, namespace: dict[str, object]) -> None:
    """Write a ``file=`` block, execute a ``run`` block (compiling it either way)."""
    code = compile(block.code, block.where, "exec")
    if block.file is not None:
        with (folder / block.file).open("a") as out:
            out.write(block.code)
    if block.run:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(code, namespace)
        assert_prints(block, out.getvalue().splitlines())


def assert_prints(block: Block, output: list[str]) -> None:
    """The block printed the lines its comments show, in this order (others may be between)."""
    rest = iter(output)
    for line in expected_output(block.code):
        assert any(printed.rstrip() == line for printed in rest), (
            f"{block.where}: the block should print {line!r}; it printed {output!r}"
        )
    if block.output is not None:
        assert output_matches(block.output, output), (
            f"{block.where}: the block's output is not what the page shows:\n" + "\n".join(output)
        )


def count_tests(folder: Path, names: list[str]) -> int:
    """How many test functions the session's test files define."""
    return sum((folder / name).read_text().count("\ndef test_") for name in names) + sum(
        (folder / name).read_text().count("\nasync def test_") for name in names
    )


@pytest.mark.parametrize(
    ("where", "code", "source"), [pytest.param(*quoted, id=quoted[0]) for quoted in excerpts()]
)
def test_doc_excerpt_is_in_its_file(where: str, code: str, source: Path) -> None:
    """A block quoting a file (an example) still matches the file, line for line."""
    assert missing_from(code, source.read_text()) == [], f"{where} quotes {source.name}"


def test_an_excerpt_must_follow_its_file_in_order():
    """Lines found out of order, or changed, are reported."""
    source = "a = 1\nb = 2\nc = 3\n"
    assert missing_from("a = 1\n...\nc = 3\n", source) == []
    assert missing_from("c = 3\na = 1\n", source) == ["a = 1"]
    assert missing_from("b = 22\n", source) == ["b = 22"]
