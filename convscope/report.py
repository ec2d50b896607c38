"""The HTML report (convscope's main job): one self-contained file, every picture inline, nothing fetched.

The sections come from the registry. Every tool registered with a ``report=ReportSpec(...)`` is run on the
report's pictures according to what it takes (``_inputs``), with the spec's options (``quick=True``: the
spec's quick options on top, by default the tool's own), and its result is drawn by
``convscope.render.to_html`` under the spec's title and one-line note, with the time it took and its
paper. A tool that does not apply to the model says why in one line; one over the cost limits says what it
would cost. Parts follow a reading order (``PARTS``, one per family); nothing here names a tool, so a new
tool's section appears with its ``@register`` line. What is not a tool (the model card) is a small template.

The page is Jinja2 templates in ``convscope/templates`` (autoescaped: only render's fragments and the
templates' own markup go through as HTML).
"""

from __future__ import annotations

import datetime as _dt
import difflib
import functools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import torch
from markupsafe import Markup

from . import registry, render
from .errors import ConvscopeError, CostError, OptionError
from .images import named_images as resolve_images
from .models import Model
from .progress import Cancelled, ProgressArg, stage, tracker
from .registry import ReportSpec, Tool
from .render.encode import image_uri

__all__ = ["PARTS", "Part", "ReportContext", "build_report", "default_methods"]


@dataclass(frozen=True)
class Part:
    """A part of the report: the sections of the tools of one family (or of a ``ReportSpec.part``), under a
    title and a line that says what the part is for."""

    name: str
    title: str
    intro: str = ""


PARTS: tuple[Part, ...] = (  # the reading order; a family not listed gets a part before "layers"
    Part("model", "The model and its predictions", "What the model is, what it sees and what it answers."),
    Part("attribution", "Which pixels drove the decision",
         "Each method colours the picture by how much each part drove the top class. Methods often disagree: the part "
         "\"Which explanation to trust\" below measures which of them to believe on this picture."),
    Part("workflow", "Debugging the model: classes side by side, robustness",
         "Does the explanation hold up? The next-best classes explained side by side, and the picture changed in ways "
         "that should not change the answer."),
    Part("trust", "Which explanation to trust",
         "Checks of the explanations themselves: does a map find the pixels the prediction needs better than a random "
         "map, and does it depend on what the model learned?"),
    Part("features", "What the network has learned",
         "Not one decision but the network itself: what its layers respond to, from the first filters to whole objects."),
    Part("embedding", "The dataset in feature space", "Every picture of the dataset placed by the model's features."),
    Part("layers", "The layers", "Every layer in the order it runs, with its output size and parameters."),
)
AGREE = 0.9  # variants of one family whose maps agree this well (Spearman ρ, every pair) are shown once, as a group


def default_methods() -> list[str]:
    """Every registered attribution method (gradient, CAM and perturbation families), in registry order."""
    return [tool.name for tool in registry.methods()]


@dataclass
class ReportContext:
    """What every section reads: the model, the named pictures and their preprocessed batch."""

    model: Model
    images: list[tuple[str, Any]]  # (display name, PIL image)
    methods: list[str] | None = None  # the attribution methods asked for (None: every one)
    folder: str | Path | None = None  # a dataset for the tools that take one (None: those are left out)
    quick: bool = False  # coarse, fast settings: each spec's quick options
    x: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self.x = self.model.preprocess([image for _, image in self.images])

    @functools.cached_property
    def top1(self) -> int | None:
        """The class the model predicts for the first picture (what a model-only tool with a target shows)."""
        try:
            return int(self.model.predict(self.x[:1], k=1)[0][0].index)
        except ConvscopeError:
            return None

    @functools.cached_property
    def named_pictures(self) -> dict[str, Any]:
        """The pictures by name (names made unique), for tools that preprocess each model its own way."""
        named: dict[str, Any] = {}
        for name, picture in self.images:
            unique, n = name, 2
            while unique in named:
                unique, n = f"{name} ({n})", n + 1
            named[unique] = picture
        return named


@dataclass
class SectionView:
    """What the section template shows (``result`` and ``group``: for grouping agreeing variants, not shown)."""

    id: str
    title: str
    kind: str = "tool"
    note: str = ""
    seconds: str = ""
    options: list[str] = field(default_factory=list)
    paper: str = ""
    body: Markup = field(default_factory=Markup)
    skipped: str = ""  # one line instead of the body: why the tool did not run
    members: list[SectionView] = field(default_factory=list)  # a group: the variants it stands for, first shown
    result: Any = field(default=None, repr=False)
    group: str | None = None


# -- what is not a tool --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """A fixed section drawn from a template with the variables ``variables(ctx)`` returns."""

    id: str
    title: str
    part: str
    template: str
    variables: Callable[[ReportContext], dict[str, Any]]
    note: str = ""


def _model_card(ctx: ReportContext) -> dict[str, Any]:
    from .images import to_uint8
    from .layers import default_cam_layer

    m = ctx.model
    params = sum(p.numel() for p in m.module.parameters())
    try:
        cam_layer = default_cam_layer(m, tuple(ctx.x.shape[1:])).label
    except ConvscopeError as exc:  # a model without conv layers still gets a report
        cam_layer = f"none ({exc})"
    fmt = lambda v: "none" if v is None else "(" + ", ".join(f"{x:.3f}" for x in v) + ")"
    rows = [("model", m.name), ("parameters", f"{params:,}"),
            ("input", f"{m.channels} × {m.input_size[0]} × {m.input_size[1]}" if m.input_size else f"{m.channels} channels"),
            ("normalization", f"mean {fmt(m.mean)}, std {fmt(m.std)}; resize {m.resize_size or 'to input'}, "
                              f"center crop {m.input_size}"),
            ("outputs", f"{len(m.labels)} classes" if m.labels else "unlabelled"),
            ("default CAM layer", cam_layer), ("device", str(m.device))]
    pictures = [{"name": name, "uri": image_uri(array, photo=True), "height": array.shape[0], "width": array.shape[1]}
                for (name, _), array in zip(ctx.images, to_uint8(m.denormalize(ctx.x)))]
    return {"rows": rows, "pictures": pictures}


BLOCKS: tuple[Block, ...] = (
    Block("model-card", "The model and the pictures", "model", "model_card.html.j2", _model_card,
          note="The model's facts, and each picture as the model sees it (resized and cropped to its input): everything "
               "below explains these pictures."),
)


# -- the tools -----------------------------------------------------------------------------------------------
def _inputs(ctx: ReportContext, tool: Tool) -> tuple[Any, ...] | None:
    """The report's inputs for what ``tool`` takes; None when the report has none (a dataset without a folder)."""
    if tool.takes == "images":
        return (ctx.model, ctx.x)
    if tool.takes == "image":
        return (ctx.model, ctx.images[0][1])
    if tool.takes == "model":
        return (ctx.model,)
    if tool.takes == "models":
        return ([ctx.model], ctx.named_pictures)
    if tool.takes == "dataset":
        return None if ctx.folder is None else (ctx.model, ctx.folder)
    raise ConvscopeError(f"the report cannot give {tool.name} what it takes ({tool.takes!r})")


def _spec_options(value: Mapping[str, Any] | Callable[[Model], Mapping[str, Any]] | None, model: Model) -> dict[str, Any]:
    """A spec's options: a mapping, or a function of the model (layers at four depths, a mid layer's channels)."""
    return dict(value(model) if callable(value) else (value or {}))


def _options(tool: Tool, ctx: ReportContext) -> dict[str, Any]:
    """The options ``tool`` runs with in the report: the spec's, and with ``quick`` its quick options on top."""
    spec = tool.report or ReportSpec()
    options = _spec_options(spec.options, ctx.model)
    if ctx.quick:
        options.update(tool.quick if spec.quick is None else _spec_options(spec.quick, ctx.model))
    return _narrow_methods(tool, options, ctx.methods)


def _narrow_methods(tool: Tool, options: dict[str, Any], methods: Sequence[str] | None) -> dict[str, Any]:
    """A tool that runs several attribution methods (an option ``methods`` listing them: the top classes side by
    side, the trust ranking) runs those it lists (the spec's, else its default) that are among the report's
    ``methods=`` — all it lists when none of them is — and keeps per-method ``options`` for those only."""
    field_ = tool.options_model.model_fields.get("methods")
    if methods is None or field_ is None:
        return options
    listed = options.get("methods", field_.default)
    if not isinstance(listed, (list, tuple)) or not all(isinstance(m, str) for m in listed):
        return options
    kept = [m for m in listed if m in methods]
    if not kept or len(kept) == len(listed):
        return options
    narrowed = {**options, "methods": kept}
    if isinstance(options.get("options"), Mapping):
        narrowed["options"] = {k: v for k, v in options["options"].items() if k in kept}
    return narrowed


def _seconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _tool_section(ctx: ReportContext, tool: Tool) -> SectionView:
    spec = tool.report or ReportSpec()
    view = SectionView(tool.name, spec.title or tool.name, note=spec.note or tool.description, paper=tool.paper,
                       group=tool.group)
    inputs = _inputs(ctx, tool)
    assert inputs is not None  # dataset tools without a folder are left out before
    options = _options(tool, ctx)
    view.options = [f"{k}={_short(v)}" for k, v in options.items()]
    special: dict[str, Any] = {}  # no progress=: a looping tool's tracker nests in the report's (one bar; a cancel reaches it)
    if tool.takes == "model" and tool.uses_target and ctx.top1 is not None:
        special["target"] = ctx.top1  # e.g. the picture a class wants: the class of the first picture
    start = time.perf_counter()
    try:
        plan = tool.plan(*inputs, **special, **options)  # options checked, cost estimated: no work yet
        result = plan.run()
    except Cancelled:
        raise
    except CostError as exc:
        view.skipped = f"not run: {exc}"
        return view
    except OptionError as exc:  # the spec's options do not fit this tool or this model
        view.skipped = f"not run with the report's options: {exc}"
        return view
    except ConvscopeError as exc:  # e.g. cam on a head that is not GAP -> linear: say so, go on
        view.skipped = f"not applicable to this model: {exc}"
        return view
    except Exception as exc:
        exc.add_note(f"(while making the report's {tool.name!r} section)")
        raise
    view.seconds = _seconds(time.perf_counter() - start)
    view.result = result
    try:
        view.body = Markup(render.to_html(result, **spec.style))
    except Exception as exc:
        exc.add_note(f"(while drawing the report's {tool.name!r} section)")
        raise
    return view


# -- choosing the sections -----------------------------------------------------------------------------------
@dataclass
class _Planned:
    part: str
    block: Block | None = None
    tool: Tool | None = None


def _part_of(tool: Tool) -> str:
    return (tool.report.part if tool.report is not None else None) or tool.family


def _parts(names: Sequence[str]) -> list[Part]:
    """``PARTS`` in reading order, with a part for any other family before the layers."""
    known = {p.name for p in PARTS}
    extra = [Part(n, registry.FAMILIES.get(n, n).capitalize()) for n in dict.fromkeys(names) if n not in known]
    return [*PARTS[:-1], *extra, PARTS[-1]]


def _reads(tool: Tool, folder: str | Path | None) -> bool:
    """Whether a dataset tool gets the report's folder: any of them a folder of pictures, those whose spec says they
    read explanations a folder written by ``explain_dataset``; none without a folder."""
    if folder is None:
        return False
    from .store import is_explanations

    return bool(tool.report and tool.report.explanations) if is_explanations(folder) else True


def _plan(ctx: ReportContext, sections: Sequence[str] | None) -> list[_Planned]:
    """Every section, part by part: the fixed blocks first, then the tools by ``ReportSpec.order`` (unset: the
    position the tool was registered in)."""
    shown = [t for t in registry.tools() if t.report is not None]
    if sections is not None:
        wanted = {_section_name(name, shown) for name in sections}
        shown = [t for t in shown if t.name in wanted or _part_of(t) in wanted]
    if ctx.methods is not None:
        shown = [t for t in shown if t.family != "attribution" or t.name in ctx.methods]
    shown = [t for t in shown if t.takes != "dataset" or _reads(t, ctx.folder)]
    planned: list[_Planned] = []
    for part in _parts([_part_of(t) for t in shown]):
        planned += [_Planned(part.name, block=b) for b in BLOCKS if b.part == part.name]
        members = [t for t in shown if _part_of(t) == part.name]
        position = {t.name: i for i, t in enumerate(members)}
        members.sort(key=lambda t: (t.report.order if t.report.order is not None else position[t.name], position[t.name]))
        planned += [_Planned(part.name, tool=t) for t in members]
    return planned


def _section_name(name: str, shown: Sequence[Tool]) -> str:
    """A part's name, or the name of the tool ``name`` names (an alias too); an error with suggestions otherwise."""
    parts = [p.name for p in _parts([_part_of(t) for t in shown])]
    if name in parts:
        return name
    try:
        tool = registry.get(name)
    except ConvscopeError:
        tool = None
    if tool is not None and tool in shown:
        return tool.name
    known = [*(t.name for t in shown), *parts]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ConvscopeError(f"the report has no section {name!r}{hint} (sections: the tools with a report spec, or the "
                         f"parts {', '.join(parts)})")


@functools.cache
def _templates() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("convscope", "templates"), autoescape=True,
                              undefined=jinja2.StrictUndefined, trim_blocks=False)


def _block_section(ctx: ReportContext, block: Block) -> SectionView:
    body = _templates().get_template(block.template).render(**block.variables(ctx))
    return SectionView(block.id, block.title, kind="card", note=block.note, body=Markup(body))


# -- variants that draw the same map, shown once ------------------------------------------------------------
def _agreement(a: Any, b: Any) -> float | None:
    """The mean Spearman rank correlation of two results' maps over the pictures (None: not two maps of one size)."""
    from .metrics.sanity import rank_correlation
    from .result import Result

    if not (isinstance(a, Result) and isinstance(b, Result) and a.kind == b.kind == "map"):
        return None
    first, second = a.maps(), b.maps()
    if first.shape != second.shape:
        return None
    return float(rank_correlation(first, second).mean())


def _group(views: list[SectionView]) -> list[SectionView]:
    """Variants of one family (tools of the same ``group`` whose results are maps of one size) whose maps agree —
    ρ ≥ ``AGREE`` for every pair — become one section where the first one's body stands for all: the agreement
    between them as a table, and every member listed with its own note, time and paper. Variants that disagree
    keep their own sections."""
    grouped: list[SectionView] = []
    taken: set[int] = set()
    rho: dict[tuple[int, int], float | None] = {}

    def agree(i: int, j: int) -> bool:
        if (i, j) not in rho:
            rho[(i, j)] = rho[(j, i)] = _agreement(views[i].result, views[j].result)
        value = rho[(i, j)]
        return value is not None and value >= AGREE

    for i, view in enumerate(views):
        if i in taken:
            continue
        members = [i]
        if view.group is not None and view.result is not None:
            for j in range(i + 1, len(views)):
                if j not in taken and views[j].group == view.group and all(agree(m, j) for m in members):
                    members.append(j)
        if len(members) < 2:
            grouped.append(view)
            continue
        taken.update(members)
        chosen = [views[m] for m in members]
        matrix = [[1.0 if a == b else rho[(a, b)] for b in members] for a in members]
        table = _templates().get_template("agreement.html.j2").render(names=[v.title for v in chosen], matrix=matrix,
                                                                       threshold=AGREE, shown=view.title)
        title = (f"{view.title} and {chosen[1].title} draw the same map" if len(chosen) == 2 else
                 f"{view.title} and {len(chosen) - 1} variants draw the same map")
        grouped.append(SectionView(
            view.id, title, kind="tool group",
            note=(f"These {len(chosen)} methods compute the map in slightly different ways (each one's idea is listed "
                  f"below), but on these pictures their maps agree: rank correlation ρ ≥ {AGREE:g} between every pair "
                  f"(table). So {view.title}'s map is shown once for all of them; variants that disagree get their own "
                  f"section."),
            options=view.options, paper=view.paper, body=Markup(view.body + Markup(table)), members=chosen))
    return grouped


def _method_name(name: str) -> str:
    tool = registry.get(name)  # unknown names fail before any work, with suggestions
    if tool.family != "attribution":
        raise ConvscopeError(f"{name!r} is a {tool.family} tool, not an attribution method; pass it in sections= "
                             f"(attribution methods: {', '.join(default_methods())})")
    return tool.name


def build_report(model: Model, images: Sequence[Any] | None = None, out: str | Path = "convscope-report", *,
                 methods: Sequence[str] | None = None, sections: Sequence[str] | None = None,
                 folder: str | Path | None = None, quick: bool = False, progress: ProgressArg = None) -> Path:
    """Write ``out/index.html`` for ``model`` on ``images`` (default: the cat photo); returns its path.

    methods:  the attribution methods to include (None: every registered one); tools that run several
              methods (the top classes side by side, the trust ranking) run those of them they list.
    sections: only these sections: tool names (``"gradcam"``, ``"robustness"``) or parts (``"attribution"``,
              ``"features"``, …; see ``PARTS``); None: every tool with a report spec. The model card is always made.
    folder:   a dataset (a folder in ImageFolder layout, …) for the tools that take one (the dataset in
              feature space, its shortcut audit), or a folder written by ``explain_dataset`` (its audit, read from
              the maps there); without it they are left out.
    quick:    coarse settings (each spec's quick options, by default the tool's): a preview in seconds.
    progress: one stage per section (a bar, False, or a callback that may raise ``Cancelled``).
    """
    chosen = None if methods is None else [_method_name(name) for name in methods]
    ctx = ReportContext(model, resolve_images(images), chosen, folder, quick)
    planned = _plan(ctx, sections)
    start = time.perf_counter()
    views: dict[str, list[SectionView]] = {}
    with tracker(progress, len(planned), "report") as bar:
        for item in planned:
            with stage(item.block.title if item.block else item.tool.name):  # a status line / one line per section
                view = _block_section(ctx, item.block) if item.block else _tool_section(ctx, item.tool)  # type: ignore[arg-type]
            views.setdefault(item.part, []).append(view)
            bar.advance()
    from . import __version__

    parts = [{"name": p.name, "title": p.title, "intro": p.intro, "sections": _group(views[p.name])}
             for p in _parts(list(views)) if views.get(p.name)]
    page = _templates().get_template("page.html.j2").render(
        model_name=model.name, images=[name for name, _ in ctx.images], stamp=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
        version=__version__, torch_version=torch.__version__, quick=quick, seconds=_seconds(time.perf_counter() - start),
        parts=parts)
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
