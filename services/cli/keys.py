"""``cbcm keys``: the key-encryption keys that wrap personal data's data keys: rotate them,
retire an old one, count what each wraps."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, EXIT_REFUSED, application, fail, load_settings

keys_cli = typer.Typer(
    help="The key-encryption keys that wrap personal data's data keys.", no_args_is_help=True
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm keys ...`` to the ``cbcm`` command line."""
    cli.add_typer(keys_cli, name="keys")


@keys_cli.command("rotate")
def keys_rotate(
    rewrap_only: Annotated[
        bool,
        typer.Option(
            "--rewrap-only", help="Make no new KEK (a KMS rotated its own): rewrap to the active."
        ),
    ] = False,
) -> None:
    """Make a new key-encryption key active and rewrap every data key under it (no event is
    rewritten). Then `cbcm keys retire OLD_ID` destroys the old one."""
    from services.application.key_rotation import rotate
    from services.event_store.personal_data.kek import KeyRingError

    with application(load_settings()) as app:
        try:
            rotation = rotate(app, new_key=not rewrap_only)
        except KeyRingError as e:
            fail(str(e), EXIT_CONFIG)
    typer.echo(f"active key-encryption key {rotation.active}: {rotation.rewrapped} rewrapped")


@keys_cli.command("retire")
def keys_retire(kek_id: Annotated[str, typer.Argument(help="The id of an inactive KEK.")]) -> None:
    """Destroy an inactive key-encryption key once no data key is wrapped under it."""
    from services.application.key_rotation import retire
    from services.event_store.personal_data.kek import KeyRingError

    with application(load_settings()) as app:
        try:
            retire(app, kek_id)
        except KeyRingError as e:
            fail(str(e), EXIT_REFUSED)
    typer.echo(f"key-encryption key {kek_id} destroyed")


@keys_cli.command("status")
def keys_status() -> None:
    """Live data keys per key-encryption key, and erased ones (counts only)."""
    from services.application.key_rotation import status as key_status

    with application(load_settings()) as app:
        counts = key_status(app)
    typer.echo(json.dumps(counts, indent=2, sort_keys=True))
