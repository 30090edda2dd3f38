"""The application: command handlers, idempotent requests, receipts and retention."""
