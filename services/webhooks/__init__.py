"""Signed webhooks (issue #19, ADR 17): the agencies' events over HTTP, for agencies that run no
NATS consumer. ``routing`` (who receives what), ``signing`` (Standard Webhooks), ``outbox``
(the delivery queue and log), ``deliverer`` (the process: ``cbcm webhooks deliver``)."""
