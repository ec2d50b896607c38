"""Image parameterizations and random transforms for feature visualization (Lucid's, in PyTorch).

A parameterization is what the optimizer changes: ``ImageParam(params, image)`` where ``image()``
turns the parameters into pictures (B, C, H, W) in [0, 1]. ``fft`` optimizes a spectrum scaled by
1/frequency (natural images' spectrum), which removes the high-frequency noise of plain pixel
optimization; ``decorrelate`` maps three channels through ImageNet's colour correlation (square root of
its covariance), so the optimizer works in a whitened colour space; a sigmoid keeps pixels in [0, 1].

Transforms make the picture robust (jitter, scale, rotate before each step) — without them the
optimization finds high-frequency adversarial patterns. Each transform is a small function
``(images, generator) -> images``; ``compose`` chains them. All randomness comes from the generator.
Olah, Mordvintsev & Schubert 2017, *Feature Visualization*; Mordvintsev et al. 2018, *Differentiable
Image Parameterizations* (Distill).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import ConvscopeError

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "PARAMS",
    "ImageParam",
    "Transform",
    "compose",
    "correlate_gradient",
    "decorrelate_colors",
    "default_transforms",
    "fft_image",
    "image_param",
    "jitter",
    "lucid_transforms",
    "pad",
    "pixel_image",
    "random_affine",
    "random_rotate",
    "random_scale",
    "resolve_transforms",
]

PARAMS = ("fft", "pixel")

# Square root (via SVD) of the colour covariance of ImageNet pixels, as measured for Lucid.
COLOR_CORRELATION_SVD_SQRT = ((0.26, 0.09, 0.02),
                              (0.27, 0.00, -0.05),
                              (0.27, -0.09, 0.03))


class ImageParam(NamedTuple):
    """``params``: the tensors the optimizer changes; ``image()``: pictures (B, C, H, W) in [0, 1]."""

    params: list[torch.Tensor]
    image: Callable[[], torch.Tensor]


def _normal(shape: Sequence[int], sd: float, generator: torch.Generator, device: torch.device,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """N(0, sd²) drawn in float32 on the CPU generator (the same numbers on every device and in every
    precision), then moved."""
    return (torch.randn(tuple(shape), generator=generator) * sd).to(device, dtype)


def pixel_image(batch: int, channels: int, size: tuple[int, int], *, sd: float = 0.01, generator: torch.Generator,
                device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """Plain pixels (B, C, H, W), initialized with N(0, sd²) noise; unbounded (``image_param`` squashes)."""
    t = _normal((batch, channels, *size), sd, generator, torch.device(device), dtype).requires_grad_(True)
    return [t], lambda: t


def _freqs(height: int, width: int) -> torch.Tensor:
    """|frequency| of each rfft2 coefficient (H, W // 2 + 1), in cycles per pixel."""
    fy = torch.fft.fftfreq(height)[:, None]
    fx = torch.fft.rfftfreq(width)[None, :]
    return (fx * fx + fy * fy).sqrt()


def fft_image(batch: int, channels: int, size: tuple[int, int], *, sd: float = 0.01, decay_power: float = 1.0,
              generator: torch.Generator, device: torch.device | str = "cpu",
              dtype: torch.dtype = torch.float32) -> tuple[list[torch.Tensor], Callable[[], torch.Tensor]]:
    """A spectrum (B, C, H, W//2+1) of complex coefficients (stored as real pairs) scaled by
    1 / max(f, 1/max(H, W))^decay_power, turned into pixels by the inverse real FFT (Lucid's ``fft_image``)."""
    height, width = size
    device = torch.device(device)
    freqs = _freqs(height, width)
    scale = 1.0 / freqs.clamp_min(1.0 / max(height, width)) ** decay_power
    scale = (scale * math.sqrt(height * width)).to(device, dtype)[None, None, :, :, None]  # (1, 1, H, W', 1)
    spectrum = _normal((batch, channels, *freqs.shape, 2), sd, generator, device, dtype).requires_grad_(True)

    def image() -> torch.Tensor:
        coeffs = torch.view_as_complex((spectrum * scale).contiguous())
        return torch.fft.irfft2(coeffs, s=(height, width)) / 4.0  # Lucid's scale: keeps the start near grey

    return [spectrum], image


def decorrelate_colors(t: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) from the whitened colour space to RGB: each pixel times the colour correlation
    square root, normalized by its largest column norm (Lucid's ``_linear_decorelate_color``)."""
    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=t.dtype, device=t.device)
    matrix = matrix / matrix.norm(dim=0).max()
    return torch.einsum("ck,bkhw->bchw", matrix, t)


def correlate_gradient(grad: torch.Tensor) -> torch.Tensor:
    """A pixel gradient (B, 3, H, W) as it is in the decorrelated colour space, mapped back to RGB:
    ``M Mᵀ g`` with M the normalized colour correlation square root. Steps along it change colours the
    way natural images vary (Deep Dream without rainbow noise): gradient ascent on pixels, preconditioned
    as if the picture were parameterized with ``decorrelate_colors``."""
    matrix = torch.tensor(COLOR_CORRELATION_SVD_SQRT, dtype=grad.dtype, device=grad.device)
    matrix = matrix / matrix.norm(dim=0).max()
    return torch.einsum("ck,bkhw->bchw", matrix @ matrix.T, grad)


def image_param(kind: str, batch: int, channels: int, size: tuple[int, int], *, decorrelate: bool = True,
                sd: float = 0.01, generator: torch.Generator, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> ImageParam:
    """The parameterization ``kind`` ("fft" or "pixel") with colour decorrelation (three channels only)
    and a sigmoid to [0, 1]. ``dtype``: float32, or float64 for a double-precision model."""
    if kind == "fft":
        params, raw = fft_image(batch, channels, size, sd=sd, generator=generator, device=device, dtype=dtype)
    elif kind == "pixel":
        params, raw = pixel_image(batch, channels, size, sd=sd, generator=generator, device=device, dtype=dtype)
    else:
        raise ConvscopeError(f"unknown param {kind!r}; choose one of {', '.join(PARAMS)}")
    whiten = decorrelate and channels == 3

    def image() -> torch.Tensor:
        t = raw()
        return torch.sigmoid(decorrelate_colors(t) if whiten else t)

    return ImageParam(params, image)


# -- transforms ------------------------------------------------------------------------------------
Transform = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def _choice(values: Sequence[float], generator: torch.Generator) -> float:
    return float(values[int(torch.randint(len(values), (1,), generator=generator))])


def pad(width: int, *, value: float = 0.5) -> Transform:
    """Pad every side by ``width`` pixels of ``value`` (grey): room for jitter and rotation."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return F.pad(images, (width,) * 4, value=value) if width > 0 else images

    transform.__qualname__ = f"pad({width})"
    return transform


def jitter(d: int) -> Transform:
    """A random crop ``d`` pixels smaller in each direction: shifts the picture by 0..d pixels."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if d <= 0:
            return images
        dx, dy = (int(v) for v in torch.randint(d + 1, (2,), generator=generator))
        height, width = images.shape[-2:]
        return images[..., dy:dy + height - d, dx:dx + width - d]

    transform.__qualname__ = f"jitter({d})"
    return transform


def random_scale(scales: Sequence[float]) -> Transform:
    """Resize by a factor drawn from ``scales`` (bilinear)."""
    scales = tuple(float(s) for s in scales)

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        factor = _choice(scales, generator)
        if factor == 1.0:
            return images
        height, width = images.shape[-2:]
        size = (max(1, round(height * factor)), max(1, round(width * factor)))
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False)

    transform.__qualname__ = f"random_scale({min(scales):g}..{max(scales):g})"
    return transform


def random_rotate(angles: Sequence[float], *, fill: float = 0.5) -> Transform:
    """Rotate about the centre by an angle (degrees) drawn from ``angles``; corners filled with ``fill``."""
    angles = tuple(float(a) for a in angles)

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        angle = math.radians(_choice(angles, generator))
        if angle == 0.0:
            return images
        batch, _, height, width = images.shape
        cos, sin = math.cos(angle), math.sin(angle)
        aspect = width / height  # rotate in pixel units, not in the [-1, 1] box
        theta = torch.tensor([[cos, -sin / aspect, 0.0], [sin * aspect, cos, 0.0]], dtype=images.dtype, device=images.device)
        grid = F.affine_grid(theta.expand(batch, 2, 3), list(images.shape), align_corners=False)
        return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill

    transform.__qualname__ = f"random_rotate({min(angles):g}..{max(angles):g})"
    return transform


def compose(*transforms: Transform) -> Transform:
    """Apply ``transforms`` in order."""

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        for t in transforms:
            images = t(images, generator)
        return images

    transform.__qualname__ = " -> ".join(getattr(t, "__qualname__", "transform") for t in transforms) or "identity"
    return transform


def random_affine(*, shift: int, scales: Sequence[float], angles: Sequence[float], size: tuple[int, int] | None = None,
                  fill: float = 0.5) -> Transform:
    """Shift (up to ``shift`` pixels each way), zoom (a factor from ``scales``) and rotate (an angle in
    degrees from ``angles``) each picture at random, in ONE resampling straight to ``size`` (default: the
    input's); what falls outside the picture is ``fill``. The same family of views as
    ``compose(pad, jitter, random_scale, random_rotate, jitter)`` at a third of its cost (one
    ``grid_sample`` instead of padding, two resizes and a rotation, forward and backward)."""
    scales = tuple(float(v) for v in scales)
    angles = tuple(float(v) for v in angles)

    def transform(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        batch, channels, height, width = images.shape
        out_h, out_w = size or (height, width)
        zoom = torch.tensor(scales)[torch.randint(len(scales), (batch,), generator=generator)]
        angle = torch.tensor(angles)[torch.randint(len(angles), (batch,), generator=generator)] * (math.pi / 180)
        offset = torch.randint(-shift, shift + 1, (batch, 2), generator=generator).float() if shift > 0 else torch.zeros(batch, 2)
        # output pixel -> input pixel: rotate and shrink by the zoom about the centre, then shift;
        # in normalized [-1, 1] coordinates, x scaled by the input's width, y by its height
        cos, sin = angle.cos() / zoom, angle.sin() / zoom
        aspect = width / height
        theta = torch.stack([
            torch.stack([cos, -sin / aspect, offset[:, 0] * 2 / width], dim=1),
            torch.stack([sin * aspect, cos, offset[:, 1] * 2 / height], dim=1),
        ], dim=1).to(images.device, images.dtype)  # (B, 2, 3)
        grid = F.affine_grid(theta, [batch, channels, out_h, out_w], align_corners=False)
        return F.grid_sample(images - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill

    transform.__qualname__ = (f"random_affine(shift={shift}, zoom {min(scales):.2f}..{max(scales):.2f}, "
                              f"rotate {min(angles):g}..{max(angles):g})")
    return transform


LUCID_SCALES = tuple(1 + (i - 5) / 50 for i in range(11))  # 0.9 ... 1.1
LUCID_ANGLES = (*range(-10, 11), *[0] * 5)  # degrees; unrotated a sixth of the time


def lucid_transforms(size: int) -> Transform:
    """Lucid's standard chain, in pixels scaled to the picture's ``size`` (defined for 224): pad 12,
    jitter 8, scale 0.9-1.1, rotate ±10°, jitter 4 (five resamplings; see ``default_transforms``)."""
    px = lambda n: max(1, round(n * size / 224))
    return compose(pad(px(12)), jitter(px(8)), random_scale(LUCID_SCALES), random_rotate(LUCID_ANGLES), jitter(px(4)))


def default_transforms(size: int) -> Transform:
    """Lucid's views in one resampling (``random_affine``): shifts up to 6 pixels per 224 each way
    (pad 12 + jitter 8 + jitter 4 move the picture by -6..6), zoom 0.9-1.1 times 224/236 (the
    grey border Lucid's padding shows), rotation -10..10° (0° a sixth of the time)."""
    return random_affine(shift=max(1, round(6 * size / 224)), scales=[s * 224 / 236 for s in LUCID_SCALES],
                         angles=LUCID_ANGLES)


def resolve_transforms(transforms: str | Transform | Sequence[Transform] | None, size: int) -> Transform | None:
    """"default" (Lucid's views in one resampling), "lucid" (Lucid's chain), "none"/None, a transform, or a list composed in order."""
    if transforms is None or transforms == "none":
        return None
    if transforms == "default":
        return default_transforms(size)
    if transforms == "lucid":
        return lucid_transforms(size)
    if callable(transforms):
        return transforms
    if isinstance(transforms, (list, tuple)) and all(callable(t) for t in transforms):
        return compose(*transforms)
    raise ConvscopeError(f"transforms must be 'default', 'lucid', 'none', a transform or a list of them, got {transforms!r}")
