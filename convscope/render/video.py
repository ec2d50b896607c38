"""Drawing videos and volumes: results whose data is (B, C, T, H, W) — a map (B, 1, T, H, W), pixel attributions
(B, C, T, H, W) or a 3-D layer's feature maps (B, K, t, h, w).

- a **frame strip**: a row of frames with the map overlaid (opacity from the value), frame numbers above, and one
  colour bar for the whole clip (one scale over every frame, so frames can be compared); a batch is one row per clip;
- an **animation**: the same overlays one after another, each with the colour bar, as an animated GIF or APNG
  (Pillow) — ``save(result, "clip.gif")`` or :func:`animation`;
- feature maps: the strongest channels as rows and the frames as columns, each channel scaled to its own peak over
  the clip (one relative colour bar).

``render.dispatch`` sends a Result whose data has five dimensions here instead of to the picture drawers of its kind.
Colours come from ``render.scale`` like every other heatmap.
"""

from __future__ import annotations

import html as html_text
import io
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..result import Result
from .scale import MAX_OPACITY, PIXEL_CLIP, Scale, blend, colorbar_strip, relative, relative_scale, scale_of, units_of

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["MAX_FRAMES", "animation", "clip_frames", "clip_values", "frame_strip", "is_video", "video_scale"]

MAX_FRAMES = 8  # a strip shows at most this many frames, spread from the first to the last
MIN_SIDE = 112  # frames smaller than this are enlarged by a whole factor (nearest neighbour) to stay legible
MIN_ANIMATED = 192  # an animation shows one frame at a time: bigger
GAP = 4  # white pixels between frames
FRAME_MS = 250  # an animation's frame time


def is_video(obj: Any) -> bool:
    """Whether ``obj`` is a Result holding a video or volume: data (B, C, T, H, W)."""
    return isinstance(obj, Result) and isinstance(obj.data, torch.Tensor) and obj.data.dim() == 5


def _signed(result: Result) -> bool:
    said = result.meta.get("signed")
    if said is not None:
        return bool(said)
    return result.data.shape[1] == 1 and bool((result.data < 0).any())


def clip_values(result: Result) -> np.ndarray:
    """(B, T, H, W) float32: what is coloured in each frame — a map as it is (less ``meta["neutral"]``), signed pixel
    attributions summed over channels, unsigned ones as their largest |value| over channels."""
    data = result.data.detach().float().cpu()
    if data.shape[1] == 1:
        values = data[:, 0]
    elif _signed(result):
        values = data.sum(dim=1)
    else:
        values = data.abs().amax(dim=1)
    neutral = result.meta.get("neutral")
    if neutral is not None:
        values = values - torch.as_tensor(neutral, dtype=torch.float32).reshape(-1, 1, 1, 1)
    return values.numpy()


def video_scale(result: Result, index: int | None = None, *, signed: bool | None = None, clip: float | None = None,
                cmap: str | None = None) -> Scale:
    """One scale for every frame of clip ``index`` (None: shared by the batch); pixel attributions clipped at the
    99.5th percentile unless ``clip`` says otherwise."""
    values = clip_values(result)
    if index is not None:
        values = values[index]
    if clip is None and result.data.shape[1] > 1:
        clip = PIXEL_CLIP
    scope = "per video" if index is not None or len(result) == 1 else "shared by all videos"
    scale = scale_of(values, signed=_signed(result) if signed is None else signed, units=units_of(result), scope=scope,
                     clip=clip)
    if cmap:
        from dataclasses import replace

        scale = replace(scale, cmap=cmap)
    return scale


def clip_frames(result: Result, index: int = 0) -> np.ndarray:
    """The explained clip ``index`` as uint8 RGB frames (T, H, W, 3), undoing the normalization (without one, the
    clip is min-max scaled as a whole); grey when the result holds no inputs."""
    from ..images import to_uint8

    if result.inputs is None:
        _, _, frames, height, width = result.data.shape
        return np.full((frames, height, width, 3), 128, np.uint8)
    data = result.inputs[index].detach().float().cpu()  # (C, T, H, W)
    per_channel = (-1, 1, 1, 1)
    if result.std is not None:
        data = data * torch.tensor(result.std).view(per_channel)
    if result.mean is not None:
        data = data + torch.tensor(result.mean).view(per_channel)
    if result.mean is None and result.std is None:
        data = (data - data.min()) / (data.max() - data.min()).clamp_min(1e-12)
    return to_uint8(data.transpose(0, 1))  # (T, C, H, W) -> (T, H, W, 3)


def _chosen_frames(count: int, max_frames: int) -> list[int]:
    if count <= max_frames:
        return list(range(count))
    return sorted({round(i * (count - 1) / (max_frames - 1)) for i in range(max_frames)}) if max_frames > 1 else [0]


def _enlarge(picture: np.ndarray, side: int = MIN_SIDE) -> np.ndarray:
    factor = -(-side // min(picture.shape[:2])) if min(picture.shape[:2]) < side else 1
    return picture.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else picture


def _label(picture: np.ndarray, text: str) -> np.ndarray:
    """``picture`` with a white band above it holding ``text`` (Pillow's default font)."""
    from PIL import Image, ImageDraw

    band = Image.new("RGB", (picture.shape[1], 14), "white")
    ImageDraw.Draw(band).text((2, 1), text, fill=(40, 40, 40))
    return np.concatenate([np.asarray(band), picture], axis=0)


def _row(frames: list[np.ndarray]) -> np.ndarray:
    gap = np.full((frames[0].shape[0], GAP, 3), 255, np.uint8)
    parts: list[np.ndarray] = []
    for frame in frames:
        parts += [frame, gap]
    return np.concatenate(parts[:-1], axis=1)


def _stack(rows: list[np.ndarray]) -> np.ndarray:
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, GAP), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    return np.concatenate(padded, axis=0)[:-GAP]


def overlays(result: Result, index: int, scale: Scale, *, alpha: float = MAX_OPACITY) -> list[np.ndarray]:
    """Every frame of clip ``index`` with the map overlaid on ``scale``: uint8 (H, W, 3) each."""
    frames = clip_frames(result, index)
    values = clip_values(result)[index]
    return [blend(frame, value, scale, alpha=alpha) for frame, value in zip(frames, values)]


def frame_strip(result: Result, *, index: int | None = None, max_frames: int = MAX_FRAMES, alpha: float = MAX_OPACITY,
                signed: bool | None = None, clip: float | None = None, cmap: str | None = None, colorbar: bool = True,
                shared: bool | None = None) -> np.ndarray:
    """Frame strip(s), uint8 (H, W, 3): per clip a row of at most ``max_frames`` frames (spread from the first to the
    last) with the map overlaid, the frame number above each, and one colour bar on the right. ``index``: one
    clip of the batch; a batch gets one row per clip on one shared scale."""
    if result.kind == "feature_maps":
        return feature_strip(result, index=index or 0, max_frames=max_frames, cmap=cmap, colorbar=colorbar)
    indices = [index] if index is not None else list(range(len(result)))
    scale = video_scale(result, indices[0] if len(indices) == 1 else None, signed=signed, clip=clip, cmap=cmap)
    rows = []
    for i in indices:
        frames = overlays(result, i, scale, alpha=alpha)
        chosen = _chosen_frames(len(frames), max(1, int(max_frames)))
        rows.append(_row([_label(_enlarge(frames[t]), f"frame {t}") for t in chosen]))
    strip = _stack(rows)
    return _with_bar(strip, scale) if colorbar else strip


def _with_bar(picture: np.ndarray, scale: Scale) -> np.ndarray:
    height = max(picture.shape[0], 160)
    if picture.shape[0] < height:
        picture = np.pad(picture, ((0, height - picture.shape[0]), (0, 0), (0, 0)), constant_values=255)
    return np.ascontiguousarray(np.concatenate([picture, colorbar_strip(scale, height)], axis=1))


def feature_strip(result: Result, *, index: int = 0, k: int = 6, max_frames: int = MAX_FRAMES, cmap: str | None = None,
                  colorbar: bool = True) -> np.ndarray:
    """A 3-D layer's feature maps (B, K, t, h, w) of clip ``index``: the ``k`` channels with the largest mean
    activation as rows, the frames as columns, each channel relative to its own peak over the clip."""
    data = result.data[index].detach().float().cpu()  # (K, t, h, w)
    strength = data.mean(dim=(1, 2, 3))
    channels = strength.topk(max(1, min(int(k), data.shape[0]))).indices.tolist()
    signed = bool(data.numel() and float(data.min()) < 0)
    scale = relative_scale(signed, "channel")
    if not signed:
        from dataclasses import replace

        scale = replace(scale, cmap=cmap or "viridis")
    chosen = _chosen_frames(data.shape[1], max(1, int(max_frames)))
    rows = []
    for c in channels:
        values = relative(data[c], signed)  # (t, h, w) on its own peak
        tiles = [_enlarge(scale.colours(values[t])) for t in chosen]
        rows.append(_row([_label(tile, f"ch {c} · frame {t}" if t == chosen[0] else f"frame {t}")
                          for tile, t in zip(tiles, chosen)]))
    strip = _stack(rows)
    return _with_bar(strip, scale) if colorbar else strip


def walk_strip(walk: Any, *, index: int = 0, max_frames: int = MAX_FRAMES, cmap: str | None = None,
               colorbar: bool = True) -> np.ndarray:
    """A feature walk through 3-D layers (label -> feature maps (B, K, t, h, w)): the clip's frames, then per layer
    its strongest channel frame by frame, each relative to its own peak over the clip (one relative colour bar)."""
    from dataclasses import replace

    results = list(walk.values())
    chosen = _chosen_frames(results[0].inputs.shape[2] if results[0].inputs is not None else 1, max(1, int(max_frames)))
    rows = []
    if results[0].inputs is not None:
        frames = clip_frames(results[0], index)
        rows.append(_row([_label(_enlarge(frames[t]), f"input · frame {t}" if t == chosen[0] else f"frame {t}")
                          for t in chosen]))
    signed = any(float(r.data.min()) < 0 for r in results)
    scale = relative_scale(signed, "channel")
    scale = scale if signed else replace(scale, cmap=cmap or "viridis")
    for label, result in walk.items():
        data = result.data[index].detach().float().cpu()  # (K, t, h, w)
        channel = int(data.mean(dim=(1, 2, 3)).argmax())
        values = relative(data[channel], signed)
        steps = _chosen_frames(data.shape[1], max(1, int(max_frames)))
        rows.append(_row([_label(_enlarge(scale.colours(values[t])), f"{label} ch {channel} · t {t}" if t == steps[0]
                                 else f"t {t}") for t in steps]))
    strip = _stack(rows)
    return _with_bar(strip, scale) if colorbar else strip


def animation(result: Result, *, index: int = 0, format: str = "gif", frame_ms: int = FRAME_MS, alpha: float = MAX_OPACITY,
              signed: bool | None = None, clip: float | None = None, cmap: str | None = None, **_: Any) -> bytes:
    """Clip ``index`` as an animation: each frame with the map overlaid and the clip's one colour bar, looping;
    ``format`` "gif" or "apng" (an animated PNG, full colour). Feature maps animate the strongest channels."""
    from PIL import Image

    fmt = format.lower().lstrip(".")
    if fmt not in ("gif", "apng", "png"):
        from ..errors import ConvscopeError

        raise ConvscopeError(f"an animation is a GIF or an APNG, not {format!r}; use format='gif' or 'apng'")
    if result.kind == "feature_maps":
        data = result.data[index].detach().float().cpu()
        channels = data.mean(dim=(1, 2, 3)).topk(min(6, data.shape[0])).indices.tolist()
        signed_maps = bool(float(data.min()) < 0)
        scale = relative_scale(signed_maps, "channel")
        pictures = [_row([_enlarge(scale.colours(relative(data[c], signed_maps)[t])) for c in channels])
                    for t in range(data.shape[1])]
    else:
        scale = video_scale(result, index, signed=signed, clip=clip, cmap=cmap)
        pictures = [_enlarge(frame, MIN_ANIMATED) for frame in overlays(result, index, scale, alpha=alpha)]
    pictures = [_label(p, f"frame {t + 1} of {len(pictures)}") for t, p in enumerate(pictures)]
    bar = colorbar_strip(scale, max(pictures[0].shape[0], 160))
    frames = []
    for picture in pictures:
        if picture.shape[0] < bar.shape[0]:
            picture = np.pad(picture, ((0, bar.shape[0] - picture.shape[0]), (0, 0), (0, 0)), constant_values=255)
        frames.append(Image.fromarray(np.ascontiguousarray(np.concatenate([picture, bar], axis=1))))
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF" if fmt == "gif" else "PNG", save_all=True, append_images=frames[1:],
                   duration=int(frame_ms), loop=0, **({"optimize": False} if fmt == "gif" else {}))
    return buffer.getvalue()


# -- the drawers ----------------------------------------------------------------------------------------------
def _picture(result: Result, *, index: int | None = None, image: Any = None, **style: Any) -> np.ndarray:
    if image is not None:
        from ..errors import ConvscopeError

        raise ConvscopeError("image= draws a map over another picture; a video's frames come from its own input")
    return frame_strip(result, index=index, **style)


def _picture_figure(picture: np.ndarray) -> Figure:
    from .dispatch import _picture_figure as as_figure

    return as_figure(picture)


def _figure(result: Result, **style: Any) -> Figure:
    return _picture_figure(_picture(result, **style))


def _caption(result: Result) -> str:
    frames = result.data.shape[2]
    what = "feature maps" if result.kind == "feature_maps" else result.method
    parts = [what]
    if result.labels:
        parts.append(f"'{result.labels[0]}'")
    parts.append(f"{frames} frames" + (f", {len(result)} videos" if len(result) > 1 else ""))
    if result.layer:
        parts.append(f"layer {result.layer}")
    return " · ".join(parts)


def _html(result: Result, *, index: int | None = None, mask: float | None = None, width: int | None = None,
          **style: Any) -> str:
    """The frame strip and, per clip, the animation (a GIF inline). ``mask`` and ``width`` (the report's picture
    options) are not used: a clip is shown whole, at its own size."""
    import base64

    from .core import data_uri, png_bytes

    strip = data_uri(png_bytes(_picture(result, index=index, **style)))
    indices = [index] if index is not None else list(range(min(len(result), 4)))
    keep = {key: style[key] for key in ("signed", "clip", "cmap", "alpha") if key in style}
    gifs = "".join(f'<img src="data:image/gif;base64,{base64.b64encode(animation(result, index=i, **keep)).decode()}" '
                   f'alt="video {i + 1}, animated" style="max-width:100%">' for i in indices)
    words = html_text.escape(_caption(result))
    return (f'<figure class="convscope {result.kind} video"><img src="{strip}" alt="{words}" style="max-width:100%">'
            f'{gifs}<figcaption>{words}</figcaption></figure>')


def _text(result: Result) -> str:
    return _caption(result)


def _register() -> None:
    from .dispatch import video_drawer

    for kind in ("map", "pixels", "feature_maps"):
        video_drawer(kind, figure=_figure, picture=_picture, html=_html, caption=_caption, text=_text, animation=animation)
    video_drawer("feature_walk", figure=lambda walk, **style: _picture_figure(walk_strip(walk, **style)), picture=walk_strip,
                 caption=lambda walk: f"feature maps of {len(walk)} 3-D layers: {', '.join(walk)}")


_register()

