"""Progress of a long job (an import, a projection catch-up or rebuild, an allocation),
for the person watching it: one line, rewritten in place, with the rate and the time
left.

Shown only where someone watches: the stream (stderr) is a terminal and the logs are
not JSON (``REGISTRY_LOG_FORMAT=json`` means a machine reads the output). Anywhere
else (a pipe, a file, a container's log) it writes nothing: a rewritten line is noise
in a log, and the command's own summary says what was done.

    with Progress("sent", total=len(rows), unit="rows") as progress:
        for chunk in chunks:
            ...
            progress.advance(len(chunk))
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import TextIO

MIN_INTERVAL = 0.2
"""Seconds between two redraws at most: a fast loop does not spend its time drawing."""


def wanted(stream: TextIO, environ: dict[str, str] | None = None) -> bool:
    """True when ``stream`` is a terminal and the logs are not JSON."""
    env = os.environ if environ is None else environ
    if env.get("REGISTRY_LOG_FORMAT", "").strip().lower() == "json":
        return False
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except (OSError, ValueError):  # a closed or detached stream
        return False


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for one line."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """One job's progress line. ``update(done)`` or ``advance(n)`` as work is done;
    ``close()`` (or leaving the ``with`` block) ends the line. Disabled (the default
    off a terminal), every call does nothing."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        unit: str = "",
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
        enabled: bool | None = None,
        environ: dict[str, str] | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.unit = f" {unit}" if unit else ""
        self.stream = sys.stderr if stream is None else stream
        self.clock = clock
        self.enabled = wanted(self.stream, environ) if enabled is None else enabled
        self.done = 0
        self.started = clock()
        self._drawn_at: float | None = None
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def advance(self, count: int = 1) -> None:
        self.update(self.done + count)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` so far (of ``total``, if it changed: a log's head moves on)."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.enabled or self.total == 0:  # nothing to do: nothing to show
            return
        now = self.clock()
        if (
            self._drawn_at is not None
            and now - self._drawn_at < MIN_INTERVAL
            and not self._finished()
        ):
            return
        self._draw(self.line(now), end="")
        self._drawn_at = now

    def close(self) -> None:
        """The final line, kept on the screen."""
        if self.enabled and self._drawn_at is not None:
            self._draw(self.line(self.clock()), end="\n")
        self.enabled = False

    def line(self, now: float) -> str:
        """``sent 3,000 of 10,000 rows (30%), 1,500 rows/s, 4s left`` (at the end:
        ``..., in 7s``)."""
        seconds = now - self.started
        rate = self.done / seconds if seconds > 0 else 0.0
        text = f"{self.label} {self.done:,}"
        if self.total:
            text += f" of {self.total:,}{self.unit} ({100 * self.done / self.total:.0f}%)"
        else:
            text += self.unit
        text += f", {rate:,.0f}{self.unit}/s" if rate else ""
        if self._finished():
            text += f", in {duration(seconds)}"
        elif self.total and rate:
            text += f", {duration((self.total - self.done) / rate)} left"
        return text

    def _finished(self) -> bool:
        return self.total is not None and self.done >= self.total

    def _draw(self, text: str, end: str) -> None:
        # "\r" back to the line's start; spaces wipe what a longer line left there.
        padding = " " * max(0, self._width - len(text))
        self.stream.write(f"\r{text}{padding}{end}")
        self.stream.flush()
        self._width = 0 if end else len(text)
