"""``cbcm audit``: the tamper-evident audit log. ``checkpoint`` signs the log's head and
publishes it, ``witness`` keeps every signed checkpoint it sees, ``verify`` recomputes the
hash chain and holds it to a witness's checkpoints, ``case`` replays one case's custody.

Exit codes beyond the common ones (``services.cli.common``): 4 ``audit verify`` found damage;
5 ``audit verify`` has no signed checkpoint to hold the store to.
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer

from services.cli.common import (
    EXIT_CONFIG,
    EXIT_UNAVAILABLE,
    fail,
    load_settings,
    nats_url,
    one_line,
    open_application,
    reported,
    run_until_signalled,
    service_settings,
)

if TYPE_CHECKING:
    from services.application.mechanism import ComplaintMechanism
    from services.audit.verify import Attested
    from services.settings import Settings

EXIT_DAMAGED = 4
EXIT_UNVERIFIED = 5

audit_cli = typer.Typer(
    help="The tamper-evident audit log: checkpoints, witnesses, verification.",
    no_args_is_help=True,
)


def register(cli: typer.Typer) -> None:
    """Add ``cbcm audit ...`` to the ``cbcm`` command line."""
    cli.add_typer(audit_cli, name="audit")


@audit_cli.command("checkpoint")
def audit_checkpoint(
    once: Annotated[
        bool, typer.Option("--once", help="Sign and publish the current head, then exit.")
    ] = False,
) -> None:
    """Sign the event log's head and publish it on cbcm.v1.audit.checkpoint.

    Runs until stopped, by policy (CBCM_CHECKPOINT_EVENTS positions or CBCM_CHECKPOINT_SECONDS
    when the head moved); with --once, publishes the head now and prints the checkpoint.
    """
    import nats.errors

    from services.audit.checkpoints import (
        checkpoint_once,
        run_checkpoint_publisher,
    )
    from services.audit.keys import (
        AuditKeyError,
        load_signing_key,
    )
    from services.nats.client import nats_replicas

    settings = service_settings("audit-checkpoint")
    try:
        key = load_signing_key(settings)
    except AuditKeyError as e:
        fail(str(e), EXIT_CONFIG)
    if not once:
        run_until_signalled(
            settings, lambda stop: run_checkpoint_publisher(settings, stop, nats_url(settings))
        )
        return
    app, where = open_application(settings)
    try:
        with reported(where):
            checkpoint = asyncio.run(
                checkpoint_once(app, key, nats_url(settings), replicas=nats_replicas(settings))
            )
    except (OSError, TimeoutError, nats.errors.Error) as e:
        fail(f"cannot publish to NATS at {nats_url(settings)}: {one_line(e)}", EXIT_UNAVAILABLE)
    finally:
        app.close()
    if checkpoint is None:
        typer.echo("the event store is empty: nothing to checkpoint")
        return
    typer.echo(
        f"checkpoint: store {checkpoint.store} position {checkpoint.position} "
        f"link {checkpoint.link} key {checkpoint.key_id}"
    )


@audit_cli.command("witness")
def audit_witness(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            dir_okay=False,
            help="The witness's SQLite file (default: <data dir>/witness/checkpoints.sqlite3).",
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option("--name", help="Witness name: its durable consumer is cbcm-witness-NAME."),
    ] = "local",
) -> None:
    """Keep every signed checkpoint seen on CBCM_AUDIT; alarm on a contradicting one."""
    from services.audit.keys import (
        AuditKeyError,
        load_public_key,
    )
    from services.audit.witness import (
        run_witness,
        valid_witness_name,
        witness_book_path,
    )

    settings = service_settings("audit-witness")
    if not valid_witness_name(name):
        fail("--name must be 1-64 of lowercase a-z, 0-9, _ and -", EXIT_CONFIG)
    try:
        load_public_key(settings)  # refuse a bad key file before starting
    except AuditKeyError as e:
        fail(str(e), EXIT_CONFIG)
    path = db or witness_book_path(settings.data_dir)
    run_until_signalled(
        settings,
        lambda stop: run_witness(settings, stop, nats_url(settings), db_path=path, name=name),
    )


# ----------------------------------------------------------------- audit case (issue #5.4)


WitnessDb = Annotated[
    Path | None,
    typer.Option(
        "--witness-db",
        dir_okay=False,
        help="A witness's book of checkpoints (default: <data dir>/witness/checkpoints.sqlite3).",
    ),
]


def _witnessed(app: ComplaintMechanism, book: Path, settings: Settings) -> list[Attested]:
    """The checkpoints a witness's book holds for this store, each signature checked again
    with the network's public key (a book can be copied or edited too); none if the book or
    the store's first event is missing."""
    from services.audit.checkpoints import verify_checkpoint
    from services.audit.keys import (
        AuditKeyError,
        load_public_key,
    )
    from services.audit.verify import Attested
    from services.audit.witness import WitnessBook
    from services.event_store.store_id import store_id_of

    if not book.is_file():
        return []
    store = store_id_of(app.recorder)
    try:
        public_key = load_public_key(settings)
    except AuditKeyError as e:
        fail(str(e), EXIT_CONFIG)
    with WitnessBook.open(book, readonly=True) as held:
        checkpoints = held.checkpoints(store) if store else []
        others = [s for s in held.stores() if s != store]
    if others and not checkpoints:
        # the store id is derived from the first event: a changed or removed first event, or
        # an emptied store, must not turn the witness's checkpoints into someone else's
        typer.echo(
            "DAMAGED: first bad position 1: changed: the witness holds checkpoints of store "
            f"{', '.join(others)}, none of this store ({store or 'empty'}): its first event was "
            "changed or removed, or the store emptied",
            err=True,
        )
        raise typer.Exit(EXIT_DAMAGED)
    forged = [c.position for c in checkpoints if not verify_checkpoint(public_key, c)]
    if forged:
        fail(
            f"the witness's book at {book} holds checkpoints whose signature does not verify "
            f"(positions {forged[:5]}): it cannot vouch for anything",
            EXIT_CONFIG,
        )
    return [
        Attested(c.position, bytes.fromhex(c.link), c.signed_at.isoformat()) for c in checkpoints
    ]


@audit_cli.command("verify")
def audit_verify(
    start: Annotated[
        int, typer.Option("--from", min=1, metavar="POS", help="Verify from this position.")
    ] = 1,
    witness_db: WitnessDb = None,
    no_checkpoints: Annotated[
        bool,
        typer.Option(
            "--no-checkpoints", help="Check the chain alone when no witness's book is at hand."
        ),
    ] = False,
) -> None:
    """Recompute the hash chain over the event store and hold it to the signed checkpoints.

    Exit 0 when intact; 4 naming the first bad position and the kind of damage (changed,
    missing, reordered, inserted, truncated); 5 no signed checkpoint to hold it to (unless
    --no-checkpoints); 2 bad usage; 3 store unreachable.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from services.audit.custody import Custody
    from services.audit.verify import verify
    from services.audit.witness import witness_book_path
    from services.event_store.chain import head as chain_head

    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            book = witness_db or witness_book_path(settings.data_dir)
            checkpoints = _witnessed(app, book, settings)
            if not checkpoints and not no_checkpoints:
                fail(
                    f"no signed checkpoint of this store in {book}: a tail cut off or "
                    "rewritten with every link recomputed could not show; run a witness "
                    "(cbcm audit witness), name its book with --witness-db, or pass "
                    "--no-checkpoints to check the chain alone",
                    EXIT_UNVERIFIED,
                )
            top = chain_head(app.recorder)
            total = 0 if top is None else max(0, top.position - start + 1)
            with Progress(
                TextColumn("verifying"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=True,
                disable=total == 0,
                console=Console(stderr=True),
            ) as bar:
                task = bar.add_task("verify", total=total)
                custody = Custody.of(app)
                report = verify(
                    app.recorder,
                    start=start,
                    checkpoints=checkpoints,
                    progress=lambda position: bar.update(task, completed=position - start + 1),
                    custody=custody,
                )
                coverage = custody.coverage()
    finally:
        app.close()
    vouched = (
        f"{report.checkpoints} signed checkpoint(s)"
        if checkpoints
        else (
            "no signed checkpoint (a tail cut off or rewritten with every link recomputed would "
            "not show)"
        )
    )
    if report.intact:
        typer.echo(
            f"intact: {report.checked} positions from {start} to {report.head or 0}, "
            f"held to {vouched}"
        )
        typer.echo(coverage)
        return
    first = report.first
    assert first is not None
    typer.echo(
        f"DAMAGED: first bad position {first.position}: {first.kind}: {first.detail}", err=True
    )
    for finding in sorted(report.findings, key=lambda f: f.position)[1:20]:
        typer.echo(f"  also {finding.kind} at {finding.position}: {finding.detail}", err=True)
    raise typer.Exit(EXIT_DAMAGED)


@audit_cli.command("case")
def audit_case(
    case_id: Annotated[str, typer.Argument(help="The case's id.")],
    *,
    at_version: Annotated[
        int | None,
        typer.Option("--at-version", metavar="N", help="Show the state at this version."),
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            metavar="TIME",
            help="Show the state as it was at this time (ISO 8601 with a zone).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    auditor: Annotated[
        str | None,
        typer.Option(
            "--auditor",
            metavar="USER",
            help="The auditor replaying: personal data is shown if the coordinator granted "
            "USER this case (the read is recorded).",
        ),
    ] = None,
    agency: Annotated[
        str,
        typer.Option("--agency", metavar="AGENCY", help="The auditor's agency, as recorded."),
    ] = "network",
    witness_db: WitnessDb = None,
) -> None:
    """A case's whole history as custody steps in plain words, its state at a version or
    time, and for each event the evidence that it is in the verified chain.

    Personal data is redacted unless --auditor names an auditor the coordinator granted this
    case (POST /v1/cases/{id}/audit-grants).
    """
    from domain.actors import (
        Actor,
        Role,
        validate_code,
        validate_user,
    )
    from domain.errors import InvalidCode
    from services.api.replay import (
        ReplayError,
        render_text,
        replay_case,
    )
    from services.audit.witness import witness_book_path

    try:
        case = UUID(case_id)
    except ValueError:
        fail(f"{case_id!r} is not a case id (a UUID)", EXIT_CONFIG)
    if at_version is not None and as_of is not None:
        fail("give --at-version or --as-of, not both", EXIT_CONFIG)
    moment = None
    if as_of is not None:
        try:
            moment = datetime.fromisoformat(as_of)
        except ValueError:
            fail(f"--as-of {as_of!r} is not an ISO 8601 time", EXIT_CONFIG)
        if moment.tzinfo is None:
            fail("--as-of needs a time zone, e.g. 2026-03-02T10:00:00+00:00", EXIT_CONFIG)
    reader = None
    if auditor is not None:
        try:
            reader = Actor(validate_user(auditor), validate_code("agency", agency), Role.AUDITOR)
        except InvalidCode as e:
            fail(str(e), EXIT_CONFIG)
    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            checkpoints = _witnessed(
                app, witness_db or witness_book_path(settings.data_dir), settings
            )
            granted = reader is not None and reader.user in app.audit_grantees(case)
            if reader is not None and not granted:
                typer.echo(
                    f"cbcm: {reader.user} holds no grant for this case: personal data redacted",
                    err=True,
                )
            try:
                replay = replay_case(
                    app,
                    case,
                    at_version=at_version,
                    as_of=moment,
                    checkpoints=checkpoints,
                    reveal_personal=granted,
                    reader=reader,
                )
            except ReplayError as e:
                fail(str(e), EXIT_CONFIG)
    finally:
        app.close()
    if as_json:
        typer.echo(json.dumps(replay.to_json(), indent=2, ensure_ascii=False))
    else:
        typer.echo(render_text(replay))
