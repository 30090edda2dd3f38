"""The notifier (issue #18, ADR 18): tells staff what waits for them, on the SOP's clock.

``intake``: the durable consumer's projection (who is told what, into the outbox, with the
stream position in the same transaction); ``scheduler``: due-soon and overdue reminders and
the daily digests, on an injectable clock; ``sender``: the outbox to SMTP and the SMS
gateway, with retries, and each notice recorded in the event log once; ``service``: the
three together, as ``cbcm notify`` runs them.
"""
