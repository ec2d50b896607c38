"""The single Result type every tool returns for tensors, and what every computed object shares to be seen.

``data`` is never display-normalized, so results can be compared and combined; rendering
(``convscope.render``) is the only place that scales values into colours. Every object a tool returns
(``Result``, ``Comparison``, ``Audit``, ``Embedding``, tables, ...) knows its ``kind`` and is
:class:`Displayable`: ``save`` / ``show`` / ``figure`` / notebook display all go through one render entry
point, which draws by kind. Compute code never imports render; this module hands over to it lazily.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["RESULT_KINDS", "Displayable", "Result", "Table"]

# What a Result's ``data`` holds (other displayable objects carry their own ``kind``):
RESULT_KINDS = {
    "map": "(B, 1, H, W) one value per pixel: an explanation map",
    "pixels": "(B, C, H, W) a value per pixel and channel: a pixel attribution (gradients)",
    "picture": "(B, C, H, W) pictures in [0, 1]: made by optimization (activation maximization, class images, Deep Dream)",
    "feature_maps": "(B, K, h, w) a layer's raw activations",
    "filters": "(out, in, kh, kw) a convolution's kernels",
}


class Displayable:
    """Anything convscope computes that can be looked at. ``kind`` says what it is; the render entry point
    (``convscope.render``) draws it by kind: ``save`` (format from the suffix), ``show`` (a window, a
    notebook, or a file when there is no display), ``figure`` (matplotlib), ``to_png``, ``to_html`` and
    the notebook's rich display."""

    kind: str = ""

    def figure(self, **style: Any) -> Any:
        """A matplotlib Figure of this object (no GUI backend needed)."""
        from . import render

        return render.figure(self, **style)

    def to_png(self, **style: Any) -> bytes:
        """PNG bytes of this object's picture."""
        from . import render

        return render.to_png(self, **style)

    def to_html(self, **style: Any) -> str:
        """An HTML fragment (the picture inline, with its caption or table): reports and notebooks."""
        from . import render

        return render.to_html(self, **style)

    def save(self, path: str | Path, **style: Any) -> Path:
        """Write the picture; the format follows the suffix (.png, .jpg, .webp, .tif, .pdf, .svg, .html)."""
        from . import render

        return render.save(self, path, **style)

    def show(self, **style: Any) -> Path | None:
        """Display it: inline in a notebook, in a window when one can open, else written to a PNG whose
        path is printed and returned (a plain script on a machine without a display)."""
        from . import render

        return render.show(self, **style)

    def _repr_png_(self) -> bytes | None:
        from . import render

        return render.to_png(self)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """What a notebook shows, drawn once: the picture (PNG), or the HTML of kinds that have their own (tables)."""
        from . import render

        return render.mimebundle(self)


class Table(str, Displayable):
    """Text that is a table (``cs.summary``, predictions): prints as text, displays as an HTML table in a
    notebook. ``columns`` and ``rows`` hold the cells; the string is the text rendering."""

    kind = "table"
    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    title: str

    def __new__(cls, text: str, *, columns: Sequence[str] = (), rows: Sequence[Sequence[Any]] = (),
                title: str = "") -> Table:
        self = super().__new__(cls, text)
        self.columns, self.rows, self.title = tuple(columns), tuple(tuple(r) for r in rows), title
        return self

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # IPython: the text, not its repr
        printer.text(str(self))

    def _repr_png_(self) -> bytes | None:  # a table is text: no picture in notebooks
        return None


@dataclass(eq=False)
class Result(Displayable):
    """What a tool computed for a batch.

    data:    float tensor, batch-first; what it holds is ``kind`` (see ``RESULT_KINDS``): for explanations
             at the input's H×W, (B, 1, H, W) for map methods (CAM family, occlusion…), (B, C, H, W) for
             pixel-gradient methods.
    kind:    "map", "pixels", "picture", "feature_maps" or "filters" (how it is drawn).
    target:  LongTensor (B,) of the classes explained (resolved when the call said ``None``); None
             when the target was a callable.
    method, layer: what produced it; labels: the label of each explained class (or None).
    meta:    method-specific extras (scores, probabilities, the layer's activation size, …).
    inputs:  the explained batch (B, C, H, W) as preprocessed (detached), for overlays.
    mean, std: the input normalization, to turn ``inputs`` back into pictures.
    """

    data: torch.Tensor
    method: str
    target: torch.Tensor | None = None
    layer: str | None = None
    labels: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: torch.Tensor | None = field(default=None, repr=False)
    mean: tuple[float, ...] | None = field(default=None, repr=False)
    std: tuple[float, ...] | None = field(default=None, repr=False)
    kind: str = "map"

    def __post_init__(self) -> None:
        if self.kind not in RESULT_KINDS:
            raise ValueError(f"unknown Result kind {self.kind!r}; one of {', '.join(RESULT_KINDS)}")

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        target = None if self.target is None else self.target.tolist()
        return (f"Result(method={self.method!r}, kind={self.kind!r}, data={tuple(self.data.shape)}, layer={self.layer!r}, "
                f"target={target}, labels={self.labels})")

    def __getitem__(self, index: int | slice | Sequence[int]) -> Result:
        """The results of some images of the batch (``result[0]``, ``result[1:3]``, ``result[[0, 2]]``)."""
        if isinstance(index, slice):
            rows = list(range(len(self)))[index]
        elif isinstance(index, int):
            rows = [list(range(len(self)))[index]]
        else:
            rows = [int(i) for i in index]

        def pick(value: Any) -> Any:
            if isinstance(value, torch.Tensor) and value.dim() and value.shape[0] == len(self):
                return value[torch.tensor(rows, dtype=torch.long, device=value.device)]
            if isinstance(value, list) and len(value) == len(self):
                return [value[i] for i in rows]
            return value

        return replace(self, data=pick(self.data), target=pick(self.target), labels=pick(self.labels),
                       meta={k: pick(v) for k, v in self.meta.items()}, inputs=pick(self.inputs))

    # -- values ------------------------------------------------------------------------------
    def maps(self) -> torch.Tensor:
        """(B, H, W) one value per pixel: the map itself, or for pixel-gradient methods the maximum
        absolute value over channels (Simonyan et al. 2013). Still raw, not normalized."""
        data = self.data.detach()
        if data.dim() != 4:
            raise ValueError(f"{self.method} result has shape {tuple(data.shape)}, not a (B, C, H, W) map")
        return data[:, 0] if data.shape[1] == 1 else data.abs().amax(dim=1)

    def images(self) -> np.ndarray:
        """The explained inputs as uint8 RGB pictures (B, H, W, 3), undoing the normalization."""
        from .render import tensor_to_images

        if self.inputs is None:
            raise ValueError("this result does not hold its inputs; pass image=... to render it")
        return tensor_to_images(self.inputs, self.mean, self.std)

    def cpu(self) -> Result:
        move = lambda v: v.cpu() if isinstance(v, torch.Tensor) else v
        return replace(self, data=self.data.cpu(), target=move(self.target), inputs=move(self.inputs),
                       meta={k: move(v) for k, v in self.meta.items()})

    # -- pictures (convscope.render draws them; see Displayable) ---------------------------------
    def overlay(self, index: int = 0, *, image: Any = None, **style: Any) -> np.ndarray:
        """The heatmap of image ``index`` over its picture, uint8 (H, W, 3)."""
        from .render import overlay_result

        return overlay_result(self, index, image=image, **style)

    def save(self, path: str | Path, *, image: Any = None, index: int | None = None, **style: Any) -> Path:
        """Write the picture (format from the suffix): one image's overlay (``index``, or a batch of one),
        else the batch figure. ``image``: draw over this picture instead of the explained input."""
        from . import render

        return render.save(self, path, image=image, index=index, **style)
