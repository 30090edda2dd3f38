"""Personal data at rest: sealed field by field, erasable by destroying keys (issue #6, ADR 8).

- ``kek``: the key-encryption keys (a local key ring from configuration, or a KMS hook);
- ``data_keys``: one data key per person per record, wrapped by a key-encryption key, kept in
  a table beside the event log (the only mutable one: erasure destroys rows' key material);
- ``sealing``: what the mapper does to a stored event's personal fields.
"""
