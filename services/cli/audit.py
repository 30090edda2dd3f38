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
    from services.audit.evidence import Evidence
    from services.audit.verify import Report
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
        load_log_origin,
        load_signing_key,
    )
    from services.nats.client import nats_replicas

    settings = service_settings("audit-checkpoint")
    try:
        key = load_signing_key(settings)
        origin = load_log_origin(settings)
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
                checkpoint_once(
                    app,
                    key,
                    nats_url(settings),
                    replicas=nats_replicas(settings),
                    origin=origin,
                )
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
    if checkpoint.note is not None:
        typer.echo(checkpoint.note, nl=False)


@audit_cli.command("witness")
def audit_witness(
    db: Annotated[
        Path | None,
        typer.Option(
            "--db",
            dir_okay=False,
            help="The witness's SQLite file (default: checkpoints.sqlite3 in CBCM_WITNESS_DIR, "
            "~/.local/state/cbcm/witness/<log>/, never the data dir).",
        ),
    ] = None,
    name: Annotated[
        str,
        typer.Option("--name", help="Witness name: its durable consumer is cbcm-witness-NAME."),
    ] = "local",
    log_vkey: LogKey = None,
) -> None:
    """Keep every checkpoint of the log that extends the tree held (consistency proof),
    cosign it (C2SP tlog-cosignature) and publish the cosignature; alarm on any other."""
    from services.audit.keys import (
        AuditKeyError,
        LogIdentity,
        load_log_origin,
        load_public_key,
    )
    from services.audit.note import NoteError, Verifier
    from services.nats.config import NETWORK_WITNESS as DEFAULT_NAME  # the witness's default
    from services.nats.config import valid_witness_name

    settings = service_settings("audit-witness")
    if not valid_witness_name(name):
        fail("--name must be 1-64 of lowercase a-z, 0-9, _ and -", EXIT_CONFIG)
    try:
        if log_vkey is not None:
            verifier = Verifier.parse(log_vkey)
            identity = LogIdentity(verifier.name, verifier.key)
        else:
            identity = LogIdentity(
                load_log_origin(settings, create=name == DEFAULT_NAME), load_public_key(settings)
            )
    except (AuditKeyError, NoteError) as e:
        fail(str(e), EXIT_CONFIG)
    # the witness itself (it imports the application: half a second of CPU) once its keys
    # are accepted: a witness refusing its configuration stops `cbcm serve` that much sooner
    from services.audit.witness import run_witness

    run_until_signalled(
        settings,
        lambda stop: run_witness(
            settings, stop, nats_url(settings), db_path=db, name=name, identity=identity
        ),
    )


@audit_cli.command("cosignatures")
def audit_cosignatures(
    db: Annotated[
        Path | None,
        typer.Option("--db", dir_okay=False, help="The witness's book (default as the witness)."),
    ] = None,
    name: Annotated[str, typer.Option("--name", help="The witness's name.")] = "local",
    log_vkey: LogKey = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="Only the largest tree head cosigned.")
    ] = False,
) -> None:
    """Print the witness's cosigner key and the checkpoints it cosigned (signed notes), for
    the agency to publish: whoever verifies with a policy naming this witness needs them."""
    from services.audit.keys import (
        AuditKeyError,
        load_log_origin,
        load_witness_key,
        witness_dir,
        witness_vkey,
    )
    from services.audit.note import NoteError, Verifier
    from services.audit.witness import WitnessBook, cosigner_name

    settings = load_settings()
    try:
        origin = (
            Verifier.parse(log_vkey).name
            if log_vkey is not None
            else load_log_origin(settings, create=False)
        )
        directory = witness_dir(settings, origin)
        key = load_witness_key(directory)
    except (AuditKeyError, NoteError) as e:
        fail(str(e), EXIT_CONFIG)
    path = db or directory / "checkpoints.sqlite3"
    typer.echo(f"# witness {witness_vkey(cosigner_name(name), key)}")
    if not path.is_file():
        return
    with WitnessBook.open(path, readonly=True) as book:
        heads = book.tree_heads(origin)
    for head in heads[-1:] if latest else heads:
        typer.echo(head.note)


# ----------------------------------------------------------------- evidence (issues #5, #15)


WitnessDb = Annotated[
    list[Path] | None,
    typer.Option(
        "--witness-db",
        dir_okay=False,
        help="A witness's book of checkpoints; repeat for several (default: the book in "
        "CBCM_WITNESS_DIR, ~/.local/state/cbcm/witness, never the data dir).",
    ),
]
WitnessKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--witness",
        metavar="VKEY",
        help="A witness whose cosignature counts (its cosigner key, name+id+key); repeat for "
        "several. Adds to CBCM_AUDIT_WITNESSES.",
    ),
]
Quorum = Annotated[
    int | None,
    typer.Option(
        "--quorum",
        min=0,
        metavar="N",
        help="How many of the named witnesses must cosign a checkpoint (default: all).",
    ),
]
LogKey = Annotated[
    str | None,
    typer.Option(
        "--log",
        metavar="VKEY",
        help="The log's identity (origin+id+key) if not this network's settings.",
    ),
]


def _evidence(  # noqa: PLR0917
    app: ComplaintMechanism,
    settings: Settings,
    books: list[Path] | None,
    witnesses: list[str] | None = None,
    quorum: int | None = None,
    log_vkey: str | None = None,
    from_nats: bool = False,
) -> Evidence:
    """The checkpoints and witnessed tree heads the books hold for this store, each
    signature checked again (a book can be copied or edited too), held to the policy."""
    from services.audit.evidence import EvidenceError, gather
    from services.audit.keys import (
        AuditKeyError,
        LogIdentity,
        load_log_identity,
        witness_policy,
    )
    from services.audit.note import NoteError, Verifier
    from services.audit.witness import witness_book_path
    from services.event_store.store_id import store_id_of

    store = store_id_of(app.recorder)
    try:
        if log_vkey is not None:
            try:
                verifier = Verifier.parse(log_vkey)
            except NoteError as e:
                raise AuditKeyError(f"--log: {e}") from e
            log = LogIdentity(verifier.name, verifier.key)
        else:
            log = load_log_identity(settings)
        if quorum is not None:
            settings = settings.model_copy(update={"audit_quorum": quorum})
        policy, needed = witness_policy(settings, witnesses)
    except AuditKeyError as e:
        fail(str(e), EXIT_CONFIG)
    published: list[str] = []
    if from_nats:
        published = _published_cosignatures(settings, log.origin, [w.name for w in policy])
    try:
        return gather(
            books or [witness_book_path(settings, log.origin)],
            log,
            policy,
            needed,
            store,
            published=published,
        )
    except EvidenceError as e:
        fail(str(e), EXIT_CONFIG)


def _other_store_damage(evidence: Evidence) -> None:
    if evidence.other_stores and not evidence.tree_heads:
        # the store id is derived from the first event: a changed or removed first event, or
        # an emptied store, must not turn the witness's checkpoints into someone else's
        typer.echo(
            "DAMAGED: first bad position 1: changed: the witness holds checkpoints of store "
            f"{', '.join(evidence.other_stores)}, none of this store: its first event was "
            "changed or removed, or the store emptied",
            err=True,
        )
        raise typer.Exit(EXIT_DAMAGED)


def _vouched(evidence: Evidence) -> str:
    if not evidence.witnesses:
        return (
            "the network's own signature alone (no witness named: set CBCM_AUDIT_WITNESSES "
            "or --witness for cosignatures that an insider cannot make)"
        )
    names = evidence.vouched()
    if not names:
        return "nobody"
    return ", ".join(f"{name} (to {size} events)" for name, size in sorted(names.items()))


def _print_report(
    report: Report, evidence: Evidence, start: int, as_json: bool, coverage: str
) -> None:
    from services.audit import hashing

    uncovered = report.uncovered
    findings = sorted(report.findings, key=lambda f: f.position)
    if as_json:
        document = {
            "verified": report.intact and uncovered is None,
            "intact": report.intact,
            "from_position": start,
            "head": report.head,
            "checked": report.checked,
            "checkpoints": report.checkpoints,
            "tree_heads": report.tree_heads,
            "covered_to": report.covered_to,
            "uncovered": None if uncovered is None else {"from": uncovered[0], "to": uncovered[1]},
            "log": evidence.log.vkey,
            "quorum": evidence.quorum,
            "witnesses": [w.vkey for w in evidence.witnesses],
            "vouched_by": evidence.vouched(),
            "witness_alarms": evidence.alarms,
            "writer_marks": coverage,
            # how the fast path read (ADR 33): positions read as buffers, and the hashing
            "read_as_buffers": report.bulk,
            "hashing": "c" if hashing.ACCELERATED else "python",
            "findings": [
                {"kind": str(f.kind), "position": f.position, "detail": f.detail} for f in findings
            ],
        }
        typer.echo(json.dumps(document, indent=2))
        if not report.intact:
            raise typer.Exit(EXIT_DAMAGED)
        return
    if evidence.alarms:
        typer.echo(
            f"warning: the witnesses recorded {evidence.alarms} alarm(s) (a fork, a head that "
            "moved back, a contradiction): see their logs",
            err=True,
        )
    if report.intact:
        held = (
            f"{report.checkpoints} signed checkpoint(s) and {report.tree_heads} witnessed "
            "tree head(s)"
            if (evidence.checkpoints or evidence.tree_heads)
            else "no signed checkpoint (a tail cut off or rewritten with every link "
            "recomputed would not show)"
        )
        typer.echo(
            f"intact: {report.checked} positions from {start} to {report.head or 0}, held to {held}"
        )
        typer.echo(f"vouched for by: {_vouched(evidence)}")
        typer.echo(coverage)
        if uncovered is not None:
            typer.echo(
                f"not yet covered: positions {uncovered[0]} to {uncovered[1]} recompute, but "
                "no checkpoint covers them yet (a rewrite of them would not show)"
            )
        return
    first = findings[0]
    typer.echo(
        f"DAMAGED: first bad position {first.position}: {first.kind}: {first.detail}", err=True
    )
    for finding in findings[1:20]:
        typer.echo(f"  also {finding.kind} at {finding.position}: {finding.detail}", err=True)
    raise typer.Exit(EXIT_DAMAGED)


def _published_cosignatures(settings: Settings, origin: str, witnesses: list[str]) -> list[str]:
    """The cosignatures the witnesses published on NATS (``CBCM_AUDIT``)."""
    import asyncio

    import nats.errors

    from services.audit.published import published_cosignatures
    from services.nats.client import jetstream_options, nats_connect_options

    try:
        return asyncio.run(
            published_cosignatures(
                nats_url(settings),
                nats_connect_options(settings, "audit-checkpoint"),  # its grant reads CBCM_AUDIT
                jetstream_options(settings),
                origin,
                witnesses,
            )
        )
    except (OSError, TimeoutError, nats.errors.Error) as e:
        fail(f"cannot read the published cosignatures from NATS: {one_line(e)}", EXIT_CONFIG)


FromNats = Annotated[
    bool,
    typer.Option(
        "--cosignatures-from-nats",
        help="Also count the cosignatures witnesses published on NATS (CBCM_AUDIT: the "
        "network's own and every agency's), each checked against the policy's keys.",
    ),
]


@audit_cli.command("verify")
def audit_verify(  # noqa: PLR0917
    start: Annotated[
        int, typer.Option("--from", min=1, metavar="POS", help="Verify from this position.")
    ] = 1,
    witness_db: WitnessDb = None,
    witness: WitnessKeys = None,
    quorum: Quorum = None,
    log_vkey: LogKey = None,
    from_nats: FromNats = False,
    no_checkpoints: Annotated[
        bool,
        typer.Option(
            "--no-checkpoints", help="Check the chain alone when no witness's book is at hand."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
    processes: Annotated[
        int | None,
        typer.Option("--processes", min=1, metavar="N", help="Processes (default: every core)."),
    ] = None,
) -> None:
    """Recompute the hash chain and the Merkle tree over the event store and hold them to the
    checkpoints the witnesses cosigned.

    Exit 0 when intact (positions after the last checkpoint are named: no checkpoint covers
    them yet); 4 naming the first bad position and the kind of damage (changed, missing,
    reordered, inserted, truncated); 5 no checkpoint that the policy accepts (unless
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
    from services.audit.parallel import verify_parallel
    from services.audit.verify import Damage, Finding
    from services.event_store.chain import head as chain_head
    from services.event_store.config import persistence_env

    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            evidence = _evidence(
                app, settings, witness_db, witness, quorum, log_vkey, from_nats=from_nats
            )
            _other_store_damage(evidence)
            usable = evidence.tree_heads or (not evidence.witnesses and evidence.checkpoints)
            if not usable and not no_checkpoints:
                names = ", ".join(w.name for w in evidence.witnesses)
                who = (
                    f"cosigned by {evidence.quorum} of {names}"
                    if evidence.witnesses
                    else "signed by the network"
                )
                fail(
                    f"no signed checkpoint of this log {who} in the witness books: a tail cut "
                    "off or rewritten with every link recomputed could not show; run a witness "
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
                disable=total == 0 or as_json,
                console=Console(stderr=True),
            ) as bar:
                task = bar.add_task("verify", total=total)
                custody = Custody.of(app)
                report = verify_parallel(
                    app.recorder,
                    persistence_env(settings),
                    start=start,
                    checkpoints=evidence.checkpoints,
                    tree_heads=evidence.tree_heads,
                    processes=processes,
                    progress=lambda position: bar.update(task, completed=position - start + 1),
                    custody=custody,
                )
                coverage = custody.coverage()
            for problem in evidence.split_views:
                report.findings.append(Finding(Damage.CHANGED, 1, f"split view: {problem}"))
    finally:
        app.close()
    _print_report(report, evidence, start, as_json, coverage)


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
    witness: WitnessKeys = None,
    quorum: Quorum = None,
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
            evidence = _evidence(app, settings, witness_db, witness, quorum)
            _other_store_damage(evidence)
            checkpoints = evidence.checkpoints
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


# ----------------------------------------------------------------- case bundles (issue #15)


@audit_cli.command("export")
def audit_export(
    case_id: Annotated[str, typer.Argument(help="The case's id.")],
    *,
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="The bundle file to write.")],
    auditor: Annotated[
        str | None,
        typer.Option(
            "--auditor",
            metavar="USER",
            help="The auditor the bundle is for: its replay shows personal data only if the "
            "coordinator granted USER this case (the read is recorded).",
        ),
    ] = None,
    agency: Annotated[
        str, typer.Option("--agency", metavar="AGENCY", help="The auditor's agency.")
    ] = "network",
    witness_db: WitnessDb = None,
    witness: WitnessKeys = None,
    quorum: Quorum = None,
) -> None:
    """Write a case bundle: the case's events as stored, their leaf hashes and inclusion
    proofs, the latest checkpoint the witnesses cosigned, and the case's replay. Checked
    with `cbcm audit verify-bundle`, by anyone, with the network's public keys only."""
    from domain.actors import Actor, Role, validate_code, validate_user
    from domain.errors import InvalidCode
    from services.api.replay import ReplayError, replay_case
    from services.audit.bundle import BundleError, build
    from services.audit.note import NoteError

    try:
        case = UUID(case_id)
    except ValueError:
        fail(f"{case_id!r} is not a case id (a UUID)", EXIT_CONFIG)
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
            evidence = _evidence(app, settings, witness_db, witness, quorum)
            note = evidence.latest_note()
            if note is None:
                fail(
                    "no checkpoint of this log that the policy accepts in the witness books: "
                    "nothing to prove the case's events against",
                    EXIT_UNVERIFIED,
                )
            granted = reader is not None and reader.user in app.audit_grantees(case)
            try:
                replay = replay_case(
                    app,
                    case,
                    checkpoints=evidence.checkpoints,
                    reveal_personal=granted,
                    reader=reader,
                )
            except ReplayError as e:
                fail(str(e), EXIT_CONFIG)
            # every record the replay read, whole: the case's index of notices and the
            # notices too, so that a notice left out of the bundle shows
            try:
                bundle = build(
                    app.recorder,
                    list(replay.positions),
                    case_id=case,
                    log_vkey=evidence.log.vkey,
                    checkpoint_note=note,
                    replay=replay.to_json(),
                )
            except (BundleError, NoteError) as e:
                fail(str(e), EXIT_DAMAGED)
    finally:
        app.close()
    out.write_text(json.dumps(bundle, indent=1, ensure_ascii=False) + "\n")
    uncovered = sum(1 for e in bundle["events"] if e["inclusion_proof"] is None)
    typer.echo(
        f"bundle: {len(bundle['events'])} events of case {case} to {out} "
        f"(personal data {'shown' if granted else 'redacted'}; "
        f"{uncovered} not yet covered by the checkpoint)"
    )


@audit_cli.command("verify-bundle")
def audit_verify_bundle(
    file: Annotated[Path, typer.Argument(dir_okay=False, help="The bundle file.")],
    *,
    log_vkey: LogKey = None,
    witness: WitnessKeys = None,
    quorum: Quorum = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Check a case bundle with the network's public keys alone (no store): the checkpoint's
    signature and cosignatures, and each event's bytes, link, leaf and inclusion proof.

    Exit 0 when every event is proven; 4 when anything does not verify; 5 when some events
    are not covered by the bundle's checkpoint yet; 2 bad usage.
    """
    from services.audit.bundle import BundleError, check
    from services.audit.keys import AuditKeyError, load_log_identity, witness_policy

    settings = load_settings()
    try:
        vkey = log_vkey or load_log_identity(settings).vkey
        if quorum is not None:
            settings = settings.model_copy(update={"audit_quorum": quorum})
        policy, needed = witness_policy(settings, witness)
    except AuditKeyError as e:
        fail(str(e), EXIT_CONFIG)
    try:
        bundle = json.loads(file.read_text())
        report = check(bundle, vkey, policy, needed)
    except (OSError, ValueError, BundleError) as e:
        fail(f"{file}: {one_line(e)}", EXIT_CONFIG)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "verified": report.verified,
                    "origin": report.origin,
                    "tree_size": report.size,
                    "proven": report.proven,
                    "uncovered": report.uncovered,
                    "cosigned_by": report.cosigners,
                    "notices": report.notices,
                    "notices_named_by_index": report.notices_named,
                    "problems": report.problems,
                },
                indent=2,
            )
        )
    elif report.problems:
        typer.echo(f"NOT VERIFIED: {report.problems[0]}", err=True)
        for problem in report.problems[1:20]:
            typer.echo(f"  also: {problem}", err=True)
    else:
        who = ", ".join(report.cosigners) or "nobody but the network (no witness named)"
        typer.echo(
            f"verified: {report.proven} events in the log {report.origin} of "
            f"{report.size} events; cosigned by {who}"
        )
        named = (
            ""
            if report.notices_named is None
            else f" (the case's index of notices names {report.notices_named})"
        )
        typer.echo(f"notices about the case: {report.notices}{named}")
        if report.uncovered:
            typer.echo(f"not yet covered by the checkpoint: positions {report.uncovered}")
    if report.problems:
        raise typer.Exit(EXIT_DAMAGED)
    if report.uncovered:
        raise typer.Exit(EXIT_UNVERIFIED)


@audit_cli.command("start-marks")
def audit_start_marks() -> None:
    """Start writer marks on a store written before they existed: from the chain's head on,
    every commit is marked with the writer key (ADR 14). Once, by the operator; a store
    created with marks, or whose marks are started, is refused. Until then cbcm writes
    nothing to such a store."""
    from services.event_store.chain import start_marks
    from services.event_store.custody import WriterKeyError

    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            try:
                started = start_marks(app.recorder)
            except WriterKeyError as e:
                fail(str(e), EXIT_CONFIG)
    finally:
        app.close()
    typer.echo(
        f"writer marks: every commit from position {started} is marked; positions before it "
        "are covered by the chain and the checkpoints only"
    )


@audit_cli.command("acknowledge-restore")
def audit_acknowledge_restore() -> None:
    """After restoring the event store from a backup taken before erasures (ADR 23): say so,
    as the operator. The erasures the ledger beside the keys holds and the restored log
    lacks stay in force and are no longer alarms; the data keys they destroyed, back in the
    restored key table, are destroyed again; the high-water mark is set to the restored
    head. Run it only after a restore you made: on a store someone else rolled back it would
    hide that from `cbcm audit verify` (the erasures stay in force either way)."""
    from services.event_store.chain import head
    from services.event_store.high_water import HighWater, high_water_path, reset_high_water
    from services.event_store.personal_data.erasure_log import ErasureLog

    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            keys = app.data_keys
            log = None if keys is None else keys.log
            recorder = app.recorder
            if not isinstance(log, ErasureLog) or keys is None:
                fail(
                    "this store keeps no personal data at rest: nothing to acknowledge", EXIT_CONFIG
                )
            log.invalidate()
            log.refresh()
            missing = log.missing_from_log()
            ledger = log.ledger_now()
            acknowledged = 0 if ledger is None else ledger.acknowledge(missing)
            put_back = [
                ref
                for ref, live in keys.table.all_rows()
                if live
                and ledger is not None
                and ledger.erases(ref.scope, ref.subject, ref.generation)
            ]
            destroyed = keys.table.destroy(put_back) if put_back else 0
            top = head(recorder)
            keys_dir = getattr(recorder, "keys_dir", None)
            store = getattr(recorder, "store", None)
            writer = getattr(recorder, "writer", None)
            if top is not None and keys_dir is not None and store and writer is not None:
                reset_high_water(
                    high_water_path(keys_dir, store),
                    writer,
                    store,
                    HighWater(top.position, top.link),
                )
    finally:
        app.close()
    typer.echo(
        f"restore acknowledged at position {0 if top is None else top.position}: "
        f"{acknowledged} erasure(s) the restored log lacks stay in force (ids only in the "
        f"ledger), {destroyed} data key(s) they destroyed were destroyed again"
    )


@audit_cli.command("learn-erasures")
def audit_learn_erasures() -> None:
    """Learn back, from the audit stream on NATS, every erasure the network's checkpoint
    publisher told (ADR 23), into this host's erasure ledger: for a host whose database was
    restored from a copy taken before erasures and whose ledger is older or new. Then they
    stay in force whatever the restored database holds. Run it with the checkpoint
    publisher's NATS credentials."""
    import nats.errors

    from services.audit.erasure_notices import told
    from services.event_store.personal_data.erasure_log import ErasureLog
    from services.nats.client import jetstream_options, nats_connect_options

    settings = load_settings()
    app, where = open_application(settings)
    try:
        with reported(where):
            recorder = app.recorder
            keys = app.data_keys
            erasure_log = None if keys is None else keys.log
            key = getattr(recorder, "writer", None)
            store = getattr(recorder, "store", None)
            ledger = erasure_log.ledger_now() if isinstance(erasure_log, ErasureLog) else None
            if key is None or store is None or ledger is None:
                fail("this store keeps no erasure ledger (no writer key or no event)", EXIT_CONFIG)
            try:
                entries = asyncio.run(
                    told(
                        nats_url(settings),
                        nats_connect_options(settings, "audit-checkpoint"),
                        jetstream_options(settings),
                        key,
                        store,
                        # their notices are passed over: told again under the current key
                        # by the checkpoint publisher (ADR 26)
                        retired=dict(getattr(recorder, "retired_writers", {})),
                    )
                )
            except (OSError, TimeoutError, nats.errors.Error) as e:
                fail(f"cannot read the audit stream: {one_line(e)}", EXIT_UNAVAILABLE)
            added = ledger.append(entries)
    finally:
        app.close()
    typer.echo(
        f"{len(entries)} erasure(s) told on the audit stream, {added} new to this host's "
        "ledger: in force whatever the database holds"
    )
