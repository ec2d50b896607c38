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
from .images import SAMPLE_IMAGES, sample_image
from .layers import default_cam_layer, layers
from .models import Model
from .render import data_uri, overlay_result, png_bytes, result_map

__all__ = ["SECTIONS", "ReportContext", "build_report", "default_methods"]



def default_methods() -> list[str]:
    """Every registered attribution method (gradient and CAM families), in registry order."""
    return [info.name for info in registry.methods() if info.family in ("gradient", "cam")]


@dataclass
class ReportContext:
    """What every section can read: the model, the named pictures and their preprocessed batch."""

    model: Model
    images: list[tuple[str, Any]]  # (display name, PIL image)
    methods: list[str]
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
            result = info.fn(ctx.model, ctx.x)
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


def summary_section(ctx: ReportContext) -> str:
    rows = layers(ctx.model, input_size=tuple(ctx.x.shape[1:]))
    body = "".join(
        f"<tr><td>{esc(r.name)}</td><td>{esc(r.type)}</td><td>{esc(str(r.output_shape))}</td><td>{r.params:,}</td></tr>"
        for r in rows)
    return (f'<section><h2>Layers</h2><details><summary>{len(rows)} layer calls in execution order</summary>'
            f'<table class="layers"><tr><th>layer</th><th>type</th><th>output (C, H, W)</th><th>params</th></tr>{body}'
            f"</table></details></section>")


SECTIONS: list[Section] = [model_section, predictions_section, attribution_sections, region_section, summary_section]

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


def resolve_images(images: Sequence[Any] | None) -> list[tuple[str, Any]]:
    """Paths, sample names (cat, coffee, astronaut, rocket) or pictures -> (name, PIL image)."""
    from .images import load_image

    items = list(images) if images else ["cat"]
    named = []
    for item in items:
        if isinstance(item, str) and item.lower() in SAMPLE_IMAGES + ("chelsea",) and not Path(item).exists():
            named.append((item, sample_image(item)))
        elif isinstance(item, (str, Path)):
            named.append((Path(item).name, load_image(item)))
        else:
            named.append((f"image {len(named) + 1}", load_image(item)))
    return named


def build_report(model: Model, images: Sequence[Any] | None = None, out: str | Path = "convscope-report", *,
                 methods: Sequence[str] | None = None, sections: Sequence[Section] | None = None) -> Path:
    """Write ``out/index.html`` for ``model`` on ``images`` (default: the cat photo); returns its path."""
    names = list(methods) if methods else default_methods()
    for name in names:
        registry.get(name)  # unknown names fail before any work
    ctx = ReportContext(model, resolve_images(images), names)
    parts = [section(ctx) for section in (sections or SECTIONS)]
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
