"""The ``cbcm`` command line: one module per command group."""
