"""The single Result type every method returns: raw values plus where they came from.

``data`` is never display-normalized, so results can be compared and combined; rendering
(``convscope.render``) is the only place that scales values into colours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["Result"]


@dataclass(eq=False)
class Result:
    """What a method computed for a batch.

    data:    float tensor, batch-first, at the input's H×W: (B, 1, H, W) for map methods (CAM family,
             occlusion…), (B, C, H, W) for pixel-gradient methods.
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

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def __repr__(self) -> str:
        target = None if self.target is None else self.target.tolist()
        return (f"Result(method={self.method!r}, data={tuple(self.data.shape)}, layer={self.layer!r}, "
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

    # -- pictures (delegated to convscope.render) ----------------------------------------------
    def overlay(self, index: int = 0, *, image: Any = None, **style: Any) -> np.ndarray:
        """The heatmap of image ``index`` over its picture, uint8 (H, W, 3)."""
        from .render import overlay_result

        return overlay_result(self, index, image=image, **style)

    def figure(self, **style: Any) -> Any:
        """A matplotlib figure: every image of the batch with its overlay, titled with the label."""
        from .render import result_figure

        return result_figure(self, **style)

    def save(self, path: str | Path, *, image: Any = None, index: int | None = None, **style: Any) -> Path:
        """Write a PNG: the overlay of one image (``index``), or a grid of the whole batch."""
        from .render import save_result

        return save_result(self, path, image=image, index=index, **style)

    def show(self, **style: Any) -> None:
        """Display the figure (notebooks, or a window when one is available)."""
        import matplotlib.pyplot as plt

        self.figure(**style)
        plt.show()

    def _repr_png_(self) -> bytes:
        from .render import figure_png

        return figure_png(self.figure())
