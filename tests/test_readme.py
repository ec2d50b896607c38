"""The README runs as written: every ```python and ```bash block, in order, in a folder holding the files it names.

* The python blocks share one namespace, as a reader's session would: each runs after the blocks above it
  (a block picked alone with ``-k`` runs those first).
* Every line of a bash block is a ``convscope`` command, run in-process through ``convscope.cli.main``
  (exit status 0); ``convscope serve`` runs as a real process on a free port, is asked for its page and its
  OpenAPI schema, and is stopped with Ctrl+C.
* The two set-up commands at the top (``pip install . && convscope report``, ``bash scripts/test.sh``) cannot
  run inside the suite (an install, and the suite itself); they are recognised exactly and checked to be the
  commands that CI (``.ci/run``) and the report tests run. Any other block is run: none is skipped.
* The placeholders (``cat.jpg``, ``my_photo.jpg``, ``my_dataset/``, ``my_masks/``, ``resnet18.pth``,
  ``my_model.safetensors``, ``my_model.pt2``) are made offline by ``conftest.readme_files``; nothing reaches
  the network (a connection to anything but this machine fails the example).
* Where the README shows an output (a verdict, an error line, a table row), the test checks it.

Each example is meant to take seconds on 2 CPU cores; the whole file about a minute and a half.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import convscope as cs
from convscope.cli import build_parser, main

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SLOWEST = 300.0  # seconds: a backstop against examples that take many minutes (the aim is seconds; a minute at most)
MAIN_JOB = "pip install . && convscope report"
TEST_SUITE = "bash scripts/test.sh"


@dataclass(frozen=True)
class Block:
    """One fenced block of the README: its language, code, first code line (1-based) and section heading."""

    lang: str
    code: str
    line: int
    section: str

    @property
    def label(self) -> str:
        return f"README.md:{self.line} ({self.section})"


def readme_blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of the README, in order (an unclosed fence is an error, not a silent skip)."""
    text = README.read_text(encoding="utf-8") if text is None else text
    blocks, section, fence, start, lines = [], "", None, 0, text.splitlines()
    for number, line in enumerate(lines, 1):
        if fence is None:
            if line.startswith("```"):
                fence, start = line[3:].strip(), number + 1
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif line.startswith("```"):
            blocks.append(Block(fence, "\n".join(lines[start - 1:number - 1]) + "\n", start, section))
            fence = None
    assert fence is None, f"README.md:{start - 1}: a fenced block is never closed"
    return blocks


BLOCKS = readme_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]


@dataclass(frozen=True)
class Command:
    """One command line of a bash block."""

    text: str  # the line without its comment
    line: int
    words: tuple[str, ...]  # as the shell splits it

    @property
    def argv(self) -> list[str]:
        return list(self.words[1:])


def bash_commands() -> list[Command]:
    """Every command line of the bash blocks other than the two set-up commands."""
    found = []
    for block in BLOCKS:
        if block.lang != "bash" or block.code.strip() in (MAIN_JOB, TEST_SUITE):
            continue
        for offset, line in enumerate(block.code.splitlines()):
            words = tuple(shlex.split(line, comments=True))
            if words:
                found.append(Command(shlex.join(words), block.line + offset, words))
    return found


COMMANDS = bash_commands()


# -- the environment every example runs in ------------------------------------------------------------------------
@pytest.fixture
def readme_env(readme_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The README's folder as the working directory; no window opens (a script without a display: ``show()``
    writes a PNG there); nothing but this machine can be reached."""
    import tempfile

    import matplotlib.pyplot as plt

    from convscope.render import dispatch

    monkeypatch.chdir(readme_dir)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setattr(dispatch, "_opens_window", lambda: False)
    monkeypatch.setattr(tempfile, "tempdir", str(readme_dir))
    connect = socket.socket.connect

    def local_only(self: socket.socket, address: Any) -> Any:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"a README example tried to reach {address}: no example may download anything")
        return connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", local_only)
    try:
        yield readme_dir
    finally:
        plt.close("all")


def _timed(what: str, run: Callable[[], Any]) -> Any:
    start = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - start
    print(f"{what}: {seconds:.1f} s")
    assert seconds < SLOWEST, f"{what} took {seconds:.0f} s; a README example must stay well under {SLOWEST:.0f} s"
    return result


# -- python blocks --------------------------------------------------------------------------------------------
_SESSION: dict[str, Any] = {"namespace": {"__name__": "__readme__"}, "done": set()}


def _exec(block: Block) -> str:
    """Run one python block in the shared namespace; its stdout. Line numbers in tracebacks are the README's."""
    code = compile("\n" * (block.line - 1) + block.code, str(README), "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, _SESSION["namespace"])
    _SESSION["done"].add(block.line)
    return out.getvalue()


def _check_python(block: Block, namespace: dict[str, Any], out: str) -> None:
    """What the README says a block shows."""
    if 'r = cs.gradcam(m, x, target=281, layer="_bn1")' in block.code:
        assert re.search(r"^tensor\(\[281\]\) \['tabby'\] _bn1 tensor\(\[0\.\d+\]\)$", out, re.M), out
        assert namespace["s"].target is None  # a callable target: no class, no probabilities
        assert "efficientnet_lite0" in out and "Total params: 4,652,008" in out and "Cost(forwards=30001.0" in out
        m, x = namespace["m"], namespace["x"]
        with pytest.raises(cs.CostError, match=r"about 30,001 forward passes .*, over the limit of 20,000"):
            cs.rise(m, x, masks=30_000)
        with pytest.raises(cs.OptionError, match="steps"):
            cs.integrated_gradients(m, x, steps=0)
        assert Path("cat_gradcam.png").is_file() and Path("cat.pdf").is_file()
    if "print(found.verdict)" in block.code:
        shown = re.search(r"print\(found\.verdict\)\s+# (.*?) \.\.\.", block.code).group(1)
        assert out.startswith(shown), (shown, out)
        assert "follows the background in 100% of 400 composites" in out
    if "strategies = cs.audit(tagged" in block.code:
        shown = re.search(r"print\(strategies\.verdict\)\s+# (.*?) \.\.\. (.*)$", block.code, re.M)
        assert out.count("\n") > 3 and shown.group(1) in out and shown.group(2) in out, (shown.groups(), out)
        assert Path("tagged_audit.png").is_file() and cs.open_explanations("runs/tagged").complete
    if "c = cs.compare(" in block.code:
        c = namespace["c"]
        tops = {(row, image): c.cells[(row, "gradcam", image)].top1.label for row in c.rows for image in c.images}
        assert tops == {("shapes_biased", "circle, sand"): "square", ("shapes_biased", "square, snow"): "circle",
                        ("shapes_balanced", "circle, sand"): "circle", ("shapes_balanced", "square, snow"): "square"}
        assert abs(float(c.agreement("gradcam", "circle, sand")[0, 1])) < 0.2  # "barely agree"
    if "cs.maximize(" in block.code:
        for name in ("filters.png", "maps.png", "channels.png", "tabby.png", "dream.png", "digits_map.png"):
            assert Path(name).is_file(), name
        cost = cs.registry.get("maximize").cost_of  # the costs its comment states, estimated (nothing runs)
        channels = cs.objectives.channels("_blocks.8._expand_conv", range(64))
        assert 12_000 <= cost(namespace["m"], objective=channels, steps=64).forwards < 13_000
        assert cost(namespace["m"], objective=channels, steps=256).forwards > 20_000


@pytest.mark.parametrize("block", PYTHON, ids=[f"python-L{b.line}" for b in PYTHON])
def test_python_block_runs(block: Block, readme_env: Path) -> None:
    for earlier in PYTHON[:PYTHON.index(block)]:  # what the block builds on, when it runs alone
        if earlier.line not in _SESSION["done"]:
            _exec(earlier)
    out = _timed(block.label, lambda: _exec(block))
    _check_python(block, _SESSION["namespace"], out)


# -- bash blocks -------------------------------------------------------------------------------------------------
EXPECTED = {  # command -> what its output shows (a regular expression, multiline)
    "convscope predict cat.jpg": r"top 5 of 1 picture[\s\S]*\b(tabby|tiger cat|Egyptian cat)\b",
    "convscope summary --model vgg16 --weights none": r"Total params: 138,357,544",
    "convscope tools integrated_gradients": r"Sundararajan",
    "convscope audit shapes --model shapes_biased": r"verdict: RELIES ON THE BACKGROUND",
    "convscope audit shapes --model shapes_balanced": r"verdict: looks at the objects",
    "convscope compare cat --targets top3 --scale column": r"^efficientnet_lite0 · class #1 .*\n^efficientnet_lite0 · class #2 ",
    "convscope embed digits --model digits_cnn": r"450 images",
    "convscope explain-dataset shapes --model shapes_biased --out runs/shapes": r"400 of 400 pictures explained by gradcam",
    "convscope audit runs/shapes --model shapes_biased": r"^verdict: one strategy per class",
}
WRITES = {  # command -> the files the README says it writes
    "convscope gradcam cat.jpg --layer layer4.1 --model resnet18 --weights resnet18.pth --out cat.pdf": ["cat.pdf"],
    "convscope embed my_dataset/ --out emb.png --projector emb/": ["emb.png", "emb/projector_config.pbtxt"],
    "convscope robustness cat": ["cat_robustness.png"],
    "convscope report --quick --image my_photo.jpg --image coffee": ["convscope-report/index.html"],
    "convscope report --quick --folder my_dataset/": ["convscope-report/index.html"],
    "convscope explain-dataset my_dataset/ --model shapes_balanced --out runs/mine --engine ray --actors 2":
        ["runs/mine/explanations.parquet"],
    "convscope report --quick --folder runs/shapes --model shapes_biased --sections audit": ["convscope-report/index.html"],
}


@pytest.mark.parametrize("command", COMMANDS, ids=[f"bash-L{c.line}-{c.text[10:50]}" for c in COMMANDS])
def test_bash_command_runs(command: Command, readme_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert command.text.startswith("convscope "), f"README.md:{command.line}: not a convscope command: {command.text}"
    if command.argv[0] == "serve":
        return _serve(command, readme_env)
    start = time.time()
    status = _timed(f"README.md:{command.line} {command.text}", lambda: main(command.argv))
    out, err = capsys.readouterr()
    assert status == 0, f"README.md:{command.line}: `{command.text}` exited {status}: {err.strip()[-500:]}"
    if command.text in EXPECTED:
        assert re.search(EXPECTED[command.text], out + err, re.M), (command.text, out[-2000:])
    for name in WRITES.get(command.text, []):
        written = readme_env / name
        assert written.is_file() and written.stat().st_mtime >= start - 1, f"`{command.text}` did not write {name}"


def test_every_expected_output_belongs_to_a_readme_command() -> None:
    commands = {c.text for c in COMMANDS}
    assert set(EXPECTED) | set(WRITES) <= commands, (set(EXPECTED) | set(WRITES)) - commands


def _serve(command: Command, folder: Path) -> None:
    """``convscope serve`` as a real process on a free port: it answers with its page and its API, and stops on Ctrl+C."""
    assert build_parser().parse_args(command.argv).port == 8000  # the README's http://127.0.0.1:8000/
    process = subprocess.Popen([sys.executable, "-m", "convscope", *command.argv, "--port", "0"], cwd=folder,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    seen = []
    try:
        deadline = time.monotonic() + 120
        url = None
        while url is None:
            left = deadline - time.monotonic()
            assert left > 0 and process.poll() is None, f"`{command.text}` did not start serving: {''.join(seen)[-1500:]}"
            with contextlib.suppress(queue.Empty):
                seen.append(lines.get(timeout=min(left, 1.0)))
                found = re.search(r"http://127\.0\.0\.1:\d+/", seen[-1])
                url = found.group(0) if found else None
        with urllib.request.urlopen(url, timeout=30) as answer:
            assert answer.status == 200 and "<html" in answer.read().decode().lower()
        with urllib.request.urlopen(url + "api/openapi.json", timeout=30) as answer:
            assert answer.status == 200 and "paths" in json.loads(answer.read())
        process.send_signal(signal.SIGINT)  # Ctrl+C
        assert process.wait(timeout=30) in (0, 130, -signal.SIGINT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


# -- the set-up commands, and the README's shape ----------------------------------------------------------------
def test_only_python_and_bash_blocks_and_the_two_commands_come_first() -> None:
    assert {b.lang for b in BLOCKS} == {"python", "bash"}, [b.label for b in BLOCKS if b.lang not in ("python", "bash")]
    first, second = BLOCKS[:2]
    assert (first.code.strip(), second.code.strip()) == (MAIN_JOB, TEST_SUITE)
    assert first.section == second.section == "The two commands"
    assert [b.code.strip() for b in BLOCKS].count(MAIN_JOB) == 1 and [b.code.strip() for b in BLOCKS].count(TEST_SUITE) == 1


def test_main_job_command_is_the_one_the_report_tests_run() -> None:
    """`pip install .` installs this project, its `convscope` command is `convscope.cli:main`, and the report tests
    drive that same `main(["report", ...])`; the report goes where the README says."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^name = "convscope"$', pyproject, re.M)
    assert re.search(r'^convscope = "convscope\.cli:main"$', pyproject, re.M)
    assert 'main(["report"' in (ROOT / "tests" / "test_report.py").read_text()
    assert build_parser().parse_args(["report"]).out == "convscope-report"
    assert "`convscope-report/index.html`" in README.read_text()


def test_test_suite_command_is_what_ci_runs() -> None:
    """CI (`.ci/run`) runs exactly `bash scripts/test.sh`, which installs the test extras and runs pytest."""
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert ci[-1] == TEST_SUITE
    script = (ROOT / "scripts" / "test.sh").read_text()
    assert re.search(r'pip install .*-e "\.\[test\]"', script) and re.search(r"^python -m pytest\b", script, re.M)


# -- what the prose quotes ------------------------------------------------------------------------------------
def _quoted(prefix: str) -> str:
    """The README's `code span` that starts with ``prefix`` (joined across a line break)."""
    prose = re.sub(r"^```.*?^```$", "", README.read_text(encoding="utf-8"), flags=re.M | re.S)  # without the fenced blocks
    spans = re.findall(r"`([^`]+)`", " ".join(prose.split()))
    found = [s for s in spans if s.startswith(prefix)]
    assert found, f"the README quotes no `{prefix}...`"
    return found[0]


def _error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def test_the_error_lines_the_readme_quotes_are_what_the_cli_prints(readme_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _error_of(_quoted("convscope integrated-gradients").split()[1:], capsys) == _quoted("convscope: error: integrated_gradients:")
    refused = _error_of(_quoted("convscope rise").split()[1:], capsys)
    for part in _quoted("rise would take").split("..."):
        assert part.strip(" ,") in refused, (part, refused)
    layer = _error_of(["gradcam", "cat", "--layer", "_conv_haed"], capsys)
    assert layer.startswith(_quoted("convscope: error: unknown layer").rstrip(". ")), layer


def test_missing_pretrained_weights_are_one_line_that_says_how_to_get_them(readme_env: Path, monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """The README: `cs.load_model("resnet50")` without weights in the torch cache is a one-line ModelError naming
    download=True; the command line says --download."""
    monkeypatch.setenv("TORCH_HOME", str(readme_env / "empty-torch-home"))
    with pytest.raises(cs.ModelError, match="download=True") as caught:
        cs.load_model("resnet50")
    assert "\n" not in str(caught.value)
    assert "--download" in _error_of(["gradcam", "cat", "--model", "resnet50"], capsys)
