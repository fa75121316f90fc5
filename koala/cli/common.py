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
    if "verbosity" not in fv:
        flags.DEFINE_integer("verbosity", 0, "1 or more also shows TensorFlow's native start-up "
                             "log lines (koala.cli.quiet), hidden by default.", short_name="v",
                             flag_values=fv)
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
    """``sys.exit(call(main, sys.argv))`` for a console script or ``python -m``, with
    TensorFlow's native start-up chatter filtered from stderr unless ``--verbosity`` >= 1
    asks for it (:mod:`koala.cli.quiet`)."""
    from koala.cli import quiet

    with quiet.native_logs_filtered(not quiet.wanted(sys.argv)):
        status = call(main, sys.argv)
    sys.exit(status)


# TensorFlow's errors that a user's storage causes (its file writers report a full disk as
# ResourceExhausted); matched by name, so that this module imports no TensorFlow.
_TF_STORAGE_ERRORS = ("PermissionDeniedError", "ResourceExhaustedError")


def call(main: Callable[[list[str]], int], argv) -> int:
    """``main(argv)``'s exit status, with what the machine (not koala) refused as one line:

    * an ``OSError`` (a read-only or unwritable folder, a full disk, a lost mount): ``error:``
      its reason and the file, status 1 (a full disk adds that finished work is kept and a
      re-run resumes);
    * TensorFlow's permission and resource errors from its file writers, the same way;
    * Ctrl-C: ``interrupted``, status 130 (temporary files are removed by their writers).

    Programming errors still raise, with their traceback.
    """
    try:
        return main(argv)
    except Exit as e:
        return e.status
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; stop quietly, as Unix tools do
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as e:
        return error(storage_message(e), 1)
    except Exception as e:
        if type(e).__name__ in _TF_STORAGE_ERRORS and type(e).__module__.startswith(
                "tensorflow"):
            return error(" ".join(str(getattr(e, "message", e)).split()), 1)
        raise


def storage_message(e: OSError) -> str:
    """One line for an ``OSError``: its reason, the file(s) it names, and for a full disk what
    happens next."""
    import errno

    reason = e.strerror or str(e) or type(e).__name__
    where = " -> ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
    line = f"{reason}: {where}" if where else reason
    if e.errno == errno.ENOSPC:
        free = ""
        if e.filename is not None:
            import os
            import shutil

            try:
                left = shutil.disk_usage(os.path.dirname(os.path.abspath(e.filename))).free
                free = f"{left / 2**20:.1f} MB left there; "
            except OSError:
                pass
        line += (f" ({free}free some space and run the same command again: finished work "
                 f"is kept)")
    return line


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
