"""``python -m koala.train``: an alias of :mod:`koala.cli.train` (the command users know)."""

from koala.cli.train import main, run  # noqa: F401

if __name__ == "__main__":
    run()
