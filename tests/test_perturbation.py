"""Perturbation methods (occlusion, RISE, superpixels): Captum as an oracle for occlusion, models whose
answer is known analytically (a net that reads one patch, a linear model), determinism, batching,
progress and cancellation, options checked before any work, cost estimates and the limits that refuse
absurd calls, bf16, and a real picture on EfficientNet-Lite0."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_state import assert_unchanged, counting_forwards, snapshot
from torch import nn

import convscope as cs
from convscope import engine, registry
from convscope.attribution import masked_image, occlusion, occlusion_mask, rise, superpixels
from convscope.progress import Cancelled

PATCH = (16, 32, 16)  # top, left, side of the square the patch model reads, in a 64x64 picture
SIZE = 64


class PatchNet(nn.Module):
    """Class 0's logit is the mean of a ReLU'd positive convolution of the pixels in PATCH, nothing else;
    classes 1 and 2 are a constant 2. With positive pixels, hiding any part of the patch lowers class
    0's score (on the blocks picture its probability is about 1/2: not saturated)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.linspace(0.05, 0.3, self.conv.weight.numel()).view_as(self.conv.weight))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, left, side = PATCH
        evidence = F.relu(self.conv(x[:, :, top:top + side, left:left + side])).mean(dim=(1, 2, 3))
        other = torch.full_like(evidence, 2.0)
        return torch.stack([evidence, other, other], dim=1)


def patch_mask(grow: int = 0) -> torch.Tensor:
    """(H, W) bool: the patch, grown by ``grow`` pixels on every side."""
    top, left, side = PATCH
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[max(0, top - grow):top + side + grow, max(0, left - grow):left + side + grow] = True
    return mask


def blocks_picture() -> torch.Tensor:
    """(1, 3, 64, 64) positive picture of 4x4 flat blocks of 16x16 (SLIC finds them), one of them PATCH."""
    colours = torch.rand(16, 3, generator=torch.Generator().manual_seed(3)) * 0.8 + 0.2
    grid = colours.T.reshape(1, 3, 4, 4)
    return F.interpolate(grid, size=(SIZE, SIZE), mode="nearest").contiguous()


@pytest.fixture(scope="module")
def patch_net() -> PatchNet:
    return PatchNet().eval()


@pytest.fixture(scope="module")
def small_net() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 8, 3, padding=1),
                             nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 5)).eval()


def noise(batch: int = 2, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


# --- occlusion against Captum ---------------------------------------------------------------------
@pytest.mark.parametrize("score", ("logit", "probability"))
def test_occlusion_matches_captum(small_net, score, assert_close):
    from captum.attr import Occlusion

    x = noise()
    ours = occlusion(small_net, x, window=8, stride=4, fill=0.3, score=score, progress=False)
    forward = small_net if score == "logit" else (lambda inputs: small_net(inputs).softmax(dim=1))
    with torch.no_grad():
        theirs = Occlusion(forward).attribute(x, sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0.3,
                                              target=ours.target, perturbations_per_eval=64)
    assert ours.meta["grid"].shape == (2, 7, 7)  # (32 - 8) / 4 + 1 windows per side
    for channel in range(3):  # Captum attributes every channel of a pixel alike
        assert_close(ours.data[:, 0], theirs[:, channel], rtol=1e-4, atol=1e-4)


def test_occlusion_windows_cover_every_pixel_when_the_stride_does_not_divide(small_net):
    result = occlusion(small_net, noise(1, 30), window=8, stride=5, progress=False)
    assert result.meta["rows"] == (0, 5, 10, 15, 20, 22)  # the last window sits flush with the edge
    assert result.meta["window"] == (8, 8) and result.meta["stride"] == (5, 5)


# --- a model that reads only one patch ----------------------------------------------------------
def test_occlusion_lights_up_exactly_the_patch(patch_net):
    x = blocks_picture()
    window = 8
    result = occlusion(patch_net, x, window=window, stride=2, progress=False)
    heat = result.maps()[0]
    assert result.target.tolist() == [0]
    # a window changes the score only if it meets the patch: zero beyond the patch grown by window - 1
    assert heat[~patch_mask(window - 1)].abs().max() < 1e-6 * heat.max()
    # every window covering a patch pixel hides evidence: positive on the whole patch
    assert (heat[patch_mask()] > 0).all()
    assert heat.min() > -1e-6 * heat.max() and heat[patch_mask(window // 2 - 1)].sum() > 0.9 * heat.sum()  # the spill is thin
    assert patch_mask()[divmod(int(heat.argmax()), SIZE)]


def test_rise_lights_up_the_patch(patch_net):
    x = blocks_picture()
    result = rise(patch_net, x, masks=2000, cells=8, seed=1, progress=False)
    heat = result.maps()[0]
    near = patch_mask(SIZE // 8)  # masks are smooth over one cell
    baseline = heat[~near].median()  # RISE gives every pixel about the mean score; the patch stands out from it
    assert patch_mask()[divmod(int(heat.argmax()), SIZE)]
    assert near[heat - baseline > 0.5 * (heat.max() - baseline)].all()
    assert heat[patch_mask()].mean() - baseline > 5 * heat[~near].std()


def test_superpixels_light_up_the_patch(patch_net):
    x = blocks_picture()
    result = superpixels(patch_net, x, segments=16, samples=128, progress=False)
    heat = result.maps()[0]
    segments = result.meta["segments"][0]
    assert len(result.meta["weights"][0]) == int(segments.max()) + 1 >= 8
    positive = heat.clamp_min(0)
    assert positive[patch_mask()].sum() > 0.9 * positive.sum()
    assert patch_mask()[divmod(int(heat.argmax()), SIZE)]


def test_superpixels_recover_a_linear_models_segment_contributions():
    """For a linear logit the score of a sample is exactly intercept + sum_k z_k c_k, with c_k the
    segment's contribution sum w * (x - fill): an almost unpenalized fit must find the c_k."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(3 * SIZE * SIZE, 2)).eval()
    x = blocks_picture()
    result = superpixels(net, x, target=0, score="logit", segments=16, samples=80, ridge=1e-6, fill=0.1, progress=False)
    segments = result.meta["segments"][0]
    contribution = (net[1].weight[0].detach().view(3, SIZE, SIZE) * (x[0] - 0.1)).sum(0)
    expected = torch.zeros(int(segments.max()) + 1).index_add_(0, segments.flatten(), contribution.flatten())
    torch.testing.assert_close(result.meta["weights"][0], expected, rtol=1e-3, atol=1e-3 * float(expected.abs().max()))
    assert float(result.meta["fit"][0]) > 0.9999


# --- fills -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fill", ("mean", "blur"))
def test_hiding_a_flat_picture_behind_its_own_mean_or_blur_changes_nothing(small_net, fill):
    flat = torch.full((1, 3, 24, 24), 0.7)
    assert not occlusion(small_net, flat, window=6, fill=fill, progress=False).data.abs().gt(1e-6).any()


def test_fill_is_what_the_window_shows(patch_net):
    """Filling with the picture's own value where the patch is means the window hides nothing."""
    x = torch.full((1, 3, SIZE, SIZE), 0.5)
    assert occlusion(patch_net, x, window=8, fill=0.5, progress=False).data.abs().max() < 1e-6  # rounding only
    assert occlusion(patch_net, x, window=8, fill="0.0", progress=False).data.max() > 0  # CLI text works too


# --- determinism, batching, composition ---------------------------------------------------------
SEEDED = {"rise": (rise, {"masks": 24, "cells": 4}), "superpixels": (superpixels, {"segments": 12, "samples": 24})}


@pytest.mark.parametrize("name", SEEDED)
def test_same_seed_same_map_other_seed_other_map(small_net, name):
    method, options = SEEDED[name]
    x = noise()
    first = method(small_net, x, seed=5, progress=False, **options).data
    assert torch.equal(first, method(small_net, x, seed=5, progress=False, **options).data)
    assert not torch.allclose(first, method(small_net, x, seed=6, progress=False, **options).data)


ALL = {"occlusion": (occlusion, {"window": 8, "stride": 4}), **SEEDED}


@pytest.mark.parametrize("name", ALL)
def test_batch_size_does_not_change_the_answer(small_net, name, assert_close):
    method, options = ALL[name]
    x = noise()
    assert_close(method(small_net, x, batch_size=3, progress=False, **options).data,
                 method(small_net, x, batch_size=17, progress=False, **options).data)


@pytest.mark.parametrize("name", ALL)
def test_a_batch_of_two_is_two_single_calls(small_net, name, assert_close):
    method, options = ALL[name]
    x = noise()
    whole = method(small_net, x, target=[1, 3], batch_size=5, progress=False, **options)
    parts = [method(small_net, x[i:i + 1], target=t, batch_size=5, progress=False, **options) for i, t in enumerate((1, 3))]
    assert_close(whole.data, torch.cat([p.data for p in parts]))


@pytest.mark.parametrize("name", ALL)
def test_a_probability_callable_is_the_default_score(small_net, name, assert_close):
    """score="probability" scores class k as the callable class_probability(k) does; a callable is
    used as it is (so class_score(k) is target=k with score="logit")."""
    method, options = ALL[name]
    x = noise()
    assert_close(method(small_net, x, target=cs.targets.class_probability(2), progress=False, **options).data,
                 method(small_net, x, target=2, progress=False, **options).data)
    assert_close(method(small_net, x, target=cs.targets.class_score(2), progress=False, **options).data,
                 method(small_net, x, target=2, score="logit", progress=False, **options).data)


# --- progress and cancellation -----------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_progress_reports_every_perturbed_image(small_net, name):
    method, options = ALL[name]
    calls: list[tuple[int, int, str]] = []
    method(small_net, noise(), batch_size=7, progress=lambda done, total, what: calls.append((done, total, what)), **options)
    total = calls[0][1]
    assert [c[0] for c in calls] == sorted(c[0] for c in calls) and calls[-1][0] == total
    assert len(calls) == -(-total // 7) and {c[2] for c in calls} == {name}


@pytest.mark.parametrize("name", ALL)
def test_cancelling_stops_the_job_and_leaves_the_model_intact(small_net, name):
    """The callback raises Cancelled at its first report, after the clean forward (2 rows) and one batch of 4:
    no forward runs after it, and the model (in train mode, to see it put back) is untouched."""
    method, options = ALL[name]
    net = small_net
    net.train()
    x = noise()
    before = snapshot(net, x)
    calls: list[tuple[int, int]] = []
    try:
        with counting_forwards(net) as seen:
            def cancel(done: int, total: int, what: str) -> None:
                calls.append((done, seen.rows))
                raise Cancelled("stopped by the user")

            with pytest.raises(Cancelled):
                method(net, x, batch_size=4, progress=cancel, **options)
        assert calls == [(4, 2 + 4)]
        assert seen.rows == 2 + 4  # nothing after the cancel
        assert_unchanged(before, net, x)
    finally:
        net.eval()


# --- options and helpers ---------------------------------------------------------------------------
BAD_OPTIONS = (  # (method, options, the error's type and words); every one is refused before the model runs
    (occlusion, {"window": 40}, cs.OptionError, "window 40x40 is larger than the 32x32 picture"),
    (occlusion, {"window": 0}, cs.OptionError, r"option window=0 is out of range; allowed: 0 < value ≤ 4,096"),
    (occlusion, {"window": 5000}, cs.OptionError, "option window=5000 is out of range"),
    (occlusion, {"window": (8, 0)}, cs.OptionError, r"option window\[1\]=0 is out of range"),
    (occlusion, {"stride": 0}, cs.OptionError, "option stride=0 is out of range"),
    (occlusion, {"window": 2.5}, cs.OptionError, "neither whole pixels"),
    (occlusion, {"windw": 8}, cs.OptionError, "did you mean 'window'"),
    (occlusion, {"fill": "grey"}, cs.OptionError, "option fill='grey' is not one of 'mean', 'blur'"),
    (occlusion, {"fill": float("nan")}, cs.OptionError, "fill"),
    (occlusion, {"fill": torch.zeros(3, 8, 8)}, cs.OptionError, r"fill shape \(3, 8, 8\) does not fit x"),
    (occlusion, {"score": "softmax"}, cs.OptionError, "option score='softmax' is not one of 'probability', 'logit'"),
    (occlusion, {"batch_size": 0}, cs.OptionError, "option batch_size=0 is out of range"),
    (occlusion, {"batch_size": 5000}, cs.OptionError, r"option batch_size=5000 is out of range; allowed: 1 ≤ value ≤ 4,096"),
    (occlusion, {"layer": "0"}, cs.LayerError, "takes no layer"),
    (occlusion, {"precision": "fp16"}, cs.OptionError, "option precision='fp16' is not one of"),
    (rise, {"masks": 0}, cs.OptionError, r"option masks=0 is out of range; allowed: 1 ≤ value ≤ 100,000"),
    (rise, {"masks": 100_001}, cs.OptionError, "option masks=100001 is out of range"),
    (rise, {"masks": True}, cs.OptionError, "bool"),
    (rise, {"cells": 40}, cs.OptionError, "cells=40 is more than the 32x32 picture's side"),
    (rise, {"cells": 0}, cs.OptionError, "option cells=0 is out of range"),
    (rise, {"p": 0.0}, cs.OptionError, r"option p=0.0 is out of range; allowed: 0 < value ≤ 1"),
    (rise, {"p": 1.5}, cs.OptionError, "option p=1.5 is out of range"),
    (rise, {"seed": -1}, cs.OptionError, "option seed=-1 is out of range"),
    (superpixels, {"samples": 1}, cs.OptionError, r"option samples=1 is out of range; allowed: 2 ≤ value ≤ 100,000"),
    (superpixels, {"segments": 0}, cs.OptionError, "option segments=0 is out of range"),
    (superpixels, {"segments": 10_000}, cs.OptionError, "option segments=10000 is out of range"),
    (superpixels, {"kernel_width": 0}, cs.OptionError, "option kernel_width=0 is out of range"),
    (superpixels, {"ridge": -1.0}, cs.OptionError, "option ridge=-1.0 is out of range"),
)


@pytest.mark.parametrize("method, options, error, match", BAD_OPTIONS,
                         ids=[f"{m.__name__}-{next(iter(o))}={next(iter(o.values()))!r}"[:60] for m, o, _, _ in BAD_OPTIONS])
def test_bad_options_raise_one_line_errors_before_any_work(small_net, method, options, error, match):
    with counting_forwards(small_net) as seen, pytest.raises(error, match=match) as info:
        method(small_net, noise(), progress=False, **options)
    assert "\n" not in str(info.value)
    assert seen.calls == 0


def test_default_window_is_a_seventh_of_the_side(small_net):
    result = occlusion(small_net, noise(1, 56), progress=False)
    assert result.meta["window"] == (8, 8) and result.meta["stride"] == (4, 4)
    assert occlusion(small_net, noise(1, 40), window=0.5, stride=0.25, progress=False).meta["rows"] == (0, 10, 20)


def test_mask_and_masked_image(patch_net):
    x = blocks_picture()
    result = occlusion(patch_net, x, window=8, stride=4, progress=False)
    mask = occlusion_mask(result, 0.5)
    assert mask.shape == (1, 1, SIZE, SIZE) and mask.dtype == torch.bool
    assert mask.any() and not mask[0, 0][~patch_mask(7)].any()  # only where windows meet the patch
    assert mask[0, 0][divmod(int(result.maps()[0].argmax()), SIZE)]
    pictures = masked_image(result, mask)
    assert pictures.shape == (1, SIZE, SIZE, 3)
    assert not pictures[0][~mask[0, 0].numpy()].any()
    kept = mask[0, 0].numpy()
    assert (pictures[0][kept] == result.images()[0][kept]).all()
    assert occlusion_mask(result, 1.0).sum() <= mask.sum() <= occlusion_mask(result, 0.2).sum()
    with pytest.raises(cs.ConvscopeError, match="between 0 and 1"):
        occlusion_mask(result, 1.5)


def test_automatic_batch_size_fits_the_memory_budget(small_net, monkeypatch):
    x = noise(1, 224)
    per_row = engine.bytes_per_row(cs.models.as_model(small_net), tuple(x.shape[1:]))
    assert per_row >= 4 * 6 * 224 * 224 * 4  # the first conv's output, 6 x 224 x 224 floats
    assert engine.perturbation_rows(small_net, x) == 16  # the fast size when memory is plentiful
    monkeypatch.setattr(engine, "memory_budget", lambda device: 3 * per_row)
    assert engine.perturbation_rows(small_net, x) == 3
    assert engine.perturbation_rows(small_net, x, 40) == 40


# --- tensor fills -------------------------------------------------------------------------------------
def test_a_tensor_fill_is_the_picture_shown_where_parts_are_hidden(small_net, assert_close):
    """From Python, fill may be a picture (C, H, W) or (B, C, H, W): a flat one is the number, a blurred copy is "blur"."""
    x = noise()
    for method, options in ALL.values():
        assert_close(method(small_net, x, fill=torch.full((3, 32, 32), 0.3), progress=False, **options).data,
                     method(small_net, x, fill=0.3, progress=False, **options).data)
    blurred = engine.gaussian_blur(x, 32 / 20)
    assert_close(occlusion(small_net, x, fill=blurred, window=8, stride=4, progress=False).data,
                 occlusion(small_net, x, fill="blur", window=8, stride=4, progress=False).data)


# --- cost: estimated before any work, refused over the limits --------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_the_estimate_is_the_forwards_that_run(small_net, name):
    """Forward passes of one picture at the model's input size (224x224 for a bare module): the clean forward and
    one per perturbed picture, each 32x32 picture counting by its area."""
    method, options = ALL[name]
    x = noise()
    cost = registry.get(name).cost_of(small_net, x, **options)
    with counting_forwards(small_net) as seen:
        method(small_net, x, batch_size=5, progress=False, **options)
    assert cost.forwards == pytest.approx(seen.rows * 32 * 32 / 224**2)


def test_a_raised_limit_lets_a_refused_call_run(small_net):
    x = noise()
    cost = registry.get("occlusion").cost_of(small_net, x, window=8, stride=4)
    with cs.limits(max_forwards=cost.forwards / 2), counting_forwards(small_net) as seen, pytest.raises(cs.CostError):
        occlusion(small_net, x, window=8, stride=4, progress=False)
    assert seen.calls == 0
    with cs.limits(max_forwards=cost.forwards):
        assert occlusion(small_net, x, window=8, stride=4, progress=False).data.shape == (2, 1, 32, 32)


@pytest.fixture(scope="module")
def eight_pictures(lite0) -> torch.Tensor:
    """(8, 3, 224, 224): four photos twice."""
    return lite0.preprocess([cs.sample_image(name) for name in ("cat", "coffee", "rocket", "astronaut")] * 2)


def test_occlusion_with_a_small_window_on_eight_pictures_is_refused_before_any_work(lite0, eight_pictures):
    """window=8 at 224x224 (stride 4): 55 x 55 = 3,025 windows a picture, 24,208 forwards for eight — hours on a
    laptop CPU. Refused with the estimate before the model runs; a raised limit lets it start (and a cancel
    at the first report stops it after one batch)."""
    with counting_forwards(lite0.module) as seen, pytest.raises(cs.CostError) as info:
        cs.occlusion(lite0, eight_pictures, window=8)
    message = str(info.value)
    assert seen.calls == 0 and "\n" not in message
    assert "occlusion would take about 24,208 forward passes (3,025 windows of 8x8 per picture)" in message
    assert "over the limit of 20,000" in message and "cs.limits(max_forwards=...)" in message
    reports: list[tuple[int, int]] = []

    def stop(done: int, total: int, what: str) -> None:
        reports.append((done, total))
        raise Cancelled("enough")

    cs.layers(lite0, input_size=(3, 224, 224))  # the cached layer trace (memory per row) is not the call's work
    with cs.limits(max_forwards=25_000), counting_forwards(lite0.module) as seen, pytest.raises(Cancelled):
        cs.occlusion(lite0, eight_pictures, window=8, batch_size=8, progress=stop)
    assert reports == [(8, 8 * 3025)] and seen.rows == 8 + 8  # the clean forward, one batch, nothing after


def test_rise_with_100_000_masks_on_eight_pictures_is_refused_before_any_work(lite0, eight_pictures):
    with counting_forwards(lite0.module) as seen, pytest.raises(cs.CostError) as info:
        cs.rise(lite0, eight_pictures, masks=100_000)
    assert seen.calls == 0 and "\n" not in str(info.value)
    assert "rise would take about 800,008 forward passes (100,000 masks of 7x7 cells per picture)" in str(info.value)
    with cs.limits(max_forwards=1_000_000):
        assert registry.get("rise").plan(lite0, eight_pictures, masks=100_000).cost.forwards == 800_008


MEMORY_HOGS = {  # options whose memory, not forwards, is the problem (1 picture of 224x224)
    "rise-mask-bank": ("rise", {"masks": 20_000, "cells": 224}),  # 20,000 grids of 224x224 floats, drawn and kept: 7.5 GiB
    "superpixels-design": ("superpixels", {"samples": 100_000, "segments": 4096}),  # 100,000 x 4,096 float64, 4 copies
    "occlusion-batch": ("occlusion", {"batch_size": 4096}),  # 169 windows in one batch of Lite0 activations
}


@pytest.mark.parametrize("case", MEMORY_HOGS)
def test_memory_estimates_refuse_what_would_not_fit(lite0, cat_x, case):
    """With the forward limit off, the memory limit still refuses (here 1 GiB, by default the machine's memory)."""
    name, options = MEMORY_HOGS[case]
    cs.layers(lite0, input_size=tuple(cat_x.shape[1:]))  # the cached layer trace is not the call's work
    with cs.limits(max_forwards=float("inf"), max_memory=2**30), counting_forwards(lite0.module) as seen, \
            pytest.raises(cs.CostError, match=rf"^{name} would need about [0-9.,]+ GiB of memory .* more than the 1.0 GiB allowed"):
        registry.get(name).fn(lite0, cat_x, **options)
    assert seen.calls == 0


# --- EfficientNet-Lite0 --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def coffee_and_cat(lite0) -> torch.Tensor:
    """Grey picture, (1, 3, 224, 224): the coffee on the left half, the cat (an eye) on the right half."""
    tiles = lite0.preprocess([cs.sample_image("coffee"), cs.sample_image("cat")], size=(112, 112))
    x = torch.zeros(1, 3, 224, 224)
    x[0, :, 56:168, :112], x[0, :, 56:168, 112:] = tiles[0], tiles[1]
    return x


@pytest.fixture(scope="module")
def lite0_occlusion(lite0, coffee_and_cat) -> cs.Result:
    return occlusion(lite0, coffee_and_cat, target=[282], window=56, stride=28, score="logit", progress=False)


def peak_window_left(result: cs.Result) -> int:
    grid = result.meta["grid"][0]
    return result.meta["cols"][int(grid.argmax()) % grid.shape[1]]


def test_lite0_occlusion_peaks_on_the_cat_for_tiger_cat(lite0_occlusion):
    assert lite0_occlusion.labels == ["tiger cat"]
    assert peak_window_left(lite0_occlusion) >= 112  # the peak window lies in the cat's half
    heat = lite0_occlusion.maps()[0].clamp_min(0)
    assert heat[:, 112:].sum() > 2 * heat[:, :112].sum()


def test_lite0_occlusion_bf16_agrees_with_fp32(lite0, coffee_and_cat, lite0_occlusion):
    fast = occlusion(lite0, coffee_and_cat, target=[282], window=56, stride=28, score="logit", precision="bf16",
                     progress=False)
    assert fast.data.dtype == torch.float32
    assert corr(fast.data, lite0_occlusion.data) >= 0.98
