"""The command-line front end, generated from the registry.

Every registered tool is a subcommand (``convscope class-image``), built from what the tool says about
itself: its summary, paper, inputs (``takes``), result kind, and its options model — one flag per offered
option (``--steps N``, ``--relu/--no-relu``), required options as positional arguments. Flag values are
read by ``convscope.options.parse_text`` against the option's JSON schema and checked by the tool's options
model before the model or any picture is loaded, so a bad value is one line naming the option and its range.
A new tool appears here with no edit to this file.

A few commands stay hand-written and thin: ``explain METHOD IMAGE`` (any attribution method by name, options
as ``--set k=v``), ``tools [NAME]`` (alias ``methods``), ``report`` and ``serve``.

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
from .errors import ConvscopeError, OptionError
from .options import OptionSpec, parse_text
from .registry import FAMILIES, TAKES, Tool, get, tools

DEFAULT_MODEL = "efficientnet_lite0"
HAND_WRITTEN = {  # command -> (arguments, one line for the listing)
    "explain": ("METHOD IMAGE", "run any attribution method by name; its options as --set key=value"),
    "tools": ("[NAME]", "every tool by family, or one tool in full: options, ranges, an example (alias: methods)"),
    "report": ("", "one HTML report: predictions, every explanation, trust, features"),
    "serve": ("", "the local web app: explain pictures and browse a model's layers in a browser"),
}
OPTION_PREFIX = "option."  # argparse dests of tool options (never clash with the common flags)
COMMON_FLAGS = {"-h", "--help", "--target", "--layer", "--set", "--model", "--models", "--weights", "--arch", "--device",
                "--out", "--json", "--max-forwards"}  # and the exports' flags (below): a tool option never takes these


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


def _option_help(spec: OptionSpec) -> str:
    shown_in_metavar = spec.kind == "choice" and not spec.required
    return _escape(f"{spec.help or spec.name} ({'; '.join(_facts(spec, choices=not shown_in_metavar))})")


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
    "dataset": ("DATASET", None, "a folder of images (one sub-folder per label) or a built-in dataset: {datasets}"),
}


def _input_help(takes: str) -> str:
    from .data import DATASETS
    from .images import SAMPLE_IMAGES

    return INPUTS[takes][2].format(samples=", ".join(SAMPLE_IMAGES), datasets=", ".join(DATASETS))


def example(tool: Tool) -> str:
    """A command line that runs ``tool`` on offline inputs, with its quick options."""
    words = ["convscope", command_name(tool)]
    if tool.takes in ("images", "image", "models"):
        words.append("cat")
    elif tool.takes == "dataset":
        words += ["shapes", "--model", "shapes_biased"]
    specs = {spec.name: spec for spec in tool.option_specs()}
    for spec in specs.values():
        if spec.required:  # its quick value (a tool with a required option has one), an example, or its name
            examples = [tool.quick[spec.name]] if spec.name in tool.quick else spec.schema.get("examples") or []
            words.append(_shown(examples[0]) if examples else spec.name.upper())
    if tool.uses_target and _special_required(tool, "target"):
        words.append("281")
    if tool.takes == "models":
        words += ["--models", f"{DEFAULT_MODEL},digits_cnn"]
    for name, value in tool.quick.items():
        spec = specs.get(name)
        if spec is None or spec.required:
            continue
        if _is_flag_bool(spec):
            words.append(_flag(name) if value else f"--no-{name.replace('_', '-')}")
        else:
            words += [_flag(name), _shown(value)]
    return " ".join(words)


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
    return f"{tool.returns}: {meaning}" if meaning else tool.returns


def describe(tool: Tool) -> str:
    """A tool's --help description: summary, paper, what it takes and returns, an example."""
    return "\n".join([
        _wrap(tool.summary), "",
        _wrap(tool.paper, " " * 9, "paper:   "),
        _wrap(_takes_words(tool), " " * 9, "takes:   "),
        _wrap(_returns_words(tool), " " * 9, "returns: "),
        "example: " + example(tool),
    ])


def _add_model_args(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    group = parser.add_argument_group("model")
    if several:
        group.add_argument("--models", metavar="A,B",
                           help=f"comma-separated model names or files (default: {DEFAULT_MODEL})")
    else:
        group.add_argument("--model", default=DEFAULT_MODEL,
                           help=f"a model name (efficientnet_lite0, resnet50, vgg16, digits_cnn, ...) or a model file "
                                f"(default: {DEFAULT_MODEL})")
    group.add_argument("--weights", default="default",
                       help="'default' (pretrained, from the local cache), 'none' (random), a weights name or a file")
    group.add_argument("--arch", help="architecture name for a state-dict / safetensors model file")
    group.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cpu)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive")
    return value


def _add_output_args(parser: argparse.ArgumentParser, default_out: str, returns: str | None) -> None:
    group = parser.add_argument_group("output")
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
            if flag in COMMON_FLAGS:  # an option named like a common flag (out, model) gets a longer flag
                flag = f"--option-{spec.name.replace('_', '-')}"
            if _is_flag_bool(spec):
                group.add_argument(flag, dest=OPTION_PREFIX + spec.name, action=argparse.BooleanOptionalAction,
                                   default=argparse.SUPPRESS, help=_option_help(spec))
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
    _add_output_args(parser, default_out, tool.returns)
    parser.set_defaults(func=_run_tool, tool=tool)


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
            lines.append(_line(head, tool.summary, width))
        lines.append("")
    lines.append("other commands:")
    for name, (arguments, words) in HAND_WRITTEN.items():
        lines.append(_line(f"{name} {arguments}".strip(), words, width))
    lines += ["", "`convscope COMMAND --help` describes a command; `convscope tools NAME` a tool's options in full."]
    return "\n".join(lines)


def _line(head: str, text: str, width: int) -> str:
    first = re.split(r"(?<=\.)\s+(?=[A-Z])", text, maxsplit=1)[0]  # the first sentence ("et al. 2018" stays)
    room = width - 26
    if len(first) > room:
        first = first[:room - 1].rstrip() + "…"
    return f"  {head:22s}  {first}" if len(head) <= 22 else f"  {head}\n  {'':22s}  {first}"


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one subcommand per registered tool, and the hand-written ones."""
    parser = argparse.ArgumentParser(prog="convscope", usage="convscope [-h] [--version] COMMAND ...",
                                     description="See inside convolutional neural networks.",
                                     epilog=_listing(), formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"convscope {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS)  # listed in the epilog
    taken = set(HAND_WRITTEN) | {"methods"}

    p = sub.add_parser("explain", prog="convscope explain", allow_abbrev=False,
                       description="Run any attribution method by name on pictures and save the map over them. Its options: "
                                   "--set key=value (see `convscope tools METHOD`).")
    p.add_argument("method", help="an attribution method, e.g. gradcam or saliency (see `convscope tools`)")
    p.add_argument("inputs", metavar="IMAGE", nargs="+", help=_escape(_input_help("images")))
    _add_target_layer(p, None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method option, e.g. --set steps=32 (see `convscope tools METHOD`); repeatable")
    _add_model_args(p)
    _add_output_args(p, "<first image>_<method>.png", None)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("tools", aliases=["methods"], prog="convscope tools",
                       description="Every tool by family with its summary, or one tool in full: paper, inputs, result, every "
                                   "option (default, range, choices, help) and an example.")
    p.add_argument("name", nargs="?", help="a tool to describe in full")
    p.set_defaults(func=cmd_tools)

    p = sub.add_parser("report", prog="convscope report",
                       description="Write one HTML report: predictions, every explanation, trust ranking, filters, feature "
                                   "maps, feature visualization.")
    _add_model_args(p)
    p.add_argument("--image", action="append", help="a picture or a sample name (cat, coffee, astronaut, rocket); repeatable")
    p.add_argument("--out", default="convscope-report", help="output folder (default: convscope-report)")
    p.add_argument("--methods", help="comma-separated method names (default: every attribution method)")
    p.add_argument("--sections", help="comma-separated tools (gradcam, robustness) or parts (attribution, features) "
                                      "to include (default: every tool with a report section)")
    p.add_argument("--quick", action="store_true", help="coarse, fast settings (few steps, samples, channels): a preview in seconds")
    p.add_argument("--folder", help="a folder of images (sub-folders = labels) to map in the model's feature space (t-SNE)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("serve", prog="convscope serve", description="The local web app: browse a model's layers and feature maps, explain "
                                            "pictures in a browser.")
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help=f"a model name or file; repeat for several (default: {DEFAULT_MODEL})")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained, from the local cache), 'none' (random), a weights name or a file")
    p.add_argument("--arch", help="architecture name for a state-dict / safetensors --model file")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1; any other needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow another --host (e.g. 0.0.0.0) and any Host header: anyone who can reach the port can use the app")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest uploaded picture in MiB (default: 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest uploaded picture in pixels (default: 40,000,000)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.add_argument("--max-forwards", type=float, metavar="N",
                   help="refuse a job that needs more than N forward passes (default: CONVSCOPE_MAX_FORWARDS or 20,000)")
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


def _layer(text: str | None) -> Any:
    if text is None:
        return None
    names = [name.strip() for name in text.split(",") if name.strip()]
    return names[0] if len(names) == 1 else names


def _load(args: argparse.Namespace, name: str | None = None) -> Any:
    from .models import load_model

    return load_model(name or args.model, weights=args.weights, arch=args.arch, device=args.device)


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
    if args.out is None:
        return None if _textual(getattr(result, "kind", None)) else Path(default)
    out = Path(args.out).expanduser()
    if out.is_dir() or args.out.endswith(("/", os.sep)):
        return out / default
    return out


def _check_suffix(args: argparse.Namespace) -> None:
    """An --out whose format cannot be told fails before any work."""
    from .render import dispatch

    if args.out is None or args.out.endswith(("/", os.sep)) or Path(args.out).expanduser().is_dir():
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
    if getattr(args, "target", None) is not None:
        special["target"] = _target(args.target)
    if getattr(args, "layer", None) is not None:
        special["layer"] = _layer(args.layer)
    inputs, extra, stem = _inputs(args, tool)
    with _limits(args):
        result = tool.fn(*inputs, **special, **{**extra, **options})  # flags win over what a dataset brings
    _show(args, tool, result, stem)
    return 0


def _show(args: argparse.Namespace, tool: Tool, result: Any, stem: str | None) -> None:
    """Write the result (render.save), print its words (or JSON), then ``-> path`` for every file written."""
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
        print(f"-> {Path(path).resolve()}", file=sys.stderr if args.json else sys.stdout)


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
            print(_line(tool.name, tool.summary, width))
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
    lines += ["example:", "  " + example(tool)]
    return "\n".join(lines)


def cmd_report(args: argparse.Namespace) -> int:
    from .report import build_report

    model = _load(args)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    sections = [s.strip() for s in args.sections.split(",") if s.strip()] if args.sections else None
    path = build_report(model, args.image or ["cat"], args.out, methods=methods, sections=sections, folder=args.folder,
                        quick=args.quick)
    print(f"wrote {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .models import load_model
    from .web import serve

    models = [load_model(name, weights=args.weights, arch=args.arch, device=args.device) for name in args.model or [DEFAULT_MODEL]]
    serve(models, host=args.host, port=args.port, allow_remote=args.allow_remote,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels, open_browser=args.open,
          max_forwards=args.max_forwards)
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
        with _quiet_broken_pipe():
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
