"""``cbcm notify``: tell staff what waits for them (issue #18, docs/notifications.md)."""

from __future__ import annotations

import asyncio

import structlog
import typer

from services.cli.common import nats_url, run_until_signalled, service_settings

log = structlog.get_logger()


def register(cli: typer.Typer) -> None:
    """Add ``cbcm notify`` to the ``cbcm`` command line."""
    cli.command()(notify)


def notify() -> None:
    """Send notifications and SOP reminders by email (SMTP, STARTTLS) and SMS (an HTTP
    gateway), each recorded in the event log once. Without CBCM_SMTP_HOST or
    CBCM_SMS_GATEWAY_URL it has no channel and only waits."""
    from services.bootstrap import complaint_mechanism
    from services.notify.service import run_notifier
    from services.notify.settings import NotifySettings

    settings = service_settings("notify")
    channels = NotifySettings()

    async def main(stop: asyncio.Event) -> None:
        from services.notify import metrics

        metrics.register()  # its own series show on CBCM_METRICS_ADDR, enabled or not
        metrics.PENDING.set(0)
        if not channels.has_channel:
            log.info(
                "notify.disabled",
                note="no channel: set CBCM_SMTP_HOST or CBCM_SMS_GATEWAY_URL",
            )
            await stop.wait()
            return
        app = await asyncio.to_thread(complaint_mechanism, settings)
        try:
            await run_notifier(app, channels, settings.data_dir, nats_url(settings), stop)
        finally:
            app.close()

    run_until_signalled(settings, main)
