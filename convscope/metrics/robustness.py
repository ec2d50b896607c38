"""Robustness sweep (seed 004's shadow and colour experiment): does the prediction, and the evidence
for it, survive what changes in the world but not in the object?

Each perturbation changes a picture as the camera or the weather would (brightness, contrast, colour,
a cast shadow, blur, noise, rotation, an occluding patch) at several strengths. For each perturbed
picture: the model's top-1 and its probability, the probability of the *original* class, and the map
explaining the original class, compared with the original map by Spearman rank correlation and by how
far its peak moved. Geometric changes (rotation) move the object, so the original map is moved the
same way before comparing: a map that moves with the object has not changed its mind.

Perturbations work on display-space pictures (B, C, H, W) in [0, 1], before the model's normalization.
"""

from __future__ import annotations

import difflib
import inspect
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Annotated, Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from ..engine import Cost, default_rows, gaussian_blur, stand_in
from ..errors import ConvscopeError, InputError
from ..models import Model, as_model
from ..options import BatchSize, PythonOnly, Seed
from ..progress import ProgressArg, tracker
from ..registry import CAM_LAYER, CostContext, ReportSpec, register
from ..result import Displayable
from .nested import method as checked_method

__all__ = ["PERTURBATIONS", "TIE_MARGIN", "Original", "Perturbation", "Robustness", "RobustnessRow", "robustness", "rotate"]

TIE_MARGIN = 0.05  # the original's top two classes closer than this in probability are a near-tie: a perturbation
# that swaps them says little about robustness (the model could not tell them apart to begin with)

# (B, C, H, W) pictures in [0, 1], a strength, a seeded generator -> perturbed pictures (same shape)
PerturbFn = Callable[[torch.Tensor, float, torch.Generator], torch.Tensor]


@dataclass(frozen=True)
class Perturbation:
    """A named change of the picture: ``fn(x, strength, generator)`` on (B, C, H, W) pictures in [0, 1].

    strengths: the defaults of a sweep; ``unit`` says what a strength means; ``limits`` the allowed range.
    geometric: the change moves pixels; ``fn`` is applied to the original map too (with the same random
               draws) and the maps are compared after the same move, where both come from the picture.
    colour:    needs 3 channels (skipped, with a note, on other models).
    at_peak:   ``fn`` takes ``centre=(y, x)``: the sweep passes the original map's peak.
    identity:  the strength that changes nothing (curves start there), None if there is none.
    """

    name: str
    fn: PerturbFn
    strengths: tuple[float, ...]
    unit: str
    geometric: bool = False
    colour: bool = False
    at_peak: bool = False
    limits: tuple[float, float] = (-math.inf, math.inf)
    identity: float | None = None


# -- the perturbations ------------------------------------------------------------------------------
def _brightness(x: torch.Tensor, factor: float, _: torch.Generator) -> torch.Tensor:
    """Every pixel times ``factor`` (1: unchanged), clipped to [0, 1]."""
    return (x * factor).clamp(0, 1)


def _contrast(x: torch.Tensor, factor: float, _: torch.Generator) -> torch.Tensor:
    """Distances from each picture's mean grey times ``factor`` (1: unchanged)."""
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * factor + mean).clamp(0, 1)


def _hue(x: torch.Tensor, degrees: float, _: torch.Generator) -> torch.Tensor:
    """Turn the colours around the grey axis by ``degrees`` (YIQ: luminance kept, chroma turned)."""
    to_yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=torch.float64)
    angle = math.radians(degrees)
    turn = torch.tensor([[1, 0, 0], [0, math.cos(angle), -math.sin(angle)], [0, math.sin(angle), math.cos(angle)]],
                        dtype=torch.float64)
    matrix = (torch.linalg.inv(to_yiq) @ turn @ to_yiq).to(device=x.device, dtype=x.dtype)
    return torch.einsum("ij,bjhw->bihw", matrix, x).clamp(0, 1)


def _shadow(x: torch.Tensor, darkness: float, generator: torch.Generator) -> torch.Tensor:
    """A cast shadow: a soft-edged half-plane whose edge passes near the centre at a seeded angle
    (the same place at every darkness); ``darkness`` is the fraction of light it takes away."""
    height, width = x.shape[-2:]
    angle = float(torch.rand(1, generator=generator)) * 2 * math.pi
    shift = (float(torch.rand(1, generator=generator)) - 0.5) * 0.3
    ys = torch.linspace(-0.5, 0.5, height, device=x.device)[:, None]
    xs = torch.linspace(-0.5, 0.5, width, device=x.device)[None, :]
    distance = xs * math.cos(angle) + ys * math.sin(angle) - shift
    shade = torch.sigmoid(distance / 0.03)  # 1 inside the shadow; the soft edge is a few percent of the picture
    return (x * (1 - darkness * shade)).clamp(0, 1).to(x.dtype)


def _blur(x: torch.Tensor, sigma: float, _: torch.Generator) -> torch.Tensor:
    """Gaussian blur; ``sigma`` in pixels of a 224-pixel picture (scaled to the picture's size)."""
    return gaussian_blur(x, sigma * min(x.shape[-2:]) / 224)


def _noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """Gaussian noise of ``std`` (pixel units in [0, 1]); the same seeded pattern at every strength."""
    noise = torch.randn(x.shape, generator=generator, dtype=torch.float32).to(device=x.device, dtype=x.dtype)
    return (x + std * noise).clamp(0, 1)


def rotation_grid(shape: torch.Size | tuple[int, ...], degrees: float, device: torch.device) -> torch.Tensor:
    """The sampling grid (B, H, W, 2) that rotates (B, C, H, W) pictures by ``degrees`` counter-clockwise
    about the centre, in pixel space (non-square pictures are not sheared)."""
    angle = math.radians(degrees)
    batch, _, height, width = shape
    aspect = width / height
    theta = torch.tensor([[math.cos(angle), -math.sin(angle) / aspect, 0.0],
                          [math.sin(angle) * aspect, math.cos(angle), 0.0]], device=device, dtype=torch.float32)
    return F.affine_grid(theta.expand(batch, 2, 3), list(shape), align_corners=False)


def rotate(x: torch.Tensor, degrees: float, *, fill: float = 0.5) -> torch.Tensor:
    """Rotate pictures (B, C, H, W) by ``degrees`` counter-clockwise; corners that come from outside
    are ``fill`` grey. Multiples of 90° on square pictures are exact (``torch.rot90``)."""
    height, width = x.shape[-2:]
    quarter = degrees / 90
    if height == width and quarter == round(quarter):
        return torch.rot90(x, round(quarter) % 4, dims=(2, 3)).clone()
    grid = rotation_grid(x.shape, degrees, x.device).to(x.dtype)
    inside = F.grid_sample(torch.ones_like(x[:, :1]), grid, mode="bilinear", align_corners=False)
    turned = F.grid_sample(x, grid, mode="bilinear", align_corners=False)
    return turned + (1 - inside) * fill


def _rotation(x: torch.Tensor, degrees: float, _: torch.Generator) -> torch.Tensor:
    return rotate(x, degrees)


def _patch(x: torch.Tensor, fraction: float, generator: torch.Generator, *, centre: tuple[int, int] | None = None,
           fill: float = 0.5) -> torch.Tensor:
    """A grey square of side ``fraction`` × the shorter side, centred on ``centre`` (the sweep passes
    the original map's peak: the most informative spot) or, without one, at a seeded place."""
    height, width = x.shape[-2:]
    side = max(1, round(fraction * min(height, width)))
    if centre is None:
        cy = int(torch.randint(0, height, (1,), generator=generator))
        cx = int(torch.randint(0, width, (1,), generator=generator))
    else:
        cy, cx = centre
    top, left = min(max(0, cy - side // 2), height - side), min(max(0, cx - side // 2), width - side)
    out = x.clone()
    out[..., top:top + side, left:left + side] = fill
    return out


PERTURBATIONS: dict[str, Perturbation] = {p.name: p for p in (
    Perturbation("brightness", _brightness, (0.3, 0.6, 1.4, 2.0), "factor", limits=(0.0, 10.0), identity=1.0),
    Perturbation("contrast", _contrast, (0.25, 0.5, 1.5, 2.5), "factor", limits=(0.0, 10.0), identity=1.0),
    Perturbation("colour", _hue, (45.0, 90.0, 180.0), "hue turn, degrees", colour=True, limits=(-360.0, 360.0),
                 identity=0.0),
    Perturbation("shadow", _shadow, (0.3, 0.5, 0.7), "light taken away", limits=(0.0, 1.0), identity=0.0),
    Perturbation("blur", _blur, (1.0, 2.0, 4.0, 8.0), "sigma, px of 224", limits=(0.0, 100.0), identity=0.0),
    Perturbation("noise", _noise, (0.05, 0.1, 0.2, 0.4), "std, pixel values in [0, 1]", limits=(0.0, 5.0), identity=0.0),
    Perturbation("rotation", _rotation, (15.0, 45.0, 90.0, 180.0), "degrees", geometric=True, limits=(-360.0, 360.0),
                 identity=0.0),
    Perturbation("patch", _patch, (0.1, 0.2, 0.3, 0.4), "side / picture side, on the map's peak", at_peak=True,
                 limits=(0.0, 1.0), identity=0.0),
)}


# -- results ----------------------------------------------------------------------------------------
@dataclass
class RobustnessRow:
    """One perturbed picture: what the model says and how its evidence for the original class moved."""

    perturbation: str
    strength: float
    predicted: int  # the model's top-1 on the perturbed picture
    label: str
    probability: float  # of the top-1
    original_probability: float  # of the original class
    rank_correlation: float  # Spearman, original map (moved like the picture) vs this map
    peak_shift: float  # pixels between the two maps' maxima (NaN when a map is flat: no peak)
    peak_shift_fraction: float  # of the picture's diagonal
    flipped: bool = False  # the top-1 is no longer the original class
    peak: tuple[int, int] | None = None  # (y, x) of this map's maximum
    tie_swap: bool = False  # flipped to the other class of the original's near-tie (see ``Original.tied``)


@dataclass(frozen=True)
class Original:
    """The unperturbed picture: the class followed, its probability, the model's own top-1 (the same
    unless ``target=`` chose another class) and second class, the picture (H, W, 3) uint8 and its map (H, W).
    ``tied``: the top two are closer than ``TIE_MARGIN`` in probability (a near-tie)."""

    target: int
    label: str
    probability: float
    predicted: int
    predicted_label: str
    predicted_probability: float
    picture: np.ndarray = field(repr=False)
    map: np.ndarray = field(repr=False)
    peak: tuple[int, int] | None = None
    runner_up: int | None = None  # the model's second class on the picture (None: a one-class output)
    runner_up_label: str = ""
    runner_up_probability: float = 0.0

    @property
    def margin(self) -> float:
        """How far the top-1 leads the second class, in probability (1 when there is no second class)."""
        return 1.0 if self.runner_up is None else self.predicted_probability - self.runner_up_probability

    @property
    def tied(self) -> bool:
        """The top two classes are a near-tie (closer than ``TIE_MARGIN``) and the class followed is one of them."""
        return self.runner_up is not None and self.margin < TIE_MARGIN and self.target in (self.predicted, self.runner_up)

    @property
    def tied_with(self) -> tuple[int, str, float] | None:
        """(class, label, probability) of the other class of the near-tie; None when the original is no tie."""
        if not self.tied:
            return None
        if self.target == self.predicted:
            return self.runner_up, self.runner_up_label, self.runner_up_probability  # type: ignore[return-value]
        return self.predicted, self.predicted_label, self.predicted_probability


@dataclass
class Robustness(Displayable):
    """The sweep: ``original`` (class, label, probability, picture, map), ``rows`` (one per perturbation
    × strength, in sweep order), the pictures and maps for figures (``pictures`` (N, H, W, 3) uint8,
    ``maps`` (N, H, W) raw), ``notes`` (what was skipped or adjusted). Kind "robustness": ``figure()``
    draws the grid of perturbed pictures with their maps, ``figure(view="curves")`` p(original class)
    against strength."""

    kind = "robustness"

    method: str
    original: Original
    rows: list[RobustnessRow] = field(default_factory=list)
    pictures: np.ndarray | None = field(default=None, repr=False)
    maps: np.ndarray | None = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    seed: int = 0
    perturbations: dict[str, Perturbation] = field(default_factory=dict, repr=False)  # the ones swept, by name

    # the original's fields, flat (front ends read these)
    @property
    def original_class(self) -> int:
        return self.original.target

    @property
    def original_label(self) -> str:
        return self.original.label

    @property
    def original_probability(self) -> float:
        return self.original.probability

    @property
    def original_picture(self) -> np.ndarray:
        return self.original.picture

    @property
    def original_map(self) -> np.ndarray:
        return self.original.map

    @property
    def flips(self) -> list[RobustnessRow]:
        """The perturbed pictures whose top-1 is no longer the original class."""
        return [row for row in self.rows if row.flipped]

    @property
    def tie_swaps(self) -> list[RobustnessRow]:
        """The flips to the other class of the original's near-tie (none when the original is no tie): the
        model changed its mind between two classes it could not tell apart to begin with."""
        return [row for row in self.rows if row.tie_swap]

    @property
    def real_flips(self) -> list[RobustnessRow]:
        """The flips to a class outside the original's near-tie (every flip when the original is no tie)."""
        return [row for row in self.rows if row.flipped and not row.tie_swap]

    def flip_summary(self) -> str:
        """How often the top-1 changed, in words; for a near-tie, how many changes only swapped the two tied classes."""
        o, total = self.original, len(self.rows)
        other = o.tied_with
        if other is None:
            return f"the top-1 changed on {len(self.flips)} of {total} perturbed pictures"
        return (f"the original is a near-tie ({o.label} {o.probability:.0%} vs {other[1]} {other[2]:.0%}, closer than "
                f"{TIE_MARGIN:.0%}): the top-1 swapped between the two tied classes on {len(self.tie_swaps)} of {total} "
                f"perturbed pictures and changed to another class on {len(self.real_flips)}")

    def worst(self, k: int = 5) -> list[RobustnessRow]:
        """The ``k`` rows that left the original class the least probability."""
        return sorted(self.rows, key=lambda row: row.original_probability)[:k]

    def by_perturbation(self) -> dict[str, list[RobustnessRow]]:
        """Rows grouped by perturbation, in sweep order."""
        groups: dict[str, list[RobustnessRow]] = {}
        for row in self.rows:
            groups.setdefault(row.perturbation, []).append(row)
        return groups

    def records(self) -> list[dict[str, Any]]:
        """The rows as plain dicts (JSON, a DataFrame); an undefined value (NaN: no peak) is None."""
        def plain(value: Any) -> Any:
            if isinstance(value, tuple):
                return list(value)
            return None if isinstance(value, float) and math.isnan(value) else value

        return [{k: plain(v) for k, v in asdict(row).items()} for row in self.rows]

    def to_dict(self) -> dict[str, Any]:
        """Everything but the pictures and maps, JSON-ready."""
        o = self.original
        return {"method": self.method, "seed": self.seed,
                "original": {"class": o.target, "label": o.label, "probability": o.probability, "predicted": o.predicted,
                             "predicted_label": o.predicted_label, "predicted_probability": o.predicted_probability,
                             "runner_up": o.runner_up, "runner_up_label": o.runner_up_label,
                             "runner_up_probability": o.runner_up_probability, "tied": o.tied,
                             "peak": None if o.peak is None else list(o.peak)},
                "rows": self.records(), "flips": len(self.flips), "tie_swaps": len(self.tie_swaps),
                "notes": list(self.notes)}

    def table(self) -> str:
        """A text table: one line per perturbed picture, ``*`` where the top-1 changed."""
        o = self.original
        head = f"original: {o.label} (class {o.target}) p = {o.probability:.1%}; maps: {self.method} for '{o.label}'"
        if o.predicted != o.target:
            head += f" (the model's top-1 is {o.predicted_label}, p = {o.predicted_probability:.1%})"
        if o.tied_with is not None:
            head += f"; a near-tie with {o.tied_with[1]} (p = {o.tied_with[2]:.1%})"
        columns = (f"{'perturbation':<12} {'strength':>8} {'top-1':<24} {'p(top-1)':>8} {'p(orig)':>8} {'rank ρ':>7} "
                   f"{'peak moved':>10}")
        lines = [head, columns]
        for r in self.rows:
            label = r.label[:22] + (" ≈" if r.tie_swap else " *" if r.flipped else "")
            moved = "—" if math.isnan(r.peak_shift_fraction) else f"{r.peak_shift_fraction:.0%}"
            lines.append(f"{r.perturbation:<12} {r.strength:>8g} {label:<24} {r.probability:>8.1%} "
                         f"{r.original_probability:>8.1%} {r.rank_correlation:>7.2f} {moved:>10}")
        changed = (f"* the top-1 changed to another class ({len(self.real_flips)} of {len(self.rows)}); ≈ it swapped to the "
                   f"other class of the original's near-tie ({len(self.tie_swaps)})" if self.original.tied else
                   f"* the top-1 changed ({len(self.flips)} of {len(self.rows)})")
        lines.append(f"{changed}; rank ρ: Spearman correlation with the original map (moved with the picture for "
                     f"rotations); peak moved: share of the diagonal")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


# -- choosing perturbations -------------------------------------------------------------------------
def _custom(fn: Callable[..., torch.Tensor]) -> Perturbation:
    """A bare function ``fn(x, strength, generator)`` as a perturbation (default strength 1)."""
    name = getattr(fn, "__name__", "custom")
    if name == "<lambda>":
        name = "custom"
    try:
        inspect.signature(fn).bind(None, 1.0, None)
    except (TypeError, ValueError):
        raise InputError(f"custom perturbation {name!r} must take (x, strength, generator)") from None
    return Perturbation(name, fn, (1.0,), "custom")


def _lookup(key: Any) -> Perturbation:
    if isinstance(key, Perturbation):
        return key
    if callable(key):
        return _custom(key)
    name = str(key).strip().lower()
    name = {"color": "colour", "hue": "colour", "occlusion": "patch", "rotate": "rotation"}.get(name, name)
    if name in PERTURBATIONS:
        return PERTURBATIONS[name]
    close = difflib.get_close_matches(name, list(PERTURBATIONS), n=2, cutoff=0.5)
    hint = f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""
    raise InputError(f"unknown perturbation {key!r}; {hint}(choose from {', '.join(PERTURBATIONS)})")


def _strengths(chosen: Perturbation, given: Any) -> tuple[float, ...]:
    if given is None:
        return chosen.strengths
    values = given if isinstance(given, (list, tuple, np.ndarray, torch.Tensor)) else [given]
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{chosen.name} strengths must be numbers, got {given!r}") from None
    if not out:
        raise InputError(f"{chosen.name} got no strengths; pass e.g. {list(chosen.strengths)}")
    low, high = chosen.limits
    bad = [v for v in out if not (math.isfinite(v) and low <= v <= high)]
    if bad:
        raise InputError(f"{chosen.name} strength {bad[0]:g} is outside {low:g}..{high:g} ({chosen.unit})")
    return out


def resolve_perturbations(perturbations: Any, channels: int = 3,
                          notes: list[str] | None = None) -> list[tuple[Perturbation, tuple[float, ...]]]:
    """(perturbation, strengths) pairs from None (all of ``PERTURBATIONS``), names ("shadow,blur" or a
    list), a mapping name (or Perturbation, or function) -> strengths, Perturbation objects or functions
    ``fn(x, strength, generator)``. Colour perturbations are skipped (noted) on models without 3 channels."""
    if perturbations is None:
        items: list[tuple[Any, Any]] = [(name, None) for name in PERTURBATIONS]
    elif isinstance(perturbations, str):
        items = [(name, None) for name in perturbations.split(",") if name.strip()]
    elif isinstance(perturbations, Mapping):
        items = list(perturbations.items())
    elif isinstance(perturbations, (Perturbation,)) or callable(perturbations):
        items = [(perturbations, None)]
    elif isinstance(perturbations, Sequence):
        items = [(p, None) for p in perturbations]
    else:
        raise InputError(f"perturbations must be names, a dict name -> strengths or functions, got {type(perturbations).__name__}")
    if not items:
        raise InputError("no perturbations given; choose from " + ", ".join(PERTURBATIONS))
    out = []
    seen: set[str] = set()
    for key, given in items:
        chosen = _lookup(key)
        if chosen.name in seen:
            raise InputError(f"perturbation {chosen.name!r} is asked for twice; give all its strengths at once "
                             f"(or name custom ones: Perturbation(name, fn, strengths, unit))")
        seen.add(chosen.name)
        values = _strengths(chosen, given)
        if chosen.colour and channels != 3:
            if notes is not None:
                notes.append(f"{chosen.name} skipped: it turns colours and the model takes {channels}-channel pictures")
            continue
        out.append((chosen, values))
    if not out:
        raise InputError(f"nothing to sweep: every perturbation asked for needs colour and the model takes "
                         f"{channels}-channel pictures; try brightness, blur or noise")
    return out


# -- pictures in and out ----------------------------------------------------------------------------
def _display_picture(model: Model, image: Any, notes: list[str]) -> torch.Tensor:
    """(1, C, H, W) in [0, 1] on the model's device: a picture as the model crops it, or a preprocessed
    tensor with the normalization undone."""
    if isinstance(image, torch.Tensor):
        x = model.check_input(image)
        if x.shape[0] != 1:
            raise InputError(f"robustness takes one picture; got a batch of {x.shape[0]} (pass x[i:i+1])")
        x = model.denormalize(x.detach().to(device=model.device, dtype=torch.float32))
        outside = float(((x < -0.02) | (x > 1.02)).float().mean())
        if outside > 0.01:
            notes.append(f"{outside:.0%} of the picture's values fall outside [0, 1] after undoing the normalization "
                         f"and were clipped; pass the picture itself or model.preprocess(picture)")
        return x.clamp(0, 1)
    if model.input_size is None:
        raise InputError("this model has no input_size; pass a preprocessed (1, C, H, W) tensor instead of a picture")
    if model.channels not in (1, 3):
        raise InputError(f"pictures become 1 or 3 channels; this model takes {model.channels}: pass a (1, C, H, W) tensor")
    crop = torch.from_numpy(np.asarray(model.crop(image), dtype=np.float32) / 255.0)
    picture = crop[None, None] if crop.dim() == 2 else crop.permute(2, 0, 1)[None]  # (1, C, H, W)
    return picture.to(model.device)


def _normalize(model: Model, pictures: torch.Tensor) -> torch.Tensor:
    """[0, 1] pictures (B, C, H, W) -> the model's input (its mean/std, device and dtype)."""
    return model.normalize(pictures).to(model.dtype)


def _uint8(pictures: torch.Tensor) -> np.ndarray:
    """[0, 1] pictures (B, C, H, W) -> uint8 RGB (B, H, W, 3) as they are (no rescaling)."""
    data = pictures.detach().float().cpu().clamp(0, 1)
    data = data.expand(-1, 3, -1, -1) if data.shape[1] == 1 else data[:, :3]
    return (data * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def _peak(values: torch.Tensor, keep: torch.Tensor) -> tuple[int, int] | None:
    """(y, x) of the maximum of a (H, W) map over ``keep``; None for a flat map (no peak)."""
    inside = values[keep]
    if inside.numel() == 0 or not bool(inside.max() > inside.min()):
        return None
    masked = torch.where(keep, values, torch.full_like(values, -math.inf))
    index = int(masked.argmax())
    return index // values.shape[1], index % values.shape[1]


def _generator(seed: int, name: str) -> torch.Generator:
    """The random draws of one perturbation: the same at every strength (the shadow stays put, the noise
    pattern only grows) and whatever else is in the sweep."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + zlib.crc32(name.encode()))


@dataclass
class _Job:
    """One perturbed picture (1, C, H, W) waiting for the method. Geometric perturbations also carry the
    original map moved like the picture (H, W) and the pixels that came from inside it (H, W) bool;
    the others are compared with the original map over every pixel (None)."""

    name: str
    strength: float
    picture: torch.Tensor
    moved_map: torch.Tensor | None = None
    inside: torch.Tensor | None = None


def _jobs(chosen: list[tuple[Perturbation, tuple[float, ...]]], base: torch.Tensor, original_map: torch.Tensor,
          peak: tuple[int, int] | None, seed: int) -> list[_Job]:
    unit_map = original_map - original_map.min()
    unit_map = (unit_map / unit_map.max().clamp_min(1e-12))[None, None]  # (1, 1, H, W) in [0, 1] for geometric fns
    jobs = []
    for perturbation, strengths in chosen:
        for strength in strengths:
            extra = {"centre": peak} if perturbation.at_peak else {}
            picture = perturbation.fn(base, strength, _generator(seed, perturbation.name), **extra)
            if not isinstance(picture, torch.Tensor) or picture.shape != base.shape:
                got = tuple(picture.shape) if isinstance(picture, torch.Tensor) else type(picture).__name__
                raise InputError(f"perturbation {perturbation.name!r} returned {got}, not a picture of shape {tuple(base.shape)}")
            job = _Job(perturbation.name, float(strength), picture.clamp(0, 1))
            if perturbation.geometric:  # move the map the same way; inside: f(1) - f(0) = 1 where pixels came from the picture
                ones, zeros = torch.ones_like(unit_map), torch.zeros_like(unit_map)
                moved, moved_ones, moved_zeros = (perturbation.fn(t, strength, _generator(seed, perturbation.name), **extra)[0, 0]
                                                  for t in (unit_map, ones, zeros))
                job.moved_map = moved
                job.inside = ((moved_ones - moved_zeros) > 0.99) & torch.isfinite(moved)
            jobs.append(job)
    return jobs


def _compare(original: torch.Tensor, original_ranks: torch.Tensor, maps: torch.Tensor,
             jobs: list[_Job]) -> list[tuple[float, tuple[int, int] | None, float]]:
    """Per job: (Spearman ρ with the original map, this map's peak (y, x), peak shift in pixels) for
    (b, H, W) ``maps``; geometric jobs are compared with the moved map where the picture came from inside."""
    flat = [i for i, job in enumerate(jobs) if job.inside is None]
    ranks = dict(zip(flat, _centred_ranks(maps[flat].flatten(1)))) if flat else {}  # one batched sort
    everywhere = torch.ones(maps.shape[-2:], dtype=torch.bool, device=maps.device)
    out = []
    for i, job in enumerate(jobs):
        if job.inside is None:
            reference, keep = original, everywhere
            rho = _spearman(original_ranks, ranks[i])
        else:
            reference, keep = job.moved_map, job.inside
            rho = _spearman(_centred_ranks(reference[keep][None])[0], _centred_ranks(maps[i][keep][None])[0])
        reference_peak, peak = _peak(reference, keep), _peak(maps[i], keep)
        shift = math.nan if reference_peak is None or peak is None else \
            math.hypot(reference_peak[0] - peak[0], reference_peak[1] - peak[1])
        out.append((rho, peak, shift))
    return out


# -- the sweep ----------------------------------------------------------------------------------------
Perturbations = (Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(min_length=1, max_length=64)]
                 | str | dict[str, list[float] | float | None] | PythonOnly[Any] | None)


def _method_options(context: CostContext) -> dict[str, Any]:
    """The options of a call that are not the tool's own: they go to the method (``**method_options``)."""
    own = context.tool.options_model.model_fields
    return {k: v for k, v in context.options.items() if k not in own}


def _robustness_cost(context: CostContext) -> Cost:
    """The method on the original picture and on every perturbed one (perturbations × strengths pictures)."""
    model = context.model
    if model is None:
        return Cost(0)
    one = stand_in(model, context.inputs.get("image"))
    if one is None:
        return Cost(0)
    chosen = checked_method(context.options["method"], {**_method_options(context), "layer": context.special.get("layer")},
                            who="robustness")
    pictures = sum(len(strengths) for _, strengths in resolve_perturbations(context.options["perturbations"],
                                                                            model.channels or 3, []))
    per_picture = chosen.cost(model, one)
    kept = pictures * one.shape[-2] * one.shape[-1] * (3 + 4 + 4 * one.shape[1])  # pictures, maps, perturbed inputs
    return Cost(per_picture.forwards * (pictures + 1) + context.area(), max(per_picture.memory, kept),
                f"{chosen.name} on the picture and on {pictures} perturbed pictures, one forward for its top two classes")


@register("robustness", family="workflow", takes="image", returns="robustness", cost=_robustness_cost,
          layer=CAM_LAYER,
          paper="Hendrycks & Dietterich 2019, Benchmarking Neural Network Robustness to Common Corruptions and "
                "Perturbations (the idea; the sweep and the map comparison are convscope's)",
          quick={"perturbations": ["brightness", "shadow", "blur", "rotation"]},
          report=ReportSpec(title="Robustness: light, colour, shadow, blur, noise, rotation, an occluding patch",
                            note="Each row changes the first picture more and more: the curves show how much of the "
                                 "original class's probability survives, the grid where the map for that class moves (red: "
                                 "the top-1 changed; amber: it only swapped between two classes the model already found "
                                 "nearly equal; ρ: how well the map's order of pixels matches the original, 1 = the same)."))
def robustness(model: Model | torch.nn.Module, image: Any, *, perturbations: Perturbations = None, target: int | None = None,
               method: Annotated[str, Field(min_length=1, max_length=64)] = "gradcam", layer: Any = None,
               batch_size: BatchSize = None, seed: Seed = 0, progress: ProgressArg = None,
               **method_options: Any) -> Robustness:
    """Perturb a picture as light, weather and the camera would (brightness, contrast, colour, shadow, blur,
    noise, rotation, an occluding patch) at several strengths, and see whether the prediction and the map for
    the original class survive.

    Per perturbed picture: the top-1, the probability of the original class and how the ``method`` map for
    the original class changed (Spearman rank correlation with the original map, peak displacement).
    For geometric perturbations (rotation) the original map is rotated the same way before comparing —
    the evidence should move with the object — and only pixels that came from inside the picture count.

    image:         a path / PIL picture / array (cropped as the model crops it: (H, W) = the model's
                   input size) or a preprocessed (1, C, H, W) tensor (its normalization undone).
    perturbations: None (all of ``PERTURBATIONS``), names ("shadow,blur" or a list), a mapping name ->
                   strengths, :class:`Perturbation` objects or functions ``fn(x, strength, generator)``.
    target:        the class to follow (default: the original top-1); every map explains this class.
    layer:         the method's layer (default: its own choice, e.g. the last conv map).
    progress:      see ``convscope.progress``. Other keyword options go to the method (checked by its own
                   options before any work).

    Uses only the model's public forward (through the method): model and input are left as they were.

    Options:
        perturbations: which changes to sweep, by name (brightness, contrast, colour, shadow, blur, noise, rotation,
            patch; a list or "shadow,blur"), or name -> strengths ({"blur": [1, 4]}); none: all of them at their
            default strengths.
        method: the attribution method whose map is compared across the perturbed pictures (default gradcam).
        batch_size: perturbed pictures per call of the method (none: about 16 of 224x224); never changes the answer.
        seed: draws the noise, the shadow's angle and place and a patch without a peak; the same seed gives the
            same sweep.
    """
    wrapped = as_model(model)
    chosen_method = checked_method(method, {**method_options, "layer": layer}, who="robustness")
    notes: list[str] = []
    chosen = resolve_perturbations(perturbations, wrapped.channels, notes)
    base = _display_picture(wrapped, image, notes)  # (1, C, H, W) in [0, 1]
    height, width = base.shape[-2:]
    rows_per_call = batch_size or default_rows(height, width, device=wrapped.device)
    total = sum(len(strengths) for _, strengths in chosen)

    with tracker(progress, total + 1, "robustness") as bar:
        first = chosen_method(wrapped, _normalize(wrapped, base), target=target)
        if first.target is None or "probabilities" not in first.meta:
            raise ConvscopeError(f"robustness follows a class; {chosen_method.name} on this model gives no class probabilities")
        followed = int(first.target[0])
        original_map = _maps_at(first, height, width)[0]  # (H, W)
        peak = _peak(original_map, torch.ones_like(original_map, dtype=torch.bool))
        if peak is None:
            notes.append(f"the original {chosen_method.name} map is flat: peak shifts are undefined and the patch goes "
                         f"to a seeded place")
        predicted = int(first.meta["predicted"][0])
        ranked = wrapped.predict(_normalize(wrapped, base), k=2)[0]  # the top two: is the original a near-tie?
        second = ranked[1] if len(ranked) > 1 else None
        original = Original(followed, wrapped.label(followed), float(first.meta["probabilities"][0]), predicted,
                            wrapped.label(predicted), float(first.meta["predicted_probabilities"][0]),
                            _uint8(base)[0], original_map.cpu().numpy(), peak,
                            runner_up=None if second is None else second.index,
                            runner_up_label="" if second is None else second.label,
                            runner_up_probability=0.0 if second is None else second.probability)
        tied = original.tied_with
        bar.advance(1)

        jobs = _jobs(chosen, base, original_map, peak, seed)
        diagonal = math.hypot(height, width)
        rows: list[RobustnessRow] = []
        maps: list[torch.Tensor] = []
        original_ranks = _centred_ranks(original_map.flatten()[None])[0]
        for start in range(0, len(jobs), rows_per_call):
            part = jobs[start:start + rows_per_call]
            result = chosen_method(wrapped, _normalize(wrapped, torch.cat([job.picture for job in part])), target=followed)
            these = _maps_at(result, height, width)  # (b, H, W)
            for i, (job, (rho, peak_here, shift)) in enumerate(zip(part, _compare(original_map, original_ranks, these, part))):
                top = int(result.meta["predicted"][i])
                rows.append(RobustnessRow(job.name, job.strength, top, wrapped.label(top),
                                          float(result.meta["predicted_probabilities"][i]),
                                          float(result.meta["probabilities"][i]), rho, shift, shift / diagonal,
                                          flipped=top != followed, peak=peak_here,
                                          tie_swap=tied is not None and top == tied[0]))
            maps.append(these.cpu())
            bar.advance(len(part))

    pictures = _uint8(torch.cat([job.picture for job in jobs]))
    return Robustness(chosen_method.name, original, rows, pictures, torch.cat(maps).numpy(), notes, int(seed),
                      {perturbation.name: perturbation for perturbation, _ in chosen})


def _centred_ranks(values: torch.Tensor) -> torch.Tensor:
    """(B, N) -> (B, N) float64 ranks per row, ties sharing their average rank (as scipy's ``rankdata``),
    minus their mean: one batched sort instead of one per map."""
    values = torch.nan_to_num(values.detach().float().cpu())
    rows, count = values.shape
    ordered, order = torch.sort(values, dim=1)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    run = (starts.cumsum(1) - 1 + torch.arange(rows)[:, None] * count).flatten()  # a run of equal values: one id
    position = torch.arange(count, dtype=torch.float64).repeat(rows)
    sums = torch.zeros(rows * count, dtype=torch.float64).index_add_(0, run, position)
    sizes = torch.zeros(rows * count, dtype=torch.float64).index_add_(0, run, torch.ones_like(position))
    average = (sums / sizes.clamp_min(1))[run].view(rows, count)  # the mean position of each run, in sorted order
    ranks = torch.empty_like(average).scatter_(1, order, average)
    return ranks - ranks.mean(dim=1, keepdim=True)


def _spearman(reference: torch.Tensor, ranks: torch.Tensor) -> float:
    """Pearson correlation of two (N,) centred rank vectors = Spearman's ρ of the values (as
    ``metrics.sanity.rank_correlation``: 0 when either map is constant)."""
    norm = float(reference.norm() * ranks.norm())
    return float(reference @ ranks) / norm if norm > 0 else 0.0


def _maps_at(result: Any, height: int, width: int) -> torch.Tensor:
    """The result's (B, H, W) maps as float32 at the picture's size."""
    maps = result.maps().float()
    if maps.shape[-2:] != (height, width):
        maps = F.interpolate(maps[:, None], size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return maps
