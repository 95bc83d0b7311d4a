"""``stateward ui``: serve the HTTP API and the web pages over a runtime."""

from __future__ import annotations

from urllib.parse import urlencode

import click

from .._runtime.runtime import Runtime
from .app import cli, db_option, with_runtime


@cli.command()
@db_option
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
    help="The port to listen on (0: any free port).",
)  # fmt: skip
@click.option("--token", help="The secret every request must carry. [default: a random one]")
@click.option("--read-only", is_flag=True, help="Refuse every write (403).")
def ui(db: str | None, host: str, port: int, token: str | None, read_only: bool) -> None:
    """Serve the web pages and the HTTP API (Airflow's state-store routes) on the database.

    Prints the URL with the token, as Jupyter does; open it in a browser, or send the
    token as 'Authorization: Bearer TOKEN' to /api/v2. Stop it with Ctrl-C.
    """
    try:
        from .._ui.app import make_app, new_token, serve
    except ImportError as exc:
        msg = f"stateward ui needs its extra: pip install 'stateward[ui]' ({exc})"
        raise click.ClickException(msg) from None
    secret = token or new_token()

    def ready(binds: list[str]) -> None:
        for url in binds:
            click.echo(f"stateward ui: {url}/?{urlencode({'token': secret})}", err=False)
        click.echo("Ctrl-C stops it.")

    async def work(rt: Runtime) -> None:
        app = make_app(rt, token=secret, read_only=read_only)
        await serve(app, host=host, port=port, on_ready=ready)

    # Provenance names the UI's changes "api": who made them is in the key's history.
    with_runtime(db, work, create=False, writer="api")
