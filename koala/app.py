"""``python -m koala.app``: an alias of :mod:`koala.cli.app` (the web page)."""

from koala.cli.app import main, run  # noqa: F401

if __name__ == "__main__":
    run()
