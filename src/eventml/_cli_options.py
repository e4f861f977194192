"""Command-line options shared by every ``eventml`` command group (main, learning, api)."""

from __future__ import annotations

from typing import Annotated

import typer

DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data", "--log", envvar="EVENTML_LOG", show_envvar=True,
        help="The log: a folder (default ./eventml-data), sqlite:///file, memory://, kafka://host:port.",
    ),
]  # fmt: skip
JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
