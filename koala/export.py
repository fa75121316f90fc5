"""``python -m koala.export``: an alias of :mod:`koala.cli.export` (serving exports)."""

from koala.cli.export import main, run  # noqa: F401

if __name__ == "__main__":
    run()
