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

Stages name the steps between the loops (loading a model, one report section): ``with stage("loading
resnet50"):``. Inside a drawn bar a stage is the bar's postfix. The library prints nothing else by itself; the
command line turns on stage lines (``with stage_lines():``): on a terminal a status line (``loading
resnet50…``) for as long as the stage runs, and off a terminal (piped, CI) one line per finished stage —
``convscope: gradcam — done in 1.2 s`` — and per finished outermost tracker that runs outside any stage.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar, Token
from typing import Any

from .errors import ConvscopeError

__all__ = ["Cancelled", "ProgressArg", "Tracker", "active", "stage", "stage_lines", "tracker"]

ProgressArg = bool | Callable[[int, int, str], Any] | None
Callback = Callable[[int, int, str], Any]

_ACTIVE: ContextVar[Tracker | None] = ContextVar("convscope_active_tracker", default=None)
_LINES: ContextVar[bool] = ContextVar("convscope_stage_lines", default=False)  # on while the command line runs
_STAGES: ContextVar[tuple[str, ...]] = ContextVar("convscope_open_stages", default=())  # the open stages, outermost first
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
        self._start = time.perf_counter()
        self._stage = ""  # the stage running inside this bar (shown before the inner job)
        if draw and parent is None:
            from tqdm import tqdm  # the text bar: in a notebook too (no widget dependency)

            _clear_status()  # the bar takes the status line's place
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
                inner = f"{child.what} {child.done}/{child.total}" if child.total else child.what
                self._bar.set_postfix_str(" · ".join(filter(None, (self._stage, inner))))
        self.advance(0)

    def _inner_closed(self) -> None:
        if self._bar is not None:
            self._bar.set_postfix_str(self._stage, refresh=False)

    def _root(self) -> Tracker:
        root = self
        while root._parent is not None:
            root = root._parent
        return root

    def _show_stage(self, what: str) -> bool:
        """Show a stage on this job's bar; False when no bar is drawn."""
        root = self._root()
        if root._bar is None:
            return False
        root._stage, root._last_postfix = what, 0.0  # the new stage's first inner step shows at once
        root._bar.set_postfix_str(what)
        return True

    def close(self, failed: bool = False) -> None:
        """Close the bar (idempotent); the parent's bar forgets this tracker. With stage lines on and no bar,
        an outermost tracker outside any stage says it is done, in one line."""
        drawn = self._bar is not None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            _show_status()  # a stage still running gets its status line back
        if self._parent is not None:
            self._parent._inner_closed()
        elif not drawn and not failed and _LINES.get() and not _STAGES.get():
            _done_line(self.what, time.perf_counter() - self._start)

    def __enter__(self) -> Tracker:
        self._token = _ACTIVE.set(self)
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        try:
            if self._token is not None:
                try:
                    _ACTIVE.reset(self._token)
                except ValueError:  # left in another context (a generator resumed elsewhere): drop it there
                    _ACTIVE.set(self._parent)
                self._token = None
        finally:
            self.close(failed=kind is not None)


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


# -- stages: the steps between the loops, and the command line's lines ----------------------------------------------
_status_shown = False  # whether stderr (a terminal) ends in a status line


def _elapsed(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _done_line(what: str, seconds: float) -> None:
    print(f"convscope: {what} — done in {_elapsed(seconds)}", file=sys.stderr, flush=True)


def _clear_status() -> None:
    global _status_shown
    if _status_shown:
        _status_shown = False
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _show_status() -> None:
    """On a terminal, with stage lines on: the innermost open stage as the status line (or none)."""
    global _status_shown
    stages = _STAGES.get()
    if not (_LINES.get() and _is_terminal(sys.stderr)):
        return
    _clear_status()
    if stages:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.write(": ".join(stages) + "…")
            sys.stderr.flush()
            _status_shown = True


@contextlib.contextmanager
def stage_lines(enabled: bool = True) -> Iterator[None]:
    """Print the stages while the block runs (the command line's switch; the library is quiet without it): on a
    terminal a status line for the running stage, off one a line per finished stage."""
    token = _LINES.set(enabled)
    try:
        yield
    finally:
        _clear_status()
        _LINES.reset(token)


@contextlib.contextmanager
def stage(what: str) -> Iterator[None]:
    """A named step of a longer job: ``with stage("loading resnet50"): ...``.

    Inside a drawn bar (a report's) it is the bar's postfix. With stage lines on (``stage_lines``, the command
    line): on a terminal ``loading resnet50…`` shows until the step ends; off a terminal one line when it ends,
    ``convscope: loading resnet50 — done in 1.2 s`` (a stage inside another is named after it: ``report:
    gradcam``). Otherwise it prints nothing. A step that fails prints no line.
    """
    outer = _STAGES.get()
    token = _STAGES.set((*outer, what))
    job = _ACTIVE.get()
    before = job._root()._stage if job is not None else ""
    on_bar = job is not None and job._show_stage(what)
    if not on_bar:
        _show_status()
    start = time.perf_counter()
    failed = True
    try:
        yield
        failed = False
    finally:
        try:
            _STAGES.reset(token)
        except ValueError:  # left in another context (a generator resumed elsewhere)
            _STAGES.set(outer)
        if on_bar and job is not None:
            job._show_stage(before)
        elif _LINES.get() and _is_terminal(sys.stderr):
            _show_status()
        elif _LINES.get() and not failed:
            _done_line(": ".join((*outer, what)), time.perf_counter() - start)
