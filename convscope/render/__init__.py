"""Rendering: the only place that turns raw values into pictures.

``figure``, ``picture``, ``save``, ``show``, ``to_png``, ``to_html``, ``mimebundle``, ``caption`` and ``text``
are the one entry point: they draw anything a tool returns by its ``kind`` (see ``dispatch``). How values become
colours — sequential maps for unsigned values, diverging maps centred at 0 for signed ones, a colour bar with units
on every heatmap — is decided in ``scale`` and nowhere else. Arrays are numpy uint8 RGB (H, W, 3);
matplotlib is imported only when a figure is made.
"""

# ruff: noqa: I001 — core is imported first: it registers the explanation drawers with dispatch, which imports it
from . import core
from . import audit, compare, embedding, features, robustness, scale, spray, tables, trust, video
from . import explanations
from .core import (
    colorize,
    data_uri,
    figure_png,
    grid_figure,
    normalize,
    overlay,
    overlay_result,
    png_bytes,
    result_figure,
    result_map,
    save_grid,
    save_result,
    tensor_to_images,
    to_uint8_image,
)
from .dispatch import caption, drawer, figure, kinds, mimebundle, picture, save, show, text, to_bytes, to_html, to_png

__all__ = [
    "audit",
    "caption",
    "colorize",
    "compare",
    "core",
    "data_uri",
    "drawer",
    "embedding",
    "explanations",
    "features",
    "figure",
    "figure_png",
    "grid_figure",
    "kinds",
    "mimebundle",
    "normalize",
    "overlay",
    "overlay_result",
    "picture",
    "png_bytes",
    "result_figure",
    "result_map",
    "robustness",
    "save",
    "save_grid",
    "save_result",
    "scale",
    "show",
    "spray",
    "tables",
    "tensor_to_images",
    "text",
    "to_bytes",
    "to_html",
    "to_png",
    "to_uint8_image",
    "trust",
    "video",
]
