"""Progress and cancellation for long jobs (perturbation maps, optimization, embeddings, workflows).

Every long-running function takes ``progress``:

- ``None`` (default): a tqdm bar on stderr when stderr is a terminal, silent otherwise;
- ``False``: silent; ``True``: always a bar on stderr;
- a callable ``fn(done: int, total: int, what: str)``, called after each unit of work — the web app
  uses it for Server-Sent Events; it cancels the job by raising :class:`Cancelled`.

Compute code only calls ``with tracker(progress, total, what) as bar:`` and ``bar.advance(n)``.

Trackers nest. A tool that calls another tool that loops (``compare`` running Score-CAM, ``robustness``
running occlusion) opens a tracker inside its own; the inner one never draws a second bar: it reports into
the outer one (the outer bar shows the inner job as its postfix) and, at each of its steps, the outer
tracker's callback is called again with the outer count — so a cancel raised there stops the inner loop
within one of its steps. Only the outermost tracker of a call draws, whatever the inner ``progress`` says.
The active tracker lives in a context variable: each thread (each web job) has its own.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any

from .errors import ConvscopeError

__all__ = ["Cancelled", "ProgressArg", "Tracker", "active", "tracker"]

ProgressArg = bool | Callable[[int, int, str], Any] | None
Callback = Callable[[int, int, str], Any]

_ACTIVE: ContextVar[Tracker | None] = ContextVar("convscope_active_tracker", default=None)
POSTFIX_INTERVAL = 0.2  # seconds between two redraws of an outer bar for its inner job


class Cancelled(ConvscopeError):
    """Raised by a progress callback to stop a job; the model is restored as after any error."""


class Tracker:
    """Counts units of work and reports them: to a callback, to a tqdm bar, and to the tracker it runs in.

    Use it as a context manager: inside the block it is the active tracker, so trackers opened by nested
    calls report into it instead of drawing their own bars.
    """

    def __init__(self, total: int, what: str, callback: Callback | None = None, *, draw: bool = False,
                 parent: Tracker | None = None) -> None:
        self.total, self.what, self.done = max(0, int(total)), what, 0
        self._callback, self._parent = callback, parent
        self._bar: Any = None
        self._token: Token[Tracker | None] | None = None
        self._last_postfix = 0.0
        if draw and parent is None:
            from tqdm import tqdm  # the text bar: in a notebook too (no widget dependency)

            self._bar = tqdm(total=self.total or None, desc=what, file=sys.stderr, leave=True, dynamic_ncols=True,
                             mininterval=0.2, miniters=1, smoothing=0.1)

    @property
    def parent(self) -> Tracker | None:
        """The tracker this one reports into (None for the outermost)."""
        return self._parent

    def advance(self, n: int = 1) -> None:
        """Record ``n`` more units done (``advance(0)``: no work, but the callbacks still run, so a long step
        can be cancelled). A callback may raise ``Cancelled`` here."""
        before = self.done
        self.done = min(self.total, self.done + n) if self.total else self.done + n
        if self._callback is not None:
            self._callback(self.done, self.total, self.what)
        if self._bar is not None and self.done != before:
            self._bar.update(self.done - before)
        if self._parent is not None:
            self._parent._inner(self)

    def _inner(self, child: Tracker) -> None:
        """A nested tracker advanced: show it on this bar (at most every ``POSTFIX_INTERVAL``) and pass the
        ping on (this tracker's callback and its own parent), so a cancel reaches the inner loop."""
        if self._bar is not None:
            now = time.monotonic()
            if now - self._last_postfix >= POSTFIX_INTERVAL:
                self._last_postfix = now
                self._bar.set_postfix_str(f"{child.what} {child.done}/{child.total}" if child.total else child.what)
        self.advance(0)

    def _inner_closed(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str("", refresh=False)

    def close(self) -> None:
        """Close the bar (idempotent); the parent's bar forgets this tracker."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._parent is not None:
            self._parent._inner_closed()

    def __enter__(self) -> Tracker:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._token is not None:
                try:
                    _ACTIVE.reset(self._token)
                except ValueError:  # left in another context (a generator resumed elsewhere): drop it there
                    _ACTIVE.set(self._parent)
                self._token = None
        finally:
            self.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # no stream, a closed one, a replaced one
        return False


def active() -> Tracker | None:
    """The tracker of the innermost running job in this thread (None outside any)."""
    return _ACTIVE.get()


def tracker(progress: ProgressArg, total: int, what: str) -> Tracker:
    """A ``Tracker`` for ``total`` units of ``what`` according to ``progress`` (see the module doc); inside
    another tracker's block it reports into that one and draws nothing."""
    if callable(progress) and not isinstance(progress, bool):
        callback: Callback | None = progress
        draw = False
    elif progress is None:
        callback, draw = None, _is_terminal(sys.stderr)
    elif isinstance(progress, bool):
        callback, draw = None, progress
    else:
        raise ConvscopeError(f"progress must be None, True, False or a callable, not {type(progress).__name__}")
    return Tracker(total, what, callback, draw=draw, parent=_ACTIVE.get())
