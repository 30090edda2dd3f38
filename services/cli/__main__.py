"""``python -m services.cli``: the ``cbcm`` command line."""

from services.cli.main import main

if __name__ == "__main__":  # not when multiprocessing imports it as a parent's __main__
    main()
