"""The event store: configuration, encoding, chained recorders, personal data at rest."""
