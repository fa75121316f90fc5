"""A progress bar for long jobs: :class:`keras.utils.Progbar` on stderr, with images/s and ETA.

``with Progress(total, "build", "img", enabled=...) as bar: ... bar.update(n)``. This is a thin
wrapper that pins where and how Progbar writes:

* **stderr, never stdout.** Progbar writes only to ``sys.stdout`` (``keras.src.utils.io_utils.
  print_msg``), where koala's tools print their results, so each call runs under
  :func:`contextlib.redirect_stdout` to the chosen stream (stderr by default). That swaps the
  process-wide ``sys.stdout`` for the duration of the call; another thread printing at that
  instant would land on stderr too.
* **On a terminal**, ``verbose=1``: one redrawn line with the count, the bar, the ETA, the time
  per image and ``img/s`` (a stateful metric, the mean rate since the start).
* **Elsewhere** (CI logs, files), ``verbose=2``, as Keras recommends for logs: one summary line
  when the job ends (count, elapsed time, time per image, ``img/s``). Progbar's ``verbose=1``
  output is backspaces, carriage returns and ANSI colour codes, which a log file keeps as one
  endless line (Progbar decides on redrawing by ``"posix" in sys.modules``, true on every
  Linux). Unlike koala's earlier hand-written bar, logs get no line every few seconds.
* **Disabled** (``enabled=False``): prints nothing and imports nothing.

Keras (and with it TensorFlow) is imported when the first enabled bar is made, not when this
module is, so ``--help`` of the tools stays fast.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total, "build") as p: ... p.update(n)``: a bar over ``total`` items.

    Args:
      total: the number of items, or None if unknown.
      desc: what is being done, printed before the bar (``"evaluate"``, ``"ab prior"``).
      unit: the items' name in the rate and time per item (``img/s``, ``ms/img``).
      stream: where the bar goes; ``sys.stderr`` (at construction time) by default.
      enabled: False prints nothing at all (the count is still kept).
    """

    def __init__(self, total: int | None, desc: str = "", unit: str = "img", *,
                 stream: TextIO | None = None, enabled: bool = True):
        self.total = total
        self.desc = desc
        self.unit = unit
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.count = 0
        self._rate_name = f"{unit}/s"
        self._bar = None
        self._finished = False
        if enabled:
            from keras.utils import Progbar  # lazy: keras imports TensorFlow

            tty = hasattr(self.stream, "isatty") and self.stream.isatty()
            self._bar = Progbar(total, verbose=1 if tty else 2, interval=0.1,
                                stateful_metrics=[self._rate_name], unit_name=unit)
            if tty and desc:
                self._write(f"{desc}\n")
        self._start = time.monotonic()  # after the import, which takes seconds

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def rate(self) -> float:
        """Items per second since the bar was made."""
        elapsed = time.monotonic() - self._start
        return self.count / elapsed if elapsed > 0 else 0.0

    def update(self, n: int = 1) -> None:
        """Counts ``n`` more items done and redraws the bar (at most every 0.1 s)."""
        self.count += n
        self._show(finalize=None)

    def close(self) -> None:
        """Draws the final line (once), whether or not ``total`` was reached."""
        self._show(finalize=True)

    def _show(self, finalize: bool | None) -> None:
        if self._bar is None or self._finished:
            return
        if finalize is None:
            finalize = self.total is not None and self.count >= self.total
        if finalize and self._bar.verbose == 2 and self.desc:
            self._write(f"{self.desc} ")
        with contextlib.redirect_stdout(self.stream):
            self._bar.update(self.count, values=[(self._rate_name, self.rate)], finalize=finalize)
        self._finished = finalize

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
