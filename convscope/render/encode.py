"""Pictures as inline ``data:`` URIs for self-contained HTML, in the format that suits them.

Photos and what is drawn over photos (overlays, perturbed pictures, optimized pictures) lose nothing a reader
sees as JPEG at quality 85 and take a tenth of the bytes of PNG; line art (charts, tables, masks, kernel
mosaics) stays PNG, sharp and usually smaller. ``photo=None`` decides by the picture: JPEG when it is less
than half the PNG. Every figure a report shows is at most ``CONTENT_WIDTH`` pixels wide (a 1280-pixel window
less the page's margins), so nothing is scaled down by the browser or scrolls sideways.
"""

from __future__ import annotations

import base64
import html
import io
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CONTENT_WIDTH", "PHOTO_QUALITY", "encode", "figure_array", "figure_img", "image_uri", "img_tag"]

CONTENT_WIDTH = 1100  # CSS pixels: the widest picture a report section holds (a 1280-px window, less margins)
PHOTO_QUALITY = 85  # JPEG quality: no visible loss on photos and overlays
FIGURE_DPI = 110  # how matplotlib figures are drawn for pages (as render.core.figure_png)


def _uint8(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype != np.uint8:  # floats in [0, 1]
        array = (np.clip(array, 0, 1) * 255 + 0.5).astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 4:  # RGBA: on white
        alpha = array[..., 3:].astype(np.float32) / 255
        array = (array[..., :3] * alpha + 255 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(array)


def encode(image: np.ndarray, *, photo: bool | None = None, quality: int = PHOTO_QUALITY) -> tuple[str, bytes]:
    """A picture (H, W[, 3]) — uint8, or floats in [0, 1] — as ("image/jpeg" or "image/png", bytes).

    photo: True -> JPEG; False -> PNG; None -> JPEG when it is less than half the PNG's size (a photo-like
    picture), else PNG (line art, flat colours: sharper and about as small)."""
    from PIL import Image

    picture = Image.fromarray(_uint8(image))
    png = b""
    if photo is not True:
        buffer = io.BytesIO()
        picture.save(buffer, format="PNG", optimize=photo is False)
        png = buffer.getvalue()
        if photo is False:
            return "image/png", png
    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="JPEG", quality=quality, optimize=True)
    jpeg = buffer.getvalue()
    if photo is None and len(jpeg) * 2 > len(png):
        return "image/png", png
    return "image/jpeg", jpeg


def image_uri(image: np.ndarray, *, photo: bool | None = None, quality: int = PHOTO_QUALITY) -> str:
    """A picture as an inline ``data:`` URI (JPEG for photos, PNG for line art: see :func:`encode`)."""
    mime, data = encode(image, photo=photo, quality=quality)
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def figure_array(fig: Figure, *, dpi: float = FIGURE_DPI, max_width: int | None = CONTENT_WIDTH) -> np.ndarray:
    """A matplotlib figure as uint8 RGB (H, W, 3), cropped to what is drawn (as ``render.core.figure_png``) and
    drawn at a lower resolution when it would be wider than ``max_width`` pixels (None: as it comes)."""
    from PIL import Image

    from .core import FIGURE_SAVE

    def draw(at: float) -> np.ndarray:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=at, **FIGURE_SAVE)
        return np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))

    array = draw(dpi)
    if max_width is not None and array.shape[1] > max_width:
        array = draw(dpi * max_width / array.shape[1] * 0.995)  # the crop scales with the resolution, to a pixel
        if array.shape[1] > max_width:  # rounding: cut the last column or two of the margin
            array = array[:, :max_width]
    return array


def img_tag(uri: str, width: int, height: int, alt: str, *, max_width: int | None = CONTENT_WIDTH) -> str:
    """``<img>`` with its size (at most ``max_width`` wide, the height kept in proportion) and the alt text."""
    if max_width is not None and width > max_width:
        width, height = max_width, max(1, round(height * max_width / width))
    return (f'<img src="{uri}" alt="{html.escape(alt)}" width="{int(width)}" height="{int(height)}" '
            f'style="max-width:100%;height:auto">')


def figure_img(fig: Figure, alt: str, *, photo: bool | None = None, max_width: int = CONTENT_WIDTH) -> str:
    """A matplotlib figure as an ``<img>`` at most ``max_width`` pixels wide; ``photo`` as in :func:`encode`
    (True for figures of photos: robustness grids, comparison grids)."""
    array = figure_array(fig, max_width=max_width)
    return img_tag(image_uri(array, photo=photo), array.shape[1], array.shape[0], alt, max_width=max_width)
