"""``python -m koala.build_records``: an alias of :mod:`koala.cli.build_records` (the command users
know)."""

from koala.cli.build_records import main, run  # noqa: F401

if __name__ == "__main__":
    run()
