"""``cbcm keys``: the key-encryption keys that wrap personal data's data keys: rotate them,
retire an old one, count what each wraps."""

from __future__ import annotations

import json
from pathlib import Path
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


@keys_cli.command("rotate-writer")
def keys_rotate_writer() -> None:
    """Replace the writer key (docs/key-ceremony.md): the log must verify under the current
    key; the rotation is an event of the log, marked with the new key; the old key moves to
    writer-retired/ beside the key file and marks nothing after it. Stop every other
    process first, and give each host the new key before restarting it."""
    from datetime import UTC, datetime

    from services.application.key_rotation import WriterRotationError, rotate_writer_key
    from services.event_store.config import persistence_env

    settings = load_settings()
    key_file = Path(persistence_env(settings)["CBCM_WRITER_KEY_FILE"])
    with application(settings) as app:
        try:
            done = rotate_writer_key(app, at=datetime.now(UTC), key_file=key_file)
        except WriterRotationError as e:
            fail(str(e), EXIT_REFUSED)
    typer.echo(
        f"writer key {done.active} marks the log from position {done.position}; writer key "
        f"{done.retired} retired (kept in {key_file.parent / 'writer-retired'} to check older "
        "marks)"
    )


@keys_cli.command("status")
def keys_status() -> None:
    """Live data keys per key-encryption key, and erased ones (counts only)."""
    from services.application.key_rotation import status as key_status

    with application(load_settings()) as app:
        counts = key_status(app)
    typer.echo(json.dumps(counts, indent=2, sort_keys=True))


@keys_cli.command("init")
def keys_init(
    directory: Annotated[
        Path, typer.Argument(help="Where to make them, e.g. /etc/cbcm/keys (made 0700).")
    ],
) -> None:
    """The network operator's keys for production, made once (the key ceremony of the
    operator guide): the key-encryption key ring `kek/`, the event cipher key, the writer
    key, the audit checkpoint key pair and the log's origin. Makes what is missing, never
    replaces a key; prints ids, never a secret."""
    import base64
    import os
    import secrets

    from cryptography.hazmat.primitives import serialization

    from services.audit.keys import _random_origin, key_id
    from services.event_store.personal_data.kek import LocalKeyRing
    from services.identity.tokens import load_or_create_ed25519_key

    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        fail(f"cannot make {directory}: {e.strerror}", EXIT_CONFIG)

    def once(name: str, text: str) -> bool:
        try:
            fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True

    def told(name: str, made: bool, what: str) -> None:
        typer.echo(f"{'made' if made else 'kept'}  {directory / name}: {what}")

    had_ring = (directory / "kek" / LocalKeyRing.ACTIVE).exists()
    ring = LocalKeyRing(directory / "kek", create=True)
    told("kek", not had_ring, f"key ring {ring.ring_id}, active KEK {ring.active_id}")
    for name, what in (
        ("event-cipher.key", "AES-256 whole-event cipher key"),
        ("writer.key", "writer key (commit marks)"),
    ):
        told(name, once(name, base64.b64encode(secrets.token_bytes(32)).decode() + "\n"), what)
    private = directory / "audit-signing-key.pem"
    had_key = private.exists()
    key = load_or_create_ed25519_key(private)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    told("audit-signing-key.pem", not had_key, f"checkpoint signing key {key_id(key)}")
    told("audit-public-key.pem", once("audit-public-key.pem", public.decode()), "its public half")
    made = once("audit-log-origin", _random_origin() + "\n")
    origin = (directory / "audit-log-origin").read_text().strip()
    told("audit-log-origin", made, f"the log's origin {origin}")
