"""Correctness of saliency and Grad-CAM against their papers and against independent implementations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs


@pytest.fixture(scope="module")
def model() -> cs.Model:
    return cs.load_model("efficientnet_lite0")


@pytest.fixture(scope="module")
def photos(model: cs.Model) -> torch.Tensor:
    return model.preprocess([cs.sample_image(n) for n in ("cat", "coffee", "rocket")])


def test_saliency_of_a_linear_model_is_abs_weight() -> None:
    torch.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    x = torch.randn(2, 3, 8, 8)
    result = cs.saliency(linear, x, target=[1, 4])
    weight = linear[1].weight.detach()
    assert torch.allclose(result.data[0], weight[1].abs().view(3, 8, 8))
    assert torch.allclose(result.data[1], weight[4].abs().view(3, 8, 8))
    signed = cs.saliency(linear, x, target=2, abs=False)
    assert torch.allclose(signed.data[0], weight[2].view(3, 8, 8))


def test_saliency_matches_captum(model: cs.Model, photos: torch.Tensor) -> None:
    from captum.attr import Saliency

    ours = cs.saliency(model, photos)
    theirs = Saliency(model.module).attribute(photos.clone(), target=ours.target)
    assert torch.allclose(ours.data, theirs, rtol=1e-3, atol=1e-6 * float(theirs.abs().max()))


def test_gradcam_equals_cam_on_a_gap_linear_model(model: cs.Model, photos: torch.Tensor) -> None:
    """Lite0 ends in ReLU6 -> global average pooling -> linear: Grad-CAM at that map is CAM / (h*w)
    (Selvaraju et al. 2017, section 3.1)."""
    result = cs.gradcam(model, photos)
    assert result.layer == "_swish@1"
    features = {}
    handle = model.module._bn1.register_forward_hook(lambda m, i, o: features.setdefault("a", o.clamp(0, 6)))
    try:
        with torch.no_grad():
            model.module(photos)
    finally:
        handle.remove()
    acts = features["a"]  # (B, 1280, 7, 7)
    fc = model.module._fc.weight.detach()[result.target]  # (B, 1280)
    cam = torch.einsum("bk,bkhw->bhw", fc, acts).clamp_min(0) / (acts.shape[2] * acts.shape[3])
    assert torch.allclose(result.meta["low_res"][:, 0], cam, rtol=1e-4, atol=1e-5 * float(cam.max()))


def test_gradcam_matches_captum_layergradcam(model: cs.Model, photos: torch.Tensor) -> None:
    from captum.attr import LayerGradCam

    ours = cs.gradcam(model, photos, layer="_bn1", target=[281, 967, 812])
    theirs = LayerGradCam(model.module, model.module._bn1).attribute(photos, target=[281, 967, 812], relu_attributions=True)
    low = ours.meta["low_res"]
    assert torch.allclose(low, theirs, rtol=1e-4, atol=1e-5 * float(theirs.detach().abs().max()))


def test_gradcam_matches_pytorch_grad_cam_on_resnet() -> None:
    from pytorch_grad_cam import GradCAM

    model = cs.load_model("resnet18", weights=None)
    torch.manual_seed(1)
    x = torch.randn(2, 3, 96, 96)
    ours = cs.gradcam(model, x)
    assert ours.layer == "layer4"
    with GradCAM(model=model.module, target_layers=[model.module.layer4]) as cam:
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        theirs = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in ours.target])
    ours_np = cs.render.normalize(ours.maps(), "minmax")
    for a, b in zip(ours_np, theirs):
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99


def test_gradcam_sits_on_the_object(model: cs.Model) -> None:
    """The espresso map concentrates on the cup in the middle of the coffee photo."""
    x = model.preprocess(cs.sample_image("coffee"))
    result = cs.gradcam(model, x)
    assert result.labels == ["espresso"]
    heat = result.maps()[0]
    h, w = heat.shape
    centre = heat[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    assert centre.mean() > 2 * heat.mean() - centre.mean()  # centre mean beats the border's mean
    peak = int(heat.argmax())
    assert h // 6 < peak // w < 5 * h // 6 and w // 6 < peak % w < 5 * w // 6


def test_regression_model_with_a_callable_target() -> None:
    """A regression CNN (outputs: x, y of a bright square): explaining output 0 lights up the square."""

    class Locator(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
            nn.init.constant_(self.conv.weight, 1 / 9)
            self.head = nn.Linear(1, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            act = torch.relu(self.conv(x))  # (B, 1, H, W)
            return self.head(act.amax(dim=(2, 3)))

    net = Locator()
    x = torch.zeros(1, 1, 32, 32)
    x[..., 20:26, 4:10] = 1.0
    result = cs.gradcam(net, x, target=lambda out: out[:, 0])
    assert result.target is None and result.layer == "conv"
    peak = int(result.maps()[0].argmax())
    assert 18 <= peak // 32 <= 27 and 2 <= peak % 32 <= 11
    grads = cs.saliency(net, x, target=lambda out: out.sum(dim=1))
    assert grads.maps()[0][:15].abs().sum() == 0  # nothing away from the square


def test_each_class_gets_its_own_region() -> None:
    """Class 0 reads channel 0 (bright on the left), class 1 reads channel 1 (bright on the right):
    each class's Grad-CAM sits on its own half of the same image."""
    net = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight[:] = torch.eye(2).view(2, 2, 1, 1)
        net[4].weight[:] = torch.eye(2)
    x = torch.zeros(1, 2, 16, 16)
    x[:, 0, :, :8] = 1.0
    x[:, 1, :, 8:] = 1.0
    result = cs.gradcam(net, x.expand(2, -1, -1, -1), target=[0, 1], layer="1")
    maps = result.maps()
    assert maps[0, :, :6].min() > 0 and maps[0, :, 10:].max() == 0
    assert maps[1, :, 10:].min() > 0 and maps[1, :, :6].max() == 0


def test_result_records_provenance(model: cs.Model, photos: torch.Tensor) -> None:
    result = cs.gradcam(model, photos, target=[282, 967, 812])
    assert result.method == "gradcam" and result.layer == "_swish@1"
    assert result.target.dtype == torch.long and result.target.tolist() == [282, 967, 812]
    assert result.labels == ["tiger cat", "espresso", "space shuttle"]
    assert result.meta["probabilities"].shape == (3,) and float(result.meta["probabilities"][1]) > 0.5
    assert result.data.shape == (3, 1, 224, 224) and not result.data.requires_grad
    first = result[1]
    assert len(first) == 1 and first.labels == ["espresso"] and first.data.shape == (1, 1, 224, 224)


def test_channels_and_sizes_follow_the_input() -> None:
    """A 1-channel 28x28 model and odd input sizes work; maps come back at the input's H x W."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(8, 10))
    x = torch.rand(3, 1, 28, 31)
    assert cs.gradcam(net, x).data.shape == (3, 1, 28, 31)
    assert cs.saliency(net, x).data.shape == (3, 1, 28, 31)
