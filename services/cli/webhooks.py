"""``cbcm webhooks``: the agencies' signed webhook endpoints (issue #19, ADR 17).

``deliver`` runs the deliverer (``cbcm serve`` starts it too). The others are the
coordinator's: each records an event in the log as ``--user`` of ``--agency`` acting in the
coordinator role, as the HTTP API's ``/v1/webhooks`` routes do. A secret is never printed
back, except the one ``register`` or ``rotate-secret`` made when none was given (once).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated
from uuid import UUID

import typer

from services.cli.common import (
    EXIT_CONFIG,
    application,
    fail,
    load_settings,
    nats_url,
    run_until_signalled,
    service_settings,
)

if TYPE_CHECKING:
    from domain.actors import Actor

webhooks_cli = typer.Typer(help="Signed webhook endpoints of the agencies.", no_args_is_help=True)

User = Annotated[str, typer.Option("--user", help="The coordinator's account id.")]
CoordinatorAgency = Annotated[
    str, typer.Option("--as-agency", help="The coordinator's agency (the secretariat).")
]
EndpointId = Annotated[UUID, typer.Argument(help="The endpoint's id (cbcm webhooks list).")]
Types = Annotated[
    list[str],
    typer.Option("--type", help="A CloudEvents type to deliver (repeat; see `list-types`)."),
]
SecretFile = Annotated[
    Path | None,
    typer.Option(
        "--secret-file",
        exists=True,
        dir_okay=False,
        help="A file holding the secret (whsec_...); default: a new random secret, printed once.",
    ),
]


def register(cli: typer.Typer) -> None:
    """Add ``cbcm webhooks ...`` to the ``cbcm`` command line."""
    cli.add_typer(webhooks_cli, name="webhooks")


def _coordinator(user: str, agency: str) -> Actor:
    from domain.actors import Actor, Role
    from domain.errors import InvalidCode

    try:
        return Actor(user, agency, Role.COORDINATOR)
    except InvalidCode as e:
        fail(str(e), EXIT_CONFIG)


def _secret(path: Path | None) -> tuple[str, bool]:
    """The secret from ``path``, or a new one (and that it is new)."""
    if path is not None:
        return path.read_text(encoding="utf-8").strip(), False
    return new_secret(), True


def new_secret() -> str:
    """``whsec_`` + base64 of 32 random bytes (Standard Webhooks' form)."""
    import base64
    import secrets

    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


@webhooks_cli.command("deliver")
def deliver() -> None:
    """Deliver the agencies' events to their endpoints (a durable consumer; long-running)."""
    from services.webhooks.deliverer import run_deliverer

    settings = service_settings("webhooks")
    run_until_signalled(settings, lambda stop: run_deliverer(settings, nats_url(settings), stop))


@webhooks_cli.command("list-types")
def list_types() -> None:
    """The event types an endpoint can be registered for (an agency's own events)."""
    from services.application.webhooks import AGENCY_EVENT_TYPES

    for name in sorted(AGENCY_EVENT_TYPES):
        typer.echo(name)


@webhooks_cli.command("register")
def register_endpoint(
    *,
    agency: Annotated[str, typer.Option("--agency", help="The agency receiving the events.")],
    url: Annotated[str, typer.Option("--url", help="https://... (http:// on loopback only).")],
    types: Types,
    user: User,
    as_agency: CoordinatorAgency,
    secret_file: SecretFile = None,
) -> None:
    """Register an endpoint: prints its id (and the secret, if a new one was made)."""
    from domain.webhooks import webhook_endpoint_id

    actor = _coordinator(user, as_agency)
    secret, made = _secret(secret_file)
    with application(load_settings()) as app:
        written = app.register_webhook(
            actor=actor,
            agency=agency,
            url=url,
            secret=secret,
            event_types=tuple(types),
            at=datetime.now(UTC),
        )
    out = {"endpoint_id": str(webhook_endpoint_id(written.version)), "position": written.position}
    if made:
        out["secret"] = secret
    typer.echo(json.dumps(out))


@webhooks_cli.command("list")
def list_endpoints(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document.")] = False,
) -> None:
    """Every endpoint: agency, URL, types, enabled or why not, deliveries waiting (no secret)."""
    from services.webhooks.outbox import Outbox, outbox_path

    settings = load_settings()
    path = outbox_path(settings.data_dir)
    waiting: dict[str, int] = {}
    failing: dict[str, datetime] = {}
    if path.exists():
        outbox = Outbox(path, readonly=True)
        try:
            waiting, failing = outbox.queued(), outbox.failing_since()
        finally:
            outbox.close()
    with application(settings) as app:
        endpoints = app.webhook_endpoints()
    rows = [
        {
            "endpoint_id": str(e.endpoint_id),
            "agency": e.agency,
            "url": e.url,
            "event_types": sorted(e.event_types),
            "enabled": e.enabled,
            "disabled_reason": None if e.disabled_reason is None else str(e.disabled_reason),
            "queued": waiting.get(str(e.endpoint_id), 0),
            "failing_since": None
            if str(e.endpoint_id) not in failing
            else failing[str(e.endpoint_id)].isoformat(),
        }
        for e in endpoints
    ]
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "enabled" if row["enabled"] else f"DISABLED ({row['disabled_reason']})"
        typer.echo(
            f"{row['endpoint_id']}  {row['agency']:<12} {state:<22} queued={row['queued']:<5} "
            f"{row['url']}"
        )


@webhooks_cli.command("deliveries")
def deliveries(
    endpoint: Annotated[UUID | None, typer.Argument(help="Only this endpoint.")] = None,
    last: Annotated[int, typer.Option("--last", min=1, max=10_000)] = 50,
) -> None:
    """The delivery log (newest last): time, endpoint, position, webhook-id, outcome, status."""
    from services.webhooks.outbox import Outbox, outbox_path

    path = outbox_path(load_settings().data_dir)
    if not path.exists():
        fail("no delivery log yet (the deliverer has not run on this data dir)", EXIT_CONFIG)
    outbox = Outbox(path, readonly=True)
    try:
        for a in outbox.attempts(endpoint, last=last):
            typer.echo(
                json.dumps(
                    {
                        "at": a.at.isoformat(),
                        "endpoint_id": str(a.endpoint_id),
                        "position": a.position,
                        "webhook_id": a.webhook_id,
                        "type": a.event_type,
                        "attempt": a.attempt,
                        "outcome": a.outcome,
                        "status": a.status,
                        "error": a.error,
                        "seconds": round(a.seconds, 4),
                    }
                )
            )
    finally:
        outbox.close()


@webhooks_cli.command("rotate-secret")
def rotate_secret(
    endpoint: EndpointId, user: User, as_agency: CoordinatorAgency, secret_file: SecretFile = None
) -> None:
    """Sign with a new secret from now on (printed once if made here)."""
    actor = _coordinator(user, as_agency)
    secret, made = _secret(secret_file)
    with application(load_settings()) as app:
        app.rotate_webhook_secret(endpoint, actor=actor, secret=secret, at=datetime.now(UTC))
    typer.echo(json.dumps({"endpoint_id": str(endpoint), **({"secret": secret} if made else {})}))


@webhooks_cli.command("set-types")
def set_types(endpoint: EndpointId, types: Types, user: User, as_agency: CoordinatorAgency) -> None:
    """Replace the event types the endpoint receives."""
    actor = _coordinator(user, as_agency)
    with application(load_settings()) as app:
        app.set_webhook_event_types(
            endpoint, actor=actor, event_types=tuple(types), at=datetime.now(UTC)
        )


@webhooks_cli.command("disable")
def disable(endpoint: EndpointId, user: User, as_agency: CoordinatorAgency) -> None:
    """Stop deliveries to the endpoint (its events wait in its queue)."""
    actor = _coordinator(user, as_agency)
    with application(load_settings()) as app:
        app.disable_webhook(endpoint, actor=actor, at=datetime.now(UTC))


@webhooks_cli.command("enable")
def enable(endpoint: EndpointId, user: User, as_agency: CoordinatorAgency) -> None:
    """Deliver again, what waited first."""
    actor = _coordinator(user, as_agency)
    with application(load_settings()) as app:
        app.enable_webhook(endpoint, actor=actor, at=datetime.now(UTC))


@webhooks_cli.command("remove")
def remove(endpoint: EndpointId, user: User, as_agency: CoordinatorAgency) -> None:
    """Remove the endpoint for good (its waiting deliveries are dropped)."""
    actor = _coordinator(user, as_agency)
    with application(load_settings()) as app:
        app.remove_webhook(endpoint, actor=actor, at=datetime.now(UTC))
