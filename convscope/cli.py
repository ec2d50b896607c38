"""The command-line front end, generated from the registry.

Every registered tool is a subcommand (``convscope class-image``), built from what the tool says about
itself: its summary, paper, inputs (``takes``), result kind, and its options model — one flag per offered
option (``--steps N``, ``--relu/--no-relu``), required options as positional arguments. Flag values are
read by ``convscope.options.parse_text`` against the option's JSON schema and checked by the tool's options
model before the model or any picture is loaded, so a bad value is one line naming the option and its range.
A new tool appears here with no edit to this file.

A few commands stay hand-written and thin: ``explain METHOD IMAGE`` (any attribution method by name, options
as ``--set k=v``), ``tools [NAME]`` (alias ``methods``), ``report`` and ``serve``.

Every command's ``--help`` ends with examples that run offline (the sample pictures cat, coffee, astronaut,
rocket; the built-in datasets digits and shapes), generated from the tool (``examples``). Progress goes to
stderr: stage lines (``convscope.progress.stage``) for loading the model and running the tool, bars for loops;
every file written is printed as ``wrote /absolute/path``.

Every ``ConvscopeError`` is one line on stderr and exit status 2; Ctrl-C is exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import ConvscopeError, ModelError, OptionError, TargetError
from .options import OptionSpec, parse_text
from .progress import stage, stage_lines
from .registry import FAMILIES, TAKES, Tool, get, tools

DEFAULT_MODEL = "efficientnet_lite0"
HAND_WRITTEN = {  # command -> (arguments, one line for the listing)
    "explain": ("METHOD IMAGE", "run any attribution method by name; its options as --set key=value"),
    "tools": ("[NAME]", "every tool by family, or one in full: options, ranges, examples (alias: methods)"),
    "report": ("", "one HTML report: predictions, every explanation, trust, features"),
    "serve": ("", "the local web app: explain pictures and browse a model's layers in a browser"),
}
OPTION_PREFIX = "option."  # argparse dests of tool options (never clash with the common flags)
COMMON_FLAGS = {"-h", "--help", "--target", "--layer", "--set", "--model", "--models", "--weights", "--download", "--arch",
                "--device", "--out", "--json", "--max-forwards",
                "--allow-pickle", "--mean", "--std", "--class-names", "--model-size",
                "--box", "--box-label", "--task", "--seg-class", "--mask",
                }  # and the exports' flags (below): a tool option never takes these


# -- output beyond render.save, chosen by the result's kind ------------------------------------------------------
@dataclass(frozen=True)
class Export:
    """An extra export the command line offers for results of one kind (a flag taking a folder)."""

    flag: str
    help: str
    write: Callable[[Any, Path], Path]


def _projector(result: Any, folder: Path) -> Path:
    from .features.projector import export_projector

    export_projector(result, folder)
    return folder


EXPORTS = {
    "embedding": Export("--projector", "also write TensorBoard projector files (tensors, metadata, sprite) into this "
                                       "folder (view: tensorboard --logdir FOLDER)", _projector),
}
COMMON_FLAGS |= {export.flag for export in EXPORTS.values()}


def _textual(kind: str | None) -> bool:
    """Whether results of ``kind`` are words (a table): written to a file only when --out asks for one."""
    from .render import dispatch

    try:
        return dispatch.drawer_of(kind or "").textual
    except ConvscopeError:  # a kind render does not know (yet): save what it draws
        return False


# -- the parser ------------------------------------------------------------------------------------------------
def _width() -> int:
    return max(60, min(shutil.get_terminal_size((100, 24)).columns, 100) - 2)


def _wrap(text: str, indent: str = "", first: str | None = None) -> str:
    return textwrap.fill(" ".join(text.split()), _width(), initial_indent=indent if first is None else first,
                         subsequent_indent=indent)


def _escape(text: str) -> str:
    return text.replace("%", "%%")  # argparse %-formats argument help




def _cli_words(text: str, flag: str | None = None) -> str:
    """Python's words as the command line spells them: None -> none; True / False -> the flag and its --no- form
    (``flag``), or true / false."""
    if flag is not None:
        text = re.sub(r"\bTrue\b", flag, text)
        text = re.sub(r"\bFalse\b", "--no-" + flag[2:], text)
    text = re.sub(r"\bTrue\b", "true", re.sub(r"\bFalse\b", "false", text))
    return re.sub(r"\bNone\b", "none", text)


def command_name(tool: Tool) -> str:
    """The subcommand of ``tool``: its name with hyphens (``class_image`` -> ``class-image``)."""
    return tool.name.replace("_", "-")


def _aliases(tool: Tool) -> list[str]:
    names = [tool.name, *tool.aliases, *(a.replace("_", "-") for a in tool.aliases)]
    return [n for n in dict.fromkeys(names) if n != command_name(tool)]


def _flag(name: str) -> str:
    return f"-{name}" if len(name) == 1 else f"--{name.replace('_', '-')}"


def _shown(value: Any) -> str:
    """A value as a command line spells it: none, true, 32,16."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(_shown(v) for v in value)
    return str(value)


METAVARS = {"int": "N", "float": "X", "str": "TEXT", "pair": "A,B", "list": "A,B,...", "bool": "true|false", "dict": "JSON"}


def _metavar(spec: OptionSpec) -> str:
    """N, X, TEXT, A,B, {a,b} or a mix of them (``{blur,zeros}|X``)."""
    kinds = spec.kind.split("|")
    if "list" in kinds and "str" in kinds:  # "gradcam,saliency": a list read from text
        kinds.remove("str")
    words = ["{" + ",".join(map(str, spec.choices)) + "}" if kind == "choice" else METAVARS.get(kind, "VALUE")
             for kind in kinds]
    return "|".join(dict.fromkeys(words))


def _facts(spec: OptionSpec, choices: bool = True) -> list[str]:
    """Default, choices and range of an option, as words."""
    facts = ["required" if spec.required else f"default: {_shown(spec.default)}"]
    if spec.choices and choices:
        facts.append("one of " + ", ".join(map(str, spec.choices)))
    if spec.range:
        facts.append(f"range {spec.range}")
    return facts


def _option_help(spec: OptionSpec, flag: str | None = None) -> str:
    shown_in_metavar = spec.kind == "choice" and not spec.required
    words = _cli_words(spec.help or spec.name.replace("_", " "), flag if _is_flag_bool(spec) else None)
    return _escape(f"{words} ({'; '.join(_facts(spec, choices=not shown_in_metavar))})")


def _is_flag_bool(spec: OptionSpec) -> bool:
    return spec.kind == "bool" and not spec.nullable


def _special_required(tool: Tool, name: str) -> bool:
    """Whether the tool's ``target`` / ``layer`` parameter has no default (then it is a positional argument)."""
    param = inspect.signature(tool.impl).parameters.get(name)
    return param is not None and param.default is param.empty


def _offers_layer(tool: Tool) -> bool:
    param = inspect.signature(tool.impl).parameters.get("layer")
    return param is not None and param.annotation not in (None, "None", type(None))  # `layer: None = None`: takes none


INPUTS = {  # takes -> (metavar, nargs, help)
    "images": ("IMAGE", "+", "pictures: paths or sample names ({samples}), preprocessed for the model"),
    "image": ("IMAGE", None, "a picture: a path or a sample name ({samples})"),
    "models": ("IMAGE", "+", "pictures: paths or sample names ({samples}); each model preprocesses them its own way"),
    "dataset": ("DATASET", None, "a folder of images (one sub-folder per label), a file list (.parquet or .csv with a path "
                                 "column, .txt with a path per line), a built-in dataset: {datasets}; for audit also a folder "
                                 "written by explain-dataset"),
}


def _input_help(takes: str) -> str:
    from .data import DATASETS
    from .images import SAMPLE_IMAGES

    return INPUTS[takes][2].format(samples=", ".join(SAMPLE_IMAGES), datasets=", ".join(DATASETS))


SAMPLE_CLASS = ("281", "tabby")  # the sample cat photo's ImageNet class, for examples
PRETRAINED_EXAMPLE = ("resnet50", "ResNet-50")  # a torchvision classifier for the --download examples
OUT_FOLDER = "results/"


def _example_target(tool: Tool) -> bool:
    """Whether an example can add ``--target 281``: the tool has the flag and runs on an ImageNet model."""
    return tool.uses_target and not _special_required(tool, "target") and tool.takes in ("images", "image", "model")


def example(tool: Tool, *, pictures: Sequence[str] = ("cat",), target: bool = False, models: str | None = None,
            extra: Sequence[str] = ()) -> str:
    """A command line that runs ``tool`` on offline inputs, with its quick options (``target``: add ``--target 281``
    where it fits; ``extra``: more words at the end)."""
    words = ["convscope", command_name(tool)]
    if tool.takes in ("images", "models"):
        words += pictures
    elif tool.takes == "image":
        words.append(pictures[0])
    elif tool.takes == "dataset":
        words += ["shapes", "--model", "shapes_biased"]
    specs = {spec.name: spec for spec in tool.option_specs()}
    for spec in specs.values():
        if spec.required:  # its quick value (a tool with a required option has one), an example, or its name
            examples = [tool.quick[spec.name]] if spec.name in tool.quick else spec.schema.get("examples") or []
            words.append(_shown(examples[0]) if examples else spec.name.upper())
    if tool.uses_target and _special_required(tool, "target"):
        words.append(SAMPLE_CLASS[0])
    elif target and _example_target(tool):
        words += ["--target", SAMPLE_CLASS[0]]
    if tool.takes == "models":
        words += ["--models", models or f"{DEFAULT_MODEL},digits_cnn"]
    for name, value in tool.quick.items():
        spec = specs.get(name)
        if spec is None or spec.required:
            continue
        if _is_flag_bool(spec):
            words.append(_flag(name) if value else f"--no-{name.replace('_', '-')}")
        else:
            words += [_flag(name), _shown(value)]
    return " ".join([*words, *extra])


WHERE = {  # takes -> what the examples run on, in words
    "images": "the sample cat photo",
    "image": "the sample cat photo",
    "model": f"the bundled {DEFAULT_MODEL}",
    "models": f"the sample cat photo with {DEFAULT_MODEL} and the digits CNN side by side",
    "dataset": "the built-in shapes dataset with the model that learned its backgrounds",
}


def examples(tool: Tool) -> list[tuple[str, str]]:
    """(what it does, command line) for the --help epilog, generated from the tool: the quick one on offline inputs,
    another output (a folder, or JSON for a table), and for tools on pictures or a model one with torchvision's
    pretrained weights (``--download`` fetches them once)."""
    targeted = _example_target(tool)
    textual = _textual(tool.returns)
    pictured = tool.takes in ("images", "image", "models")
    default_out = f"{'cat_' if pictured else ''}{tool.name}.png"
    words = f"{tool.name} on {WHERE[tool.takes]}"
    if targeted or (tool.uses_target and _special_required(tool, "target")):
        words += f" for class {SAMPLE_CLASS[0]} ({SAMPLE_CLASS[1]})"
    if tool.quick:
        words += ", quick settings"
    found = [(f"{words}; {'prints the table' if textual else 'writes ' + default_out}", example(tool, target=targeted))]
    if textual:
        found.append(("the same as JSON, for scripts", example(tool, target=targeted, extra=["--json"])))
    else:
        pictures = ("cat", "coffee") if tool.takes in ("images", "models") else ("cat",)
        two = "cat and coffee in one figure, " if len(pictures) == 2 else ""
        found.append((f"{two}into the folder {OUT_FOLDER} (--out NAME.pdf, .svg or .html: another format)",
                      example(tool, pictures=pictures, extra=["--out", OUT_FOLDER])))
    name, title = PRETRAINED_EXAMPLE
    fetched = "--download fetches its weights once into the torch cache"
    if tool.takes == "models":
        found.append((f"{DEFAULT_MODEL} next to torchvision's pretrained {title} ({fetched})",
                      example(tool, models=f"{DEFAULT_MODEL},{name}", extra=["--weights", "DEFAULT", "--download"])))
    elif pictured or tool.takes == "model":
        layer = tool.group == "cam" and _offers_layer(tool) and not _special_required(tool, "layer")
        found.append((f"torchvision's pretrained {title}" + (" at its last block, layer4" if layer else "") + f" ({fetched})",
                      example(tool, target=targeted, extra=["--model", name, "--weights", "DEFAULT", "--download",
                                                            *(["--layer", "layer4"] if layer else [])])))
    return found


def _examples_text(found: Sequence[tuple[str, str]]) -> str:
    """The ``examples:`` block of an epilog: each command line after its comment (both can be pasted into a shell)."""
    lines = ["examples:"]
    for words, command in found:
        lines += [_wrap(words, "  # "), f"  {command}"]
    return "\n".join(lines)


def _takes_words(tool: Tool) -> str:
    if tool.takes == "model":
        return "the model only (--model)"
    metavar, nargs, _ = INPUTS[tool.takes]
    shown = f"{metavar}..." if nargs == "+" else metavar
    extra = " and the models (--models a,b)" if tool.takes == "models" else " and the model (--model)"
    return f"{shown}{extra}"


def _returns_words(tool: Tool) -> str:
    from .result import RESULT_KINDS

    meaning = RESULT_KINDS.get(tool.returns)
    if meaning:
        return f"{tool.returns} — {re.sub(r'^[(][^)]*[)] ', '', meaning)}"
    return f"{tool.returns} — " + ("printed as a table (--out writes it as a picture too)" if _textual(tool.returns)
                                   else "its summary printed, its figure written (--out)")


def describe(tool: Tool) -> str:
    """A tool's --help description: its summary in plain words, paper, what it takes and returns (the examples are
    the epilog)."""
    return "\n".join([
        _wrap(tool.description), "",
        _wrap(tool.paper, " " * 9, "paper:   "),
        _wrap(_takes_words(tool), " " * 9, "takes:   "),
        _wrap(_returns_words(tool), " " * 9, "returns: "),
    ])


MODEL_NAMES = f"{DEFAULT_MODEL} (bundled), digits_cnn, shapes_biased, shapes_balanced, or a torchvision classifier such as resnet50"
WEIGHTS_HELP = ("which weights: default (pretrained: bundled, or torchvision's from the torch cache; add --download to fetch "
                "them once), none (random, reproducible), a torchvision weights name (IMAGENET1K_V2) or a weights file "
                "(default: default)")
DOWNLOAD_HELP = ("let torchvision download pretrained weights that are not in the torch cache yet (~/.cache/torch); "
                 "without it nothing is downloaded")


def _add_weight_args(group: Any, file_words: str = "a state-dict / safetensors model file") -> None:
    group.add_argument("--weights", default="default", metavar="WEIGHTS", help=WEIGHTS_HELP)
    group.add_argument("--download", action="store_true", help=DOWNLOAD_HELP)
    group.add_argument("--arch", metavar="NAME", help=f"the architecture (a model name) to load {file_words} into")
    group.add_argument("--device", help="where to run: cpu, cuda, cuda:1, mps ... (default: cpu)")
    group.add_argument("--allow-pickle", action="store_true",
                       help="trust a model file saved whole with torch.save(model) (or a .keras file with Python code): "
                            "loading it runs code from the file")
    group.add_argument("--mean", metavar="M[,M,M]", help="the model's input normalization: per-channel mean of [0, 1] pixels, "
                       "or none (default: what the model brings; ImageNet's for a 3-channel model file)")
    group.add_argument("--std", metavar="S[,S,S]", help="per-channel standard deviation to go with --mean, or none")
    group.add_argument("--model-size", metavar="H[,W]", help="the picture size the model takes, in pixels (default: what "
                       "the model brings; 224 for a model file that does not say)")
    group.add_argument("--class-names", metavar="FILE", help="a text file with the model's class names, one per line in "
                       "output order (default: what the model brings, else 'class 7')")


def _add_model_args(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    group = parser.add_argument_group("model")
    if several:
        group.add_argument("--models", metavar="A,B",
                           help=f"the models to compare, comma-separated names or model files: {MODEL_NAMES}; "
                                f"--weights, --download, --arch and --device apply to each (default: {DEFAULT_MODEL})")
    else:
        group.add_argument("--model", default=DEFAULT_MODEL, metavar="NAME_OR_FILE",
                           help=f"the model: {MODEL_NAMES}; or a model file (TorchScript, .pt2, .onnx, .keras, a state dict "
                                f"with --arch, or a whole pickled model with --allow-pickle) (default: {DEFAULT_MODEL})")
    _add_weight_args(group)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _add_output_args(parser: argparse.ArgumentParser, default_out: str, returns: str | None, *, picture: bool = True) -> None:
    group = parser.add_argument_group("output")
    if picture:
        group.add_argument("--out", metavar="PATH",
                           help=f"where to write the result; the format follows the suffix (.png .jpg .webp .tif .pdf .svg "
                                f".html); a folder: the default name in it (default: {default_out})")
    group.add_argument("--json", action="store_true", help="print a JSON summary instead of the text (the path goes to stderr)")
    group.add_argument("--max-forwards", type=_positive_int, metavar="N",
                       help="refuse the call if it needs more than N forward passes (default: the library's limit, "
                            "CONVSCOPE_MAX_FORWARDS or 20,000)")
    export = EXPORTS.get(returns or "")
    if export is not None:
        group.add_argument(export.flag, metavar="FOLDER", dest="export", help=export.help)


def _add_target_layer(parser: argparse.ArgumentParser, tool: Tool | None) -> None:
    if tool is None or (tool.uses_target and not _special_required(tool, "target")):
        parser.add_argument("--target", metavar="CLASS",
                            help="the class to explain: an index (281), one per picture (281,285), or words the tool "
                                 "reads (label, top3) (default: the top-1 class)")
        parser.add_argument("--box", metavar="X1,Y1,X2,Y2",
                            help="a detector: explain the detection matching this box, in input pixels (IoU >= 0.5)")
        parser.add_argument("--box-label", metavar="K", help="with --box: only detections of label K")
        parser.add_argument("--task", choices=("classification", "segmentation"),
                            help="segmentation: explain a segmentation model's class (--seg-class) over its pixels")
        parser.add_argument("--seg-class", metavar="K",
                            help="a segmentation model: explain class K over the pixels predicted as K (or --mask)")
        parser.add_argument("--mask", metavar="PNG",
                            help="with --seg-class: the pixels to explain, a black-and-white picture the size of the model's output")
    if tool is None or (_offers_layer(tool) and not _special_required(tool, "layer")):
        parser.add_argument("--layer", metavar="NAME",
                            help="a dotted layer name (layer4.1.conv2), several separated by commas (default: the tool's choice)")


def _add_tool(sub: Any, tool: Tool, taken: set[str]) -> None:
    name = command_name(tool)
    aliases = _aliases(tool)
    for word in (name, *aliases):
        if word in taken:
            raise ValueError(f"the command line already has a command {word!r}; rename tool {tool.name!r} or its alias")
        taken.add(word)
    parser = sub.add_parser(name, aliases=aliases, prog=f"convscope {name}", description=describe(tool), allow_abbrev=False,
                            epilog=_examples_text(examples(tool)),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    if tool.takes != "model":
        metavar, nargs, _ = INPUTS[tool.takes]
        parser.add_argument("inputs", metavar=metavar, nargs=nargs, help=_escape(_input_help(tool.takes)))
    specs = tool.option_specs()
    for spec in specs:
        if spec.required:
            parser.add_argument(OPTION_PREFIX + spec.name, metavar=spec.name.upper(), help=_option_help(spec))
    if tool.uses_target and _special_required(tool, "target"):
        parser.add_argument("target", metavar="CLASS", help="the class: an index (281) or one per picture (281,285)")
    if tool.uses_layer and _offers_layer(tool) and _special_required(tool, "layer"):
        parser.add_argument("layer", metavar="LAYER", help="a dotted layer name, or several separated by commas")
    _add_target_layer(parser, tool)
    offered = [spec for spec in specs if not spec.required]
    if offered:
        group = parser.add_argument_group(f"{tool.name} options")
        for spec in offered:
            flag = _flag(spec.name)
            own_folder = spec.name == "out" and _writes_folder(tool)  # the tool's own output folder is its --out
            if flag in COMMON_FLAGS and not own_folder:  # an option named like a common flag (out, model) gets a longer flag
                flag = f"--option-{spec.name.replace('_', '-')}"
            if _is_flag_bool(spec):
                group.add_argument(flag, dest=OPTION_PREFIX + spec.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=_option_help(spec, flag))
            else:
                group.add_argument(flag, dest=OPTION_PREFIX + spec.name, metavar=_metavar(spec), default=argparse.SUPPRESS,
                                   help=_option_help(spec))
    if _passes_options_on(tool):
        parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                            help=f"an option {tool.name} passes on to the method it runs, e.g. --set steps=16; repeatable")
    _add_model_args(parser, several=tool.takes == "models")
    default_out = f"<first image>_{tool.name}.png" if tool.takes in ("images", "image", "models") else f"{tool.name}.png"
    if _textual(tool.returns):
        default_out = "none: the text only"
    _add_output_args(parser, default_out, tool.returns, picture=not _writes_folder(tool))
    parser.set_defaults(func=_run_tool, tool=tool)


def _writes_folder(tool: Tool) -> bool:
    """A tool with an ``out`` option writes its own output (a folder): ``--out`` is that option, no picture is saved."""
    return any(spec.name == "out" and not spec.required for spec in tool.option_specs())


def _passes_options_on(tool: Tool) -> bool:
    """Whether the tool takes ``**options`` for something it runs (audit's method, robustness's map)."""
    return tool.options_model.model_config.get("extra") == "allow"


def _listing() -> str:
    """The commands grouped by family, one line each (the main --help)."""
    width = _width()
    lines = []
    for family, words in FAMILIES.items():
        members = tools(family)
        if not members:
            continue
        lines.append(f"{family} — {words}:")
        for tool in members:
            aliases = [a for a in tool.aliases if a.replace("_", "-") != command_name(tool)]
            head = command_name(tool) + (f" ({', '.join(aliases)})" if aliases else "")
            lines.append(_line(head, tool.description, width))
        lines.append("")
    lines.append("other commands:")
    for name, (arguments, words) in HAND_WRITTEN.items():
        lines.append(_line(f"{name} {arguments}".strip(), words, width))
    lines += ["", _examples_text(MAIN_EXAMPLES), "",
              "`convscope COMMAND --help` describes a command and ends with examples; `convscope tools NAME` a tool's "
              "options in full."]
    return "\n".join(lines)


MAIN_EXAMPLES = [
    (f"Grad-CAM: where the model sees class {SAMPLE_CLASS[0]} ({SAMPLE_CLASS[1]}) in the sample cat photo; writes "
     "cat_gradcam.png", f"convscope gradcam cat --target {SAMPLE_CLASS[0]}"),
    ("the top-5 classes of your photos (paths) or of the samples cat, coffee, astronaut, rocket", "convscope predict cat coffee"),
    ("one HTML report with every tool, quick settings: convscope-report/index.html", "convscope report --quick"),
]
HAND_WRITTEN_EXAMPLES = {
    "explain": [
        (f"integrated gradients for class {SAMPLE_CLASS[0]} ({SAMPLE_CLASS[1]}) with 16 steps; writes cat_integrated_gradients.png",
         f"convscope explain integrated_gradients cat --target {SAMPLE_CLASS[0]} --set steps=16"),
        (f"occlusion with a window of a quarter of the picture, into the folder {OUT_FOLDER}",
         f"convscope explain occlusion coffee --set window=0.25 --out {OUT_FOLDER}"),
    ],
    "tools": [
        ("every tool by family, one line each", "convscope tools"),
        ("one tool in full: paper, inputs, result, every option with its default and range, examples",
         "convscope tools integrated_gradients"),
    ],
    "report": [
        ("every section with quick settings, on the sample cat photo: convscope-report/index.html", "convscope report --quick"),
        ("your pictures (paths or sample names), the attribution part only, into the folder my-report",
         "convscope report --image coffee --image astronaut --sections attribution --out my-report"),
        (f"torchvision's pretrained {PRETRAINED_EXAMPLE[1]} (--download fetches its weights once into the torch cache)",
         f"convscope report --quick --model {PRETRAINED_EXAMPLE[0]} --weights DEFAULT --download"),
    ],
    "serve": [
        (f"the app on http://127.0.0.1:8000/ with {DEFAULT_MODEL}", "convscope serve"),
        ("two models to choose from, on any free port, and open the browser",
         f"convscope serve --model {DEFAULT_MODEL} --model digits_cnn --port 0 --open"),
        ("offer a folder of your pictures as the dataset 'data' (the embedding map, ...)",
         f"convscope serve --model {DEFAULT_MODEL} --data photos/"),
    ],
}


def _line(head: str, text: str, width: int) -> str:
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]  # the first sentence ("et al. 2018" stays)
    room = width - 26
    if len(first) > room:
        first = first[:room - 1].rstrip() + "…"
    return f"  {head:22s}  {first}" if len(head) <= 22 else f"  {head}\n  {'':22s}  {first}"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand per registered tool, and the hand-written ones."""
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="convscope", usage="convscope [-h] [--version] COMMAND ...", formatter_class=raw, epilog=_listing(),
        description=_wrap("See inside convolutional neural networks: which pixels drove a decision, which explanation to "
                          "believe, what the layers learned, and how a model fails. Every tool is a command; pictures are "
                          "your files or the samples cat, coffee, astronaut, rocket."))
    parser.add_argument("--version", action="version", version=f"convscope {__version__}", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)  # listed in the epilog
    taken = set(HAND_WRITTEN) | {"methods"}

    def hand_written(name: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
        return sub.add_parser(name, prog=f"convscope {name}", allow_abbrev=False, formatter_class=raw,
                              description=_wrap(description), epilog=_examples_text(HAND_WRITTEN_EXAMPLES[name]), **kwargs)

    p = hand_written("explain", "Run any attribution method by name on pictures and write its map over them (the same as "
                                "`convscope METHOD`, with the method's options as --set key=value; `convscope tools METHOD` "
                                "lists them).")
    p.add_argument("method", help="an attribution method, e.g. gradcam or saliency (`convscope tools` lists them)")
    p.add_argument("inputs", metavar="IMAGE", nargs="+", help=_escape(_input_help("images")))
    _add_target_layer(p, None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --set steps=32 (see `convscope tools METHOD`); repeatable")
    _add_model_args(p)
    _add_output_args(p, "<first image>_<method>.png", None)
    p.set_defaults(func=cmd_explain)

    p = hand_written("tools", "Every tool by family with its summary, or one tool in full: paper, inputs, result, every "
                              "option (default, range, choices, help) and examples.", aliases=["methods"])
    p.add_argument("name", nargs="?", help="a tool to describe in full, e.g. gradcam (default: list every tool)")
    p.set_defaults(func=cmd_tools)

    p = hand_written("report", "Write one self-contained HTML page for a model and pictures: the model card and predictions, "
                               "every explanation method, which to trust, robustness, filters, feature maps and feature "
                               "visualization — one section per tool; progress goes to stderr as it runs.")
    _add_model_args(p)
    group = p.add_argument_group("report")
    group.add_argument("--image", action="append", metavar="IMAGE",
                       help="a picture: a path or a sample name (cat, coffee, astronaut, rocket); repeatable (default: cat)")
    group.add_argument("--out", default="convscope-report", metavar="FOLDER",
                       help="the folder to write index.html into, made if missing (default: convscope-report)")
    group.add_argument("--methods", metavar="A,B",
                       help="the attribution methods to include, comma-separated (default: every attribution method)")
    group.add_argument("--sections", metavar="A,B", help="only these, comma-separated: tools (gradcam, robustness) or parts "
                                                         "(attribution, features) (default: every tool with a report section)")
    group.add_argument("--quick", action="store_true",
                       help="coarse, fast settings (few steps, samples, channels): a preview in seconds")
    group.add_argument("--folder", metavar="FOLDER",
                       help="a folder of images (sub-folders = labels) to map in the model's feature space (t-SNE) and "
                            "audit for shortcuts, or a folder written by explain-dataset (its audit, from the maps there) "
                            "(default: none: those sections are left out)")
    p.set_defaults(func=cmd_report)

    p = hand_written("serve", "The local web app: pick or upload a picture, browse a model's layers, feature maps and "
                              "filters, and run any tool in the browser. It listens on 127.0.0.1 only unless told otherwise.")
    group = p.add_argument_group("model")
    group.add_argument("--model", action="append", metavar="NAME_OR_FILE",
                       help=f"a model: a name ({MODEL_NAMES}) or a model file; repeat for several (default: {DEFAULT_MODEL})")
    _add_weight_args(group, "a state-dict / safetensors --model file")
    group = p.add_argument_group("server")
    group.add_argument("--port", type=int, default=8000, help="the port to listen on (default: 8000; 0: any free port)")
    group.add_argument("--host", default="127.0.0.1",
                       help="the interface to bind (default: 127.0.0.1; any other needs --allow-remote)")
    group.add_argument("--allow-remote", action="store_true",
                       help="allow another --host (e.g. 0.0.0.0) and any Host header: anyone who can reach the port can use the app")
    group.add_argument("--max-upload-mb", type=float, default=20, metavar="MB",
                       help="the largest uploaded picture in MiB (default: 20)")
    group.add_argument("--max-pixels", type=int, default=40_000_000, metavar="N",
                       help="the largest uploaded picture in pixels (default: 40,000,000)")
    group.add_argument("--open", action="store_true", help="open the page in the default web browser")
    group.add_argument("--max-forwards", type=float, metavar="N",
                       help="refuse a job that needs more than N forward passes (default: CONVSCOPE_MAX_FORWARDS or 20,000)")
    group.add_argument("--max-queued", type=int, default=16, metavar="N",
                       help="jobs that may wait per model; more are answered 429 with Retry-After (default: 16)")
    group.add_argument("--data", metavar="DIR",
                       help="a folder of pictures (sub-folders: labels) the page offers as the dataset 'data' for the embedding map and "
                            "other dataset tools (the page itself never sends paths; an audit clusters its explanations, and with "
                            "object masks — a zip with masks/ uploaded in the page — measures the share on the object too)")
    p.set_defaults(func=cmd_serve)

    for tool in tools():
        _add_tool(sub, tool, taken)
    parser.commands = sub.choices  # type: ignore[attr-defined]  # name -> parser, aliases included
    return parser


def _unknown_command(parser: argparse.ArgumentParser, word: str) -> str | None:
    """One line for a first word that is no command (argparse would list all of them), or None."""
    import difflib

    commands = list(getattr(parser, "commands", {}))
    if word.startswith("-") or word in commands:
        return None
    spelled = [c for c in commands if "_" not in c]  # class-image, not also class_image
    close = difflib.get_close_matches(word.replace("_", "-"), spelled, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    return f"unknown command {word!r}{hint} (`convscope --help` lists them)"


# -- running a tool --------------------------------------------------------------------------------------------
def _parse_value(text: str, spec: OptionSpec) -> Any:
    """Command-line text as the option's value (its JSON schema says how); JSON for object options."""
    value = parse_text(text, spec.schema)
    if value == text and text.lstrip()[:1] in ("{", "[") and "dict" in spec.kind.split("|"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise OptionError(f"option {spec.name}={text!r} is not valid JSON: {exc.msg} at character {exc.pos}") from None
    return value


LOOSE = {"anyOf": [{"type": "integer"}, {"type": "number"}, {"type": "boolean"}, {"type": "string"}]}  # --set k=v passed on


def _tool_options(args: argparse.Namespace, tool: Tool) -> dict[str, Any]:
    given = vars(args)
    options: dict[str, Any] = {}
    for spec in tool.option_specs():
        key = OPTION_PREFIX + spec.name
        if key in given:
            raw = given[key]
            options[spec.name] = raw if isinstance(raw, bool) else _parse_value(raw, spec)
    return options


def _set_options(tool: Tool, pairs: Sequence[str]) -> dict[str, Any]:
    """``--set steps=32 --set baseline=blur`` -> the tool's options, each read against its schema."""
    specs = {spec.name: spec for spec in tool.option_specs()}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise OptionError(f"--set expects key=value, got {pair!r}")
        if key in specs:
            options[key] = _parse_value(text, specs[key])
        elif key in tool.options_model.model_fields:
            raise OptionError(f"{tool.name}: option {key} is set from Python only (it takes an object, not text)")
        elif _passes_options_on(tool):
            options[key] = parse_text(text, LOOSE)  # checked by the method that receives it
        else:
            options[key] = text  # the options model names the unknown option and suggests close ones
    return options


def _target(text: str | None) -> Any:
    """'281' -> 281, '281,285' -> [281, 285]; other text ('label', 'top3') is passed on for the tool to read."""
    if text is None:
        return None
    parts = [part.strip() for part in text.split(",")]
    if parts and all(re.fullmatch(r"[+-]?\d+", part) for part in parts):
        numbers = [int(part) for part in parts]
        return numbers[0] if len(numbers) == 1 else numbers
    return text


def _whole(text: str, flag: str) -> int:
    if not re.fullmatch(r"\s*\d+\s*", text):
        raise TargetError(f"{flag} takes a class index (a whole number >= 0), got {text!r}")
    return int(text)


def _target_from(args: argparse.Namespace) -> Any:
    """The target the flags give — parsed in one place: --target (classes), --box X1,Y1,X2,Y2 [--box-label K]
    (cs.targets.box), --task segmentation --seg-class K [--mask PNG] (cs.targets.segmentation); None: the default."""
    import numpy as np
    import torch

    from . import targets
    from .images import load_image

    flags = {"--target": getattr(args, "target", None), "--box": getattr(args, "box", None),
             "--seg-class": getattr(args, "seg_class", None)}
    given = [flag for flag, value in flags.items() if value is not None]
    if len(given) > 1:
        raise TargetError(f"give one of {' or '.join(given)}: they name different targets")
    label, mask, task = getattr(args, "box_label", None), getattr(args, "mask", None), getattr(args, "task", None)
    if label is not None and flags["--box"] is None:
        raise TargetError("--box-label goes with --box X1,Y1,X2,Y2")
    if (mask is not None or task == "segmentation") and flags["--seg-class"] is None:
        raise TargetError("a segmentation target needs --seg-class K (the class to explain)")
    if flags["--box"] is not None:
        parts = flags["--box"].split(",")
        try:
            box = [float(part) for part in parts]
        except ValueError:
            box = []
        if len(box) != 4:
            raise TargetError(f"--box takes four numbers X1,Y1,X2,Y2 in input pixels, got {flags['--box']!r}")
        return targets.box(box, label=None if label is None else _whole(label, "--box-label"))
    if flags["--seg-class"] is not None:
        region = None
        if mask is not None:
            region = torch.from_numpy(np.asarray(load_image(mask).convert("L")) > 127)
        return targets.segmentation(_whole(flags["--seg-class"], "--seg-class"), mask=region)
    return _target(flags["--target"])


def _layer(text: str | None) -> Any:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names[0] if len(names) == 1 else names


def _load(args: argparse.Namespace, name: str | None = None) -> Any:
    """The model, loaded under a stage line (``loading resnet50…``); weights missing from the torch cache are one line
    that says to add --download."""
    from .models import MissingWeightsError, load_model

    name = name or args.model
    try:
        with stage(f"loading {name}"):
            if getattr(args, "allow_pickle", False) and Path(str(name)).is_file():
                print(f"convscope: warning: --allow-pickle: loading {name} runs code from the file; use it only with files you "
                      f"trust", file=sys.stderr)
            return load_model(name, weights=args.weights, arch=args.arch, device=args.device, download=args.download,
                              allow_pickle=getattr(args, "allow_pickle", False), mean=getattr(args, "mean", None),
                              std=getattr(args, "std", None), labels=getattr(args, "class_names", None),
                              input_size=getattr(args, "model_size", None))
    except MissingWeightsError as exc:
        size = f" ({exc.size_mb:,.0f} MB)" if exc.size_mb else ""
        raise ModelError(f"the pretrained {exc.model} weights ({exc.weights}) are not in the torch cache ({exc.checkpoint}); "
                         f"add --download to let torchvision fetch them{size} once, or --weights none for random "
                         f"weights") from None


def _pictures(names: Sequence[str]) -> list[tuple[str, Any]]:
    from .images import named_images

    return named_images(list(names))


def _dataset(text: str, model: Any) -> tuple[Any, dict[str, Any]]:
    """A folder (passed as it is) or a built-in dataset's name -> (dataset, the keyword arguments it brings)."""
    from .data import named_dataset

    if Path(text).expanduser().exists():
        return text, {}
    return named_dataset(text, model)


def _inputs(args: argparse.Namespace, tool: Tool) -> tuple[tuple[Any, ...], dict[str, Any], str | None]:
    """The tool's inputs from the command line: (positional inputs, extra keyword arguments, the first picture's stem)."""
    if tool.takes == "models":
        names = [name.strip() for name in (args.models or DEFAULT_MODEL).split(",") if name.strip()]
        models = {(Path(name).stem if Path(name).exists() else name): _load(args, name) for name in names}
        named = _pictures(args.inputs)
        return (models, dict(named)), {}, Path(named[0][0]).stem
    model = _load(args)
    if tool.takes == "model":
        return (model,), {}, None
    if tool.takes == "dataset":
        dataset, brought = _dataset(args.inputs, model)
        accepted = inspect.signature(tool.impl).parameters
        return (model, dataset), {k: v for k, v in brought.items() if k in accepted}, None
    named = _pictures(args.inputs if isinstance(args.inputs, list) else [args.inputs])
    stem = Path(named[0][0]).stem
    if tool.takes == "image":
        return (model, named[0][1]), {}, stem
    return (model, model.preprocess([picture for _, picture in named])), {}, stem


def _out_path(args: argparse.Namespace, tool: Tool, stem: str | None, result: Any) -> Path | None:
    default = f"{stem}_{tool.name}.png" if stem else f"{tool.name}.png"
    if _writes_folder(tool):
        return None  # the tool wrote its own folder (its --out)
    if args.out is None:
        return None if _textual(getattr(result, "kind", None)) else Path(default)
    out = Path(args.out).expanduser()
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        return out / default
    return out


def _check_suffix(args: argparse.Namespace) -> None:
    """An --out whose format cannot be told fails before any work."""
    from .render import dispatch

    if getattr(args, "out", None) is None or args.out.endswith(("/", os.sep)) or Path(args.out).expanduser().is_dir():
        return
    formats = [*dispatch.RASTER_FORMATS, *dispatch.VECTOR_FORMATS, *dispatch.PAGE_FORMATS]
    if Path(args.out).suffix.lower() not in formats:
        known = " ".join(formats)
        raise ConvscopeError(f"--out {args.out}: cannot tell the format from the suffix; use one of {known}, or a folder")


def _limits(args: argparse.Namespace) -> contextlib.AbstractContextManager[Any]:
    from .engine import limits

    return limits(max_forwards=args.max_forwards) if args.max_forwards else contextlib.nullcontext()


def _run_tool(args: argparse.Namespace) -> int:
    tool: Tool = args.tool
    return _execute(args, tool, {**_set_options(tool, getattr(args, "set", [])), **_tool_options(args, tool)})


def _execute(args: argparse.Namespace, tool: Tool, options: dict[str, Any]) -> int:
    tool.validate(options)  # before the model and the pictures load: one line naming the option and its range
    _check_suffix(args)
    special: dict[str, Any] = {}
    target = _target_from(args)
    if target is not None:
        special["target"] = target
    if getattr(args, "layer", None) is not None:
        special["layer"] = _layer(args.layer)
    inputs, extra, stem = _inputs(args, tool)
    with _limits(args), stage(tool.name):
        result = tool.fn(*inputs, **special, **{**extra, **options})  # flags win over what a dataset brings
    _show(args, tool, result, stem)
    return 0


def _show(args: argparse.Namespace, tool: Tool, result: Any, stem: str | None) -> None:
    """Write the result (render.save), print its words (or JSON), then ``wrote /absolute/path`` for every file
    written (on stderr with --json, so stdout stays JSON)."""
    from . import render

    written = []
    out = _out_path(args, tool, stem, result)
    if out is not None:
        written.append(render.save(result, out))
    folder = getattr(args, "export", None)
    if folder:
        written.append(EXPORTS[tool.returns].write(result, Path(folder).expanduser()))
    if args.json:
        print(json.dumps(json_summary(tool, result), indent=2, default=_jsonable, ensure_ascii=False))
    else:
        print(render.text(result))
    for path in written:
        print(f"wrote {Path(path).resolve()}", file=sys.stderr if args.json else sys.stdout)


def json_summary(tool: Tool, result: Any) -> Any:
    """The result's own summary for JSON (``as_dict()``, ``summary()`` or ``records()``), a table's cells, or
    its caption."""
    from . import render

    for name in ("as_dict", "summary", "records"):
        method = getattr(result, name, None)
        if callable(method):
            return method()
    if isinstance(result, str) and hasattr(result, "columns") and hasattr(result, "rows"):
        return {"title": getattr(result, "title", ""), "columns": list(result.columns), "rows": [list(r) for r in result.rows]}
    return {"tool": tool.name, "kind": getattr(result, "kind", tool.returns), "caption": render.caption(result)}


def _jsonable(value: Any) -> Any:
    import dataclasses

    if hasattr(value, "tolist"):  # tensors, numpy arrays and scalars
        return value.tolist()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=str)
    return str(value)


# -- the hand-written commands ---------------------------------------------------------------------------------
def cmd_explain(args: argparse.Namespace) -> int:
    from .registry import methods

    tool = get(args.method)
    if tool.family != "attribution":
        raise ConvscopeError(f"{args.method!r} is a {tool.family} tool, not an attribution method; run `convscope "
                             f"{command_name(tool)} ...` (attribution methods: {', '.join(t.name for t in methods())})")
    return _execute(args, tool, _set_options(tool, args.set))


def cmd_tools(args: argparse.Namespace) -> int:
    if args.name:
        print(describe_tool(get(args.name)))
        return 0
    width = _width()
    for family, words in FAMILIES.items():
        members = tools(family)
        if not members:
            continue
        print(f"{family} — {words}")
        for tool in members:
            print(_line(tool.name, tool.description, width))
        print()
    print("`convscope tools NAME` describes a tool's options; `convscope NAME --help` its command line.")
    return 0


def describe_tool(tool: Tool) -> str:
    """Everything about a tool, for `convscope tools NAME`."""
    group = f", {tool.group}" if tool.group else ""
    words = [command_name(tool), *(a for a in _aliases(tool) if a != tool.name)]
    lines = [f"{tool.name} — {tool.family}{group}", _wrap(tool.summary), "",
             f"command: convscope {' | '.join(words)}",
             _wrap(tool.paper, " " * 9, "paper:   "),
             _wrap(f"{_takes_words(tool)} — {TAKES[tool.takes]}", " " * 9, "takes:   "),
             _wrap(_returns_words(tool), " " * 9, "returns: ")]
    special = [word for word, used in (("--target", tool.uses_target), ("--layer", _offers_layer(tool))) if used]
    if special:
        lines.append(f"also:    {', '.join(special)}" + ("; reports progress and can be cancelled" if tool.loops else ""))
    specs = tool.option_specs()
    lines.append("options:" if specs else "options: none")
    for spec in specs:
        shown = "(required)" if spec.required else f"= {spec.default!r}"
        flag = "positional" if spec.required else (f"{_flag(spec.name)}/--no-{spec.name.replace('_', '-')}"
                                                   if _is_flag_bool(spec) else _flag(spec.name))
        facts = [flag, *(f"one of {', '.join(map(str, spec.choices))}",) * bool(spec.choices),
                 *(f"range {spec.range}",) * bool(spec.range), *(spec.kind,) * (spec.kind != "choice")]
        lines.append(f"  {spec.name} {shown}  ({'; '.join(facts)})")
        if spec.help:
            lines.append(_wrap(spec.help, " " * 6))
    python_only = [name for name in tool.options_model.model_fields if name not in {s.name for s in specs}]
    if python_only:
        lines.append(f"Python only: {', '.join(python_only)}")
    lines += ["", _examples_text(examples(tool))]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    model = _load(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    with stage("report"):
        path = build_report(model, args.image or ["cat"], args.out, methods=methods, sections=sections, folder=args.folder,
                            quick=args.quick)
    print(f"wrote {Path(path).resolve()}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .web import serve

    models = [_load(args, name) for name in args.model or [DEFAULT_MODEL]]
    if args.max_queued < 1:
        raise ConvscopeError(f"--max-queued must be at least 1, got {args.max_queued}")
    serve(models, host=args.host, port=args.port, allow_remote=args.allow_remote,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels, open_browser=args.open,
          max_forwards=args.max_forwards, max_queued=args.max_queued, data=args.data)
    return 0


# -- main ------------------------------------------------------------------------------------------------------
def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


@contextlib.contextmanager
def _quiet_broken_pipe() -> Iterator[None]:
    try:
        yield
    except BrokenPipeError:  # `convscope tools | head`: the reader left; say nothing more
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0, 2 for errors, 130 when interrupted)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        with _quiet_broken_pipe(), stage_lines():  # progress: a status line on a terminal, a line per stage off one
            parser = build_parser()
            if not argv:
                parser.print_help()
                return 0
            unknown = _unknown_command(parser, argv[0])
            if unknown:
                raise ConvscopeError(unknown)
            try:
                args = parser.parse_args(argv)
            except SystemExit as exc:  # --help, --version, or a usage error argparse has printed
                return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
            if getattr(args, "func", None) is None:
                parser.print_help()
                return 0
            return int(args.func(args) or 0)
    except ConvscopeError as exc:
        print(f"convscope: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
