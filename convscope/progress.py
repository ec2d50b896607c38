"""Progress and cancellation for long jobs (perturbation maps, optimization, embeddings).

Every long-running function takes ``progress``:

- ``None`` (default): a text bar on stderr when stderr is a terminal, silent otherwise;
- ``False``: silent; ``True``: always a bar on stderr;
- a callable ``fn(done: int, total: int, what: str)``, called after each unit of work — the web app
  uses it for Server-Sent Events; it cancels the job by raising :class:`Cancelled`.

Compute code only calls ``tracker(progress, total, what)`` and ``.advance(n)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from .errors import ConvscopeError

__all__ = ["Cancelled", "ProgressArg", "Tracker", "tracker"]

ProgressArg = bool | Callable[[int, int, str], Any] | None


class Cancelled(ConvscopeError):
    """Raised by a progress callback to stop a job; the model is restored as after any error."""


class Tracker:
    """Counts units of work and reports them to a callback or a text bar."""

    def __init__(self, total: int, what: str, callback: Callable[[int, int, str], Any] | None,
                 stream: TextIO | None) -> None:
        self.total, self.what, self.done = max(0, int(total)), what, 0
        self._callback, self._stream = callback, stream
        self._start = self._last_draw = time.perf_counter()

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units done (a callback may raise ``Cancelled`` here)."""
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        if self._callback is not None:
            self._callback(self.done, self.total, self.what)
        if self._stream is not None:
            now = time.perf_counter()
            if now - self._last_draw >= 0.2 or self.done >= self.total:
                self._last_draw = now
                self._draw(now)

    def _draw(self, now: float) -> None:
        fraction = self.done / self.total if self.total else 0.0
        filled = int(24 * fraction)
        elapsed = now - self._start
        eta = f" ~{elapsed / fraction - elapsed:.0f}s left" if 0 < fraction < 1 else ""
        self._stream.write(f"\r{self.what}: [{'#' * filled}{'.' * (24 - filled)}] {self.done}/{self.total}{eta}  ")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None and self.done:
            self._stream.write("\n")
            self._stream.flush()
            self._stream = None

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tracker(progress: ProgressArg, total: int, what: str) -> Tracker:
    """A ``Tracker`` for ``total`` units of ``what`` according to ``progress`` (see the module doc)."""
    if callable(progress) and not isinstance(progress, bool):
        return Tracker(total, what, progress, None)
    if progress is None:
        show = bool(getattr(sys.stderr, "isatty", lambda: False)())
    elif isinstance(progress, bool):
        show = progress
    else:
        raise ConvscopeError(f"progress must be None, True, False or a callable, not {type(progress).__name__}")
    return Tracker(total, what, None, sys.stderr if show else None)
