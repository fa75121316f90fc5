"""A small progress bar for long jobs: count, rate and ETA on stderr.

On a terminal it redraws one line; elsewhere (CI logs, files) it prints a plain line at most
every ``interval`` seconds, so logs stay readable.
"""

from __future__ import annotations

import sys
import time


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h:d}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class Progress:
    """``with Progress(total, "build") as p: ... p.update(n)``."""

    def __init__(self, total: int | None, desc: str = "", unit: str = "img", *, stream=None,
                 interval: float = 10.0, enabled: bool = True):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.1 if self.tty else interval
        self.count = 0
        self.start = time.monotonic()
        self._last = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.count / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        elapsed = time.monotonic() - self.start
        rate = self.rate
        if self.total:
            pct = 100.0 * self.count / self.total
            width = 24
            done = int(width * self.count / self.total)
            bar = "#" * done + "-" * (width - done)
            eta = (self.total - self.count) / rate if rate > 0 else float("nan")
            eta_s = format_duration(eta) if eta == eta else "?"
            return (f"{self.desc} [{bar}] {self.count}/{self.total} {pct:5.1f}% "
                    f"{rate:.2f} {self.unit}/s elapsed {format_duration(elapsed)} ETA {eta_s}")
        return f"{self.desc} {self.count} {self.unit} {rate:.2f} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        self.count += n
        now = time.monotonic()
        if self.enabled and (now - self._last >= self.interval or self.count == self.total):
            self._last = now
            if self.tty:
                self.stream.write("\r" + self.line())
            else:
                self.stream.write(self.line() + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\r" + self.line() + "\n")
            self.stream.flush()
