"""The ``serve`` and ``tokens create`` commands, added to the ``eventml`` typer app by :func:`register`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from eventml._cli_options import DataOpt
from eventml.config import Settings
from eventml.errors import ConfigError

err = Console(stderr=True)

TokensOpt = Annotated[
    str | None,
    typer.Option(
        "--tokens", envvar="EVENTML_TOKENS", show_envvar=True,
        help="The token file (default: tokens.json in the log's folder).",
    ),
]  # fmt: skip


def serve_command(
    data: DataOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8080,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Serve without tokens (anyone may do anything).")
    ] = False,
    sync: Annotated[
        bool, typer.Option("--sync", help="Answer only once the request is committed to the log.")
    ] = False,
    tokens: TokensOpt = None,
    group: Annotated[
        str, typer.Option(help="Consumer group of the built-in stream engine.")
    ] = "serve",
    no_engine: Annotated[
        bool, typer.Option("--no-engine", help="Do not run the stream engine in this process.")
    ] = False,
    max_in_flight: Annotated[
        int, typer.Option(help="Requests served at once; more get 429.")
    ] = 256,
    timeout: Annotated[float, typer.Option(help="Longest a request may take, seconds.")] = 30.0,
) -> None:
    """Serve the HTTP API (Open Inference Protocol v2 + native JSON) and the stream engine."""
    from eventml.api._service import ApiOptions
    from eventml.api.auth import TokenStore, tokens_path
    from eventml.api.server import serve

    settings = Settings.from_env(log=data)
    if port < 0 or port > 65535:
        raise ConfigError(f"expected --port in 0..65535, got {port}")
    if no_auth:
        err.print(
            "warning: --no-auth: anyone who can reach "
            f"{host}:{port} may score, upload models and change routes",
            markup=False, highlight=False,
        )  # fmt: skip
        auth = None
    else:
        path = tokens_path(settings.log, tokens)
        auth = TokenStore(path)
        if not auth.entries():
            err.print(
                f"warning: no tokens in {path} yet: every request needing one is refused (401); "
                "create one with `eventml tokens create --role admin`",
                markup=False, highlight=False,
            )  # fmt: skip
    options = ApiOptions(
        sync=sync, max_in_flight=max_in_flight, timeout_s=timeout,
        engine_group=None if no_engine else group, log_url=settings.log, freeze_gc=True,
    )  # fmt: skip
    err.print(
        f"eventml serving {settings.log} on http://{host}:{port}", markup=False, highlight=False
    )
    serve(data, settings, host=host, port=port, auth=auth, options=options)


def tokens_create(
    role: Annotated[str, typer.Option(help="read, predict or admin.")],
    data: DataOpt = None,
    tokens: TokensOpt = None,
    note: Annotated[str, typer.Option(help="What the token is for (stored).")] = "",
) -> None:
    """Create an API token; prints it once (only its SHA-256 digest is stored)."""
    from eventml.api.auth import TokenStore, tokens_path

    settings = Settings.from_env(log=data)
    path = tokens_path(settings.log, tokens)
    token = TokenStore(path).create(role, note)
    typer.echo(token)
    err.print(f"(role {role}; stored as a SHA-256 digest in {path})", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    """Add ``serve`` and ``tokens create`` to the ``eventml`` command."""
    app.command("serve")(serve_command)
    tokens_app = typer.Typer(help="API tokens with roles read, predict, admin.")
    tokens_app.command("create")(tokens_create)
    app.add_typer(tokens_app, name="tokens")
