"""The ``stateward`` command: run Dags, inspect and edit durable state, clean up.

Every command that touches the database opens it with :func:`stateward.open_runtime`
inside ``trio.run``. A user error (a missing file, an unknown Dag, bad JSON, a file
that is not a stateward database) prints one line, ``error: ...``, to stderr and exits
with 2 for a usage error or 1 for anything else; a failed run exits with 1 as well.
"""

from __future__ import annotations

from collections.abc import Sequence

import click

from .._errors import StatewardError
from .._nursery import sole_exception
from . import run as run
from .app import EXIT_FAILURE, JSON_FIELDS, cli, one_line, print_error

# The state, runs and ui commands are imported when used (app.LAZY_COMMANDS): ``stateward
# run`` does not load them.


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``stateward`` command line and return its exit status.

    Args:
        argv: The arguments after the program name (default: ``sys.argv[1:]``).

    Returns:
        0 on success; 1 for a failed run or a user error; 2 for a usage error;
        130 when interrupted.
    """
    try:
        result = cli.main(args=argv, prog_name="stateward", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.ClickException as exc:
        print_error(exc.format_message())
        return exc.exit_code
    except click.Abort:
        print_error("interrupted")
        return 130
    except BaseException as exc:
        leaf = sole_exception(exc)
        if isinstance(leaf, click.ClickException):
            print_error(leaf.format_message())
            return leaf.exit_code
        if isinstance(leaf, KeyboardInterrupt):
            print_error("interrupted")
            return 130
        if isinstance(leaf, StatewardError | OSError):
            print_error(one_line(leaf))
            return EXIT_FAILURE
        raise
    return result if isinstance(result, int) else 0


__all__ = ["JSON_FIELDS", "cli", "main"]
