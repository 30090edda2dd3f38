"""NATS: the client, the embedded server, its configuration and setup."""
