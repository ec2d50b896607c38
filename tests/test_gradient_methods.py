"""Gradient methods against hand computations, Captum, the completeness axiom and their own options.

saliency and Grad-CAM basics live in test_methods.py; the contract (shapes, targets, errors) in
test_contract.py. Here: the rectifier rules of guided backprop / deconvnet, agreement with Captum,
integrated gradients' completeness and baselines, SmoothGrad's options (its own and the wrapped method's),
progress, cancellation and cost estimates of the two that loop, and the bf16 refusal.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from test_state import counting_forwards
from torch import nn

import convscope as cs
from convscope import registry
from convscope.progress import Cancelled

RESNET = "resnet18"


def relative_delta(result: cs.Result) -> torch.Tensor:
    """IG's completeness error relative to the score gap it must account for, per image."""
    gap = (result.meta["scores"] - result.meta["baseline_scores"]).abs()
    return result.meta["delta"].abs() / gap


def one_channel(net: nn.Module) -> cs.Model:
    """``net`` as a model of 1-channel pictures (it has no Conv2d to say so)."""
    return cs.Model(net, input_size=None, mean=None, std=None, channels=1)


def seeded(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` under a fixed seed, in eval mode, without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


@pytest.fixture(scope="module")
def resnet(model_factory) -> cs.Model:
    """Random-weight ResNet-18: every ReLU is an nn.ReLU module, so Captum's module hooks apply."""
    return model_factory(RESNET)


@pytest.fixture
def resnet_x(resnet, batch_factory) -> torch.Tensor:
    """cat and coffee at 64x64, preprocessed for ResNet-18."""
    return batch_factory(resnet)


# --- guided backprop and deconvnet: the rectifier rules -----------------------------------------
RECTIFIED = ("guided_backprop", "deconvnet")


@pytest.mark.parametrize("method", RECTIFIED)
def test_relu_free_model_gives_the_plain_gradient_and_a_warning(method: str, assert_close) -> None:
    """Without a ReLU-like activation there is nothing to rewrite: the plain gradient, a warning, rewritten == 0."""
    net = seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)))
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    with pytest.warns(UserWarning, match="no ReLU-like activation"):
        result = getattr(cs, method)(net, x)
    assert result.meta["rewritten"] == 0
    assert_close(result.data, cs.saliency(net, x, target=result.target, abs=False).data)


class EveryRectifier(nn.Module):
    """One of each ReLU-like call on the gradient path: three modules, five functional forms."""

    CALLS = 8

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.relu6 = nn.ReLU6()
        self.leaky = nn.LeakyReLU(0.1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.conv(x))
        h = self.relu6(4 * h - 1)
        h = self.leaky(h - 1)
        h = F.relu(h + 0.5)
        h = torch.relu(h - 0.1)
        h = (2 * h).relu()
        h = (h - 0.2).relu_()
        h = F.relu6(3 * h)
        return self.head(h.mean(dim=(2, 3)))


@pytest.mark.parametrize("method", RECTIFIED)
def test_every_relu_like_call_is_rewritten(method: str) -> None:
    """nn.ReLU(inplace), ReLU6, LeakyReLU, F.relu, torch.relu, x.relu(), x.relu_(), F.relu6: each call counts once."""
    net = seeded(EveryRectifier)
    x = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = getattr(cs, method)(net, x)
    assert result.meta["rewritten"] == EveryRectifier.CALLS
    assert not [w for w in caught if "ReLU-like" in str(w.message)]  # activations were found: no warning
    assert torch.isfinite(result.data).all()


class SignedSum(nn.Module):
    """score = v · relu(x) for a (1, 1, 2, 2) input read as x = (x1, x2, x3, x4), one output."""

    def __init__(self, v: list[float]) -> None:
        super().__init__()
        self.v = nn.Parameter(torch.tensor([v]), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x.flatten(1)) @ self.v.T


@pytest.mark.parametrize(("method", "expected"), [
    ("saliency", [1.0, -1.0, 0.0, 0.0]),         # v * [x > 0]
    ("guided_backprop", [1.0, 0.0, 0.0, 0.0]),   # only where x > 0 AND the gradient v > 0
    ("deconvnet", [1.0, 0.0, 1.0, 0.0]),         # only where the gradient v > 0, whatever x
])
def test_rectifier_rules_by_hand(method: str, expected: list[float]) -> None:
    """v = (1, -1, 1, -1), x = (1, 1, -1, -1): the three backward rules through one ReLU, computed by hand."""
    x = torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).view(1, 1, 2, 2)
    options = {"abs": False} if method == "saliency" else {}
    result = getattr(cs, method)(one_channel(SignedSum([1.0, -1.0, 1.0, -1.0])), x, **options)
    assert result.data.flatten().tolist() == expected


# activation, its forward, its local derivative (for the guided rule)
ACTIVATIONS = {
    "relu": (nn.ReLU(), lambda z: z.clamp_min(0), lambda z: (z > 0).float()),
    "relu6": (nn.ReLU6(), lambda z: z.clamp(0, 6), lambda z: ((z > 0) & (z < 6)).float()),
    "leaky": (nn.LeakyReLU(0.1), lambda z: torch.where(z > 0, z, 0.1 * z), lambda z: torch.where(z > 0, 1.0, 0.1)),
}


def rectified_gradient(weights: list[torch.Tensor], x: torch.Tensor, activation: str, rule: str) -> torch.Tensor:
    """The backward of x -> act(W1 x) -> act(W2 .) -> W3 . written out with matrices, no autograd."""
    _, forward, derivative = ACTIVATIONS[activation]
    pre_activations, h = [], x
    for w in weights[:-1]:
        pre_activations.append(w @ h)
        h = forward(pre_activations[-1])
    grad = weights[-1][0]
    for w, z in zip(reversed(weights[:-1]), reversed(pre_activations)):
        grad = grad.clamp_min(0) * (derivative(z) if rule == "guided_backprop" else 1.0)
        grad = w.T @ grad
    return grad


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("method", RECTIFIED)
def test_rectifier_rules_through_two_layers(method: str, activation: str) -> None:
    """Guided: pass positive gradients times the local derivative; deconvnet: positive gradients only (matrix reference)."""
    generator = torch.Generator().manual_seed(3)
    weights = [3 * torch.randn(6, 4, generator=generator), 3 * torch.randn(5, 6, generator=generator),
               torch.randn(1, 5, generator=generator)]
    module, _, _ = ACTIVATIONS[activation]
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6, bias=False), copy.deepcopy(module),
                        nn.Linear(6, 5, bias=False), copy.deepcopy(module), nn.Linear(5, 1, bias=False)).eval()
    with torch.no_grad():
        for linear, w in zip(net[1::2], weights):
            linear.weight.copy_(w)
    x = torch.randn(1, 1, 2, 2, generator=generator)
    result = getattr(cs, method)(one_channel(net), x)
    assert result.meta["rewritten"] == 2
    torch.testing.assert_close(result.data.flatten(), rectified_gradient(weights, x.flatten(), activation, method))


# --- agreement with Captum ----------------------------------------------------------------------
CAPTUM = {  # our method: (Captum class, our options, Captum's options)
    "guided_backprop": ("GuidedBackprop", {}, {}),
    "deconvnet": ("Deconvolution", {}, {}),
    "input_x_gradient": ("InputXGradient", {}, {}),
    "integrated_gradients": ("IntegratedGradients", {"steps": 16}, {"n_steps": 16, "method": "gausslegendre"}),
}


@pytest.mark.parametrize("method", CAPTUM)
def test_matches_captum_on_resnet(method: str, resnet, resnet_x, assert_close) -> None:
    """Guided backprop, deconvnet, input x gradient and IG (zeros baseline, Gauss-Legendre) equal Captum's."""
    import captum.attr

    name, ours_options, captum_options = CAPTUM[method]
    ours = getattr(cs, method)(resnet, resnet_x, **ours_options)
    module = copy.deepcopy(resnet.module)  # Captum hooks the ReLUs and sets requires_grad: keep it off the shared model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "setting backward hooks on ReLU", "input did not require grad"
        theirs = getattr(captum.attr, name)(module).attribute(resnet_x.clone(), target=ours.target, **captum_options)
    assert_close(ours.data, theirs.detach(), rtol=1e-3, atol=1e-4)


# --- integrated gradients: completeness and baselines -------------------------------------------
def test_integrated_gradients_completeness_on_lite0(lite0, cat_x) -> None:
    """128 Gauss-Legendre steps on the cat: attributions sum to score - baseline score within 2 % (about 1 % measured)."""
    result = cs.integrated_gradients(lite0, cat_x, steps=128)
    expected_delta = result.data.sum(dim=(1, 2, 3)) - (result.meta["scores"] - result.meta["baseline_scores"])
    torch.testing.assert_close(result.meta["delta"], expected_delta)
    blank = lite0(torch.zeros_like(cat_x))[0, result.target]
    torch.testing.assert_close(result.meta["baseline_scores"], blank, rtol=1e-4, atol=1e-4)
    assert float(relative_delta(result).max()) <= 0.02


def smooth_net() -> nn.Module:
    """conv -> softplus -> linear: infinitely differentiable, so quadrature error goes to ~0."""
    return seeded(lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Softplus(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)))


@pytest.mark.parametrize("rule", ("gausslegendre", "riemann_middle", "riemann_trapezoid"))
def test_integrated_gradients_delta_vanishes_with_steps_on_a_smooth_model(rule: str) -> None:
    """On a smooth model the completeness error falls from 16 to 128 steps (Riemann: O(1/n^2)) to ~0."""
    net = smooth_net()
    x = 2 * torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(4))
    coarse, fine = (relative_delta(cs.integrated_gradients(net, x, steps=steps, rule=rule)) for steps in (16, 128))
    assert float(fine.max()) <= 1e-4
    if rule == "gausslegendre":
        assert float(coarse.max()) <= 1e-5  # exact up to float32 rounding already
    else:
        assert (fine < coarse / 20).all()


def black_picture(model: cs.Model, x: torch.Tensor) -> torch.Tensor:
    """A black picture in the model's input space, (C, H, W)."""
    mean = torch.tensor(model.mean).view(-1, 1, 1)
    std = torch.tensor(model.std).view(-1, 1, 1)
    return ((0 - mean) / std).expand(x.shape[1:]).clone()


@pytest.mark.parametrize("shape", ("CHW", "1CHW", "BCHW"))
def test_tensor_baselines_broadcast_and_black_is_a_black_picture(shape: str, resnet, resnet_x, assert_close) -> None:
    """A tensor baseline of shape (C,H,W), (1,C,H,W) or (B,C,H,W) gives what baseline="black" gives for a black picture."""
    black = black_picture(resnet, resnet_x)
    baseline = {"CHW": black, "1CHW": black[None], "BCHW": black.expand_as(resnet_x).clone()}[shape]
    named = cs.integrated_gradients(resnet, resnet_x, steps=4, baseline="black")
    given = cs.integrated_gradients(resnet, resnet_x, steps=4, baseline=baseline)
    assert_close(given.data, named.data)
    assert_close(given.meta["baseline_scores"], named.meta["baseline_scores"])


def test_blur_baseline_of_a_constant_picture_is_the_picture(resnet, resnet_x) -> None:
    """Blurring a flat picture changes nothing: zero attribution; a real picture's blur scores differently."""
    flat = torch.full_like(resnet_x[:1], 0.3)
    still = cs.integrated_gradients(resnet, flat, steps=4, baseline="blur")
    torch.testing.assert_close(still.meta["baseline_scores"], still.meta["scores"])
    assert float(still.data.abs().max()) < 1e-6
    moved = cs.integrated_gradients(resnet, resnet_x, steps=4, baseline="blur")
    assert torch.isfinite(moved.data).all() and (moved.meta["baseline_scores"] != moved.meta["scores"]).all()


@pytest.mark.parametrize("shape", [(3, 3, 64, 64), (3, 64, 63), (64, 64), (1, 1, 3, 64, 64), (1, 1, 64, 64)],
                         ids=str)
def test_wrong_shaped_baseline_is_refused(shape: tuple[int, ...], resnet, resnet_x) -> None:
    """A baseline tensor that fits neither one image nor the batch (of 2) is a ConvscopeError naming both shapes."""
    with pytest.raises(cs.ConvscopeError, match="does not fit"):
        cs.integrated_gradients(resnet, resnet_x, steps=2, baseline=torch.zeros(shape))


# --- SmoothGrad ---------------------------------------------------------------------------------
def test_smoothgrad_does_not_depend_on_batch_size(resnet, resnet_x, assert_close) -> None:
    """Sample s gets the same noise whatever the chunking: batch_size 1, 4 and 64 agree."""
    runs = [cs.smoothgrad(resnet, resnet_x, samples=5, batch_size=size).data for size in (1, 4, 64)]
    for run in runs[1:]:
        assert_close(run, runs[0])


def test_smoothgrad_is_reproducible_for_a_seed(resnet, resnet_x) -> None:
    """The same seed gives the same answer bit for bit; another seed draws other noise."""
    first, again, other = (cs.smoothgrad(resnet, resnet_x, samples=3, seed=seed).data for seed in (0, 0, 1))
    assert torch.equal(first, again)
    assert not torch.allclose(first, other)


def test_vargrad_is_mean_square_minus_squared_mean(resnet, resnet_x, assert_close) -> None:
    """variant="var" == "square" - "mean"**2, clamped at 0 (same seed, same samples)."""
    mean, square, var = (cs.smoothgrad(resnet, resnet_x, method="input_x_gradient", samples=4, variant=variant).data
                         for variant in ("mean", "square", "var"))
    assert (var >= 0).all()
    assert_close(var, (square - mean**2).clamp_min(0), atol=1e-4)


INNER = [("saliency", {}), ("saliency", {"abs": False}), ("guided_backprop", {}), ("input_x_gradient", {}),
         ("integrated_gradients", {"steps": 4})]


@pytest.mark.parametrize(("method", "options"), INNER, ids=lambda v: v if isinstance(v, str) else repr(v))
def test_one_noiseless_sample_is_the_inner_method(method: str, options: dict[str, Any], resnet, resnet_x,
                                                  assert_close) -> None:
    """samples=1, sigma=0 is the wrapped method itself, its options passed through."""
    smooth = cs.smoothgrad(resnet, resnet_x, method=method, samples=1, sigma=0.0, **options)
    inner = getattr(cs, method)(resnet, resnet_x, target=smooth.target, **options)
    assert smooth.meta["inner"] == method
    assert_close(smooth.data, inner.data)


SMOOTHGRAD_REFUSALS = (  # (options, words of the one-line OptionError)
    ({"method": "gradcam"}, "option method='gradcam' is not one of 'saliency', 'input_x_gradient'"),
    ({"method": "smoothgrad"}, "option method='smoothgrad' is not one of"),
    ({"variant": "median"}, "option variant='median' is not one of 'mean', 'square', 'var'"),
    ({"samples": 0}, "option samples=0 is out of range; allowed: 1 ≤ value ≤ 10,000"),
    ({"sigma": -0.1}, "option sigma=-0.1 is out of range; allowed: 0 ≤ value ≤ 2"),
    ({"sampels": 4}, "smoothgrad has no option 'sampels'; did you mean 'samples'?"),
    ({"method": "integrated_gradients", "stesp": 4}, "smoothgrad has no option 'stesp'; did you mean 'steps'"),
    ({"method": "integrated_gradients", "steps": 0},
     "smoothgrad with method='integrated_gradients': option steps=0 is out of range; allowed: 1 ≤ value ≤ 4,096"),
    ({"abs": "sometimes"}, "smoothgrad with method='saliency': option abs='sometimes' is not valid"),
    ({"steps": 4}, "smoothgrad has no option 'steps'"),  # saliency has no steps
)


@pytest.mark.parametrize(("options", "words"), SMOOTHGRAD_REFUSALS, ids=lambda v: repr(v) if isinstance(v, dict) else "")
def test_smoothgrad_refuses_what_it_cannot_wrap_before_any_work(options: dict[str, Any], words: str, resnet, resnet_x) -> None:
    """Only pixel-gradient methods can be smoothed; its options and the wrapped method's are checked (by the wrapped
    method's own options model) before the model runs, misspelt names get the close one."""
    with counting_forwards(resnet.module) as seen, pytest.raises(cs.OptionError) as info:
        cs.smoothgrad(resnet, resnet_x, **options)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert seen.calls == 0


def test_trapezoid_rule_needs_two_steps(resnet, resnet_x) -> None:
    with counting_forwards(resnet.module) as seen, pytest.raises(cs.OptionError, match=r"riemann_trapezoid.*steps >= 2"):
        cs.integrated_gradients(resnet, resnet_x, steps=1, rule="riemann_trapezoid")
    assert seen.calls == 0


def test_smoothgrad_hands_its_batch_size_to_a_wrapped_method_that_batches(resnet, resnet_x) -> None:
    """Integrated gradients inside SmoothGrad runs its path points in smoothgrad's batch_size rows."""
    with counting_forwards(resnet.module) as seen:
        cs.smoothgrad(resnet, resnet_x, method="integrated_gradients", steps=3, samples=2, batch_size=2, progress=False)
    assert seen.graph_rows == 2 * 3 * 2 and seen.calls == 1 + 2 * (1 + 3)  # clean; per sample: both ends, 3 batches of 2


# --- progress, cancellation, cost ----------------------------------------------------------------------------
LOOPING = {  # method: (options, units of progress for the 2 pictures, rows per report)
    "integrated_gradients": ({"steps": 5, "batch_size": 4}, 10, 4),
    "smoothgrad": ({"samples": 5, "batch_size": 4}, 10, 4),
}


@pytest.mark.parametrize("name", LOOPING)
def test_progress_reports_every_batch(name: str, resnet, resnet_x) -> None:
    options, total, per_report = LOOPING[name]
    calls: list[tuple[int, int, str]] = []
    getattr(cs, name)(resnet, resnet_x, progress=lambda done, total, what: calls.append((done, total, what)), **options)
    assert [c[0] for c in calls] == [min(total, per_report * (i + 1)) for i in range(-(-total // per_report))]
    assert {c[1] for c in calls} == {total} and {c[2] for c in calls} == {name}


@pytest.mark.parametrize("name", LOOPING)
def test_cancelling_stops_at_the_next_batch(name: str, resnet, resnet_x) -> None:
    """Cancelled at the second report: the forwards run so far stand, none runs after."""
    options = LOOPING[name][0]
    reports: list[int] = []
    with counting_forwards(resnet.module) as seen:
        def cancel(done: int, total: int, what: str) -> None:
            reports.append(seen.calls)
            if len(reports) == 2:
                raise Cancelled("stopped by the user")

        with pytest.raises(Cancelled):
            getattr(cs, name)(resnet, resnet_x, progress=cancel, **options)
    assert len(reports) == 2 and seen.calls == reports[-1]


def test_a_cancel_gets_through_a_long_wrapped_method(resnet, resnet_x) -> None:
    """SmoothGrad over integrated gradients: the first report comes from inside the wrapped call (after its first
    batch of path points), and a cancel there stops it — the rest of its path is never run."""
    reports: list[tuple[int, int]] = []
    with counting_forwards(resnet.module) as seen:
        def cancel(done: int, total: int, what: str) -> None:
            reports.append((done, seen.graph_rows))
            raise Cancelled("stopped by the user")

        with pytest.raises(Cancelled):
            cs.smoothgrad(resnet, resnet_x, method="integrated_gradients", steps=8, samples=4, batch_size=2, progress=cancel)
    assert reports == [(0, 2)]  # no noisy copy finished; one batch of 2 path points had run
    assert seen.graph_rows == 2


ESTIMATED = {
    "integrated_gradients": {"steps": 5, "batch_size": 4},
    "smoothgrad": {"samples": 3},
    "smoothgrad-ig": {"method": "integrated_gradients", "steps": 3, "samples": 2},
    "saliency": {},
}


@pytest.mark.parametrize("case", ESTIMATED)
def test_the_estimate_is_the_forwards_that_run(case: str, resnet, resnet_x) -> None:
    """Each forward of a 64x64 picture counts (64 / 224)^2 of one at ResNet's 224x224, a backward twice that."""
    name, options = case.split("-")[0], ESTIMATED[case]
    cost = registry.get(name).cost_of(resnet, resnet_x, **options)
    with counting_forwards(resnet.module) as seen:
        getattr(cs, name)(resnet, resnet_x, **options)
    assert cost.forwards == pytest.approx((seen.rows + 2 * seen.graph_rows) * (64 / 224) ** 2)


def test_a_large_batch_of_graphs_is_refused_for_memory(lite0, cat_x) -> None:
    """A forward kept for a backward holds every layer's output: 4096 rows of Lite0 at 224x224 need hundreds of GiB."""
    cs.layers(lite0, input_size=(3, 224, 224))  # the cached layer trace is not the call's work
    with counting_forwards(lite0.module) as seen, pytest.raises(cs.CostError, match="of memory"):
        cs.integrated_gradients(lite0, cat_x, steps=4096, batch_size=4096)
    assert seen.calls == 0


# --- bf16 ---------------------------------------------------------------------------------------
GRADIENT_METHODS = ("saliency", "input_x_gradient", "guided_backprop", "deconvnet", "integrated_gradients", "smoothgrad")


@pytest.mark.parametrize("method", GRADIENT_METHODS)
def test_bf16_is_refused_for_pixel_gradients(method: str, resnet, resnet_x) -> None:
    """bf16 pixel gradients are too coarse to offer, so asking for them is a one-line error pointing to fp32.

    Measured on Lite0 (cat / coffee), bf16 vs fp32 channel-max maps: saliency 0.86 / 0.77, 8-step IG
    0.77 / 0.70 correlation, the same with a plain torch.autocast: bf16's 8-bit mantissa, not convscope.
    """
    with pytest.raises(cs.ConvscopeError, match="fp32") as info:
        getattr(cs, method)(resnet, resnet_x, precision="bf16")
    assert "\n" not in str(info.value)
