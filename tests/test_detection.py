"""Detectors: ``cs.targets.box`` with the gradient and CAM methods, and D-RISE (Petsiuk et al. 2021).

torchvision detectors in eval mode return one dict per picture (``boxes``, ``labels``, ``scores``). With random
weights they detect noise, so each test explains a box the detector itself found on the test picture (score
thresholds at 0) and asserts only what random weights allow: finite, non-blank maps, the model untouched. What
must hold whatever the weights is checked on a hand-built detector whose boxes' scores depend only on the
pixels inside them.
"""

from __future__ import annotations

from functools import cache

import pytest
import torch
import torchvision.transforms.functional as TF
from test_contract import raises_one_line, small_convnet
from test_segmentation import cli_error, warm_batchnorm
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from conftest import registered_methods
from convscope.targets import fixed_target, resolve_target, row_scores

SIZE = 128
# name -> (builder keyword arguments, the layer explained: the backbone's last feature map)
DETECTORS = {
    "fasterrcnn_resnet50_fpn": "backbone.body.layer4",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "backbone.body.16",
    "retinanet_resnet50_fpn": "backbone.body.layer4",
    "fcos_resnet50_fpn": "backbone.body.layer4",
    "ssdlite320_mobilenet_v3_large": "backbone.features.1",
}
GRADIENT_AND_CAM = [m for m in registered_methods() if m.group in ("gradient", "cam")]
# Methods that refuse a detector, and the reason their message gives.
REFUSE = {"cam": "linear head"}
EVERY_DETECTOR = ("saliency", "gradcam")  # the rest on the smallest detector
# Methods that score the box on other pictures than the clean one (path points, noisy copies): where the detector no
# longer finds the box there, its score is 0 and the gradient too, so their maps may be blank on random weights.
ELSEWHERE = ("integrated_gradients", "smoothgrad")


@cache
def build(name: str) -> nn.Module:
    import torchvision.models.detection as tvd

    thresholds = {"score_thresh": 0.0} if name.startswith(("retinanet", "fcos", "ssd")) else {"box_score_thresh": 0.0}
    sizes = {} if name.startswith("ssd") else {"min_size": SIZE, "max_size": SIZE}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = getattr(tvd, name)(weights=None, weights_backbone=None, **sizes, **thresholds)
    return warm_batchnorm(module.eval(), (2, 3, SIZE, SIZE), steps=2)  # two: SSD's last maps are 1 x 1


@cache
def _picture() -> torch.Tensor:
    return TF.to_tensor(cs.sample_image("astronaut").resize((SIZE, SIZE)))[None]  # (1, 3, H, W) in [0, 1]


def picture() -> torch.Tensor:
    return _picture().clone()


@cache
def top_detection(name: str) -> tuple[list[float], int, float]:
    """The detector's own best box on the picture, its label and score."""
    with torch.no_grad():
        found = build(name)(picture())[0]
    best = int(found["scores"].argmax())
    return found["boxes"][best].tolist(), int(found["labels"][best]), float(found["scores"][best])


def run_or_refuse(name: str, method) -> cs.Result | None:
    module, x = build(name), picture()
    box, _, score = top_detection(name)
    options = {"layer": DETECTORS[name]} if method.group == "cam" else {}
    before = snapshot(module, x)
    result = None
    if method.name in REFUSE:
        raises_one_line(cs.ConvscopeError, lambda: method.fn(module, x, target=cs.targets.box(box), **options), REFUSE[method.name])
    else:
        result = method.fn(module, x, target=cs.targets.box(box), **options)
        assert torch.isfinite(result.data).all() and result.data.shape[-2:] == (SIZE, SIZE)
        if method.group == "gradient" and method.name not in ELSEWHERE:  # a CAM's ReLU may leave nothing of a random map
            assert result.data.std() > 0, "a blank map"
        assert result.meta["scores"][0] == pytest.approx(score, rel=1e-3)  # the explained score is the box's
    assert_unchanged(before, module, x)
    return result


@pytest.mark.parametrize("method", [m for m in GRADIENT_AND_CAM if m.name in EVERY_DETECTOR], ids=lambda m: m.name)
@pytest.mark.parametrize("name", list(DETECTORS))
def test_gradient_and_cam_methods_explain_a_detection(name, method):
    run_or_refuse(name, method)


@pytest.mark.parametrize("method", [m for m in GRADIENT_AND_CAM if m.name not in EVERY_DETECTOR], ids=lambda m: m.name)
def test_every_gradient_and_cam_method_on_a_small_detector(method):
    run_or_refuse("fasterrcnn_mobilenet_v3_large_320_fpn", method)


def test_a_box_nothing_matches_is_refused_in_one_line():
    module, x = build("fasterrcnn_mobilenet_v3_large_320_fpn"), picture()
    box, label, _ = top_detection("fasterrcnn_mobilenet_v3_large_320_fpn")
    message = raises_one_line(cs.TargetError, lambda: cs.saliency(module, x, target=cs.targets.box(box, label=label + 1, iou=1.0)))
    assert "no detection with label" in message
    message = raises_one_line(cs.TargetError, lambda: cs.saliency(module, x, target=3))
    assert "cs.targets.box(" in message


# -- the box target on outputs built by hand -----------------------------------------------------------------
def detections(*rows: list[tuple[tuple[float, ...], int, float]]) -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([b for b, _, _ in row], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.tensor([lab for _, lab, _ in row], dtype=torch.long),
             "scores": torch.tensor([s for _, _, s in row], dtype=torch.float32)} for row in rows]


def test_the_box_score_is_the_best_matching_detection():
    output = detections([((0, 0, 10, 10), 1, 0.9), ((1, 1, 10, 10), 2, 0.95), ((50, 50, 60, 60), 1, 0.99)],
                        [((0, 0, 10, 11), 1, 0.3)],
                        [])
    assert cs.targets.box((0, 0, 10, 10))(output).tolist() == pytest.approx([0.95, 0.3, 0.0])
    assert cs.targets.box((0, 0, 10, 10), label=1)(output).tolist() == pytest.approx([0.9, 0.3, 0.0])
    assert cs.targets.box((0, 0, 10, 10), label=3)(output).tolist() == [0, 0, 0]
    per_picture = torch.tensor([[50, 50, 60, 60], [0, 0, 10, 10], [0, 0, 5, 5]])
    assert cs.targets.box(per_picture)(output).tolist() == pytest.approx([0.99, 0.3, 0.0])
    # label None: the best match's label on the clean forward is kept for the rest of the call
    target = cs.targets.box((0, 0, 10, 10))
    resolve_target(target, output[:2])
    fixed = fixed_target(target, None)
    assert fixed.labels.tolist() == [2, 1]
    later = detections([((0, 0, 10, 10), 1, 0.8), ((0, 0, 10, 10), 2, 0.1)], [((0, 0, 10, 10), 1, 0.7)])
    assert row_scores(later, fixed).tolist() == pytest.approx([0.1, 0.7])
    assert row_scores(later[::-1], fixed, torch.tensor([1, 0])).tolist() == pytest.approx([0.7, 0.1])


def test_bad_box_targets_are_one_line_errors():
    raises_one_line(cs.TargetError, lambda: cs.targets.box((10, 10, 5, 20)), "x2 > x1")
    raises_one_line(cs.TargetError, lambda: cs.targets.box((1, 2, 3)), "4 numbers")
    raises_one_line(cs.TargetError, lambda: cs.targets.box((0, 0, 4, 4), iou=0), "iou")
    raises_one_line(cs.TargetError, lambda: cs.saliency(small_convnet(), torch.rand(1, 3, 16, 16),
                                                        target=cs.targets.box((0, 0, 4, 4))), "detector's output")


# -- a detector built by hand: each box's score depends only on the pixels inside it ----------------------
class RegionDetector(nn.Module):
    """Two fixed boxes on a 64 x 64 picture: box A (label 1) scores the mean of the pixels inside A, box B (label 2)
    the mean inside B, each through a sigmoid — the list-of-dicts output of torchvision's detectors."""

    A = (8.0, 8.0, 24.0, 24.0)
    B = (36.0, 30.0, 56.0, 50.0)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        found = []
        for image in x:
            a, b = image[:, 8:24, 8:24].mean(), image[:, 30:50, 36:56].mean()
            found.append({"boxes": torch.tensor([self.A, self.B]), "labels": torch.tensor([1, 2]),
                          "scores": torch.sigmoid(torch.stack([a, b]) * 8 - 4)})
        return found


def inside(box: tuple[float, ...], size: int = 64) -> torch.Tensor:
    region = torch.zeros(size, size, dtype=torch.bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    region[y1:y2, x1:x2] = True
    return region


def test_saliency_of_a_box_lies_inside_the_box_exactly():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    result = cs.saliency(RegionDetector(), x, target=cs.targets.box(RegionDetector.A))
    strength = result.data.sum(dim=1)  # (B, H, W)
    assert (strength[:, ~inside(RegionDetector.A)] == 0).all() and (strength[:, inside(RegionDetector.A)] > 0).all()


@pytest.mark.parametrize("target", [cs.targets.box(RegionDetector.A), 1, cs.targets.box((9, 8, 24, 25), label=1)],
                         ids=["box", "label", "near-box"])
def test_drise_puts_the_mass_inside_the_explained_box(target):
    x = torch.full((2, 3, 64, 64), 0.8)
    result = cs.drise(RegionDetector(), x, target=target, masks=300, cells=8, seed=1)
    a, b = inside(RegionDetector.A), inside(RegionDetector.B)
    for saliency, neutral in zip(result.data[:, 0], result.meta["neutral"]):  # excess over the mean weight
        assert saliency[a].mean() - neutral > 4 * (saliency[~a].mean() - neutral).abs()
        assert saliency[a].mean() - neutral > 4 * (saliency[b].mean() - neutral).abs()  # the other box's pixels do not count
    assert result.target.tolist() == [1, 1]
    assert torch.allclose(result.meta["boxes"][:, 0], torch.tensor([8.0, 8.0]), atol=1)


def test_drise_of_the_other_label_moves_to_the_other_box():
    x = torch.full((1, 3, 64, 64), 0.8)
    result = cs.drise(RegionDetector(), x, target=2, masks=300, cells=8, seed=1)
    saliency, neutral = result.data[0, 0], result.meta["neutral"][0]
    assert saliency[inside(RegionDetector.B)].mean() - neutral > 3 * (saliency[inside(RegionDetector.A)].mean() - neutral).abs()


def test_drise_on_a_classifier_is_rise():
    model, x = small_convnet(), torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    options = {"masks": 20, "cells": 4, "seed": 3, "p": 0.5}
    assert torch.allclose(cs.drise(model, x, target=2, **options).data, cs.rise(model, x, target=2, **options).data)


def test_drise_refusals_are_one_line():
    x = torch.full((1, 3, 64, 64), 0.8)
    raises_one_line(cs.TargetError, lambda: cs.drise(RegionDetector(), x, target=lambda out: out[0]["scores"][:1]), "one detection")
    raises_one_line(cs.TargetError, lambda: cs.drise(RegionDetector(), x, target=7), "label 7")
    raises_one_line(cs.OptionError, lambda: cs.drise(RegionDetector(), x, masks=0), "masks")
    raises_one_line(cs.OptionError, lambda: cs.drise(RegionDetector(), x, cells=100), "cells")


@pytest.mark.parametrize("name", ["fasterrcnn_mobilenet_v3_large_320_fpn", "retinanet_resnet50_fpn"])
def test_drise_on_a_torchvision_detector(name):
    module, x = build(name), picture()
    before = snapshot(module, x)
    box, label, score = top_detection(name)
    result = cs.drise(module, x, masks=12, cells=8, batch_size=4)  # target None: the top detection
    assert result.data.shape == (1, 1, SIZE, SIZE) and torch.isfinite(result.data).all() and result.data.std() > 0
    assert result.meta["boxes"][0].tolist() == pytest.approx(box, abs=1e-3) and result.target.tolist() == [label]
    assert result.meta["scores"][0] == pytest.approx(score, rel=1e-3)  # IoU 1 with itself x its score
    assert_unchanged(before, module, x)


def test_the_command_line_takes_a_box(tmp_path, capsys):
    from convscope.cli import _target_from as target_from
    from convscope.cli import build_parser, main

    target = target_from(build_parser().parse_args(["gradcam", "cat", "--box", "8,8,24,24", "--box-label", "1"]))
    assert isinstance(target, cs.targets.BoxTarget) and target.boxes.tolist() == [[8, 8, 24, 24]] and target.label == 1
    torch.save(RegionDetector(), tmp_path / "detector.pt")
    base = ["drise", "cat", "--model", str(tmp_path / "detector.pt"), "--allow-pickle", "--model-size", "64", "--masks", "8",
            "--cells", "4", "--out", str(tmp_path / "map.png")]
    assert main([*base, "--box", "8,8,24,24", "--box-label", "1"]) == 0
    capsys.readouterr()
    for wrong, words in ((["--box", "1,2,3"], "four numbers"), (["--box-label", "1"], "goes with --box"),
                         (["--box", "8,8,24,24", "--box-label", "one"], "whole number"), (["--box", "9,8,4,20"], "x2 > x1")):
        assert main([*base, *wrong]) == 2, wrong
        assert words in cli_error(capsys)
