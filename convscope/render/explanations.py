"""A folder of dataset explanations (kind "explanations"): a sample of its pictures with their maps, and its numbers."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any

import numpy as np

from .scale import blend, colorbar, relative, relative_scale

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..store import Explanations

__all__ = ["explanations_figure"]


def _sample(explanations: Explanations, k: int) -> list[int]:
    """``k`` pictures spread evenly over the dataset (the first, the last and between)."""
    count = min(k, len(explanations))
    return sorted({int(v + 0.5) for v in np.linspace(0, len(explanations) - 1, count)}) if count else []


def _upsampled(maps: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(maps, dtype=np.float32))[:, None]
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)[:, 0].numpy()


def explanations_figure(explanations: Explanations, *, k: int = 12, ncols: int = 6) -> Figure:
    """Up to ``k`` pictures spread over the dataset, each with its map (scaled by its own maximum) over its
    thumbnail, titled with the explained class and its probability."""
    import matplotlib.pyplot as plt

    chosen = _sample(explanations, k)
    table = explanations.table(["index", "explained_label", "explained_probability", "label"]).to_pydict()
    rows = {index: i for i, index in enumerate(table["index"])}
    written = [i for i in chosen if i in rows]
    maps = explanations.maps(written).numpy() if written else np.zeros((0, 1, 1), np.float32)
    thumbs = explanations.thumbnails(written) if written and explanations.manifest.get("thumbnail") else None
    nrows = max(1, -(-len(written) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.9 * nrows + 0.3), squeeze=False)
    scale = relative_scale(False)
    drawn = []
    for ax, (j, index) in zip(axes.flat, enumerate(written)):
        values = relative(maps[j], False)
        if thumbs is not None:
            picture = thumbs[j]
            heat = blend(picture, _upsampled(values[None], picture.shape[:2])[0], scale)
        else:
            heat = blend(np.full((*maps.shape[1:], 3), 255, np.uint8), values, scale, alpha=1.0, uniform=True)
        ax.imshow(heat)
        row = rows[index]
        probability = table["explained_probability"][row]
        shown = f" {probability:.0%}" if probability is not None and np.isfinite(probability) else ""
        truth = f"\n(label {table['label'][row]})" if table["label"][row] is not None else ""
        ax.set_title(f"#{index}: {table['explained_label'][row]}{shown}{truth}", fontsize=7)
        drawn.append(ax)
    for ax in axes.flat:
        ax.set_axis_off()
    if drawn:
        colorbar(fig, drawn, scale, fontsize=6, fraction=0.02)
    fig.suptitle(f"{explanations.method}: {len(explanations):,} pictures in {explanations.folder.name}/ (a sample)", fontsize=9)
    return fig


def _html(explanations: Explanations, **style: Any) -> str:
    from .encode import figure_img

    image = figure_img(explanations_figure(explanations, **style), "a sample of the explanations")
    return f'<div class="convscope explanations">{image}<pre>{html.escape(explanations.text())}</pre></div>'


def _register() -> None:
    from .dispatch import drawer

    drawer("explanations", figure=explanations_figure, caption=lambda e: e.text().splitlines()[0], text=lambda e: e.text(),
           html=_html)


_register()
