"""The HTML report (convscope's main job): one self-contained file, images inline.

A report is a list of sections; each section is a function ``(ReportContext) -> html`` so later
capabilities add a section without touching the others. Uses only the public API.
"""

from __future__ import annotations

import datetime as _dt
import html
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import registry
from .errors import ConvscopeError
from .images import named_images as resolve_images
from .layers import default_cam_layer, layers
from .models import Model
from .progress import ProgressArg, tracker
from .render import data_uri, overlay_result, png_bytes, result_map

__all__ = ["SECTIONS", "ReportContext", "build_report", "default_methods"]



def default_methods() -> list[str]:
    """Every registered attribution method (gradient, CAM and perturbation families), in registry order."""
    return [info.name for info in registry.methods()]


TRUST_METHODS = ("gradcam", "integrated_gradients", "saliency", "occlusion")  # ranked in the trust section


@dataclass
class ReportContext:
    """What every section can read: the model, the named pictures and their preprocessed batch."""

    model: Model
    images: list[tuple[str, Any]]  # (display name, PIL image)
    methods: list[str]
    folder: str | Path | None = None  # a dataset folder for the embedding section (None: no such section)
    quick: bool = False  # coarse, fast settings (each method's registry ``quick`` options): previews and tests
    x: torch.Tensor = field(init=False)
    results: dict[str, Any] = field(default_factory=dict)  # method name -> Result, for later sections

    def __post_init__(self) -> None:
        self.x = self.model.preprocess([image for _, image in self.images])


Section = Callable[[ReportContext], str]
esc = html.escape


def _img(png: bytes, alt: str, width: int | None = None) -> str:
    size = f' width="{width}"' if width else ""
    return f'<img src="{data_uri(png)}" alt="{esc(alt)}"{size}>'


def model_section(ctx: ReportContext) -> str:
    m = ctx.model
    params = sum(p.numel() for p in m.module.parameters())
    try:
        cam_layer = default_cam_layer(m, (m.channels, *ctx.x.shape[-2:])).label
    except Exception as exc:  # a model without conv layers still gets a report
        cam_layer = f"none ({exc})"
    rows = [("model", m.name), ("parameters", f"{params:,}"), ("input", f"{m.channels} × {m.input_size[0]} × {m.input_size[1]}"),
            ("normalization", _normalization(m)), ("outputs", f"{len(m.labels) if m.labels else '?'} classes"),
            ("default CAM layer", cam_layer), ("device", str(m.device))]
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(str(v))}</td></tr>" for k, v in rows)
    return f'<section><h2>Model</h2><table class="kv">{body}</table></section>'


def _normalization(m: Model) -> str:
    fmt = lambda v: "none" if v is None else "(" + ", ".join(f"{x:.3f}" for x in v) + ")"
    return f"mean {fmt(m.mean)}, std {fmt(m.std)}; resize {m.resize_size or 'to input'}, center crop {m.input_size}"


def predictions_section(ctx: ReportContext) -> str:
    cards = []
    for (name, _), preds, picture in zip(ctx.images, ctx.model.predict(ctx.x, k=5), _pictures(ctx)):
        rows = "".join(
            f'<tr><td>{p.index}</td><td>{esc(p.label)}</td><td class="bar"><span style="width:{p.probability * 100:.1f}%"></span>'
            f"</td><td>{p.probability:.1%}</td></tr>" for p in preds)
        cards.append(f'<div class="card"><h3>{esc(name)}</h3>{_img(png_bytes(picture), name, 224)}'
                     f'<table class="top5"><tr><th>#</th><th>label</th><th></th><th>p</th></tr>{rows}</table></div>')
    return f'<section><h2>Predictions (top 5)</h2><div class="cards">{"".join(cards)}</div></section>'


def _pictures(ctx: ReportContext) -> Any:
    from .render import tensor_to_images

    return tensor_to_images(ctx.x, ctx.model.mean, ctx.model.std)


def attribution_sections(ctx: ReportContext) -> str:
    """One section per method: what it is, for which class, the overlay and the map of every image."""
    blocks = []
    for name in ctx.methods:
        info = registry.get(name)
        start = time.perf_counter()
        try:
            result = info.fn(ctx.model, ctx.x, **(info.quick if ctx.quick else {}))
        except ConvscopeError as exc:  # e.g. cam on a head that is not GAP -> linear: say so, go on
            blocks.append(f'<section class="method" id="{esc(name)}"><h2>{esc(name)}</h2>'
                          f'<p class="note">not applicable to this model: {esc(str(exc))}</p></section>')
            continue
        seconds = time.perf_counter() - start
        ctx.results[name] = result
        cells = []
        for i, (image_name, _) in enumerate(ctx.images):
            label = result.labels[i] if result.labels else "custom target"
            prob = result.meta.get("probabilities")
            caption = f"{image_name}: explaining '{label}'" + (f" (p = {float(prob[i]):.1%})" if prob is not None else "")
            cells.append(f'<figure>{_img(png_bytes(overlay_result(result, i)), caption, 224)}'
                         f'{_img(png_bytes(result_map(result, i)), caption + " map", 224)}'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        layer = f" · layer <code>{esc(result.layer)}</code>" if result.layer else ""
        blocks.append(f'<section class="method" id="{esc(name)}"><h2>{esc(name)}</h2><p class="note">{esc(info.summary)}'
                      f'{layer} · {seconds * 1000:.0f} ms for {len(ctx.images)} image(s) · <em>{esc(info.paper)}</em></p>'
                      f'<div class="cards">{"".join(cells)}</div></section>')
    return f'<h2 class="part">Which pixels drove the decision</h2>{"".join(blocks)}'


def region_section(ctx: ReportContext) -> str:
    """Seed 004's interesting region: the Grad-CAM mask and crop of each image."""
    from .roi import roi

    result = ctx.results.get("gradcam") or registry.get("gradcam").fn(ctx.model, ctx.x)
    cells = []
    for i, (image_name, _) in enumerate(ctx.images):
        try:
            region = roi(result, index=i, threshold=0.4)
        except ConvscopeError as exc:
            cells.append(f"<p>{esc(image_name)}: {esc(str(exc))}</p>")
            continue
        caption = f"{image_name}: '{region.label}' region, {region.coverage:.0%} of the picture, box {region.box}"
        cells.append(f"<figure>{_img(png_bytes(region.masked), caption, 224)}{_img(png_bytes(region.crop), caption)}"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return (f'<section><h2>Region of interest</h2><p class="note">Where the Grad-CAM map reaches 40% of its range '
            f'(largest connected region): the picture seen through the mask, and the crop.</p>'
            f'<div class="cards">{"".join(cells)}</div></section>')


def top_classes_section(ctx: ReportContext) -> str:
    """The model's three best classes for the first picture side by side (seed 004's comparison grid):
    class-discriminative maps move with the class, the others do not."""
    from .compare import compare
    from .render import figure_png

    start = time.perf_counter()
    name, picture = ctx.images[0]
    chosen = [m for m in ("gradcam", "guided_gradcam") if m in ctx.methods] or ["gradcam"]
    k = min(3, len(ctx.model.labels)) if ctx.model.labels else 3
    try:
        comparison = compare(ctx.model, {name: picture}, chosen, targets=f"top{k}", scale="column", progress=False)
    except ConvscopeError as exc:  # e.g. a regression model: no classes to rank
        return f'<section><h2>The top classes side by side</h2><p class="note">not applicable: {esc(str(exc))}</p></section>'

    seconds = time.perf_counter() - start
    agree = comparison.agreement(chosen[0], 0)
    pairs = [float(agree[a, b]) for a in range(len(agree)) for b in range(a + 1, len(agree))]
    spread = f" Rank correlation between the classes' {esc(chosen[0])} maps: {min(pairs):.2f} to {max(pairs):.2f}." if pairs else ""
    return (f'<section><h2>The top {k} classes side by side</h2><p class="note">{esc(name)}: each row explains one of '
            f'the model\'s {k} best classes with the same methods, one colour scale per column, so a weaker class '
            f'shows weaker evidence.{spread} {seconds:.1f} s.</p>'
            f'{_img(figure_png(comparison.figure()), "top classes compared")}</section>')


def robustness_section(ctx: ReportContext) -> str:
    """Seed 004's shadow and colour experiment on the first picture: does the prediction, and its Grad-CAM
    evidence, survive light, colour, shadow, blur, noise, rotation and an occluding patch?"""
    from .metrics.robustness import robustness
    from .render import figure_png
    from .render.robustness import robustness_curves

    start = time.perf_counter()
    name, picture = ctx.images[0]
    try:
        sweep = robustness(ctx.model, picture, progress=False)
    except ConvscopeError as exc:
        return f'<section><h2>Robustness</h2><p class="note">not applicable: {esc(str(exc))}</p></section>'
    seconds = time.perf_counter() - start
    worst = "; ".join(f"{r.perturbation} {r.strength:g}: p = {r.original_probability:.0%}" for r in sweep.worst(3))
    rows = "".join(
        f"<tr><td>{esc(r.perturbation)}</td><td>{r.strength:g}</td><td>{esc(r.label)}{' ✱' if r.predicted != sweep.original_class else ''}"
        f"</td><td>{r.original_probability:.1%}</td><td>{r.rank_correlation:.2f}</td><td>{r.peak_shift_fraction:.0%}</td></tr>"
        for r in sweep.rows)
    notes = "".join(f"<p class=\"note\">{esc(n)}</p>" for n in sweep.notes)
    return (f'<section><h2>Robustness: light, colour, shadow, blur, noise, rotation, an occluding patch</h2>'
            f'<p class="note">{esc(name)}: the model says \'{esc(sweep.original_label)}\' with p = {sweep.original_probability:.1%}. '
            f'The top-1 changed on {len(sweep.flips)} of {len(sweep.rows)} perturbed pictures; the costliest: {esc(worst)}. '
            f'Maps are {esc(sweep.method)} for the original class; ρ is their rank correlation with the original map '
            f'(rotated with the picture for rotations) · {seconds:.1f} s.</p>{notes}'
            f'{_img(figure_png(robustness_curves(sweep)), "probability against strength")}'
            f'{_img(figure_png(sweep.figure()), "robustness grid")}'
            f'<details><summary>table</summary><table><tr><th>perturbation</th><th>strength</th><th>top-1 (✱ changed)</th>'
            f'<th>p(original)</th><th>ρ</th><th>peak moved</th></tr>{rows}</table></details></section>')


def occlusion_section(ctx: ReportContext) -> str:
    """Seed 000's occlusion triple: the probability-drop heatmap, the mask from it, the picture through the mask."""
    from .attribution.perturbation import masked_image, occlusion_mask

    info = registry.get("occlusion")
    result = ctx.results.get("occlusion") or info.fn(ctx.model, ctx.x, **(info.quick if ctx.quick else {}))
    mask = occlusion_mask(result, threshold=0.5)
    through = masked_image(result, mask)  # (B, H, W, 3)
    cells = []
    for i, (image_name, _) in enumerate(ctx.images):
        keep = mask[i, 0].float().cpu().numpy()
        label = result.labels[i] if result.labels else "custom target"
        caption = (f"{image_name}: '{label}' — drop in probability when a window is covered, the mask (50% of the "
                   f"top drop), the picture through it")
        cells.append(f"<figure>{_img(png_bytes(overlay_result(result, i)), caption, 224)}"
                     f"{_img(png_bytes((keep[..., None].repeat(3, axis=2) * 255).astype('uint8')), caption + ' mask', 224)}"
                     f"{_img(png_bytes(through[i]), caption + ' masked', 224)}"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    return (f'<section><h2>Occlusion: heatmap, mask, what the model needs</h2><p class="note">Zeiler &amp; Fergus 2014, '
            f'as in seed 000: window {esc(str(result.meta.get("window")))}, stride {esc(str(result.meta.get("stride")))}.</p>'
            f'<div class="cards">{"".join(cells)}</div></section>')


def trust_section(ctx: ReportContext) -> str:
    """Which explanation to trust on these pictures: deletion / insertion (Petsiuk 2018) against a random map."""
    from .metrics import compare
    from .metrics.faithfulness import ranking_figure
    from .render import figure_png

    chosen = [m for m in TRUST_METHODS if m in ctx.methods] or list(TRUST_METHODS[:2])
    start = time.perf_counter()
    options = {m: registry.get(m).quick for m in chosen} if ctx.quick else None
    steps = 8 if ctx.quick else 16
    ranking = compare(ctx.model, ctx.x, chosen, steps=steps, options=options)
    seconds = time.perf_counter() - start
    rows = "".join(f"<tr><td>{esc(r.method)}</td><td>{r.deletion_auc:.3f}</td><td>{r.insertion_auc:.3f}</td></tr>"
                   for r in ranking.rows)
    return (f'<section><h2>Which explanation to trust</h2><p class="note">Deletion: remove the pixels a map ranks first, '
            f'in {steps} steps; a faithful map makes the probability fall fast (low area). Insertion: reveal them on a blurred '
            f'picture; the probability should rise fast (high area). <em>random</em> is what chance looks like. '
            f'Petsiuk et al. 2018 · {seconds:.1f} s.</p><table><tr><th>method</th><th>deletion AUC ↓</th>'
            f'<th>insertion AUC ↑</th></tr>{rows}</table>{_img(figure_png(ranking_figure(ranking)), "ranking")}</section>')


def _depths(ctx: ReportContext, count: int) -> list[str]:
    """``count`` convolution outputs spread evenly from the first to the last."""
    from .layers import is_conv

    convs = [r.name for r in layers(ctx.model, input_size=tuple(ctx.x.shape[1:])) if is_conv(r.module)]
    if len(convs) <= count:
        return convs
    return [convs[round(i * (len(convs) - 1) / (count - 1))] for i in range(count)]


def filters_section(ctx: ReportContext) -> str:
    """What the first layer's filters look like (seeds 000, 002, 004)."""
    from .features import filters
    from .render import figure_png
    from .render.features import filters_figure

    result = filters(ctx.model)
    return (f'<h2 class="part">What the network has learned</h2><section><h2>First-layer filters</h2>'
            f'<p class="note">Layer <code>{esc(str(result.layer))}</code>, kernels {esc(str(tuple(result.data.shape)))}: '
            f'a trained network shows oriented edges and colour blobs; random ones look like noise.</p>'
            f'{_img(figure_png(filters_figure(result)), "first-layer filters")}</section>')


def feature_maps_section(ctx: ReportContext) -> str:
    """What four depths of the network output for the first picture (seeds 001, 003)."""
    from .features import feature_maps
    from .render import figure_png
    from .render.features import feature_walk_figure

    names = _depths(ctx, 4)
    maps = feature_maps(ctx.model, ctx.x[:1], layers=names)
    return (f'<section><h2>Feature maps at four depths</h2><p class="note">{esc(ctx.images[0][0])}: the strongest '
            f'channels (largest mean activation) of {", ".join(f"<code>{esc(n)}</code>" for n in names)}.</p>'
            f'{_img(figure_png(feature_walk_figure(maps)), "feature maps")}</section>')


# the report's budget for optimized pictures: (channels in the grid, grid options, class image options, dream options)
REPORT_OPTIMIZATION = (64, {"steps": 64, "size": 96}, {"steps": 128, "size": 128}, {})
QUICK_OPTIMIZATION = (16, {"steps": 16, "size": 64}, {"steps": 24, "size": 96}, {"octaves": 2, "steps": 3})


def visualization_section(ctx: ReportContext) -> str:
    """What a mid layer's channels and the predicted class want to see, and Deep Dream (seeds 002, 003)."""
    from .features import class_image, dream, maximize
    from .features.objectives import channels
    from .render import figure_png
    from .render.features import dream_figure, optimization_grid

    start = time.perf_counter()
    depths = _depths(ctx, 3)
    mid = depths[len(depths) // 2]
    shape = next(r.output_shape for r in layers(ctx.model, input_size=tuple(ctx.x.shape[1:])) if r.name == mid)
    wanted_channels, grid_options, class_options, dream_options = QUICK_OPTIMIZATION if ctx.quick else REPORT_OPTIMIZATION
    count = min(wanted_channels, int(shape[0]) if shape else wanted_channels)
    if ctx.model.input_size:  # never above the model's own size (heads built for one size only)
        fits = min(ctx.model.input_size)
        grid_options = {**grid_options, "size": min(grid_options["size"], fits)}
        class_options = {**class_options, "size": min(class_options["size"], fits)}
    grid = maximize(ctx.model, channels(mid, range(count)), **grid_options)
    top1 = int(ctx.model.predict(ctx.x[:1], k=1)[0][0].index)
    wanted = class_image(ctx.model, top1, **class_options)
    dreamed = dream(ctx.model, ctx.images[0][1], **dream_options)
    seconds = time.perf_counter() - start
    probability = float(wanted.meta.get("probability", [float("nan")])[0])
    label = ctx.model.label(top1)
    return (f'<section><h2>What the channels want to see</h2><p class="note">Activation maximization (Olah et al. 2017): '
            f'{count} channels of <code>{esc(mid)}</code> optimized together in one batch, FFT parameterization with '
            f'decorrelated colour and jitter/scale/rotate transforms, {grid_options["steps"]} steps at {grid_options["size"]} px.</p>'
            f'{_img(figure_png(optimization_grid(grid)), "channel visualizations")}</section>'
            f'<section><h2>The picture the model wants for \'{esc(label)}\'</h2><p class="note">The class predicted for '
            f'{esc(ctx.images[0][0])}; the model gives this picture p = {probability:.1%}.</p>'
            f'{_img(png_bytes(_first_picture(wanted)), "class image", 256)}</section>'
            f'<section><h2>Deep Dream</h2><p class="note">Mordvintsev et al. 2015: gradient ascent on the activations of '
            f'<code>{esc(str(dreamed.layer))}</code> over octaves · all optimization {seconds:.0f} s.</p>'
            f'{_img(figure_png(dream_figure(dreamed)), "deep dream")}</section>')


def _first_picture(result: Any) -> Any:
    import numpy as np

    picture = result.data[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    picture = np.repeat(picture, 3, axis=2) if picture.shape[2] == 1 else picture
    return (picture * 255).round().astype("uint8")


def summary_section(ctx: ReportContext) -> str:
    rows = layers(ctx.model, input_size=tuple(ctx.x.shape[1:]))
    body = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.type)}</td><td>{esc(str(r.output_shape))}</td><td>{r.params:,}</td></tr>"
        for r in rows)
    return (f'<section><h2>Layers</h2><details><summary>{len(rows)} layer calls in execution order</summary>'
            f'<table class="layers"><tr><th>layer</th><th>type</th><th>output (C, H, W)</th><th>params</th></tr>{body}'
            f"</table></details></section>")


def embedding_section(ctx: ReportContext) -> str:
    """Seed 002's map of a dataset in the model's feature space (only when a folder is given)."""
    if ctx.folder is None:
        return ""
    from .features.embed import embed, tsne_sweep
    from .render import figure_png
    from .render.embedding import perplexity_figure, thumbnail_figure

    start = time.perf_counter()
    found = embed(ctx.model, ctx.folder, thumbnail_size=32)
    maps = tsne_sweep(found, (15, 25))
    seconds = time.perf_counter() - start
    accuracy = found.accuracy()
    wrong = found[found.misclassified()]
    rows = "".join(f"<tr><td>{esc(str(path))}</td><td>{esc(str(label))}</td><td>{esc(str(pred))}</td></tr>"
                   for path, label, pred in zip(wrong.paths, wrong.labels, wrong.predicted_labels or []))
    scored = f", top-1 accuracy {accuracy:.1%}" if accuracy is not None else ""
    table = (f"<details><summary>{len(wrong)} misclassified</summary><table><tr><th>image</th><th>label</th>"
             f"<th>prediction</th></tr>{rows}</table></details>") if len(wrong) else ""
    return (f'<section><h2>The dataset in feature space</h2><p class="note">{len(found)} images from '
            f'<code>{esc(str(ctx.folder))}</code>, {found.features.shape[1]} features from <code>{esc(found.layer)}</code>'
            f'{scored}; t-SNE at perplexity 15 and 25 (PCA to 50 dimensions first), {seconds:.1f} s. '
            f'Misclassified images are crosses.</p>{_img(figure_png(perplexity_figure(found, maps)), "t-SNE maps")}'
            f'{_img(figure_png(thumbnail_figure(found, maps[0])), "thumbnail map", 900)}{table}</section>')


SECTIONS: list[Section] = [model_section, predictions_section, attribution_sections, region_section, top_classes_section,
                           robustness_section, occlusion_section, trust_section,
                           filters_section, feature_maps_section, visualization_section, embedding_section, summary_section]

_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} .sub{color:#666;margin-top:0} section{margin:2rem 0}
table{border-collapse:collapse} td,th{padding:.2rem .6rem;text-align:left;border-bottom:1px solid #eee}
.kv th{color:#555;font-weight:600} .cards{display:flex;flex-wrap:wrap;gap:1rem}
.card,figure{margin:0;background:#fafafa;border:1px solid #eee;border-radius:6px;padding:.6rem}
figure img{margin-right:4px} figcaption{font-size:.85rem;color:#444}
.bar{width:120px} .bar span{display:block;height:10px;background:#4a78c2;border-radius:2px}
.note{color:#555;font-size:.9rem} h2.part{margin-top:3rem;border-bottom:2px solid #ddd}
code{background:#f1f1f1;padding:0 .3rem;border-radius:3px}
.layers td{font-family:ui-monospace,monospace;font-size:.8rem}
"""


def build_report(model: Model, images: Sequence[Any] | None = None, out: str | Path = "convscope-report", *,
                 methods: Sequence[str] | None = None, sections: Sequence[Section] | None = None,
                 folder: str | Path | None = None, quick: bool = False,
                 progress: ProgressArg = None) -> Path:
    """Write ``out/index.html`` for ``model`` on ``images`` (default: the cat photo); returns its path.
    ``folder``: a dataset folder (ImageFolder layout) to map in the model's feature space.
    ``quick``: coarse settings (few steps, samples and channels) for a fast preview."""
    names = list(methods) if methods else default_methods()
    for name in names:
        registry.get(name)  # unknown names fail before any work
    ctx = ReportContext(model, resolve_images(images), names, folder, quick)
    parts = []
    chosen = list(sections or SECTIONS)
    with tracker(progress, len(chosen), "report") as bar:
        for section in chosen:
            parts.append(section(ctx))
            bar.advance()
    from . import __version__

    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>convscope report — {esc(model.name)}</title>'
            f"<style>{_CSS}</style></head><body><h1>convscope report</h1>"
            f'<p class="sub">{esc(model.name)} · {stamp} · convscope {__version__} · torch {torch.__version__}</p>'
            f'{"".join(parts)}</body></html>')
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
