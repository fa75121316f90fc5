"""Keeps TensorFlow's native start-up chatter off a koala command's output.

TensorFlow's C++ side writes to file descriptor 2 before Python can configure anything: absl's
"All log messages before absl::InitializeLog() ..." notice, oneDNN and CPU-feature notices,
"Could not find cuda drivers" and the ``cuInit`` error on a machine without a GPU. Some of it
ignores ``TF_CPP_MIN_LOG_LEVEL``. :func:`native_logs_filtered` routes fd 2 through a pipe and
drops exactly those lines (:data:`NATIVE_LINE`: absl's ``I0000 12:34:56.789 123 file.cc:12]``
prefix, where the seconds may be a Unix time, the absl notice and the CPU-instructions
follow-up line); everything else, Python's warnings, koala's messages and progress bars included,
passes through unchanged and at once. Python's own writes to ``sys.stderr`` bypass the filter
(it is pointed at the terminal directly), so they keep their order with stdout.
``--verbosity=1`` (``-v 1``, every koala tool has it) or ``KOALA_NATIVE_LOGS=1`` turns the
filter off.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading

NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} [\d:.]+\s+\d+ [\w.+-]+:\d+\]"
    rb"|WARNING: All log messages before absl::InitializeLog\(\)"
    rb"|To enable the following instructions:.*rebuild TensorFlow)")
_PREFIXES = (b"I0", b"W0", b"E0", b"F0", b"WARNING: All log", b"To enable the following")


def wanted(argv) -> bool:
    """Whether native logs were asked for: ``--verbosity``/``-v`` >= 1 or KOALA_NATIVE_LOGS."""
    if os.environ.get("KOALA_NATIVE_LOGS", "") not in ("", "0"):
        return True
    args = list(argv[1:])
    for i, arg in enumerate(args):
        value = None
        if arg.startswith(("--verbosity=", "-v=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--verbosity", "-v") and i + 1 < len(args):
            value = args[i + 1]
        if value is not None:
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def _might_be_native(line_start: bytes) -> bool:
    """Whether the start of a line could still become a native log line."""
    return any(p.startswith(line_start[:len(p)]) for p in _PREFIXES)


def _pump(read_fd: int, write_fd: int) -> None:
    """Copies read_fd to write_fd, dropping native log lines; ends at EOF."""
    line = b""  # the current line, held back while it might be a native one

    def emit(data: bytes) -> None:
        while data:
            data = data[os.write(write_fd, data):]

    while chunk := os.read(read_fd, 65536):
        for piece in re.split(rb"(?<=[\n\r])", chunk):
            if not piece:
                continue
            line += piece
            ended = line.endswith((b"\n", b"\r"))
            if not _might_be_native(line):
                emit(line)
                line = b""
            elif ended:
                if not NATIVE_LINE.match(line):
                    emit(line)
                line = b""
    if line:
        emit(line)


@contextlib.contextmanager
def native_logs_filtered(enabled: bool = True):
    """Filters fd 2 (see the module docstring) inside the ``with``; a no-op when not
    ``enabled`` or when fd 2 can't be duplicated."""
    if not enabled:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        read_fd, write_fd = os.pipe()
    except OSError:
        yield
        return
    pump = threading.Thread(target=_pump, args=(read_fd, saved), daemon=True)
    pump.start()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    # Python's own stderr writes go straight to the terminal, not through the pump, so they
    # keep their order with stdout (a progress bar's last line before the summary).
    original = sys.stderr
    direct = open(os.dup(saved), "w", encoding=getattr(original, "encoding", None) or "utf-8",
                  errors=getattr(original, "errors", None) or "backslashreplace",
                  buffering=1)
    sys.stderr = direct
    try:
        yield
    finally:
        sys.stderr = original
        try:
            direct.close()
        except (OSError, ValueError):
            pass
        os.dup2(saved, 2)  # closes the pipe's last write end: the pump reads EOF
        pump.join(timeout=5)
        os.close(read_fd)
        os.close(saved)
