"""``orchy auth``: making API keys. The key is printed once; the server is given only its
entry (name, role, tenant, action names and the key's SHA-256), to put in the keys file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError

from app.api.security.api_keys import entry_for, new_key
from app.api.security.principal import Role

auth_cli = typer.Typer(help="API keys of the server.", no_args_is_help=True)

FAILURE_EXIT = 1
# A keys file holds hashes only, but who may do what is no one else's business either.
KEYS_FILE_MODE = 0o600


@auth_cli.command("new-key")
def new_key_command(
    name: Annotated[str, typer.Option(help="Who the key is for (recorded in run histories).")],
    role: Annotated[Role, typer.Option(help="What the key may do.")],
    tenant: Annotated[
        str | None, typer.Option(help="The tenant the key belongs to (default: the server's).")
    ] = None,
    actions: Annotated[
        str | None,
        typer.Option(help="Worker keys: the only action names it may work on, comma separated."),
    ] = None,
    append: Annotated[
        Path | None,
        typer.Option(
            help="Append the entry to this keys file (one entry per line; made if missing) "
            "and print only the key."
        ),
    ] = None,
) -> None:
    """Make a key: print it (once: the server keeps only its SHA-256) and its entry for
    ORCHY_API_KEYS_FILE (or ORCHY_API_KEYS)."""
    names = None if actions is None else [part.strip() for part in actions.split(",")]
    key = new_key()
    try:
        entry = entry_for(key, name, role, tenant, names)
    except ValidationError as error:
        problems = "; ".join(f"--{item['loc'][0]}: {item['msg']}" for item in error.errors())
        typer.echo(f"orchy auth new-key: {problems}", err=True)
        raise typer.Exit(FAILURE_EXIT) from None
    if append is None:
        typer.echo(f"key:   {key}")
        typer.echo(f"entry: {entry.line()}")
        typer.echo(
            "The key is shown only now. Give the entry to the server: a line of "
            "ORCHY_API_KEYS_FILE, or an item of the JSON list ORCHY_API_KEYS.",
            err=True,
        )
        return
    _append(append, entry.line())
    typer.echo(key)
    typer.echo(f"{append}: entry {name!r} added; the key is shown only now.", err=True)


def _append(path: Path, line: str) -> None:
    try:
        text = path.read_text() if path.exists() else ""
        if text.strip().startswith("["):
            typer.echo(
                f"orchy auth new-key: {path} is a JSON list; add the entry to it yourself "
                "(run without --append to see it)",
                err=True,
            )
            raise typer.Exit(FAILURE_EXIT)
        separator = "" if not text or text.endswith("\n") else "\n"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, KEYS_FILE_MODE)
        with os.fdopen(descriptor, "a") as keys_file:
            keys_file.write(f"{separator}{line}\n")
    except OSError as error:
        typer.echo(f"orchy auth new-key: {path}: {error.strerror}", err=True)
        raise typer.Exit(FAILURE_EXIT) from None
