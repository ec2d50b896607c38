"""The command line, driven in-process: every command is generated from the registry; errors are one line, exit 2.

The first tests are generic (every registered tool, a throwaway tool registered here); the later ones follow
one tool each through its generated command and wait for that tool's registration (see each docstring).
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shlex
import urllib.error
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import Field

import convscope as cs
from conftest import digit_folder
from convscope import registry
from convscope.cli import build_parser, command_name, example, main
from convscope.result import Table

TOOLS = [tool.name for tool in cs.tools()]


STAGE_LINE = re.compile(r"convscope: .+ — done in \d+(\.\d)? m?s")  # progress off a terminal: one line per stage


def without_progress(err: str) -> str:
    """stderr without its stage lines (captured stderr is no terminal, so each finished stage printed one)."""
    return "".join(line for line in err.splitlines(keepends=True) if not STAGE_LINE.fullmatch(line.rstrip("\n")))


def one_line_error(capsys: pytest.CaptureFixture[str]) -> str:
    """The error the last command printed, checked to be one line in the convscope format (after the lines of the
    stages that finished before it)."""
    err = without_progress(capsys.readouterr().err)
    assert err.startswith("convscope: error: ") and err.count("\n") == 1, err
    return err


# -- generated from the registry ---------------------------------------------------------------------------------
def test_help_lists_every_tool_by_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    for tool in cs.tools():
        assert re.search(rf"^  {re.escape(command_name(tool))}\b", text, re.M), tool.name
        assert f"{tool.family} — " in text
    for command in ("explain METHOD IMAGE", "tools [NAME]", "report", "serve"):
        assert command in text
    assert text.index("attribution — ") < text.index("other commands:")
    assert main([]) == 0  # a bare `convscope` is the help, not a usage error
    assert capsys.readouterr().out == text
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"convscope {cs.__version__}\n"


@pytest.mark.parametrize("name", TOOLS)
def test_every_tool_has_a_help_page_with_its_options_and_a_working_example(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    tool = registry.get(name)
    assert main([command_name(tool), "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert " ".join(tool.summary.split()[:4]) in text and "paper: " in text and "examples: # " in text
    for spec in tool.option_specs():
        flag = spec.name.upper() if spec.required else ("-" if len(spec.name) == 1 else "--") + spec.name.replace("_", "-")
        assert flag in text, (name, spec.name)
        if spec.range:
            assert spec.range in text, (name, spec.name)
    for alias in (tool.name, *tool.aliases):  # the underscore name and the aliases are the same command
        assert build_parser().parse_args([alias, *example(tool).split()[2:]]).tool is tool
    args = build_parser().parse_args(example(tool).split()[1:])
    assert args.tool is tool and (not tool.uses_target or hasattr(args, "target"))


def test_tools_lists_every_tool_and_describes_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tools"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in TOOLS)
    assert main(["methods"]) == 0  # the old name
    assert capsys.readouterr().out == listed
    assert main(["tools", "integrated_gradients"]) == 0
    out = capsys.readouterr().out
    assert "baseline = 'zeros'" in out and "one of zeros, black, blur" in out and "Sundararajan" in out
    assert "steps = " in out and "range 1 to" in out and "examples:\n" in out and "\n  convscope integrated-gradients cat" in out
    assert main(["tools", "integrated_gradient"]) == 2
    assert "integrated_gradients" in one_line_error(capsys)


# -- a command line that explains itself ------------------------------------------------------------------------
def subcommands() -> dict[str, argparse.ArgumentParser]:
    """Every command's parser once, under its command name (aliases left out)."""
    found: dict[str, argparse.ArgumentParser] = {}
    for name, parser in build_parser().commands.items():  # type: ignore[attr-defined]
        if all(parser is not seen for seen in found.values()):
            found[name] = parser
    return found


def epilog_examples(parser: argparse.ArgumentParser) -> list[list[str]]:
    """The command lines of a --help epilog's examples, as the shell splits them."""
    block = (parser.epilog or "").partition("examples:")[2]
    return [shlex.split(line) for line in block.splitlines() if line.strip().startswith("convscope ")]


def test_every_command_has_a_description_and_examples_that_parse() -> None:
    parser = build_parser()
    commands = subcommands()
    assert {"explain", "tools", "report", "serve"} <= set(commands) and len(commands) == len(TOOLS) + 4
    for name, command in [("", parser), *commands.items()]:
        assert command.description and len(command.description.split()) >= 6, name
        assert "(B, " not in command.description and "meta[" not in command.description, name  # plain words
        found = epilog_examples(command)
        assert found and (command.epilog or "").count("\n  # ") >= len(found), name  # each example says what it does
        for words in found:
            assert words[0] == "convscope" and (not name or words[1] == name), words
            try:
                args = parser.parse_args(words[1:])
            except SystemExit:
                pytest.fail(f"the example {shlex.join(words)!r} does not parse")
            assert args.func is not None
    for name in TOOLS:  # every tool on pictures or a model shows how to use pretrained torchvision weights
        tool = registry.get(name)
        found = [shlex.join(words) for words in epilog_examples(commands[command_name(tool)])]
        assert len(found) >= 2, name
        if tool.takes != "dataset":
            assert any("--weights DEFAULT --download" in line for line in found), name


LEFTOVER = re.compile(r"\(?\w+(, ?\w+)+\)?")  # a bare shape such as (B, 1, H, W): a docstring's note, not help


def test_every_option_of_every_command_has_help_in_command_line_words() -> None:
    """-k, --steps, --seed, --octaves, --out, --download ...: each says what it does, in the command line's words."""
    seen = set()
    for name, command in {"": build_parser(), **subcommands()}.items():
        for action in command._actions:
            if isinstance(action, argparse._SubParsersAction):  # the commands: listed by family in the epilog
                continue
            what = f"convscope {name} {'/'.join(action.option_strings) or action.dest}"
            words = (action.help or "").strip()
            assert words and words != argparse.SUPPRESS, what
            head = re.sub(r"\s*\((default|required)[^()]*\)$", "", words)  # the help before its facts
            assert len(head.split()) >= 3 and not LEFTOVER.fullmatch(head), what
            assert not head.lower().startswith(("none", "callable")), what
            assert not re.search(r"\b(None|True|False)\b", words), what  # the command line says none, true, --flag
            seen.update(action.option_strings)
    assert {"-k", "--steps", "--seed", "--octaves", "--out", "--download", "--weights", "--models", "--version"} <= seen
    compare = subcommands()["compare"]
    models = next(action for action in compare._actions if "--models" in action.option_strings)
    assert "comma-separated" in models.help and "resnet50" in models.help and "see " not in models.help


def test_the_cheap_examples_run(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """A few examples from the --help pages, run as they are written."""
    monkeypatch.chdir(tmp_path)
    commands = subcommands()
    for name, which in (("gradcam", (0, 1)), ("predict", (0, 1)), ("summary", (0,)), ("filters", (1,)), ("tools", (0, 1)),
                        ("explain", (0,))):
        found = epilog_examples(commands[name])
        for index in which:
            assert main(found[index][1:]) == 0, found[index]
            out = capsys.readouterr().out
            if "--json" in found[index]:
                assert json.loads(out)
    assert main(epilog_examples(build_parser())[0][1:]) == 0  # the first example of `convscope --help`
    assert "tabby" in capsys.readouterr().out
    for name in ("cat_gradcam.png", "results/cat_gradcam.png", "results/filters.png", "cat_integrated_gradients.png"):
        assert (tmp_path / name).stat().st_size > 0, name


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_download_is_passed_through_and_nothing_is_downloaded(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --download, weights missing from the torch cache are one line that says to add it; with it, the
    flag reaches torchvision's fetch (stood in for here: no test downloads anything)."""
    import torchvision.models as tvm
    from torchvision.models import WeightsEnum

    from convscope import models

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))  # an empty torch cache

    def no_network(*args: Any, **kwargs: Any) -> Any:
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(WeightsEnum, "get_state_dict", no_network)
    assert main(["predict", "cat", "--model", "resnet18"]) == 2
    err = one_line_error(capsys)
    assert "resnet18" in err and str(tmp_path / "hub") in err and "add --download" in err and "--weights none" in err
    assert main(["predict", "cat", "--model", "resnet18", "--download"]) == 2  # the download fails: one line too
    err = one_line_error(capsys)
    assert "could not download https://download.pytorch.org/" in err and "no network in tests" in err

    fetched: list[tuple[str, Path]] = []

    def fetch(weights: Any, checkpoint: Path) -> dict[str, torch.Tensor]:
        fetched.append((weights.name, checkpoint))
        return tvm.get_model(checkpoint.name.split("-")[0], weights=None).state_dict()

    monkeypatch.setattr(models, "_download", fetch)
    assert main(["predict", "cat", "--model", "resnet18", "--weights", "DEFAULT", "--download", "-k", "2"]) == 0
    checkpoint = tmp_path / "hub" / "checkpoints" / Path(tvm.ResNet18_Weights.DEFAULT.url).name
    assert fetched == [("IMAGENET1K_V1", checkpoint)]
    assert "probability" in capsys.readouterr().out.lower()
    pretrained = epilog_examples(subcommands()["gradcam"])[-1]  # the --help example, as written
    assert main(pretrained[1:]) == 0 and fetched[-1][0] == tvm.ResNet50_Weights.DEFAULT.name
    assert f"wrote {tmp_path / 'cat_gradcam.png'}" in capsys.readouterr().out


def test_progress_reaches_the_user(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Off a terminal one line per stage with its time; on a terminal a status line while each stage runs; every file
    written is printed with its absolute path."""
    monkeypatch.chdir(tmp_path)
    assert main(["gradcam", "cat"]) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert len(lines) == 2 and all(STAGE_LINE.fullmatch(line) for line in lines), lines
    assert lines[0].startswith("convscope: loading efficientnet_lite0 — done in ") and lines[1].startswith("convscope: gradcam — ")
    assert captured.out.endswith(f"wrote {tmp_path / 'cat_gradcam.png'}\n")
    with monkeypatch.context() as patch:
        terminal = Terminal()
        patch.setattr("sys.stderr", terminal)
        assert main(["gradcam", "cat"]) == 0
        shown = terminal.getvalue()
    capsys.readouterr()
    assert "loading efficientnet_lite0…" in shown and "gradcam…" in shown and "done in" not in shown
    assert shown.endswith("\r\x1b[K")  # the status line is gone before the result is printed
    assert main(["report", "--quick", "--sections", "predict", "--out", "rep"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"wrote {tmp_path / 'rep' / 'index.html'}\n"
    stages = [line.split(" — ")[0] for line in captured.err.splitlines()]
    assert stages[0] == "convscope: loading efficientnet_lite0" and stages[-1] == "convscope: report"
    assert all(stage.startswith("convscope: report: ") for stage in stages[1:-1])  # the report's sections, if it names them
    assert all(STAGE_LINE.fullmatch(line) for line in captured.err.splitlines())


def _probe(calls: list[dict[str, Any]]) -> Any:
    def probe(model: Any, x: torch.Tensor, *, target: Any = None,
              count: Annotated[int, Field(ge=1, le=10)] = 3, shout: bool = False,
              mode: Literal["plain", "fancy"] = "plain", scale: float | tuple[float, float] = 1.0) -> Table:
        """Probe: a throwaway tool that says what it was given.

        Options:
            count: how many times to say it.
            shout: say it loudly.
            mode: "plain" or "fancy" words.
            scale: one number, or two separated by a comma.
        """
        calls.append({"shape": tuple(x.shape), "target": target, "count": count, "shout": shout, "mode": mode,
                      "scale": scale, "model": model.name})
        word = "PROBE" if shout else "probe"
        return Table(" ".join([word] * count), columns=("word", "count"), rows=[(word, count)], title="probe")

    return probe


def test_a_tool_registered_in_a_test_gets_a_command(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """One function + @register: it is in `convscope --help`, has its own --help with its options, and runs."""
    monkeypatch.chdir(tmp_path)
    calls: list[dict[str, Any]] = []
    registry.register("cli_probe", family="model", takes="images", returns="table", paper="no paper: a test",
                      aliases=("probe_alias",))(_probe(calls))
    try:
        assert main(["--help"]) == 0
        assert re.search(r"^  cli-probe \(probe_alias\)\s+Probe: a throwaway tool", capsys.readouterr().out, re.M)
        assert main(["cli-probe", "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        for words in ("usage: convscope cli-probe", "IMAGE [IMAGE ...]", "--count N",
                      "how many times to say it. (default: 3; range 1 to 10)", "--shout, --no-shout", "--mode {plain,fancy}",
                      "--scale X|A,B", "--target CLASS", "paper: no paper: a test", "convscope cli-probe cat --target 281"):
            assert words in text, words
        assert "--layer" not in text  # the tool takes no layer

        assert main(["cli-probe", "cat", "coffee", "--count", "2", "--shout", "--mode", "fancy", "--scale", "0.5,2",
                     "--target", "281,285"]) == 0
        assert capsys.readouterr().out == "PROBE PROBE\n"  # a table is its words: no file unless --out
        assert calls[-1] == {"shape": (2, 3, 224, 224), "target": [281, 285], "count": 2, "shout": True, "mode": "fancy",
                             "scale": (0.5, 2.0), "model": "efficientnet_lite0"}
        assert list(tmp_path.iterdir()) == []
        assert main(["cli_probe", "rocket", "--no-shout", "--out", "words.png", "--model", "digits_cnn"]) == 0
        out = capsys.readouterr().out
        assert out == f"probe probe probe\nwrote {tmp_path / 'words.png'}\n" and calls[-1]["model"] == "digits_cnn"
        with Image.open(tmp_path / "words.png") as picture:
            assert picture.size[0] > 32
        assert main(["probe_alias", "cat", "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == {"title": "probe", "columns": ["word", "count"], "rows": [["probe", 3]]}

        calls.clear()
        for bad, words in ((["--count", "11"], "count=11 is out of range; allowed: 1 ≤ value ≤ 10"),
                           (["--count", "two"], "count='two' is not valid"),
                           (["--mode", "odd"], "mode='odd' is not one of 'plain', 'fancy'"),
                           (["--scale", "1,2,3"], "scale"),
                           (["--out", "words.docx"], "cannot tell the format")):
            assert main(["cli-probe", "cat", *bad]) == 2, bad
            assert words in one_line_error(capsys), bad
        assert calls == []  # every bad value is refused before the tool runs
    finally:
        registry.unregister("cli_probe")
    assert main(["cli-probe", "cat"]) == 2  # gone with its registration
    assert "unknown command 'cli-probe'" in one_line_error(capsys)


def test_required_options_are_positional_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    """A required option is a positional argument after the inputs;
    the example uses its quick value."""
    seen: list[Any] = []

    def needs_a_word(model: Any, image: Any, word: Annotated[str, Field(min_length=2)], *, times: int = 1) -> Table:
        """Needs a word: repeats it.

        Options:
            word: the word to repeat.
            times: how many times.
        """
        seen.append((type(image).__name__, word, times))
        return Table(" ".join([word] * times))

    registry.register("cli_needs_word", family="model", takes="image", returns="table", paper="-",
                      quick={"word": "hi"})(needs_a_word)
    try:
        assert main(["cli-needs-word", "--help"]) == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "IMAGE WORD" in text and "the word to repeat. (required)" in text and "convscope cli-needs-word cat hi" in text
        assert main(["cli-needs-word", "cat", "hello", "--times", "2"]) == 0
        assert capsys.readouterr().out == "hello hello\n" and seen == [("Image", "hello", 2)]
        assert main(["cli-needs-word", "cat", "x"]) == 2
        assert "word" in one_line_error(capsys)
        assert main(["cli-needs-word", "cat"]) == 2  # argparse: the word is missing
        assert "WORD" in capsys.readouterr().err
    finally:
        registry.unregister("cli_needs_word")


def test_ctrl_c_is_exit_130_and_a_cancel_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(model: Any) -> Table:
        """Interrupted: raises what it is told to."""
        raise KeyboardInterrupt

    def cancelled(model: Any) -> Table:
        """Cancelled: stops as a cancelled job does."""
        raise cs.progress.Cancelled("stopped by the user")

    registry.register("cli_interrupted", family="model", takes="model", returns="table", paper="-")(interrupted)
    registry.register("cli_cancelled", family="model", takes="model", returns="table", paper="-")(cancelled)
    try:
        assert main(["cli-interrupted", "--model", "digits_cnn"]) == 130
        assert without_progress(capsys.readouterr().err) == "convscope: interrupted\n"
        assert main(["cli-cancelled", "--model", "digits_cnn"]) == 2
        assert one_line_error(capsys) == "convscope: error: stopped by the user\n"
    finally:
        registry.unregister("cli_interrupted")
        registry.unregister("cli_cancelled")


# -- attribution ---------------------------------------------------------------------------------------------
def test_an_attribution_command_writes_the_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    photo = tmp_path / "my cat.jpg"
    cs.sample_image("cat").save(photo)
    assert main(["gradcam", str(photo), "--target", "281", "--no-relu"]) == 0
    out = capsys.readouterr().out
    assert out == f"gradcam for 'tabby' at layer _swish@1\nwrote {tmp_path / 'my cat_gradcam.png'}\n"
    with Image.open(tmp_path / "my cat_gradcam.png") as picture:
        assert picture.size[1] == 224 and picture.size[0] > 224  # the overlay at the model's size, its colour bar beside
    assert main(["integrated-gradients", "cat", "coffee", "--steps", "4", "--out", str(tmp_path / "ig.svg"), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["tool"] == "integrated_gradients" and "2 images" in summary["caption"]
    assert without_progress(captured.err) == f"wrote {tmp_path / 'ig.svg'}\n"  # stdout stays JSON
    assert (tmp_path / "ig.svg").read_text().lstrip().startswith("<?xml")
    (tmp_path / "maps").mkdir()
    assert main(["scorecam", "coffee", "--top-channels", "4", "--out", "maps"]) == 0  # a folder: the default name in it
    captured = capsys.readouterr()
    assert (tmp_path / "maps" / "coffee_scorecam.png").exists() and "espresso" in captured.out
    assert without_progress(captured.err) == "" and "\r" not in captured.err  # Score-CAM loops; no terminal: no bar


def test_explain_runs_any_method_by_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cat_ig.png"
    assert main(["explain", "integrated_gradients", "cat", "--target", "281", "--set", "steps=4", "--set", "baseline=blur",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out == f"integrated_gradients for 'tabby'\nwrote {out}\n"
    with Image.open(out) as picture:
        assert picture.size[1] == 224 and picture.size[0] > 224  # the overlay and its colour bar
    assert main(["explain", "integrated_gradients", "cat", "--set", "rule=simpson"]) == 2
    assert "rule='simpson' is not one of 'gausslegendre'" in one_line_error(capsys)
    assert main(["explain", "occlusion", "cat", "--set", "windw=0.5"]) == 2
    assert "did you mean 'window'" in one_line_error(capsys)
    assert main(["explain", "gradcam", "cat", "--set", "relu"]) == 2
    assert "--set expects key=value" in one_line_error(capsys)
    assert main(["explain", "gradcm", "cat"]) == 2
    assert "'gradcam'" in one_line_error(capsys)
    assert main(["explain", "rank", "cat"]) == 2
    assert "not an attribution method; run `convscope rank" in one_line_error(capsys)


def test_errors_are_one_line_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["gradcam", "cat", "--layer", "_conv_haed"]) == 2
    err = one_line_error(capsys)
    assert err.startswith("convscope: error: unknown layer") and "_conv_head" in err
    assert main(["saliency", "cat", "--target", "1000"]) == 2
    assert "out of range" in one_line_error(capsys)
    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["saliency", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt" in one_line_error(capsys)
    assert main(["scorecam", "cat", "--top-channels", "0"]) == 2
    assert "top_channels=0 is out of range; allowed: 1 ≤ value ≤ 100,000" in one_line_error(capsys)
    assert main(["occlusion", "cat", "--window", "2", "--stride", "1", "--max-forwards", "1000"]) == 2
    err = one_line_error(capsys)
    assert "occlusion" in err and "forward" in err and "1,000" in err  # the cost cap says the estimate
    assert main(["gradcm", "cat"]) == 2
    assert "unknown command 'gradcm'; did you mean 'gradcam'" in one_line_error(capsys)
    assert main(["gradcam", "cat", "--model", "no_such_model"]) == 2
    one_line_error(capsys)
    assert main(["gradcam", "cat", "--steps", "3"]) == 2  # argparse: no such flag for gradcam (usage + error)
    assert "unrecognized arguments: --steps" in capsys.readouterr().err


# -- the tools the other areas register (each test waits for its tools) -----------------------------------------
def test_predict_and_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Waits for the model tools `predict` (option `k`) and `summary`."""
    assert main(["predict", "cat", "coffee", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "espresso" in out and re.search(r"(tabby|tiger cat|Egyptian cat)", out)
    assert main(["summary", "--model", "vgg11", "--weights", "none"]) == 0
    out = capsys.readouterr().out
    assert "features.0 (Conv2d)" in out and "Total params: 132,863,336" in out
    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["predict", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt" in one_line_error(capsys)


def test_trust_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`rank` (alias `trust`) and `sanity`."""
    assert main(["trust", "cat", "--methods", "gradcam,saliency", "--steps", "4", "--baseline-samples", "1",
                 "--out", str(tmp_path / "t.png")]) == 0
    table = capsys.readouterr().out
    assert "gradcam" in table and "saliency" in table and "random" in table and f"wrote {tmp_path / 't.png'}" in table
    assert main(["rank", "cat", "--methods", "gradcam,salincy", "--steps", "4"]) == 2
    assert "saliency" in one_line_error(capsys)
    assert main(["sanity", "cat", "--model", "resnet18", "--weights", "none", "--layers", "2", "--json",
                 "--out", str(tmp_path / "s.png")]) == 0
    assert json.loads(capsys.readouterr().out)
    with Image.open(tmp_path / "t.png") as picture:
        assert min(picture.size) > 32


def test_feature_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`filters`, `feature_maps` (layer=), `maximize` (--objective), `class_image` (--target) and `dream`."""
    commands = [
        ["filters", "--out", str(tmp_path / "f.png")],
        ["feature-maps", "cat", "--layer", "_conv_stem,_blocks.5", "--out", str(tmp_path / "fm.png")],
        ["maximize", "--objective", "logit:281", "--steps", "4", "--size", "64", "--out", str(tmp_path / "mx.png")],
        ["class-image", "--target", "281", "--steps", "4", "--size", "64", "--out", str(tmp_path / "ci.png")],
        ["dream", "cat", "--octaves", "1", "--steps", "2", "--size", "96", "--out", str(tmp_path / "dr.png")],
    ]
    for command in commands:
        assert main(command) == 0, command
        assert capsys.readouterr().out.strip().endswith(".png")
    for name in ("f.png", "fm.png", "mx.png", "ci.png", "dr.png"):
        with Image.open(tmp_path / name) as picture:
            assert min(picture.size) > 32, name
    assert main(["maximize", "--objective", "_blocks.5:99999", "--steps", "2", "--out", str(tmp_path / "bad.png")]) == 2
    assert "out of range" in one_line_error(capsys)
    assert main(["maximize", "--objective", "logit:281", "--steps", "0"]) == 2
    assert "steps=0 is out of range" in one_line_error(capsys)


def test_embed_writes_the_map_and_projector_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Waits for `embed` (returns kind "embedding"); `--projector FOLDER` is the command line's export for that kind."""
    folder = digit_folder(tmp_path / "digits")
    out = tmp_path / "out"
    assert main(["embed", str(folder), "--model", "digits_cnn", "--out", str(out / "map.png"),
                 "--projector", str(out / "projector")]) == 0
    printed = capsys.readouterr().out
    assert "40" in printed and f"wrote {out / 'map.png'}" in printed and f"wrote {out / 'projector'}" in printed
    for name in ("map.png", "projector/projector_config.pbtxt", "projector/sprite.png", "projector/metadata.tsv",
                 "projector/tensors.tsv"):
        assert (out / name).stat().st_size > 0, name
    assert np.loadtxt(out / "projector" / "tensors.tsv", delimiter="\t").shape == (40, 64)
    assert main(["embed", "digits", "--model", "digits_cnn", "--json", "--out", str(out / "all.png")]) == 0
    assert json.loads(capsys.readouterr().out)
    assert main(["embed", str(tmp_path / "nowhere"), "--model", "digits_cnn"]) == 2
    assert "nowhere" in one_line_error(capsys)


def test_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`compare IMAGE... --models a,b --methods m1,m2 [--targets]`: the table on stdout and the grid."""
    out = tmp_path / "cmp.png"
    assert main(["compare", "cat", "coffee", "--models", "efficientnet_lite0,digits_cnn", "--methods", "gradcam,saliency",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "efficientnet_lite0" in printed and "digits_cnn" in printed and "coffee" in printed and "ρ=" in printed
    with Image.open(out) as picture:
        assert picture.size[0] > 600 and picture.size[1] > 0.8 * picture.size[0]  # 2 models × 2 pictures stacked (4 rows)
    assert main(["compare", "cat", "--targets", "top2", "--methods", "gradcam", "--out", str(tmp_path / "top.png")]) == 0
    assert "class #2" in capsys.readouterr().out
    assert main(["compare", "cat", "--targets", "tabby", "--out", str(tmp_path / "bad.png")]) == 2
    assert "targets" in one_line_error(capsys)


def test_robustness_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`robustness IMAGE` prints the sweep and writes the grid; `audit shapes --model shapes_biased` tells the
    snow/sand story with a built-in dataset (labels and object masks come with it); `audit FOLDER --regions FOLDER`
    audits a dataset on disk."""
    assert main(["robustness", "coffee", "--perturbations", "shadow,rotation", "--out", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "shadow" in out and "rotation" in out and "espresso" in out and (tmp_path / "r.png").exists()
    assert main(["robustness", "coffee", "--perturbations", "shadw"]) == 2
    assert "did you mean 'shadow'" in one_line_error(capsys)
    verdicts = []
    for which in ("biased", "balanced"):
        assert main(["audit", "shapes", "--model", f"shapes_{which}", "--swaps", "32", "--out", str(tmp_path / f"a_{which}.png")]) == 0
        verdicts.append(capsys.readouterr().out)
        assert (tmp_path / f"a_{which}.png").exists()
    assert "RELIES ON THE BACKGROUND" in verdicts[0] and "looks at the objects" in verdicts[1]

    from convscope.zoo.shapes import SHAPES_LABELS, shapes_dataset

    data = shapes_dataset(8, biased=True, split="test")
    for i in range(8):
        label = SHAPES_LABELS[int(data.labels[i])]
        for kind, picture in (("images", data.images[i].permute(1, 2, 0).numpy()), ("masks", data.masks[i].float().numpy())):
            (tmp_path / kind / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray((picture * 255).round().astype("uint8")).save(tmp_path / kind / label / f"{i}.png")
    assert main(["audit", str(tmp_path / "images"), "--regions", str(tmp_path / "masks"), "--model", "shapes_biased",
                 "--json", "--out", str(tmp_path / "folder.png")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["relies_on_background"] is True and summary["images"] == 8
    assert main(["audit", str(tmp_path / "images"), "--model", "shapes_biased", "--out", str(tmp_path / "strategies.png")]) == 0
    assert (tmp_path / "strategies.png").is_file()  # no masks: each class's maps clustered, drawn
    assert "SpRAy" in capsys.readouterr().out
    assert main(["audit", str(tmp_path / "images"), "--model", "shapes_biased", "--clusters", "0"]) == 2
    assert "clusters" in one_line_error(capsys)
    assert main(["audit", "shapez", "--model", "shapes_biased"]) == 2
    assert "did you mean 'shapes'" in one_line_error(capsys)
