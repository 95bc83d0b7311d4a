"""The figures the docs quote are the ones in bench/results.jsonl, written by bench/."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .docs_blocks import ROOT

BENCH = ROOT / "bench"


@pytest.fixture
def bench_pages(monkeypatch: pytest.MonkeyPatch):
    """bench/pages.py, imported as run_all.py imports it."""
    monkeypatch.syspath_prepend(str(BENCH))
    import pages

    yield pages
    monkeypatch.delitem(sys.modules, "pages")


def test_the_docs_figures_are_written_from_the_results_file(bench_pages):
    """performance.md and the bench regions of the other pages match results.jsonl."""
    made = bench_pages.pages(bench_pages.load_results())
    assert {path.name for path in made} == {
        "performance.md",
        "isolation.md",
        "scaling.md",
        "airflow.md",
        "ui.md",
        "task-state.md",
    }
    for path, text in made.items():
        assert path.read_text() == text, (
            f"{path.name} differs from what bench/results.jsonl gives; "
            "run python bench/run_all.py --docs-only"
        )


def test_a_page_without_its_region_is_an_error(bench_pages):
    """A page whose bench region was removed is reported, not silently left stale."""
    with pytest.raises(ValueError, match=r"docs/x.md has no region <!-- bench:costs -->"):
        bench_pages.replace_regions("no region here", {"costs": "| a |"}, "docs/x.md")


def test_run_all_help_parses_arguments_and_runs_nothing():
    """`python bench/run_all.py --help` prints its usage; it neither measures nor writes."""
    before = {
        path: path.stat().st_mtime_ns for path in [*ROOT.glob("docs/*.md"), BENCH / "results.jsonl"]
    }
    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--help"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "--docs-only" in done.stdout
    after = {path: path.stat().st_mtime_ns for path in before}
    assert after == before
