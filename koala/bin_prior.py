"""``python -m koala.bin_prior``: an alias of :mod:`koala.cli.bin_prior` (the command users
know)."""

from koala.cli.bin_prior import main, run  # noqa: F401

if __name__ == "__main__":
    run()
