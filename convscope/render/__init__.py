"""Rendering: the only place that turns raw values into pictures.

Normalization for display (per-image min-max, percentile clipping, sign modes) happens here and
nowhere else. Arrays are numpy uint8 RGB (H, W, 3); matplotlib is imported only when a figure is made.
"""

from .core import (
    colorize,
    figure_png,
    normalize,
    overlay,
    overlay_result,
    png_bytes,
    data_uri,
    default_style,
    result_map,
    result_figure,
    save_grid,
    grid_figure,
    save_result,
    tensor_to_images,
    to_uint8_image,
)

__all__ = ["colorize", "figure_png", "normalize", "overlay", "overlay_result", "png_bytes", "data_uri", "default_style", "result_map",
           "result_figure", "save_grid", "grid_figure", "save_result", "tensor_to_images", "to_uint8_image"]
