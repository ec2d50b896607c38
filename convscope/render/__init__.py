"""Rendering: the only place that turns raw values into pictures.

Normalization for display (per-image min-max, percentile clipping, sign modes) happens here and
nowhere else. Arrays are numpy uint8 RGB (H, W, 3); matplotlib is imported only when a figure is made.
"""

from .core import (
    colorize,
    data_uri,
    default_style,
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

__all__ = [
    "colorize",
    "data_uri",
    "default_style",
    "figure_png",
    "grid_figure",
    "normalize",
    "overlay",
    "overlay_result",
    "png_bytes",
    "result_figure",
    "result_map",
    "save_grid",
    "save_result",
    "tensor_to_images",
    "to_uint8_image",
]
