"""The tamper-evident audit log: hash chain, signed checkpoints, witnesses, verification
and case replay."""
