"""Robustness sweep: identities, rotation equivariance, monotone damage, determinism, 1-channel models,
errors, model safety."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from convscope.metrics.robustness import PERTURBATIONS, Perturbation, rotate


@pytest.fixture(scope="module")
def sweep(lite0: cs.Model):
    return cs.robustness(lite0, cs.sample_image("cat"), progress=False)


def test_every_perturbation_at_every_strength(sweep) -> None:
    expected = sum(len(p.strengths) for p in PERTURBATIONS.values())
    assert len(sweep.rows) == expected and sweep.pictures.shape == (expected, 224, 224, 3)
    assert sweep.original_label in ("tiger cat", "tabby", "Egyptian cat")
    assert {r.perturbation for r in sweep.rows} == set(PERTURBATIONS)
    assert all(-1 <= r.rank_correlation <= 1 and 0 <= r.original_probability <= 1 for r in sweep.rows)
    assert "peak moved" in sweep.table() and len(sweep.records()) == expected


def test_identity_strengths_change_nothing(lite0: cs.Model) -> None:
    same = cs.robustness(lite0, cs.sample_image("coffee"), perturbations={"brightness": [1.0], "rotation": [0.0], "blur": [0.0]},
                         progress=False)
    for row in same.rows:
        assert row.predicted == same.original_class and row.original_probability == pytest.approx(same.original_probability, abs=2e-3)
        assert row.rank_correlation > 0.99 and row.peak_shift_fraction < 0.02, row


def test_rotation_is_compared_with_the_rotated_map() -> None:
    """A rotation-equivariant toy (a 1x1 convolution, global average pooling, a linear head): its Grad-CAM
    map is a function of each pixel's colour alone, so rotating the picture rotates the map; compared
    with the rotated original map, rotations by 90 and 180 degrees change nothing."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model = cs.Model(net, input_size=(48, 48), mean=None, std=None, labels=["a", "b"], name="toy")
    found = cs.robustness(model, cs.sample_image("coffee").resize((48, 48)), perturbations={"rotation": [90.0, 180.0]},
                          progress=False)
    for row in found.rows:
        assert row.rank_correlation > 0.95 and row.original_probability == pytest.approx(found.original_probability, abs=1e-3), row
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.allclose(rotate(grid, 90.0), torch.rot90(grid, 1, dims=(2, 3)), atol=1e-4)  # counter-clockwise


def test_strong_damage_costs_more_than_mild(sweep) -> None:
    blur = {r.strength: r.original_probability for r in sweep.rows if r.perturbation == "blur"}
    noise = {r.strength: r.original_probability for r in sweep.rows if r.perturbation == "noise"}
    assert blur[8.0] < blur[1.0] and noise[0.4] < noise[0.05]
    assert min(r.original_probability for r in sweep.worst(3)) == min(r.original_probability for r in sweep.rows)
    assert {r.perturbation for r in sweep.flips} <= set(PERTURBATIONS)


def test_deterministic_and_batch_size_free(lite0: cs.Model) -> None:
    x = lite0.preprocess(cs.sample_image("astronaut"))
    kinds = {"noise": [0.1], "shadow": [0.5], "patch": [0.2]}
    a = cs.robustness(lite0, x, perturbations=kinds, seed=3, batch_size=1, progress=False)
    b = cs.robustness(lite0, x, perturbations=kinds, seed=3, batch_size=16, progress=False)
    assert np.array_equal(a.pictures, b.pictures)
    assert np.allclose([r.original_probability for r in a.rows], [r.original_probability for r in b.rows], atol=1e-4)
    c = cs.robustness(lite0, x, perturbations=kinds, seed=4, progress=False)
    assert not np.array_equal(a.pictures[0], c.pictures[0])  # another seed, other noise


def test_one_channel_model_and_custom_perturbations() -> None:
    digits = cs.load_model("digits_cnn")
    invert = Perturbation("invert", lambda x, s, g: (1 - x) * s + x * (1 - s), (0.5, 1.0), "mix", limits=(0, 1))
    found = cs.robustness(digits, cs.sample_image("coffee"), perturbations=["colour", "blur", invert], progress=False)
    assert any("colour skipped" in note for note in found.notes)
    assert {r.perturbation for r in found.rows} == {"blur", "invert"} and found.pictures.shape[1:] == (32, 32, 3)


def test_errors_are_one_line(lite0: cs.Model) -> None:
    x = lite0.preprocess([cs.sample_image("cat"), cs.sample_image("coffee")])
    cases = [
        (dict(image=cs.sample_image("cat"), perturbations="shadw"), "shadow"),
        (dict(image=cs.sample_image("cat"), perturbations={"shadow": [1.5]}), "outside"),
        (dict(image=x), "one picture"),
        (dict(image=x[0]), "batch dimension"),
        (dict(image=cs.sample_image("cat"), method="gradcm"), "gradcam"),
        (dict(image=cs.sample_image("cat"), target=1000), "out of range"),
    ]
    for options, match in cases:
        with pytest.raises(cs.ConvscopeError, match=match) as caught:
            cs.robustness(lite0, progress=False, **options)
        assert "\n" not in str(caught.value)


def test_model_and_input_untouched(lite0: cs.Model) -> None:
    x = lite0.preprocess(cs.sample_image("rocket"))
    before = snapshot(lite0.module, x)
    cs.robustness(lite0, x, perturbations={"noise": [0.1], "rotation": [45]}, progress=False)
    with pytest.raises(cs.ConvscopeError):
        cs.robustness(lite0, x, perturbations={"rotation": [45]}, layer="_conv_haed", progress=False)
    assert_unchanged(before, lite0.module, x)


def test_pictures(sweep, tmp_path) -> None:
    from convscope.render import figure_png
    from convscope.render.robustness import robustness_curves

    (tmp_path / "grid.png").write_bytes(figure_png(sweep.figure()))
    (tmp_path / "curves.png").write_bytes(figure_png(robustness_curves(sweep)))
    width, height = Image.open(tmp_path / "grid.png").size
    assert height > width > 600  # 8 perturbations down, the strengths across
    assert Image.open(tmp_path / "curves.png").size[0] > 400
