"""``python -m koala.evaluate``: an alias of :mod:`koala.cli.evaluate` (the command users know)."""

from koala.cli.evaluate import main, run  # noqa: F401

if __name__ == "__main__":
    run()
