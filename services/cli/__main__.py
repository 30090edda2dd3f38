"""``python -m services.cli``: the ``cbcm`` command line."""

from services.cli.main import main

main()
