"""The one render entry point: every object a tool returns is drawn here, by its ``kind``.

Each render module registers what it can make of a kind with :func:`drawer`:

- ``figure(obj, **style) -> matplotlib Figure`` (every kind has one);
- ``picture(obj, **style) -> uint8 (H, W, 3) | None``: a picture to write as it is, pixel for pixel
  (one overlay, one optimized picture); None when the object needs a figure (a batch, say);
- ``html(obj, **style) -> str``: a fragment for reports and notebooks (default: the PNG inline with
  the caption);
- ``caption(obj) -> str``: one line saying what it shows; ``text(obj) -> str``: the command line's words.

``figure``, ``to_png``, ``to_html``, ``text``, ``save``, ``show`` below dispatch on ``obj.kind``; the
``Displayable`` methods of results (``save``, ``show``, ``figure``, notebook display), the report, the web
app and the command line all call them — nothing else draws.
"""

from __future__ import annotations

import html as _html
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConvscopeError

__all__ = [
    "RASTER_FORMATS",
    "VECTOR_FORMATS",
    "Drawer",
    "caption",
    "drawer",
    "drawer_for",
    "figure",
    "kinds",
    "save",
    "show",
    "text",
    "to_html",
    "to_png",
]

RASTER_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".bmp": "BMP", ".gif": "GIF"}
VECTOR_FORMATS = {".pdf": "pdf", ".svg": "svg", ".eps": "eps"}
DPI = 110


@dataclass(frozen=True)
class Drawer:
    """What render can make of one kind (see the module doc)."""

    kind: str
    figure: Callable[..., Any]
    picture: Callable[..., np.ndarray | None] | None = None
    html: Callable[..., str] | None = None
    caption: Callable[[Any], str] | None = None
    text: Callable[[Any], str] | None = None


_DRAWERS: dict[str, Drawer] = {}


def drawer(kind: str, *, figure: Callable[..., Any], picture: Callable[..., np.ndarray | None] | None = None,
           html: Callable[..., str] | None = None, caption: Callable[[Any], str] | None = None,
           text: Callable[[Any], str] | None = None) -> Drawer:
    """Register how ``kind`` is drawn (one registration per kind)."""
    if kind in _DRAWERS:
        raise ValueError(f"kind {kind!r} already has a drawer")
    _DRAWERS[kind] = Drawer(kind, figure, picture, html, caption, text)
    return _DRAWERS[kind]


def kinds() -> list[str]:
    """Every kind render can draw."""
    return list(_DRAWERS)


def kind_of(obj: Any) -> str:
    kind = getattr(obj, "kind", None)
    if not isinstance(kind, str) or not kind:
        raise ConvscopeError(f"cannot draw a {type(obj).__name__}: it is not something convscope computed "
                             f"(no kind); render draws {', '.join(_DRAWERS)}")
    return kind


def drawer_for(obj: Any) -> Drawer:
    """The drawer of ``obj``'s kind; a clear error for anything else."""
    kind = kind_of(obj)
    if kind not in _DRAWERS:
        raise ConvscopeError(f"no drawer for kind {kind!r}; render draws {', '.join(_DRAWERS)}")
    return _DRAWERS[kind]


# -- the entry points ----------------------------------------------------------------------------------------
def figure(obj: Any, **style: Any) -> Any:
    """A matplotlib Figure of ``obj`` (no GUI backend needed)."""
    return drawer_for(obj).figure(obj, **style)


def picture(obj: Any, **style: Any) -> np.ndarray:
    """``obj`` as one uint8 RGB picture (H, W, 3): its own picture when the kind has one, else its figure
    rendered."""
    found = drawer_for(obj)
    if found.picture is not None:
        direct = found.picture(obj, **style)
        if direct is not None:
            return direct
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(_figure_png(found.figure(obj, **style)))).convert("RGB"))


def _figure_png(fig: Any, dpi: int = DPI) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _encode(array: np.ndarray, fmt: str) -> bytes:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(array))
    if fmt in ("JPEG", "BMP") and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    buffer = io.BytesIO()
    options = {"quality": 92} if fmt in ("JPEG", "WEBP") else {}
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def to_png(obj: Any, **style: Any) -> bytes:
    """PNG bytes of ``obj``."""
    found = drawer_for(obj)
    if found.picture is not None:
        direct = found.picture(obj, **style)
        if direct is not None:
            return _encode(direct, "PNG")
    return _figure_png(found.figure(obj, **style))


def caption(obj: Any) -> str:
    """One line: what the picture shows."""
    found = drawer_for(obj)
    return found.caption(obj) if found.caption is not None else ""


def text(obj: Any) -> str:
    """The words the command line prints for ``obj`` (a table, or one line)."""
    found = drawer_for(obj)
    if found.text is not None:
        return found.text(obj)
    return caption(obj) or repr(obj)


def to_html(obj: Any, **style: Any) -> str:
    """An HTML fragment: the picture inline (a data URI) with its caption, or the kind's own HTML."""
    found = drawer_for(obj)
    if found.html is not None:
        return found.html(obj, **style)
    from .core import data_uri

    words = caption(obj)
    alt = _html.escape(words or found.kind)
    figcaption = f"<figcaption>{_html.escape(words)}</figcaption>" if words else ""
    return (f'<figure class="convscope {found.kind}"><img src="{data_uri(to_png(obj, **style))}" alt="{alt}" '
            f'style="max-width:100%">{figcaption}</figure>')


def save(obj: Any, path: str | os.PathLike, **style: Any) -> Path:
    """Write ``obj`` to ``path``; the format follows the suffix: PNG, JPEG, WebP, TIFF, BMP, GIF (pictures),
    PDF, SVG, EPS (vector figures) or HTML (a page). Parent folders are made."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in RASTER_FORMATS and suffix not in VECTOR_FORMATS and suffix not in (".html", ".htm"):
        known = ", ".join([*RASTER_FORMATS, *VECTOR_FORMATS, ".html"])
        raise ConvscopeError(f"cannot tell the format of {str(path)!r} from its suffix; use one of {known}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix in RASTER_FORMATS:
        fmt = RASTER_FORMATS[suffix]
        data = to_png(obj, **style) if fmt == "PNG" else _encode(picture(obj, **style), fmt)
        path.write_bytes(data)
    elif suffix in VECTOR_FORMATS:
        figure(obj, **style).savefig(path, format=VECTOR_FORMATS[suffix], dpi=DPI)
    else:
        title = _html.escape(caption(obj) or kind_of(obj))
        page = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title></head>'
                f'<body style="font-family:system-ui,sans-serif">{to_html(obj, **style)}</body></html>')
        path.write_text(page, encoding="utf-8")
    return path


def _in_notebook() -> bool:
    shell = sys.modules.get("IPython")
    if shell is None:
        return False
    try:
        ip = shell.get_ipython()
    except Exception:
        return False
    return ip is not None and type(ip).__name__ == "ZMQInteractiveShell"


NON_INTERACTIVE = ("agg", "pdf", "ps", "svg", "pgf", "cairo", "template")


def _interactive_backend() -> bool:
    """Whether matplotlib can open a window (it falls back to Agg when there is no display)."""
    import matplotlib

    backend = matplotlib.get_backend().lower()
    if backend in NON_INTERACTIVE:
        return False
    if backend.startswith("module://"):  # notebook and widget backends
        return any(name in backend for name in ("inline", "ipympl", "widget", "nbagg"))
    return True


def show(obj: Any, **style: Any) -> Path | None:
    """Display ``obj``: inline in a notebook; in a matplotlib window when one can open; otherwise (a plain
    script without a display) written to a temporary PNG whose path is printed — and opened in the system's
    picture viewer when there is a desktop. Returns that path, or None when shown."""
    if _in_notebook():
        from IPython.display import display

        display(obj)
        return None
    if _interactive_backend():
        import matplotlib.pyplot as plt

        array = picture(obj, **style)
        height, width = array.shape[:2]
        plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
        plt.axes((0, 0, 1, 1)).imshow(array)
        plt.axis("off")
        plt.show()
        return None
    handle, name = tempfile.mkstemp(prefix=f"convscope-{kind_of(obj)}-", suffix=".png")
    os.close(handle)
    path = save(obj, name, **style)
    print(f"convscope: no window can open here; the picture is in {path}", file=sys.stderr)
    if sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return path
