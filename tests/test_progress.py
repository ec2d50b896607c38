"""Progress: callbacks as before, tqdm bars only on a terminal (or when asked), one bar for nested jobs, and a
cancel raised by the outer job's callback stops an inner loop."""

from __future__ import annotations

import io
import re
import threading

import pytest
import torch
from torch import nn

import convscope as cs
from convscope.progress import Cancelled, active, stage, stage_lines, tracker


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def bars(text: str) -> int:
    """Bars a stream shows once every tracker has closed (tqdm leaves each finished bar on its own line)."""
    return text.count("\n")


def test_a_callback_sees_every_step_capped_at_the_total() -> None:
    calls: list[tuple[int, int, str]] = []
    with tracker(lambda *a: calls.append(a), 5, "steps") as bar:
        bar.advance(2)
        bar.advance(0)
        bar.advance(9)
    assert calls == [(2, 5, "steps"), (2, 5, "steps"), (5, 5, "steps")]


@pytest.mark.parametrize(("progress", "stream", "drawn"), [
    (None, io.StringIO(), False),  # off a terminal: silent
    (None, Terminal(), True),  # on a terminal: a bar
    (True, io.StringIO(), True),  # asked for: a bar anywhere
    (False, Terminal(), False),  # asked not to: silent
])
def test_a_bar_is_drawn_on_a_terminal_or_when_asked(monkeypatch: pytest.MonkeyPatch, progress: bool | None,
                                                     stream: io.StringIO, drawn: bool) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    with tracker(progress, 3, "masks") as bar:
        for _ in range(3):
            bar.advance()
    text = stream.getvalue()
    assert (bars(text) == 1 and "masks" in text and "3/3" in text) if drawn else text == ""


def test_nested_trackers_draw_one_bar_and_report_into_the_outer(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    outer_calls: list[tuple[int, int, str]] = []
    with tracker(True, 2, "outer") as outer:
        assert active() is outer
        for _ in range(2):
            with tracker(None, 4, "inner") as inner:  # a nested tool with its default progress=None
                assert inner.parent is outer and active() is inner
                for _ in range(4):
                    inner.advance()
            assert active() is outer
            outer.advance()
    assert active() is None
    assert bars(stream.getvalue()) == 1 and "outer" in stream.getvalue()
    assert outer_calls == []  # the outer has no callback: pings only redraw it

    with tracker(lambda *a: outer_calls.append(a), 1, "outer") as outer:
        with tracker(True, 3, "inner") as inner:  # even an explicit True draws no second bar inside a job
            for _ in range(3):
                inner.advance()
        outer.advance()
    assert stream.getvalue().count("\n") == 1  # nothing more drawn
    assert outer_calls == [(0, 1, "outer")] * 3 + [(1, 1, "outer")]  # each inner step reaches the outer callback


def test_an_inner_callback_still_runs_and_the_outer_is_pinged_too() -> None:
    outer_calls: list[int] = []
    inner_calls: list[int] = []
    with tracker(lambda done, total, what: outer_calls.append(done), 1, "outer"), \
            tracker(lambda done, total, what: inner_calls.append(done), 2, "inner") as inner:
        inner.advance()
        inner.advance()
    assert inner_calls == [1, 2] and outer_calls == [0, 0]


def tiny() -> cs.Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))
    return cs.Model(net, input_size=(16, 16), labels=["a", "b"], name="tiny")


def test_a_cancel_from_the_outer_callback_stops_a_nested_tool() -> None:
    """Score-CAM runs with its default progress=None inside an outer job; the outer callback cancels it."""
    model = tiny()
    model.module.train()
    seen: list[int] = []

    def cancel(done: int, total: int, what: str) -> None:
        seen.append(done)
        if len(seen) >= 2:
            raise Cancelled("stopped by the user")

    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    with pytest.raises(Cancelled), tracker(cancel, 1, "outer job"):
        cs.scorecam(model, torch.rand(1, 3, 16, 16), batch_size=2)
    assert len(seen) == 2 and active() is None
    after = model.module.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and model.module.training


def test_each_thread_has_its_own_active_tracker() -> None:
    found: list[object] = []

    def job() -> None:
        with tracker(False, 1, "worker") as mine:
            found.append(mine.parent)

    with tracker(False, 1, "main"):
        worker = threading.Thread(target=job)
        worker.start()
        worker.join()
    assert found == [None]


def test_an_error_inside_leaves_no_active_tracker() -> None:
    with pytest.raises(RuntimeError), tracker(False, 2, "outer"), tracker(False, 2, "inner"):
        raise RuntimeError("boom")
    assert active() is None
    assert cs.occlusion(tiny(), torch.rand(1, 3, 16, 16), window=8, stride=8, progress=False).data.shape == (1, 1, 16, 16)


def test_a_bad_progress_value_is_one_line() -> None:
    with pytest.raises(cs.ConvscopeError, match="progress must be None, True, False or a callable"):
        tracker("yes", 3, "x")  # type: ignore[arg-type]


# -- stages: what the command line shows between and around the loops ------------------------------------------------
DONE = re.compile(r" — done in \d+(\.\d)? m?s$")


@pytest.mark.parametrize("stream", [io.StringIO(), Terminal()])
def test_the_library_prints_no_stages_by_itself(monkeypatch: pytest.MonkeyPatch, stream: io.StringIO) -> None:
    monkeypatch.setattr("sys.stderr", stream)
    with stage("loading tiny"), tracker(False, 2, "masks") as bar, stage("inner"):
        bar.advance(2)
    cs.occlusion(tiny(), torch.rand(1, 3, 16, 16), window=8, stride=8, progress=False)
    assert stream.getvalue() == ""


def test_off_a_terminal_each_finished_stage_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """What `convscope report` prints in a CI log: the model, each section (named inside the report), the report."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    with stage_lines():
        with stage("loading tiny"):
            pass
        with stage("report"), tracker(None, 2, "report") as report:  # a tracker inside a stage: no line of its own
            for section in ("gradcam", "occlusion"):
                with stage(section), tracker(None, 3, f"{section} masks") as inner:
                    inner.advance(3)
                report.advance()
        with tracker(None, 2, "masks") as alone:  # an outermost tracker outside any stage says it is done
            alone.advance(2)
        with pytest.raises(RuntimeError), stage("broken"):  # a failed stage: no line (the error says it)
            raise RuntimeError("boom")
    with stage("after"):  # the command line has finished: quiet again
        pass
    lines = stream.getvalue().splitlines()
    assert all(DONE.search(line) for line in lines), lines
    assert [DONE.sub("", line) for line in lines] == ["convscope: loading tiny", "convscope: report: gradcam",
                                                      "convscope: report: occlusion", "convscope: report", "convscope: masks"]


def test_on_a_terminal_a_status_line_shows_while_a_stage_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = Terminal()
    monkeypatch.setattr("sys.stderr", stream)
    with stage_lines():
        with stage("loading efficientnet_lite0"):
            assert stream.getvalue() == "loading efficientnet_lite0…"  # from the first moment
            with stage("downloading weights"):
                assert stream.getvalue().endswith("\r\x1b[Kloading efficientnet_lite0: downloading weights…")
            assert stream.getvalue().endswith("\r\x1b[Kloading efficientnet_lite0…")  # back to the outer stage
        assert stream.getvalue().endswith("\r\x1b[K")  # gone when it ends
        with stage("report"), tracker(None, 2, "report") as report:  # the bar takes the status line's place
            bar = report._bar
            assert bar is not None
            for section in ("gradcam", "occlusion"):
                with stage(section):
                    assert bar.postfix == section  # the bar says which section runs
                    with tracker(None, 3, "masks") as inner:
                        inner.advance()
                        assert bar.postfix.startswith(f"{section} · masks 1/3")
                assert bar.postfix == ""
                report.advance()
    text = stream.getvalue()
    assert "done in" not in text and text.endswith("\r\x1b[K") and "report: 100%" in text and "2/2" in text


def test_a_thread_of_its_own_prints_no_stage_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    """A web job runs in its own thread: the command line's switch (`convscope serve`) does not reach it."""
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)

    def job() -> None:
        with stage("job"), tracker(None, 1, "job") as bar:
            bar.advance()

    with stage_lines():
        worker = threading.Thread(target=job)
        worker.start()
        worker.join()
    assert stream.getvalue() == ""
