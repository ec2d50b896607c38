"""Segmentation models: ``cs.targets.segmentation`` and every attribution method on dict / tuple / (B, K, H, W) outputs.

Random-weight torchvision FCN, DeepLabV3 and LR-ASPP (``{"out": ..., "aux": ...}``) and a
segmentation-models-pytorch U-Net (a plain (B, K, H, W) tensor): every registered method runs with
``cs.targets.segmentation(k)`` — or refuses in one line, for a reason that holds — and leaves the model as
it was. An analytic model whose class scores at a pixel depend only on that pixel checks the target's
region, its per-picture masks and the rows of batched methods exactly.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torchvision.transforms.functional as TF
from test_contract import raises_one_line
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from conftest import registered_methods
from convscope.targets import fixed_target, resolve_target, row_scores

SIZE = 96
METHODS = registered_methods()
# Methods that refuse a segmentation model, and why (a genuine reason, checked in the message).
REFUSE = {"cam": "linear head"}
# The layer each model is explained at (the backbone's last feature map; what the default layer rule should pick).
MODELS = {
    "fcn_resnet50": "backbone.layer4",
    "deeplabv3_mobilenet_v3_large": "backbone.16",
    "lraspp_mobilenet_v3_large": "backbone.16",
    "smp_unet_resnet18": "encoder.layer4",
}


def warm_batchnorm(module: nn.Module, shape: tuple[int, ...], steps: int = 4) -> nn.Module:
    """Give a random-weight model's BatchNorm layers statistics of noise pictures (their defaults, mean 0 and
    variance 1, let MobileNet's activations vanish to 1e-10): BatchNorm layers alone in train mode, a cumulative
    average, no gradients; then eval."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None
            norm.train()
        for _ in range(steps):
            module(torch.rand(shape, generator=generator))
        for norm in norms:
            norm.momentum = 0.1
    return module.eval()


@cache
def build(name: str) -> nn.Module:
    import torchvision.models.segmentation as tvs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        if name == "smp_unet_resnet18":
            import segmentation_models_pytorch as smp

            module = smp.Unet("resnet18", encoder_weights=None, classes=3)
        else:
            module = getattr(tvs, name)(weights=None, weights_backbone=None, num_classes=4)
    return warm_batchnorm(module, (2, 3, SIZE, SIZE))


@cache
def _pictures() -> torch.Tensor:
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    return torch.stack([(TF.to_tensor(cs.sample_image(n).resize((SIZE, SIZE))) - mean) / std for n in ("cat", "coffee")])


def pictures() -> torch.Tensor:
    return _pictures().clone()


def maps_of(output) -> torch.Tensor:
    return output["out"] if isinstance(output, dict) else output


@cache
def shared_class(name: str) -> int:
    """A class the model predicts somewhere in both pictures (so the predicted-pixel target has pixels)."""
    with torch.no_grad():
        predicted = maps_of(build(name)(pictures())).argmax(dim=1)  # (B, H, W)
    counts = torch.stack([torch.bincount(p.flatten(), minlength=8)[:8] for p in predicted])
    both = (counts > 0).all(dim=0) * counts.sum(dim=0)
    assert both.any(), "no class is predicted in both pictures"
    return int(both.argmax())


# FCN's dilated ResNet-50 is the slowest by far: there, the methods the issue found crashing and one of each group.
FCN_METHODS = ("saliency", "integrated_gradients", "gradcam", "scorecam", "rise", "drise", "cam")
CASES = [(name, method) for name in MODELS for method in METHODS if name != "fcn_resnet50" or method.name in FCN_METHODS]


@pytest.mark.parametrize(("name", "method"), CASES, ids=[f"{n}-{m.name}" for n, m in CASES])
def test_every_method_explains_a_segmentation_class_or_refuses_in_one_line(name, method):
    module, x = build(name), pictures()
    target = cs.targets.segmentation(shared_class(name))
    options = {"layer": MODELS[name]} if method.group == "cam" else {}
    before = snapshot(module, x)
    if method.name in REFUSE:
        raises_one_line(cs.ConvscopeError, lambda: method.fn(module, x, target=target, **options), REFUSE[method.name])
    else:
        result = method.fn(module, x, target=target, **options)
        assert result.data.shape[0] == 2 and result.data.shape[-2:] == (SIZE, SIZE)
        assert torch.isfinite(result.data).all()
        assert result.meta["scores"].shape == (2,)
        if method.group == "gradient" or method.name in ("gradcam", "layercam", "hirescam"):
            assert result.data.std() > 0, "a blank map"
    assert_unchanged(before, module, x)


def test_a_class_target_on_a_segmentation_model_says_what_to_pass():
    for name in ("fcn_resnet50", "smp_unet_resnet18"):
        message = raises_one_line(cs.TargetError, lambda name=name: cs.saliency(build(name), pictures(), target=1))
        assert "cs.targets.segmentation(k)" in message
    message = raises_one_line(cs.TargetError, lambda: cs.gradcam(build("fcn_resnet50"), pictures(), layer="backbone.layer4"))
    assert "cs.targets.segmentation" in message


# -- an analytic model: class k's score at a pixel depends on that pixel only ------------------------------
class PerPixel(nn.Module):
    """(B, 3, H, W) -> {"out": (B, K, H, W), "aux": ...}: a 1x1 convolution and a tanh, nothing that mixes pixels."""

    def __init__(self, classes: int = 3, as_dict: bool = True) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1)
            self.head = nn.Conv2d(3, classes, 1)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor):
        out = torch.tanh(self.head(x)) * 3
        return {"out": out, "aux": out.detach() * 0} if self.as_dict else out


def disc(size: int = 32, centre: tuple[int, int] = (12, 14), radius: int = 7) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return (ys - centre[0]) ** 2 + (xs - centre[1]) ** 2 <= radius**2


@pytest.mark.parametrize("method", ["saliency", "input_x_gradient", "integrated_gradients", "smoothgrad"])
def test_gradients_vanish_outside_the_mask_exactly(method):
    model, x = PerPixel(), torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    masks = torch.stack([disc(), disc(centre=(22, 20), radius=5)])  # (B, H, W): a different region per picture
    options = {"batch_size": 3} if method in ("integrated_gradients", "smoothgrad") else {}  # rows of several pictures
    if method == "integrated_gradients":
        options["steps"] = 5
    if method == "smoothgrad":
        options["samples"] = 3
    result = cs.explain(model, x, method, target=cs.targets.segmentation(1, mask=masks), **options)
    strength = result.data.abs().sum(dim=1)  # (B, H, W)
    assert (strength[~masks] == 0).all(), "attribution outside the mask"
    assert (strength[masks] > 0).float().mean() > 0.9
    for b in range(2):  # each picture is explained on its own mask
        alone = cs.explain(model, x[b:b + 1], method, target=cs.targets.segmentation(1, mask=masks[b]), **options)
        assert torch.allclose(alone.data[0], result.data[b], rtol=1e-4, atol=1e-6)


def test_the_score_is_the_class_summed_over_the_mask_whatever_the_output_form():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[3:9, 4:12] = True
    maps = PerPixel(as_dict=False)(x)
    expected = maps[:, 2][:, mask].sum(dim=1)
    target = cs.targets.segmentation(2, mask=mask)
    for output in (maps, {"out": maps}, (maps, maps * 0)):
        scores, classes = resolve_target(target, output)
        assert classes is None and torch.allclose(scores, expected)
    weights = mask.float() * 0.5
    assert torch.allclose(cs.targets.segmentation(2, mask=weights)(maps), expected * 0.5)


def test_the_predicted_pixels_are_fixed_by_the_clean_forward():
    model = PerPixel(as_dict=False)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    clean = model(x)
    target = cs.targets.segmentation(0)
    region = clean.argmax(dim=1) == 0  # (B, H, W)
    assert region.any(dim=(1, 2)).all()
    scores, _ = resolve_target(target, clean)
    assert torch.allclose(scores, (clean[:, 0] * region).sum(dim=(1, 2)))
    fixed = fixed_target(target, None)
    perturbed = model(-x)  # another picture: its own argmax differs, the scored pixels must not
    assert not torch.equal(perturbed.argmax(dim=1) == 0, region)
    assert torch.allclose(row_scores(perturbed, fixed), (perturbed[:, 0] * region).sum(dim=(1, 2)))
    rows = torch.tensor([1, 1, 0])  # a batch of three perturbed rows: pictures 1, 1, 0
    three = model(-x[rows])
    assert torch.allclose(row_scores(three, fixed, rows), (three[:, 0] * region[rows]).sum(dim=(1, 2)))
    # the user's object is not changed: a new call on other pictures fixes its own pixels
    other = model(x.flip(-1))
    again, _ = resolve_target(target, other)
    assert torch.allclose(again, (other[:, 0] * (other.argmax(dim=1) == 0)).sum(dim=(1, 2)))


def test_perturbation_methods_score_the_clean_pixels():
    """Occlusion on the per-pixel model: hiding a pixel outside the class's predicted region changes nothing."""
    model = PerPixel(as_dict=False)
    x = torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    region = model(x).argmax(dim=1)[0] == 1
    result = cs.occlusion(model, x, target=cs.targets.segmentation(1), window=1, stride=1, fill=0.0)
    assert (result.data[0, 0][~region] == 0).all()
    assert (result.data[0, 0][region] != 0).float().mean() > 0.9


def test_bad_segmentation_targets_are_one_line_errors():
    model, x = PerPixel(), torch.randn(1, 3, 16, 16)
    raises_one_line(cs.TargetError, lambda: cs.saliency(model, x, target=cs.targets.segmentation(0, mask=torch.ones(8, 8))),
                    "output's size")
    raises_one_line(cs.TargetError, lambda: cs.saliency(model, x, target=cs.targets.segmentation(5)), "out of range")
    raises_one_line(cs.TargetError, lambda: cs.saliency(model, x, target=cs.targets.segmentation(0, output_key="seg")), "no key")
    raises_one_line(cs.TargetError, lambda: cs.targets.segmentation(0, mask=torch.full((4, 4), 2.0)), "between 0 and 1")
    raises_one_line(cs.TargetError, lambda: cs.saliency(model, x.expand(2, -1, -1, -1),
                                                        target=cs.targets.segmentation(0, mask=torch.ones(3, 16, 16))), "3 entries")
    never = PerPixel()
    with torch.no_grad():
        never.head.bias[:] = torch.tensor([0.0, 0.0, -100.0])  # class 2 is predicted nowhere
    raises_one_line(cs.TargetError, lambda: cs.saliency(never, x, target=cs.targets.segmentation(2)), "predicted at no pixel")


def cli_error(capsys) -> str:
    """The one error line the last command printed (after its --allow-pickle warning and stage lines)."""
    lines = capsys.readouterr().err.splitlines()
    errors = [line for line in lines if line.startswith("convscope: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], lines
    return errors[0]


def test_the_command_line_explains_a_segmentation_class(tmp_path, capsys):
    from PIL import Image

    from convscope.cli import main

    torch.save(PerPixel(), tmp_path / "seg.pt")
    region = torch.zeros(32, 32, dtype=torch.uint8)
    region[:, :16] = 255
    Image.fromarray(region.numpy()).save(tmp_path / "mask.png")
    base = ["saliency", "cat", "--model", str(tmp_path / "seg.pt"), "--allow-pickle", "--model-size", "32",
            "--out", str(tmp_path / "map.png")]
    assert main([*base, "--seg-class", "1", "--mask", str(tmp_path / "mask.png")]) == 0
    assert (tmp_path / "map.png").stat().st_size > 0
    capsys.readouterr()
    for wrong, words in ((["--task", "segmentation"], "--seg-class K"), (["--seg-class", "x"], "whole number"),
                         (["--seg-class", "1", "--target", "2"], "one of"), (["--target", "2"], "--seg-class K"),
                         (["--seg-class", "1", "--mask", str(tmp_path / "nothing.png")], "nothing.png")):
        assert main([*base, *wrong]) == 2, wrong
        assert words in cli_error(capsys)
