"""CAM variants against pytorch-grad-cam, brute-force reimplementations, and what they should show.

Grad-CAM itself is checked against Captum and pytorch-grad-cam in test_methods.py; here the other
variants, CAM's head check, multi-layer fusion, Score-CAM's and Ablation-CAM's definitions, class
sensitivity on real photos, Guided Grad-CAM's product, and bf16.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import convscope as cs

LITE0 = "efficientnet_lite0"
RESNET = "resnet18"
ESPRESSO, COFFEE_MUG, DINING_TABLE = 967, 504, 532


def correlation(a: Any, b: Any) -> float:
    """Pearson correlation of two maps, flattened."""
    return float(np.corrcoef(np.ravel(np.asarray(a, dtype=np.float64)), np.ravel(np.asarray(b, dtype=np.float64)))[0, 1])


def minmax(maps: Any) -> np.ndarray:
    """(B, H, W) maps scaled to [0, 1] per image, as pytorch-grad-cam returns them."""
    return cs.render.normalize(maps, "minmax")


def upsample(low: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(B, 1, h, w) -> (B, 1, H, W), bilinear as convscope upsamples."""
    return F.interpolate(low, size=size, mode="bilinear", align_corners=False)


def peak(heat: torch.Tensor) -> tuple[int, int]:
    """(row, column) of the maximum of an (H, W) map."""
    index = int(heat.argmax())
    return index // heat.shape[1], index % heat.shape[1]


def in_central_box(point: tuple[int, int], size: tuple[int, int]) -> bool:
    """Whether ``point`` lies in the middle two thirds of an image of ``size`` (away from every border)."""
    return all(extent // 6 < coordinate < 5 * extent // 6 for coordinate, extent in zip(point, size))


@contextmanager
def recording(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect ``module``'s outputs while the block runs (a plain forward hook, removed after)."""
    outputs: list[torch.Tensor] = []
    handle = module.register_forward_hook(lambda m, args, out: outputs.append(out.detach().clone()))
    try:
        yield outputs
    finally:
        handle.remove()


def layer_output(module: nn.Module, layer: str, x: torch.Tensor) -> torch.Tensor:
    """What ``layer`` outputs for ``x`` (no grad, eval mode as the module is)."""
    with recording(module.get_submodule(layer)) as outputs, torch.no_grad():
        module(x)
    return outputs[0]


def library_cam(name: str, model: cs.Model, layer: str, x: torch.Tensor, targets: torch.Tensor, **attributes: Any) -> np.ndarray:
    """pytorch-grad-cam's ``name`` on a copy of the model (it leaves .grad behind): (B, H, W) in [0, 1]."""
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = copy.deepcopy(model.module)
    with getattr(pytorch_grad_cam, name)(model=module, target_layers=[module.get_submodule(layer)]) as explainer:
        for key, value in attributes.items():
            setattr(explainer, key, value)
        return explainer(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])


@pytest.fixture(scope="module")
def resnet(model_factory) -> cs.Model:
    """Random-weight ResNet-18 (layer2: 128 x 8 x 8, layer3: 256 x 4 x 4, layer4: 512 x 2 x 2 at 64 x 64)."""
    return model_factory(RESNET)


@pytest.fixture
def resnet_x(resnet, batch_factory) -> torch.Tensor:
    """cat and coffee at 64 x 64 for ResNet-18."""
    return batch_factory(resnet)


@pytest.fixture
def lite0_x(lite0, batch_factory) -> torch.Tensor:
    """cat and coffee at 224 x 224 for Lite0."""
    return batch_factory(lite0)


@pytest.fixture(scope="module")
def coffee_x(lite0) -> torch.Tensor:
    """The coffee photo for Lite0, (1, 3, 224, 224)."""
    return lite0.preprocess(cs.sample_image("coffee"))


# --- agreement with pytorch-grad-cam -------------------------------------------------------------
LIBRARY = {  # our method: (pytorch-grad-cam class, our options, the class's attributes)
    "gradcam_pp": ("GradCAMPlusPlus", {}, {}),
    "xgradcam": ("XGradCAM", {}, {}),
    "layercam": ("LayerCAM", {}, {}),
    "hirescam": ("HiResCAM", {}, {}),
    "scorecam": ("ScoreCAM", {"score": "logit_softmax", "batch_size": 64}, {"batch_size": 64}),
    "ablationcam": ("AblationCAM", {"batch_size": 64}, {"batch_size": 64}),
}
GRADIENT_VARIANTS = ("gradcam_pp", "xgradcam", "layercam", "hirescam")
CASES = ([(method, LITE0, "_bn1") for method in GRADIENT_VARIANTS]
         + [(method, RESNET, "layer3") for method in GRADIENT_VARIANTS]
         + [(method, RESNET, "layer2") for method in ("scorecam", "ablationcam")])  # a forward per channel: 128 here


@pytest.mark.parametrize(("method", "arch", "layer"), CASES, ids=lambda v: str(v))
def test_matches_pytorch_grad_cam(method: str, arch: str, layer: str, model_factory, batch_factory) -> None:
    """Same model, layer and classes: per-image correlation >= 0.99 once both maps are min-max scaled.

    Known differences that stay under that bar: Grad-CAM++'s epsilon (theirs 1e-6, ours 1e-7: 0.9947 on
    the Lite0 cat), Score-CAM's mask upsampling (theirs align_corners=True, ours False: 0.9997).
    Ablation-CAM is compared at a post-ReLU layer, where their ablation value is 0, as in the paper.
    """
    model = model_factory(arch)
    x = batch_factory(model)
    name, ours_options, attributes = LIBRARY[method]
    ours = getattr(cs, method)(model, x, layer=layer, **ours_options)
    if method == "ablationcam":  # pytorch-grad-cam ablates to min - 1e7 where activations go below 0
        assert float(layer_output(model.module, layer, x).min()) == 0.0
    theirs = library_cam(name, model, layer, x, ours.target, **attributes)
    assert (ours.maps().amax(dim=(1, 2)) > 0).all()  # a blank map would agree with anything
    for mine, reference in zip(minmax(ours.maps()), theirs):
        assert correlation(mine, reference) >= 0.99


@pytest.mark.parametrize(("arch", "layer"), [(RESNET, "layer4"), (LITE0, "_bn1")])
def test_eigencam_matches_pytorch_grad_cam_up_to_sign(arch: str, layer: str, model_factory, batch_factory,
                                                      assert_close) -> None:
    """Eigen-CAM (relu=False) is ± their first principal component, and their map is ours oriented their way.

    The component's sign is arbitrary: ours orients it along the mean activation, theirs is whatever the
    SVD returns (the opposite of ours on Lite0's _bn1, the same on ResNet-18's layer4).
    """
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model = model_factory(arch)
    x = batch_factory(model)
    low = cs.eigencam(model, x, layer=layer, relu=False).meta["low_res"]
    projection = torch.from_numpy(get_2d_projection(layer_output(model.module, layer, x).numpy()))
    signs = torch.sign((low[:, 0] * projection).sum(dim=(1, 2))).view(-1, 1, 1, 1)
    assert_close(low, signs * projection[:, None], rtol=1e-3, atol=1e-4)
    oriented = upsample((signs * low).clamp_min(0), tuple(x.shape[-2:]))[:, 0]
    theirs = library_cam("EigenCAM", model, layer, x, torch.zeros(len(x)))
    for mine, reference in zip(minmax(oriented), theirs):
        assert correlation(mine, reference) >= 0.99
    relu_map = cs.eigencam(model, x, layer=layer).data
    assert_close(relu_map, upsample(low.clamp_min(0), tuple(x.shape[-2:])))


# --- CAM (Zhou et al.) ---------------------------------------------------------------------------
def test_cam_is_gradcam_times_the_map_area_on_a_gap_linear_head(lite0, lite0_x, assert_close) -> None:
    """Lite0 ends in GAP -> Linear, so at its last map CAM = h * w x Grad-CAM (a positive scale), per image."""
    ours = cs.cam(lite0, lite0_x)
    grad = cs.gradcam(lite0, lite0_x, target=ours.target)
    assert ours.layer == grad.layer
    _, height, width = ours.meta["layer_shape"]
    assert_close(ours.data, height * width * grad.data)


def test_cam_refuses_a_head_that_is_not_gap_linear(model_factory, batch_factory) -> None:
    """VGG-11's head is flatten -> MLP, not GAP -> Linear: a LayerError that suggests gradcam."""
    vgg = model_factory("vgg11")
    with pytest.raises(cs.LayerError, match="gradcam"):
        cs.cam(vgg, batch_factory(vgg))


def test_cam_refuses_a_callable_target(lite0, cat_x) -> None:
    """CAM reads a class's weights, so a score callable is a TargetError."""
    with pytest.raises(cs.TargetError):
        cs.cam(lite0, cat_x, target=lambda out: out[:, 0])


# --- several layers -----------------------------------------------------------------------------
def test_multi_layer_gradcam_averages_max_scaled_maps(resnet, resnet_x, assert_close) -> None:
    """layer=["layer3", "layer4"]: the mean of the two upsampled single-layer maps, each divided by its per-image max."""
    fused = cs.gradcam(resnet, resnet_x, layer=["layer3", "layer4"])
    assert fused.layer == "layer3+layer4"
    assert fused.data.shape == (len(resnet_x), 1, *resnet_x.shape[-2:])
    assert torch.isfinite(fused.data).all() and (fused.data.amax(dim=(1, 2, 3)) > 0).all()
    singles = [cs.gradcam(resnet, resnet_x, layer=layer, target=fused.target).data for layer in ("layer3", "layer4")]
    peaks = [single.amax(dim=(1, 2, 3), keepdim=True) for single in singles]
    assert all((p > 0).all() for p in peaks)
    assert_close(fused.data, sum(single / p for single, p in zip(singles, peaks)) / 2)


# --- Score-CAM and Ablation-CAM against brute force -----------------------------------------------
CONSTANT, DEAD = 3, 4  # channels of the tiny model's first ReLU: all ones, all zeros


def tiny_model() -> nn.Sequential:
    """conv(3->5) -> ReLU -> conv(5->6) -> ReLU -> GAP -> Linear(6->4), fixed seed; at the first ReLU
    (layer "1") channel 3 is constant 1 (weight 0, bias 1) and channel 4 is 0 (weight 0, bias -1)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(6, 4)).eval()
    with torch.no_grad():
        net[0].weight[[CONSTANT, DEAD]] = 0
        net[0].bias[CONSTANT], net[0].bias[DEAD] = 1.0, -1.0
        net[-1].bias += 2.0  # keep the explained logits away from 0: Ablation-CAM divides by them
    return net


@pytest.fixture(scope="module")
def tiny() -> tuple[nn.Sequential, torch.Tensor]:
    """The tiny model and two 12 x 12 pictures."""
    return tiny_model(), torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))


@contextmanager
def counting_rows(net: nn.Module) -> Iterator[list[int]]:
    """Count the rows (images) the model is run on while the block runs."""
    rows = [0]
    handle = net.register_forward_pre_hook(lambda m, args: rows.__setitem__(0, rows[0] + args[0].shape[0]))
    try:
        yield rows
    finally:
        handle.remove()


def brute_force_scorecam(net: nn.Module, x: torch.Tensor, target: torch.Tensor, score: str) -> torch.Tensor:
    """Score-CAM by the paper, every channel, no skipping: (B, 1, h, w) before upsampling."""
    acts = layer_output(net, "1", x)
    weights = torch.zeros(acts.shape[:2])
    with torch.no_grad():
        for b, k in np.ndindex(*acts.shape[:2]):
            up = upsample(acts[b:b + 1, k:k + 1], tuple(x.shape[-2:]))
            span = up.max() - up.min()
            mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)  # a constant map masks everything
            logits = net(x[b:b + 1] * mask)[0]
            weights[b, k] = logits.softmax(0)[target[b]] if score == "probability" else logits[target[b]]
    if score == "logit_softmax":
        weights = weights.softmax(dim=1)
    return (weights[:, :, None, None] * acts).sum(dim=1, keepdim=True).clamp_min(0)


def brute_force_ablationcam(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Ablation-CAM by the paper, every channel: w_k = (y - y_k) / y with channel k zeroed, (B, 1, h, w)."""
    acts = layer_output(net, "1", x)
    rows = torch.arange(len(x))
    weights = torch.zeros(acts.shape[:2])
    with torch.no_grad():
        score = net(x)[rows, target]
        for k in range(acts.shape[1]):
            def zero_channel(module: nn.Module, args: Any, out: torch.Tensor, k: int = k) -> torch.Tensor:
                out = out.clone()
                out[:, k] = 0
                return out

            handle = net[1].register_forward_hook(zero_channel)
            try:
                weights[:, k] = (score - net(x)[rows, target]) / score
            finally:
                handle.remove()
    return (weights[:, :, None, None] * acts).sum(dim=1, keepdim=True).clamp_min(0)


@pytest.mark.parametrize("score", ("probability", "logit_softmax"))
def test_scorecam_skips_constant_channels_yet_equals_brute_force(score: str, tiny, assert_close) -> None:
    """Constant maps (all ones, all zeros) mask the whole picture: skipping them changes nothing but the cost."""
    net, x = tiny
    target = torch.tensor([0, 2])
    cs.layers(net, input_size=tuple(x.shape[1:]))  # the cost estimate's cached layer trace is not the call's work
    with counting_rows(net) as rows:
        ours = cs.scorecam(net, x, layer="1", target=target, score=score, batch_size=2)
    live = net[0].out_channels - 2
    assert rows[0] <= len(x) * (2 + live)  # the explaining forward, one blank per image, one per live channel
    assert_close(ours.meta["low_res"], brute_force_scorecam(net, x, target, score))


@pytest.mark.parametrize("name", ("scorecam", "ablationcam"))
def test_the_estimate_counts_every_channel_of_every_layer(name: str, tiny) -> None:
    """One forward per channel of each layer explained (Score-CAM: and a blank picture per layer), the explaining
    forward; pictures count by their area (12x12 of a bare module's 224x224). Skipped channels only run fewer."""
    net, x = tiny
    area = 12 * 12 / 224**2
    tool = cs.registry.get(name)
    blank = 1 if name == "scorecam" else 0
    assert tool.cost_of(net, x, layer="1").forwards == pytest.approx(2 * (1 + blank + 5) * area)
    cost = tool.cost_of(net, x, layer=["1", "3"])
    assert cost.forwards == pytest.approx(2 * (1 + 2 * blank + 5 + 6) * area)
    assert tool.cost_of(net, x, layer=["1", "3"], top_channels=2).forwards == pytest.approx(2 * (1 + 2 + 2) * area)
    cs.layers(net, input_size=tuple(x.shape[1:]))  # the cost estimate's cached layer trace is not the call's work
    with counting_rows(net) as rows:
        tool.fn(net, x, layer=["1", "3"])
    assert rows[0] * area <= cost.forwards + 1e-9


def test_ablationcam_equals_brute_force(tiny, assert_close) -> None:
    """(y - y_k) / y with channel k zeroed; the all-zero channel is skipped, its weight 0 either way."""
    net, x = tiny
    target = torch.tensor([1, 3])
    cs.layers(net, input_size=tuple(x.shape[1:]))  # the cost estimate's cached layer trace is not the call's work
    with counting_rows(net) as rows:
        ours = cs.ablationcam(net, x, layer="1", target=target, relu=True, batch_size=3)
    assert rows[0] <= len(x) * (1 + net[0].out_channels - 1)  # the explaining forward, one per non-zero channel
    assert_close(ours.meta["low_res"], brute_force_ablationcam(net, x, target))


# --- what the maps show on real photos ------------------------------------------------------------
def test_gradcam_follows_the_class_on_the_coffee_photo(lite0, coffee_x) -> None:
    """espresso and coffee mug both name the cup (maps agree); dining table lights the wood around it."""
    espresso, mug, table = (cs.gradcam(lite0, coffee_x, target=c).maps()[0] for c in (ESPRESSO, COFFEE_MUG, DINING_TABLE))
    assert correlation(espresso, mug) > 0.9
    assert correlation(espresso, table) < 0.5
    cup = peak(espresso)
    assert in_central_box(cup, espresso.shape)
    assert table[cup] < 0.25 * table.max()


def test_gradcam_peaks_on_the_cat(lite0, cat_x) -> None:
    """The tiger-cat map peaks inside the central region of the cat photo (the face), not at a border."""
    result = cs.gradcam(lite0, cat_x)
    assert result.labels == ["tiger cat"]
    assert in_central_box(peak(result.maps()[0]), tuple(cat_x.shape[-2:]))


def test_guided_gradcam_is_guided_backprop_times_gradcam(resnet, resnet_x, assert_close) -> None:
    """Guided Grad-CAM = guided backprop x the upsampled Grad-CAM map of the same class."""
    product = cs.guided_gradcam(resnet, resnet_x, layer="layer3")
    guided = cs.guided_backprop(resnet, resnet_x, target=product.target)
    coarse = cs.gradcam(resnet, resnet_x, layer="layer3", target=product.target)
    assert product.data.shape == resnet_x.shape and product.layer == "layer3"
    assert_close(product.data, guided.data * coarse.data)


# --- bf16 ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("method", "options"), [("gradcam", {}), ("gradcam", {"layer": "_bn1"}),
                                                 ("scorecam", {"layer": "_blocks.0._bn2"})], ids=repr)
def test_bf16_agrees_with_fp32_on_lite0(method: str, options: dict[str, Any], lite0, lite0_x) -> None:
    """CAM maps in bf16 come back as float32 and correlate with fp32 >= 0.95 per image (measured >= 0.998).

    Score-CAM runs one forward per channel: the 16-channel map after Lite0's first block keeps it cheap.
    """
    exact, fast = (getattr(cs, method)(lite0, lite0_x, precision=precision, **options) for precision in ("fp32", "bf16"))
    assert fast.data.dtype == torch.float32 and torch.isfinite(fast.data).all()
    for a, b in zip(exact.maps(), fast.maps()):
        assert correlation(a, b) >= 0.95


def test_scorecam_with_no_live_channel_is_finite() -> None:
    """Every channel constant and top_channels set: no channel takes part, the map is zero, not NaN."""
    net = nn.Sequential(nn.Conv2d(3, 2, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 3)).eval()
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].bias.fill_(1.0)
    for score in ("probability", "logit_softmax"):
        result = cs.scorecam(net, torch.randn(1, 3, 8, 8), layer="1", score=score, top_channels=1)
        assert torch.isfinite(result.data).all()
