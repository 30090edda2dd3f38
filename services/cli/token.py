"""``cbcm token``: a bearer token for the HTTP API, signed with the local key (embedded mode)."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from domain.actors import Role  # a command's option type: typer reads it at start
from services.cli.common import EXIT_CONFIG, fail, load_settings, one_line


def register(cli: typer.Typer) -> None:
    """Add ``cbcm token`` to the ``cbcm`` command line."""
    cli.command()(token)


def token(
    user: Annotated[
        str,
        typer.Option("--user", metavar="USER", help="Account identifier (no name, no e-mail)."),
    ],
    agency: Annotated[
        str,
        typer.Option("--agency", metavar="AGENCY", help="Code of the agency the user acts for."),
    ],
    role: Annotated[
        list[str],
        typer.Option(
            "--role", metavar="ROLE", help=f"A role to grant (repeatable): {', '.join(Role)}."
        ),
    ],
    minutes: Annotated[
        int, typer.Option("--minutes", metavar="N", help="Lifetime in minutes, at most 720.")
    ] = 15,
) -> None:
    """Print a bearer token for the HTTP API, signed with the local key (embedded mode only)."""
    from domain.actors import Role
    from services.identity.tokens import (
        issue_token,
        signing_key_path,
    )

    settings = load_settings()
    if settings.oidc_issuer:
        fail(
            "CBCM_OIDC_ISSUER is set: tokens come from the identity provider, not `cbcm token`",
            EXIT_CONFIG,
        )
    unknown = [r for r in role if r not in {known.value for known in Role}]
    if unknown:
        fail(f"unknown role: use one or more of {', '.join(Role)}", EXIT_CONFIG)
    if not 1 <= minutes <= 720:
        fail("--minutes must be between 1 and 720", EXIT_CONFIG)
    try:
        text = issue_token(
            settings.data_dir,
            user=user,
            agency=agency,
            roles=[Role(r) for r in role],
            ttl=timedelta(minutes=minutes),
            audience=settings.oidc_audience,
        )
    except ValueError as e:
        fail(one_line(e), EXIT_CONFIG)
    except OSError as e:
        where = signing_key_path(settings.data_dir)
        fail(f"cannot use the token signing key {where}: {one_line(e)}", EXIT_CONFIG)
    typer.echo(text)
