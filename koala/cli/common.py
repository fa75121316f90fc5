"""What koala's command lines share: flags parsed into a fresh ``FlagValues`` per call,
``--help`` without importing TensorFlow, and one-line errors with absl's exit codes.

Each tool defines ``define_flags(fv)`` and ``main(argv) -> int``; ``main`` calls
:func:`parse` and only then imports the library code it needs, so ``--help`` is instant and
tests call ``main([...])`` in-process without one run's flags leaking into the next.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import flags

HELP_ARGS = ("--help", "-h", "-?", "--helpshort", "--helpfull")


class Exit(Exception):
    """Stops a command with an exit status (help printed, or a usage error)."""

    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def parse(argv, define: Callable[[flags.FlagValues], None], *, doc: str,
          required=()) -> tuple[flags.FlagValues, list[str]]:
    """Parses ``argv`` (``argv[0]`` is the program) into a new FlagValues.

    Returns ``(flag values, positional arguments)``. Raises :class:`Exit` with status 0 after
    printing ``doc`` and the flags for ``--help``, or 2 after a one-line ``error: ...`` on
    stderr for an unknown, malformed or missing required flag.
    """
    fv = flags.FlagValues()
    define(fv)
    argv = list(argv) or ["koala"]
    if any(a in HELP_ARGS for a in argv[1:]):
        print(doc.strip() + "\n\nflags:\n" + fv.get_help(include_special_flags=False))
        raise Exit(0)
    try:
        rest = fv(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        raise Exit(2) from e
    missing = [name for name in required if fv[name].value is None]
    if missing:
        print(f"error: {', '.join('--' + m for m in missing)} must be given "
              f"(--help lists the flags)", file=sys.stderr)
        raise Exit(2)
    return fv, rest[1:]


def run(main: Callable[[list[str]], int]) -> None:
    """``sys.exit(main(sys.argv))`` for a console script or ``python -m``."""
    try:
        status = main(sys.argv)
    except Exit as e:
        status = e.status
    sys.exit(status)


def default_model(fv: flags.FlagValues, family: str, *, scale: int | None = None) -> int:
    """Sets an omitted ``--model`` to ``family``'s recommended preset (:mod:`koala.presets`).

    Returns 0, or the status of a one-line error when no such preset is shipped.
    """
    if fv.model is None:
        from koala import presets

        try:
            fv.model = presets.default(family, scale=scale)
        except presets.PresetError as e:
            return error(str(e))
    return 0


def error(message: str, status: int = 2) -> int:
    """Prints ``error: message`` on stderr and returns ``status`` for ``main`` to return."""
    print(f"error: {message}", file=sys.stderr)
    return status
