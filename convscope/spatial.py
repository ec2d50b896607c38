"""Spatial views of layer outputs: every layer a method reads becomes (B, C, *S) — S = (h, w), or (t, h, w) for video.

CNN layers already give (B, C, h, w). Other vision models keep their maps in other shapes:

- token sequences (B, N, C) — ViT, DeiT, LeViT, CoaT: N = prefix + h·w, where the prefix holds the class /
  distillation / register tokens (dropped; timm's ``num_prefix_tokens`` says how many, else the smallest prefix that
  leaves a grid with the picture's aspect ratio);
- channels-last maps (B, h, w, C) — Swin's stages, ConvNeXt's inner layers, Keras layers (their wrappers carry
  ``convscope_channels_last = True``): read channels-first when that reading is not a grid of the picture and the
  channels-last one is.

A :class:`Layout` turns an output into its spatial view and back (the view is differentiable, so gradients taken
to the view are gradients to the layer); ``hooks.Guard`` applies it to every captured or edited layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["Layout", "grid_fits", "layout_for"]

MAX_PREFIX = 8  # class + distillation + register tokens in the vision transformers we know of


@dataclass(frozen=True)
class Layout:
    """How a layer's output (without the batch dimension, ``shape``) maps to (C, *grid).

    kind: "channels_first" (C, *grid) as it is; "channels_last" (*grid, C); "tokens" (prefix + prod(grid), C).
    """

    kind: str
    grid: tuple[int, ...]
    channels: int
    prefix: int = 0

    @property
    def positions(self) -> int:
        return math.prod(self.grid)

    def to_spatial(self, output: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> (B, C, *grid); a differentiable view or copy."""
        if self.kind == "channels_first":
            return output
        if self.kind == "channels_last":
            dims = output.dim()
            return output.permute(0, dims - 1, *range(1, dims - 1))
        tokens = output[:, self.prefix:]  # (B, h·w, C)
        return tokens.transpose(1, 2).reshape(output.shape[0], self.channels, *self.grid)

    def from_spatial(self, spatial: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
        """The layer's output with its spatial part replaced by ``spatial`` (B, C, *grid); the prefix tokens are
        taken from ``original`` (detached: nothing below a captured layer is differentiated)."""
        if self.kind == "channels_first":
            return spatial
        if self.kind == "channels_last":
            dims = spatial.dim()
            return spatial.permute(0, *range(2, dims), 1)
        tokens = spatial.reshape(spatial.shape[0], self.channels, -1).transpose(1, 2)
        if self.prefix:
            tokens = torch.cat([original[:, :self.prefix].detach().to(tokens.dtype), tokens], dim=1)
        return tokens


def grid_fits(grid: Sequence[int], picture: Sequence[int]) -> bool:
    """Whether ``grid`` (h, w) — or (t, h, w) — can be a map of a picture of ``picture`` (H, W) (or (T, H, W)):
    no side larger than the picture's, the same stride on both sides (up to rounding), and a stride of about 1 or of 1.5
    and more on both sides (so a (197, 197) attention matrix of a 224-pixel picture is not a map)."""
    if len(grid) != len(picture) or any(g < 1 for g in grid):
        return False
    if any(g > p for g, p in zip(grid, picture)):
        return False
    h, w = grid[-2:]
    big_h, big_w = picture[-2:]
    if abs(h - big_h * w / big_w) > max(1.0, 0.15 * h):  # the same stride on both sides, up to rounding
        return False
    # stride 1 (unpadded convolutions lose a few pixels) or 1.5 and more: a (197, 197) attention matrix of a
    # 224-pixel picture is no map
    return all(p - g <= max(8, 0.05 * p) or p / g >= 1.5 for g, p in zip(grid[-2:], picture[-2:]))


def _token_grid(tokens: int, picture: Sequence[int], prefix: int | None) -> tuple[int, tuple[int, int]] | None:
    """(prefix, (h, w)) splitting ``tokens`` into prefix tokens and a grid with the picture's aspect ratio."""
    big_h, big_w = picture[-2:]
    prefixes = list(range(min(MAX_PREFIX, tokens - 1) + 1))
    if prefix is not None and 0 <= prefix < tokens:
        prefixes.insert(0, prefix)  # the model's own count first
    for k in prefixes:
        n = tokens - k
        if n < 2:
            continue
        h = round(math.sqrt(n * big_h / big_w))
        for cand in (h, h - 1, h + 1):
            if cand >= 1 and n % cand == 0 and grid_fits((cand, n // cand), (big_h, big_w)):
                return k, (cand, n // cand)
    return None


def layout_for(module: nn.Module | None, shape: Sequence[int], picture: Sequence[int] | None, *,
               prefix_tokens: int | None = None) -> Layout | None:
    """The :class:`Layout` of a layer output of ``shape`` (without batch), for pictures of ``picture`` (H, W) or
    (T, H, W) (None: unknown — 4-D outputs are then channels-first and tokens are not read). ``prefix_tokens``:
    the model's own count of class/distillation/register tokens when it says (timm's ``num_prefix_tokens``).
    None when the output has no spatial reading."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 4:  # (C, t, h, w)
        return Layout("channels_first", shape[1:], shape[0])
    if len(shape) == 3:
        if picture is None:
            return Layout("channels_first", shape[1:], shape[0])
        channels_last = bool(getattr(module, "convscope_channels_last", False))
        first_fits, last_fits = grid_fits(shape[1:], picture[-2:]), grid_fits(shape[:2], picture[-2:])
        if channels_last or (last_fits and not first_fits):
            return Layout("channels_last", shape[:2], shape[2])
        return Layout("channels_first", shape[1:], shape[0])
    if len(shape) == 2 and picture is not None:
        found = _token_grid(shape[0], picture, prefix_tokens)
        if found is not None:
            prefix, grid = found
            return Layout("tokens", grid, shape[1], prefix)
    return None
