"""``python -m koala.codec``: an alias of :mod:`koala.cli.codec` (the command users know)."""

from koala.cli.codec import main, run  # noqa: F401

if __name__ == "__main__":
    run()
