"""Finding the code blocks of the docs that are marked to be checked.

The marker convention (written down in DESIGN.md, "Docs that run"): a fenced block whose
info string is ``python`` followed by words:

- ``run``: execute the block;
- ``file=NAME``: write the block to the file NAME (appending if the session wrote it
  already), e.g. a Dag file that a later block imports or ``stateward run``s;
- ``session=NAME``: blocks of one page sharing a session run in page order, in one
  working folder (on ``sys.path``) and one namespace; a block without it is a session
  of its own;
- ``excerpt=PATH``: the block quotes the file PATH (from the repository root): its
  lines are found there in the same order, ``...`` standing for what it leaves out.

A session that wrote ``test_*.py`` files ends by running pytest on them. A setup the
reader need not see is a marked block inside an HTML comment. In a ``run`` block, a
one-line ``print(...)`` followed by a comment, on its line or on the comment lines
right below it, shows what it prints: the block's output must hold those lines in order.
A fence ``text output`` after a ``run`` block shows what that block prints, whole: its
lines must be the block's output, a line ``...`` standing for any number of lines.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^`\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)
WORDS = ("run", "file=", "session=", "excerpt=")


@attrs.frozen
class Block:
    """One marked block of a page."""

    page: str
    line: int
    code: str
    run: bool
    file: str | None
    session: str
    #: The text of a ``text output`` block right after it: what it prints.
    output: str | None = None

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


_PRINT = re.compile(r"^\s*print\(.*\)(?:\s+#\s(?P<comment>.*))?$")
_COMMENT = re.compile(r"^\s*#\s?(?P<text>.*)$")


def expected_output(code: str) -> list[str]:
    """The lines a block's commented ``print(...)`` calls say they print, in order."""
    lines = code.splitlines()
    expected = []
    for number, line in enumerate(lines):
        match = _PRINT.match(line)
        if match is None:
            continue
        if match["comment"] is not None:
            expected.append(match["comment"].rstrip())
            continue
        below = []
        for following in lines[number + 1 :]:
            comment = _COMMENT.match(following)
            if comment is None:
                break
            below.append(comment["text"].strip())
        if below:
            expected.append(" ".join(below))
    return expected


def output_matches(shown: str, printed: list[str]) -> bool:
    """Whether ``printed`` is what an output block shows (``...`` stands for any lines)."""
    pattern = "".join(
        r"(?:.*\n)*?" if line.strip() == "..." else re.escape(line.rstrip()) + r"[ \t]*\n"
        for line in shown.splitlines()
    )
    return re.fullmatch(pattern, "".join(line + "\n" for line in printed)) is not None


def info_words(info: str) -> list[str]:
    """The words after ``python`` in a fence's info string (none for other languages)."""
    words = info.split()
    return words[1:] if words[:1] == ["python"] else []


def unknown_words(page: Path) -> list[str]:
    """Marker words on a page's python fences that the convention does not know."""
    return [
        f"{page.name}: {word!r}"
        for match in _FENCE.finditer(page.read_text())
        for word in info_words(match["info"])
        if not (word == "run" or word.startswith(WORDS[1:]))
    ]


def excerpts() -> list[tuple[str, str, Path]]:
    """``(where, code, file)`` of each block marked ``excerpt=PATH`` (from the repository root)."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in _FENCE.finditer(text):
            for word in info_words(match["info"]):
                if word.startswith("excerpt="):
                    line = text.count("\n", 0, match.start()) + 2
                    found.append((f"{page.name}:{line}", match["body"], ROOT / word[8:]))
    return found


def missing_from(code: str, source: str) -> list[str]:
    """The lines of an excerpt not found, in order, among the lines of its source file.

    Blank lines and lines holding only ``...`` (what the excerpt leaves out) are skipped.
    """
    rest = iter(line.rstrip() for line in source.splitlines())
    return [
        line
        for line in code.splitlines()
        if line.strip() not in ("", "...") and not any(had == line.rstrip() for had in rest)
    ]


def marked_blocks(page: Path) -> list[Block]:
    """The blocks of one page that are marked ``run`` or ``file=``, in page order."""
    text = page.read_text()
    blocks = []
    for number, match in enumerate(_FENCE.finditer(text)):
        line = text.count("\n", 0, match.start()) + 2
        indent = len(match["indent"])
        code = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        if match["info"].split() == ["text", "output"]:
            if not (blocks and blocks[-1].run):
                msg = f"{page.name}: the output block at line {line} follows no run block"
                raise ValueError(msg)
            blocks[-1] = attrs.evolve(blocks[-1], output=code)
            continue
        words = info_words(match["info"])
        options = dict(word.split("=", 1) for word in words if "=" in word)
        if "run" not in words and "file" not in options:
            continue
        blocks.append(
            Block(
                page=page.name,
                line=line,
                code=code,
                run="run" in words,
                file=options.get("file"),
                session=options.get("session", f"block{number}"),
            )
        )
    return blocks


def sessions() -> dict[str, list[Block]]:
    """Every session of every page, keyed ``page::session``, blocks in page order."""
    found: dict[str, list[Block]] = {}
    for page in PAGES:
        for block in marked_blocks(page):
            found.setdefault(f"{block.page}::{block.session}", []).append(block)
    return found
