"""``python -m koala.demo``: an alias of :mod:`koala.cli.demo` (the command users know)."""

from koala.cli.demo import main, run  # noqa: F401

if __name__ == "__main__":
    run()
