"""``cbcm agency keygen`` and ``cbcm share open``: a recipient agency's side of sealed shares
(issue #6, ADR 7).

An agency makes a key pair once (``cbcm agency keygen --out FILE``), keeps the private key
file (0600) and hands the printed public key to the coordinator, who registers it
(``PUT /v1/network/agencies/{agency}/share-key``). From then on what a transfer or an
investigation referral shares with the agency travels sealed to that key on
``cbcm.v1.share.<agency>.>``; ``cbcm share open --key FILE`` opens one such message.

Exit codes: 0 done; 2 bad usage, a key file that cannot be used or written, or input that is
not a share; 6 the share does not open with this key (sealed to another key, or altered).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from services.cli.common import EXIT_CONFIG, fail

EXIT_NOT_OPENED = 6

MAX_SHARE_BYTES = 1_048_576
"""A share is one NATS message (1 MiB at most by default)."""

agency_cli = typer.Typer(help="An agency's own keys.", no_args_is_help=True)
share_cli = typer.Typer(
    help="Personal data shared with your agency, sealed to its key.", no_args_is_help=True
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm agency ...`` and ``cbcm share ...`` to the ``cbcm`` command line."""
    cli.add_typer(agency_cli, name="agency")
    cli.add_typer(share_cli, name="share")


@agency_cli.command("keygen")
def agency_keygen(
    out: Annotated[
        Path,
        typer.Option(
            "--out", dir_okay=False, help="Write the private key here (a new file, mode 0600)."
        ),
    ],
) -> None:
    """Make the X25519 key pair shares to your agency are sealed to.

    Writes the private key (PEM PKCS#8) to a new file readable by you only, and prints the
    public key and its key id: give the public key to the network coordinator to register
    (PUT /v1/network/agencies/{agency}/share-key). Keep the private key: a share sealed to it
    opens with it only.
    """
    from services.relay.share_keys import (
        key_id_of,
        new_private_key,
        public_key_of,
        write_private_key,
    )

    key = new_private_key()
    try:
        write_private_key(out, key)
    except FileExistsError:
        fail(
            f"{out} exists: a key is never overwritten (shares sealed to it would be lost)",
            EXIT_CONFIG,
        )
    except OSError as e:
        fail(f"cannot write {out}: {e.strerror or e}", EXIT_CONFIG)
    typer.echo(f"private key written to {out} (mode 0600): keep it secret", err=True)
    typer.echo(f"public_key: {public_key_of(key)}")
    typer.echo(f"key_id: {key_id_of(key)}")


@share_cli.command("open")
def share_open(
    key: Annotated[
        Path,
        typer.Option("--key", dir_okay=False, help="Your agency's private key file (keygen)."),
    ],
    source: Annotated[
        Path | None,
        typer.Option(
            "--in", dir_okay=False, help="A file holding one share message (default: stdin)."
        ),
    ] = None,
) -> None:
    """Open one share message (its JSON body, as taken from CBCM_SHARES) and print the
    shared fields as JSON: case, version, custody step, the fields' values, and the names
    of fields that were erased before they could be shared."""
    from services.relay.share_keys import (
        ShareCannotBeOpened,
        ShareError,
        ShareNotForThisKey,
        open_share,
        read_private_key,
    )

    try:
        private_key = read_private_key(key)
    except ShareError as e:
        fail(str(e), EXIT_CONFIG)
    try:
        raw = sys.stdin.buffer.read(MAX_SHARE_BYTES + 1) if source is None else source.read_bytes()
    except OSError as e:
        fail(f"cannot read {source}: {e.strerror or e}", EXIT_CONFIG)
    if len(raw) > MAX_SHARE_BYTES:
        fail("the input is larger than a share can be", EXIT_CONFIG)
    try:
        opened = open_share(raw.strip(), private_key)
    except (ShareNotForThisKey, ShareCannotBeOpened) as e:
        fail(str(e), EXIT_NOT_OPENED)
    except ShareError as e:
        fail(str(e), EXIT_CONFIG)
    typer.echo(json.dumps(opened.to_json(), indent=2, ensure_ascii=False))
