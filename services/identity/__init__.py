"""Identity: the bearer tokens and their signing key."""
