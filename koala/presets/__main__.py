"""``python -m koala.presets``: the preset table (:mod:`koala.cli.presets`)."""

from koala.cli.presets import run

run()
