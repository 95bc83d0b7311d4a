"""docs/cli.md documents every option of every command, and only options that exist.

The synopsis at the top of the page is the list: each command's line there names all
of the options its ``--help`` shows (``SELECTOR`` stands for the selector options of
the table under it), and each ``stateward ...`` section names only options its command
has. ``-h``/``--help`` is on every command and is documented once.
"""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from stateward._cli import cli

from .docs_blocks import ROOT

PAGE = (ROOT / "docs" / "cli.md").read_text()
HELP_OPTIONS = {"-h", "--help"}
_OPTION = re.compile(r"(?<![\w-])(--?[a-z][a-z-]*)")
_HELP_LINE = re.compile(r"^  (-\w)?(?:, )?(--[a-z][a-z-]*)?")


def _command(name: str) -> click.Command | None:
    # Through the group: some commands' modules are imported when first asked for.
    return cli.get_command(click.Context(cli), name)


def synopsis() -> dict[str, set[str]]:
    """Each command of the synopsis block (``state list``, ``run``, ``""`` for the group)."""
    block = PAGE.split("```text\n", 1)[1].split("```", 1)[0]
    table = PAGE.split("`SELECTOR` chooses", 1)[1].split("\n\n", 2)[1]
    selector = set(_OPTION.findall(table))
    commands: dict[str, set[str]] = {}
    for line in block.splitlines():
        words = line.split()
        assert words[0] == "stateward", line
        group = getattr(_command(words[1]) if len(words) > 1 else None, "commands", None)
        name = words[1:3] if group else words[1:2]
        command = " ".join(name) if not name[0].startswith(("-", "[")) else ""
        options = set(_OPTION.findall(line.split(" ", 1)[1]))
        commands[command] = options | (selector if "SELECTOR" in line else set())
    return commands


def sections() -> dict[str, str]:
    """The text of each ``## `stateward CMD` `` section, by command."""
    found = {}
    for part in PAGE.split("\n## ")[1:]:
        heading, _, text = part.partition("\n")
        match = re.fullmatch(r"`stateward ([a-z ]+)`", heading.strip())
        if match:
            found[match[1]] = text
    return found


def help_options(command: str) -> set[str]:
    """The options the real ``stateward COMMAND --help`` lists."""
    result = CliRunner().invoke(cli, [*command.split(), "--help"])
    assert result.exit_code == 0, result.output
    options_part = result.output.split("\nOptions:\n", 1)[1].split("\n\n", 1)[0]
    found = set()
    for line in options_part.splitlines():
        match = _HELP_LINE.match(line)
        if match:
            found |= {option for option in match.groups() if option}
    return found - HELP_OPTIONS


def commands() -> list[str]:
    """Every command of the real CLI, ``""`` being the group itself."""
    names = [""]
    for name in sorted(cli.list_commands(click.Context(cli))):
        sub = getattr(_command(name), "commands", None)
        names += [f"{name} {s}" for s in sorted(sub)] if sub else [name]
    return names


def test_the_synopsis_lists_every_command():
    """Each command of the CLI has a line in the synopsis, and no other line is there."""
    assert sorted(synopsis()) == sorted(commands())


@pytest.mark.parametrize("command", commands())
def test_the_synopsis_lists_exactly_the_options_of_help(command: str):
    """Every option ``--help`` shows is in the synopsis, and every one there exists."""
    documented = synopsis()[command]
    real = help_options(command)
    undocumented, missing = sorted(real - documented), sorted(documented - real)
    assert (undocumented, missing) == ([], []), f"{command!r}: (undocumented, not in --help)"


@pytest.mark.parametrize("command", sorted(sections()))
def test_a_commands_section_names_only_its_options(command: str):
    """The options a section mentions (prose and transcripts) are options of its command."""
    mentioned = set(_OPTION.findall(sections()[command])) - HELP_OPTIONS
    assert sorted(mentioned - help_options(command)) == []
