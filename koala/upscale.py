"""``python -m koala.upscale``: an alias of :mod:`koala.cli.upscale` (the command users know)."""

from koala.cli.upscale import main, run  # noqa: F401

if __name__ == "__main__":
    run()
