"""``python -m koala.colorize``: an alias of :mod:`koala.cli.colorize` (the command users know)."""

from koala.cli.colorize import main, run  # noqa: F401

if __name__ == "__main__":
    run()
