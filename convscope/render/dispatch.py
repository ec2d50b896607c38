"""The one render entry point: every object a tool returns is drawn here, by its ``kind``.

Each render module registers what it can make of a kind with :func:`drawer`:

- ``figure(obj, **style) -> matplotlib Figure`` (every kind has one);
- ``picture(obj, **style) -> uint8 (H, W, 3) | None``: a picture to write as it is, pixel for pixel
  (one overlay, one optimized picture); None when the object needs a figure (a batch, say);
- ``html(obj, **style) -> str``: a fragment for reports and notebooks, for kinds that are more than a
  picture (tables); without it the fragment is the picture inline with the caption;
- ``caption(obj) -> str``: one line saying what it shows; ``text(obj) -> str``: the command line's words;
- ``textual``: the kind is words (a table): ``show`` prints it instead of drawing it;
- ``animation(obj, format=, **style) -> bytes``: an animated GIF or APNG (videos: ``save(result, "clip.gif")``).

A Result holding a video or volume (data (B, C, T, H, W)) is drawn by the video drawer of its kind
(:func:`video_drawer`, registered by ``render/video.py``): frame strips, and animations for ``.gif`` / ``.apng``.

``figure``, ``picture``, ``to_png``, ``to_html``, ``mimebundle``, ``caption``, ``text``, ``save`` and
``show`` below dispatch on ``obj.kind``; the ``Displayable`` methods of results (``save``, ``show``,
``figure``, notebook display), the report, the web app and the command line all call them — nothing
else draws. Style options left at None mean "the drawing's default" (``Result.save`` passes
``index=None, image=None`` to every kind), and an option a kind does not take is a one-line error.
"""

from __future__ import annotations

import html as _html
import inspect
import io
import os
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConvscopeError
from .core import FIGURE_SAVE, data_uri, figure_png, png_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PAGE_FORMATS",
    "RASTER_FORMATS",
    "VECTOR_FORMATS",
    "Drawer",
    "caption",
    "drawer",
    "drawer_for",
    "drawer_of",
    "figure",
    "kinds",
    "mimebundle",
    "picture",
    "save",
    "show",
    "text",
    "to_bytes",
    "to_html",
    "to_png",
]

# suffix -> Pillow format (pictures) / matplotlib format (figures); every format save writes
RASTER_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".bmp": "BMP", ".gif": "GIF"}
VECTOR_FORMATS = {".pdf": "pdf", ".svg": "svg", ".eps": "eps"}
PAGE_FORMATS = (".html", ".htm")
DPI = 110  # figures' pixels per inch in every raster output
LOSSY_QUALITY = 92  # JPEG and WebP


@dataclass(frozen=True)
class Drawer:
    """What render can make of one kind (see the module doc)."""

    kind: str
    figure: Callable[..., Any]
    picture: Callable[..., np.ndarray | None] | None = None
    html: Callable[..., str] | None = None
    caption: Callable[[Any], str] | None = None
    text: Callable[[Any], str] | None = None
    textual: bool = False
    animation: Callable[..., bytes] | None = None


_DRAWERS: dict[str, Drawer] = {}
_VIDEO_DRAWERS: dict[str, Drawer] = {}  # kind -> how a Result of that kind holding a video (B, C, T, H, W) is drawn
ANIMATION_FORMATS = (".gif", ".apng")  # animated for videos; ".gif" is a still picture for everything else


def drawer(kind: str, *, figure: Callable[..., Any], picture: Callable[..., np.ndarray | None] | None = None,
           html: Callable[..., str] | None = None, caption: Callable[[Any], str] | None = None,
           text: Callable[[Any], str] | None = None, textual: bool = False) -> Drawer:
    """Register how ``kind`` is drawn (one registration per kind)."""
    if kind in _DRAWERS:
        raise ValueError(f"kind {kind!r} already has a drawer")
    _DRAWERS[kind] = Drawer(kind, figure, picture, html, caption, text, textual)
    return _DRAWERS[kind]


def video_drawer(kind: str, *, figure: Callable[..., Any], picture: Callable[..., np.ndarray | None] | None = None,
                 html: Callable[..., str] | None = None, caption: Callable[[Any], str] | None = None,
                 text: Callable[[Any], str] | None = None, animation: Callable[..., bytes] | None = None) -> Drawer:
    """Register how a Result of ``kind`` whose data is a video or volume (B, C, T, H, W) is drawn."""
    if kind in _VIDEO_DRAWERS:
        raise ValueError(f"kind {kind!r} already has a video drawer")
    _VIDEO_DRAWERS[kind] = Drawer(kind, figure, picture, html, caption, text, False, animation)
    return _VIDEO_DRAWERS[kind]


def _is_video(obj: Any) -> bool:
    """A Result with data (B, C, T, H, W), or a dict of them (a feature walk through 3-D layers)."""
    if isinstance(obj, dict):
        obj = next(iter(obj.values()), None)
    data = getattr(obj, "data", None)
    return getattr(data, "dim", None) is not None and data.dim() == 5


def kinds() -> list[str]:
    """Every kind render can draw."""
    return list(_DRAWERS)


def kind_of(obj: Any) -> str:
    kind = getattr(obj, "kind", None)
    if not isinstance(kind, str) or not kind or kind not in _DRAWERS:
        what = f"its kind {kind!r} has no drawer" if isinstance(kind, str) and kind else "it has no kind"
        raise ConvscopeError(f"cannot draw a {type(obj).__name__}: {what}; render draws {', '.join(_DRAWERS)}")
    return kind


def drawer_for(obj: Any) -> Drawer:
    """The drawer of ``obj``'s kind (its video drawer when it holds a video); a clear error for anything else."""
    kind = kind_of(obj)
    if kind in _VIDEO_DRAWERS and _is_video(obj):
        return _VIDEO_DRAWERS[kind]
    return _DRAWERS[kind]


def drawer_of(kind: str) -> Drawer:
    """The drawer registered for ``kind``."""
    if kind not in _DRAWERS:
        raise ConvscopeError(f"no drawer for kind {kind!r}; render draws {', '.join(_DRAWERS)}")
    return _DRAWERS[kind]


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")


def _draw(found: Drawer, fn: Callable[..., Any], obj: Any, style: dict[str, Any]) -> Any:
    """``fn(obj, **style)`` without the options left at None; an option the kind's drawing does not take is
    a one-line error, not a TypeError from deep inside matplotlib code."""
    given = {key: value for key, value in style.items() if value is not None}
    try:
        return fn(obj, **given)
    except TypeError as error:
        match = _UNEXPECTED.search(str(error))
        if match is None or match.group(1) not in given:
            raise
        raise ConvscopeError(f"the {found.kind} drawing has no option {match.group(1)}={given[match.group(1)]!r}; "
                             f"leave it out{_options_of(found)}") from error


def _options_of(found: Drawer) -> str:
    """' (it takes a, b)' when the kind's drawing functions name all their options, else ''."""
    names: dict[str, None] = {}
    for fn in (found.figure, found.picture):
        if fn is None:
            continue
        try:
            parameters = list(inspect.signature(fn).parameters.values())[1:]
        except (TypeError, ValueError):
            return ""
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return ""
        names.update(dict.fromkeys(p.name for p in parameters if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)))
    return f" (it takes {', '.join(names)})" if names else " (it takes no options)"


def _rgb(array: Any, kind: str) -> np.ndarray:
    """A drawer's picture as uint8 RGB (H, W, 3) (grey and RGBA pictures converted)."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise TypeError(f"the {kind} drawer made a {array.dtype} array of shape {array.shape}, not a uint8 picture (H, W, 3)")
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return np.ascontiguousarray(array[..., :3])


def _drawn(obj: Any, style: dict[str, Any]) -> np.ndarray | Figure:
    """The kind's own picture when it has one for these options, else its figure."""
    found = drawer_for(obj)
    if found.picture is not None:
        direct = _draw(found, found.picture, obj, style)
        if direct is not None:
            return _rgb(direct, found.kind)
    return _draw(found, found.figure, obj, style)


def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def _picture_figure(array: np.ndarray) -> Figure:
    """A figure that is exactly ``array`` (one pixel per figure pixel at ``DPI``): a picture in vector formats."""
    from matplotlib.figure import Figure

    height, width = array.shape[:2]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(array, interpolation="none")  # "none": vector formats embed the pixels as they are
    ax.set_axis_off()
    return fig


# -- the entry points ----------------------------------------------------------------------------------------
def figure(obj: Any, **style: Any) -> Figure:
    """A matplotlib Figure of ``obj`` (no GUI backend needed)."""
    found = drawer_for(obj)
    return _draw(found, found.figure, obj, style)


def picture(obj: Any, **style: Any) -> np.ndarray:
    """``obj`` as one uint8 RGB picture (H, W, 3): its own picture when the kind has one, else its figure
    rendered at ``DPI``."""
    drawn = _drawn(obj, style)
    return drawn if isinstance(drawn, np.ndarray) else _decode(figure_png(drawn, DPI))


def to_png(obj: Any, **style: Any) -> bytes:
    """PNG bytes of ``obj``: the picture :func:`picture` gives."""
    drawn = _drawn(obj, style)
    return png_bytes(drawn) if isinstance(drawn, np.ndarray) else figure_png(drawn, DPI)


def caption(obj: Any) -> str:
    """One line: what the picture shows ("" when the kind says nothing)."""
    found = drawer_for(obj)
    return found.caption(obj) if found.caption is not None else ""


def text(obj: Any) -> str:
    """The words the command line prints for ``obj`` (a table, or one line)."""
    found = drawer_for(obj)
    if found.text is not None:
        return found.text(obj)
    return caption(obj) or repr(obj)


def to_html(obj: Any, **style: Any) -> str:
    """An HTML fragment: the kind's own HTML (a table), else the picture inline (a data URI) with its caption."""
    found = drawer_for(obj)
    if found.html is not None:
        return _draw(found, found.html, obj, style)
    words = caption(obj)
    alt = _html.escape(words or found.kind)
    figcaption = f"<figcaption>{_html.escape(words)}</figcaption>" if words else ""
    return (f'<figure class="convscope {found.kind}"><img src="{data_uri(to_png(obj, **style))}" alt="{alt}" '
            f'style="max-width:100%">{figcaption}</figure>')


def mimebundle(obj: Any, **style: Any) -> dict[str, Any]:
    """What a notebook shows, drawn once: ``{"text/html": ...}`` for kinds with their own HTML (tables), else
    ``{"image/png": ...}``. (IPython adds ``text/plain`` from the object's repr.)"""
    found = drawer_for(obj)
    if found.html is not None:
        return {"text/html": _draw(found, found.html, obj, style)}
    return {"image/png": to_png(obj, **style)}


PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5rem}figure{margin:0}figcaption{color:#444;margin-top:.4rem}"
              "table{border-collapse:collapse;font-variant-numeric:tabular-nums}"
              "th,td{border-bottom:1px solid #ddd;padding:.2rem .6rem;text-align:left}pre{font-size:.85rem}")


def _page(obj: Any, style: dict[str, Any]) -> str:
    title = _html.escape(caption(obj) or kind_of(obj))
    return (f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{PAGE_STYLE}</style></head>\n<body>{to_html(obj, **style)}</body></html>\n")


def _formats() -> str:
    return ", ".join([*RASTER_FORMATS, *VECTOR_FORMATS, *PAGE_FORMATS])


def to_bytes(obj: Any, suffix: str, **style: Any) -> bytes:
    """``obj`` encoded as the file format of ``suffix`` (".png", ".jpg", ".pdf", ".html", ...: see ``save``)."""
    suffix = "." + suffix.lower().lstrip(".")
    if suffix in ANIMATION_FORMATS:
        found = drawer_for(obj)
        if found.animation is not None:
            return _draw(found, found.animation, obj, {**style, "format": suffix[1:]})
        if suffix == ".apng":
            raise ConvscopeError(f"an animated PNG (.apng) is made of videos only; save this {found.kind} as .png")
    if suffix in RASTER_FORMATS:
        fmt = RASTER_FORMATS[suffix]
        if fmt == "PNG":
            return to_png(obj, **style)
        from PIL import Image

        buffer = io.BytesIO()
        options = {"quality": LOSSY_QUALITY} if fmt in ("JPEG", "WEBP") else {}
        Image.fromarray(picture(obj, **style)).save(buffer, format=fmt, **options)
        return buffer.getvalue()
    if suffix in VECTOR_FORMATS:
        drawn = _drawn(obj, style)
        buffer = io.BytesIO()
        if isinstance(drawn, np.ndarray):  # the picture, pixel for pixel
            _picture_figure(drawn).savefig(buffer, format=VECTOR_FORMATS[suffix], dpi=DPI)
        else:
            drawn.savefig(buffer, format=VECTOR_FORMATS[suffix], dpi=DPI, **FIGURE_SAVE)
        return buffer.getvalue()
    if suffix in PAGE_FORMATS:
        return _page(obj, style).encode("utf-8")
    raise ConvscopeError(f"cannot write a {suffix!r} file; use one of {_formats()}")


def save(obj: Any, path: str | os.PathLike, **style: Any) -> Path:
    """Write ``obj`` to ``path``; the format follows the suffix: PNG, JPEG, WebP, TIFF, BMP, GIF (pictures),
    PDF, SVG, EPS (vector figures; a single picture is embedded pixel for pixel) or HTML (a standalone
    page). Everything is drawn before the file is made; parent folders are made."""
    path = Path(path).expanduser()
    suffix = path.suffix.lower()
    if suffix not in RASTER_FORMATS and suffix not in VECTOR_FORMATS and suffix not in PAGE_FORMATS \
            and suffix not in ANIMATION_FORMATS:
        raise ConvscopeError(f"cannot tell the format of {str(path)!r} from its suffix; end the name with one of {_formats()}")
    data = to_bytes(obj, suffix, **style)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# -- show ----------------------------------------------------------------------------------------------------
def _in_notebook() -> bool:
    """Inside a Jupyter kernel (notebook, JupyterLab, VS Code, Colab): rich display works."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and any(cls.__name__ == "ZMQInteractiveShell" for cls in type(shell).__mro__)


def _window_backends() -> set[str]:
    """matplotlib backends that open a window from a script (the notebook ones draw only inside a kernel)."""
    try:
        from matplotlib.backends import BackendFilter, backend_registry  # matplotlib >= 3.9
    except ImportError:
        from matplotlib import rcsetup

        names = rcsetup.interactive_bk
    else:
        names = backend_registry.list_builtin(BackendFilter.INTERACTIVE)
    return {name.lower() for name in names} - {"nbagg", "notebook"}


def _opens_window() -> bool:
    """Whether matplotlib's backend opens windows (it falls back to Agg when there is no display)."""
    import matplotlib

    return matplotlib.get_backend().lower() in _window_backends()


def _window(array: np.ndarray, title: str) -> None:
    import matplotlib.pyplot as plt

    height, width = array.shape[:2]
    fig = plt.figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    if fig.canvas.manager is not None:
        fig.canvas.manager.set_window_title(title)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.imshow(array)
    ax.set_axis_off()
    plt.show()


def show(obj: Any, **style: Any) -> Path | None:
    """Display ``obj``: inline in a notebook; a table is printed outside one; a picture opens in a matplotlib
    window when one can open; otherwise (a plain script without a display, or ``MPLBACKEND=Agg``) it is
    written to a temporary PNG whose path is printed on stderr (and opened in the desktop's viewer when there
    is a desktop and matplotlib chose Agg on its own). Returns that path, or None when shown. Never silent."""
    found = drawer_for(obj)
    if _in_notebook():
        from IPython.display import display

        plain = text(obj) if found.textual else repr(obj)
        display({"text/plain": plain, **mimebundle(obj, **style)}, raw=True)
        return None
    if found.textual:
        print(text(obj))
        return None
    array, reason = None, "no window can open here"
    if _opens_window():
        array = picture(obj, **style)
        try:
            _window(array, caption(obj) or f"convscope {found.kind}")
            return None
        except Exception as error:  # a GUI toolkit without a display (TclError, ...): the file below instead
            reason = f"the window did not open ({type(error).__name__}: {str(error).strip()[:200]})".replace("\n", " ")
    data = png_bytes(array) if array is not None else to_png(obj, **style)
    handle, name = tempfile.mkstemp(prefix=f"convscope-{found.kind}-", suffix=".png")
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    path = Path(name)
    print(f"convscope: {reason}; the picture is in {path}", file=sys.stderr)
    desktop = sys.platform in ("darwin", "win32") or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if desktop and "MPLBACKEND" not in os.environ:
        import webbrowser

        webbrowser.open(path.resolve().as_uri())
    return path
