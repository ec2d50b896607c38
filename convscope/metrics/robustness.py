"""Robustness sweep (seed 004's shadow and colour experiment): does the prediction, and the evidence
for it, survive what changes in the world but not in the object?

Each perturbation changes a picture as the camera or the weather would (brightness, contrast, colour,
a cast shadow, blur, noise, rotation, an occluding patch) at several strengths. For each perturbed
picture: the model's top-1 and its probability, the probability of the *original* class, and the map
explaining the original class, compared with the original map by Spearman rank correlation and by how
far its peak moved. Geometric changes (rotation) move the object, so the original map is rotated the
same way before comparing: a map that moves with the object has not changed its mind.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import registry
from ..errors import ConvscopeError, InputError
from ..models import Model, as_model
from ..progress import ProgressArg, tracker
from .sanity import rank_correlation

__all__ = ["PERTURBATIONS", "Perturbation", "Robustness", "RobustnessRow", "robustness"]

# (B, C, H, W) pictures in [0, 1], a strength, a seeded generator -> perturbed pictures (same shape)
PerturbFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Perturbation:
    """A named change of the picture. ``strengths`` are the defaults of a sweep, ``unit`` says what a
    strength means; ``geometric`` perturbations move pixels (maps are compared after the same move);
    ``colour`` ones need 3 channels."""

    name: str
    fn: PerturbFn
    strengths: tuple[float, ...]
    unit: str
    geometric: bool = False
    colour: bool = False
    limits: tuple[float, float] = (-math.inf, math.inf)


def _brightness(x: torch.Tensor, factor: float, _: torch.Generator) -> torch.Tensor:
    return (x * factor).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float, _: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def _hue(x: torch.Tensor, degrees: float, _: torch.Generator) -> torch.Tensor:
    """Rotate the colours around the grey axis by ``degrees`` (YIQ: luminance kept, chroma turned)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=x.dtype, device=x.device)
    angle = math.radians(degrees)
    turn = torch.tensor([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]],
                        dtype=x.dtype, device=x.device)
    matrix = torch.linalg.inv(to_yiq) @ turn @ to_yiq
    return torch.einsum("ij,bjhw->bihw", matrix, x).clamp(0, 1)


def _shadow(x: torch.Tensor, darkness: float, generator: torch.Generator) -> torch.Tensor:
    """A soft-edged shadow over a half-plane whose edge passes near the centre at a seeded angle;
    ``darkness`` is the fraction of light it takes away."""
    height, width = x.shape[-2:]
    angle = float(torch.rand(1, generator=generator)) * 2 * math.pi
    shift = (float(torch.rand(1, generator=generator)) - 0.5) * 0.3
    ys = torch.linspace(-0.5, 0.5, height, device=x.device)[:, None]
    xs = torch.linspace(-0.5, 0.5, width, device=x.device)[None, :]
    distance = xs * math.cos(angle) + ys * math.sin(angle) - shift
    shade = torch.sigmoid(distance / 0.03)  # 1 inside the shadow, a soft edge of a few percent of the picture
    return (x * (1 - darkness * shade)).clamp(0, 1).to(x.dtype)


def _blur(x: torch.Tensor, sigma: float, _: torch.Generator) -> torch.Tensor:
    """Gaussian blur; ``sigma`` in pixels of a 224-pixel picture (scaled to the picture's size)."""
    sigma = sigma * min(x.shape[-2:]) / 224
    if sigma <= 0:
        return x.clone()
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = x.shape[1]
    out = F.pad(x, (radius,) * 4, mode="reflect" if radius < min(x.shape[-2:]) else "replicate")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(out, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


def rotation_grid(shape: torch.Size | tuple[int, ...], degrees: float, device: torch.device) -> torch.Tensor:
    """The sampling grid that rotates (B, C, H, W) pictures by ``degrees`` counter-clockwise about the centre."""
    angle = math.radians(degrees)
    batch, _, height, width = shape
    aspect = width / height
    theta = torch.tensor([[math.cos(angle), -math.sin(angle) / aspect, 0.0],
                          [math.sin(angle) * aspect, math.cos(angle), 0.0]], device=device, dtype=torch.float32)
    return F.affine_grid(theta.expand(batch, 2, 3), list(shape), align_corners=False)


def rotate(x: torch.Tensor, degrees: float, *, fill: float = 0.5) -> torch.Tensor:
    """Rotate pictures (B, C, H, W) by ``degrees``; corners that come from outside are ``fill`` grey."""
    grid = rotation_grid(x.shape, degrees, x.device)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid.to(x.dtype), mode="bilinear", align_corners=False)
    turned = F.grid_sample(x, grid.to(x.dtype), mode="bilinear", align_corners=False)
    if math.isnan(fill):  # mark what came from outside (for maps: left out of comparisons)
        return torch.where(inside > 0.99, turned, torch.full_like(turned, math.nan))
    return turned + (1 - inside) * fill


def _rotation(x: torch.Tensor, degrees: float, _: torch.Generator) -> torch.Tensor:
    return rotate(x, degrees)


def _patch(x: torch.Tensor, fraction: float, generator: torch.Generator, centre: tuple[int, int] | None = None) -> torch.Tensor:
    """A grey square of side ``fraction`` × the shorter side, centred on ``centre`` (the original map's
    peak, set by the sweep) or at a seeded place."""
    height, width = x.shape[-2:]
    side = max(1, round(fraction * min(height, width)))
    if centre is None:
        cy = int(torch.randint(side // 2, max(side // 2 + 1, height - side // 2), (1,), generator=generator))
        cx = int(torch.randint(side // 2, max(side // 2 + 1, width - side // 2), (1,), generator=generator))
    else:
        cy, cx = centre
    top, left = min(max(0, cy - side // 2), height - side), min(max(0, cx - side // 2), width - side)
    out = x.clone()
    out[..., top:top + side, left:left + side] = 0.5
    return out


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("brightness", _brightness, (0.3, 0.6, 1.4, 2.0), "factor", limits=(0.0, 10.0)),
    Perturbation("contrast", _contrast, (0.25, 0.5, 1.5, 2.5), "factor", limits=(0.0, 10.0)),
    Perturbation("colour", _hue, (45.0, 90.0, 180.0), "hue rotation, degrees", colour=True, limits=(-360.0, 360.0)),
    Perturbation("shadow", _shadow, (0.3, 0.5, 0.7), "light taken away", limits=(0.0, 1.0)),
    Perturbation("blur", _blur, (1.0, 2.0, 4.0, 8.0), "sigma, pixels of a 224-px picture", limits=(0.0, 100.0)),
    Perturbation("noise", _noise, (0.05, 0.1, 0.2, 0.4), "std in [0, 1] pixel units", limits=(0.0, 5.0)),
    Perturbation("rotation", _rotation, (15.0, 45.0, 90.0, 180.0), "degrees", geometric=True, limits=(-360.0, 360.0)),
    Perturbation("patch", _patch, (0.1, 0.2, 0.3, 0.4), "side / picture side, on the map's peak", limits=(0.0, 1.0)),
)}


@dataclass
class RobustnessRow:
    """One perturbed picture: what the model says and how its evidence for the original class moved."""

    perturbation: str
    strength: float
    predicted: int
    label: str
    probability: float  # of the top-1
    original_probability: float  # of the original top-1 class
    rank_correlation: float  # Spearman, original map (moved like the picture) vs this map
    peak_shift: float  # pixels between the two maps' maxima
    peak_shift_fraction: float  # of the picture's diagonal


@dataclass
class Robustness:
    """The sweep: ``original`` (class, label, probability), ``rows`` (one per perturbation × strength),
    the pictures and maps for figures (``pictures`` (N, H, W, 3) uint8, ``maps`` (N, H, W)), ``notes``."""

    method: str
    original_class: int
    original_label: str
    original_probability: float
    original_picture: np.ndarray = field(repr=False)
    original_map: np.ndarray = field(repr=False)
    rows: list[RobustnessRow] = field(default_factory=list)
    pictures: np.ndarray | None = field(default=None, repr=False)
    maps: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)

    @property
    def flips(self) -> list[RobustnessRow]:
        """The perturbed pictures whose top-1 is no longer the original class."""
        return [row for row in self.rows if row.predicted != self.original_class]

    def worst(self, k: int = 5) -> list[RobustnessRow]:
        """The ``k`` rows that cost the original class the most probability."""
        return sorted(self.rows, key=lambda row: row.original_probability)[:k]

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts (for JSON or a DataFrame)."""
        return [{"perturbation": r.perturbation, "strength": r.strength, "predicted": r.predicted, "label": r.label,
                 "probability": r.probability, "original_probability": r.original_probability,
                 "flipped": r.predicted != self.original_class, "rank_correlation": r.rank_correlation,
                 "peak_shift": r.peak_shift, "peak_shift_fraction": r.peak_shift_fraction} for r in self.rows]

    def table(self) -> str:
        head = (f"original: {self.original_label} (class {self.original_class}) p = {self.original_probability:.1%}; "
                f"maps: {self.method} for '{self.original_label}'")
        columns = f"{'perturbation':<12} {'strength':>8} {'top-1':<24} {'p(top-1)':>8} {'p(orig)':>8} {'rank ρ':>7} {'peak moved':>10}"
        lines = [head, columns]
        for r in self.rows:
            mark = " *" if r.predicted != self.original_class else ""
            lines.append(f"{r.perturbation:<12} {r.strength:>8g} {(r.label[:22] + mark):<24} {r.probability:>8.1%} "
                         f"{r.original_probability:>8.1%} {r.rank_correlation:>7.2f} {r.peak_shift_fraction:>9.0%}")
        lines.append(f"* the top-1 changed ({len(self.flips)} of {len(self.rows)}); rank ρ: Spearman correlation with the "
                     f"original map (rotated with the picture for rotations); peak moved: share of the diagonal")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def figure(self, **style: Any) -> Any:
        from ..render.robustness import robustness_figure

        return robustness_figure(self, **style)


def _resolve(perturbations: Any, channels: int, notes: list[str]) -> list[tuple[Perturbation, tuple[float, ...]]]:
    """Names, a mapping name -> strengths, or Perturbation objects -> (perturbation, strengths)."""
    if perturbations is None:
        items: list[tuple[Any, Any]] = [(name, None) for name in PERTURBATIONS]
    elif isinstance(perturbations, str):
        items = [(name.strip(), None) for name in perturbations.split(",") if name.strip()]
    elif isinstance(perturbations, Mapping):
        items = list(perturbations.items())
    else:
        items = [(p, None) for p in perturbations]
    if not items:
        raise InputError("no perturbations given; choose from " + ", ".join(PERTURBATIONS))
    out = []
    for key, strengths in items:
        if isinstance(key, Perturbation):
            chosen = key
        elif key in PERTURBATIONS:
            chosen = PERTURBATIONS[key]
        else:
            close = difflib.get_close_matches(str(key), list(PERTURBATIONS), n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise InputError(f"unknown perturbation {key!r}{hint} (choose from {', '.join(PERTURBATIONS)})")
        values = chosen.strengths if strengths is None else tuple(float(v) for v in (
            strengths if isinstance(strengths, (list, tuple)) else [strengths]))
        low, high = chosen.limits
        bad = [v for v in values if not low <= v <= high or not math.isfinite(v)]
        if bad:
            raise InputError(f"{chosen.name} strength {bad[0]} is outside {low:g}..{high:g} ({chosen.unit})")
        if chosen.colour and channels != 3:
            notes.append(f"{chosen.name} skipped: the model takes {channels}-channel pictures")
            continue
        out.append((chosen, values))
    return out


def _display_picture(model: Model, image: Any) -> torch.Tensor:
    """(1, C, H, W) in [0, 1] on the model's device: a picture as the model crops it, or a preprocessed
    tensor with the normalization undone."""
    if isinstance(image, torch.Tensor):
        x = model.check_input(image)
        if x.shape[0] != 1:
            raise InputError(f"robustness takes one picture; got a batch of {x.shape[0]} (pass x[i:i+1])")
        x = x.detach().float().clone()
        if model.std is not None:
            x = x * torch.tensor(model.std, device=x.device).view(1, -1, 1, 1)
        if model.mean is not None:
            x = x + torch.tensor(model.mean, device=x.device).view(1, -1, 1, 1)
        return x.clamp(0, 1).to(model.device)
    crop = np.asarray(model.crop(image), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(crop)
    tensor = tensor[None, None] if tensor.dim() == 2 else tensor.permute(2, 0, 1)[None]
    return tensor.to(model.device)


def _uint8(pictures: torch.Tensor) -> np.ndarray:
    """[0, 1] pictures (B, C, H, W) -> uint8 RGB (B, H, W, 3) as they are (no rescaling)."""
    data = pictures.detach().float().cpu().clamp(0, 1)
    data = data.expand(-1, 3, -1, -1) if data.shape[1] == 1 else data[:, :3]
    return (data * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _normalize(model: Model, pictures: torch.Tensor) -> torch.Tensor:
    x = pictures
    if model.mean is not None:
        x = x - torch.tensor(model.mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    if model.std is not None:
        x = x / torch.tensor(model.std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
    return x.to(model.dtype)


def robustness(model: Model | torch.nn.Module, image: Any, *, perturbations: Any = None, target: int | None = None,
               method: str = "gradcam", layer: Any = None, batch_size: int = 16, seed: int = 0,
               progress: ProgressArg = None, **method_options: Any) -> Robustness:
    """Perturb ``image`` in every way of ``perturbations`` at several strengths and record, per perturbed
    picture, the top-1, the probability of the original class and how the ``method`` map for the original
    class changed (rank correlation and peak displacement).

    image:         a path / PIL picture / array (cropped as the model crops it) or a preprocessed (1, C, H, W) tensor.
    perturbations: None (all of ``PERTURBATIONS``), names ("shadow,blur"), a mapping name -> strengths,
                   or :class:`Perturbation` objects of your own.
    target:        the class to follow (default: the original top-1).
    method:        any registered map method; run batched, always for the original class.
    seed:          noise, the shadow's angle and place; the same seed gives the same sweep.
    """
    wrapped = as_model(model)
    info = registry.get(method)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    notes: list[str] = []
    chosen = _resolve(perturbations, wrapped.channels, notes)
    base = _display_picture(wrapped, image)  # (1, C, H, W) in [0, 1]
    height, width = base.shape[-2:]
    options = dict(method_options)
    if layer is not None:
        options["layer"] = layer
    first = info.fn(wrapped, _normalize(wrapped, base), target=target, **options)
    if first.target is None:
        raise ConvscopeError("robustness follows a class; the model's output has no classes to follow")
    original = int(first.target[0])
    original_map = first.maps()[0].float()
    original_probability = float(first.meta.get("probabilities", torch.tensor([float("nan")]))[0])
    peak = np.unravel_index(int(original_map.argmax()), tuple(original_map.shape))

    generator = torch.Generator().manual_seed(int(seed))
    jobs: list[tuple[str, float, torch.Tensor, torch.Tensor, torch.Tensor]] = []  # name, strength, picture, reference map, valid
    full = torch.ones(1, 1, height, width, device=base.device)
    for perturbation, strengths in chosen:
        for strength in strengths:
            if perturbation.fn is _patch:
                picture = _patch(base, strength, generator, centre=(int(peak[0]), int(peak[1])))
            else:
                picture = perturbation.fn(base, float(strength), generator)
            if perturbation.geometric:
                reference = rotate(original_map[None, None].to(base.device), strength, fill=float("nan"))[0, 0] \
                    if perturbation.fn is _rotation else original_map.to(base.device)
                valid = rotate(full, strength, fill=0.0)[0, 0] > 0.99 if perturbation.fn is _rotation else full[0, 0] > 0
            else:
                reference, valid = original_map.to(base.device), full[0, 0] > 0
            jobs.append((perturbation.name, float(strength), picture, reference, valid))

    rows: list[RobustnessRow] = []
    pictures, maps = [], []
    diagonal = math.hypot(height, width)
    with tracker(progress, len(jobs), "robustness") as bar:
        for start in range(0, len(jobs), batch_size):
            part = jobs[start:start + batch_size]
            batch = torch.cat([job[2] for job in part])
            result = info.fn(wrapped, _normalize(wrapped, batch), target=original, **options)
            these = result.maps().float()
            if these.shape[-2:] != (height, width):
                these = F.interpolate(these[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            predicted = result.meta.get("predicted")
            top = result.meta.get("predicted_probabilities")
            for i, (name, strength, picture, reference, valid) in enumerate(part):
                keep = valid & torch.isfinite(reference)
                rho = float(rank_correlation(reference[keep][None], these[i].to(reference.device)[keep][None])[0])
                masked = torch.where(keep, these[i].to(reference.device), torch.full_like(reference, -math.inf))
                ref_masked = torch.where(keep, reference, torch.full_like(reference, -math.inf))
                a = np.unravel_index(int(ref_masked.argmax()), (height, width))
                b = np.unravel_index(int(masked.argmax()), (height, width))
                shift = math.hypot(a[0] - b[0], a[1] - b[1])
                cls = int(predicted[i]) if predicted is not None else -1
                rows.append(RobustnessRow(name, strength, cls, wrapped.label(cls) if cls >= 0 else "?",
                                          float(top[i]) if top is not None else float("nan"),
                                          float(result.meta["probabilities"][i]), rho, shift, shift / diagonal))
                pictures.append(picture[0])
                maps.append(these[i].cpu())
            bar.advance(len(part))
    shown = _uint8(torch.stack(pictures)) if pictures else None
    return Robustness(info.name, original, wrapped.label(original), original_probability,
                      _uint8(base)[0], original_map.cpu().numpy(), rows, shown,
                      torch.stack(maps).numpy() if maps else None, notes)

