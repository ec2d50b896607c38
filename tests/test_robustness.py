"""Robustness sweep: identities, rotation equivariance, monotone damage, determinism, batch size, 1-channel
and odd-sized models, custom perturbations, errors, model safety, pictures; the registered tool (typed options,
cost, the method's options checked before any work, cancellation)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from convscope.metrics.robustness import PERTURBATIONS, TIE_MARGIN, Original, Perturbation, rotate
from convscope.progress import Cancelled


@pytest.fixture(scope="module")
def sweep(lite0: cs.Model):
    """The default sweep of Lite0 on the cat (30 perturbed pictures)."""
    return cs.robustness(lite0, cs.sample_image("cat"), progress=False)


def toy_model(size: tuple[int, int] = (48, 48)) -> cs.Model:
    """A rotation-equivariant toy: a 1x1 convolution, global average pooling, a linear head. Its Grad-CAM map
    is a function of each pixel's colour alone, so rotating the picture rotates the map."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    return cs.Model(net, input_size=size, mean=None, std=None, labels=["a", "b"], name="toy")


def test_every_perturbation_at_every_strength(sweep) -> None:
    expected = sum(len(p.strengths) for p in PERTURBATIONS.values())
    assert len(sweep.rows) == expected and sweep.pictures.shape == (expected, 224, 224, 3)
    assert sweep.maps.shape == (expected, 224, 224) and sweep.original.map.shape == (224, 224)
    assert sweep.original_label in ("tiger cat", "tabby", "Egyptian cat") and sweep.original.predicted == sweep.original_class
    assert list(sweep.by_perturbation()) == list(PERTURBATIONS)
    assert all(-1 <= r.rank_correlation <= 1 and 0 <= r.original_probability <= 1 for r in sweep.rows)
    assert all(r.flipped == (r.predicted != sweep.original_class) for r in sweep.rows)
    assert "peak moved" in sweep.table() and len(sweep.records()) == expected
    json.dumps(sweep.to_dict())  # plain data


def test_identity_strengths_change_nothing(lite0: cs.Model) -> None:
    same = cs.robustness(lite0, cs.sample_image("cat"),
                         perturbations={"brightness": [1.0], "rotation": [0.0, 360.0], "blur": [0.0], "patch": [0.0]},
                         progress=False)
    patch = same.rows[-1]
    for row in same.rows[:-1]:
        assert row.predicted == same.original_class and not row.flipped
        assert row.original_probability == pytest.approx(same.original_probability, abs=1e-4), row
        assert row.rank_correlation == pytest.approx(1.0, abs=1e-3) and row.peak_shift == 0, row
    assert patch.rank_correlation > 0.95  # a 1-pixel grey square


def test_rotation_is_compared_with_the_rotated_map() -> None:
    """Compared with the rotated original map, rotations of the toy by 90 and 180 degrees change nothing,
    while comparing with the unrotated map would see a different map."""
    model = toy_model()
    picture = cs.sample_image("coffee").resize((48, 48))
    found = cs.robustness(model, picture, perturbations={"rotation": [90.0, 180.0, -90.0]}, progress=False)
    for row in found.rows:
        assert row.rank_correlation > 0.999 and row.peak_shift == 0, row
        assert row.original_probability == pytest.approx(found.original_probability, abs=1e-5)
    unrotated = cs.metrics.rank_correlation(torch.from_numpy(found.maps[:1]), torch.from_numpy(found.original.map[None]))
    assert float(unrotated[0]) < 0.9
    grid = torch.arange(16.0).view(1, 1, 4, 4)
    assert torch.equal(rotate(grid, 90.0), torch.rot90(grid, 1, dims=(2, 3)))  # counter-clockwise
    assert torch.allclose(rotate(grid, 90.0 + 1e-9), torch.rot90(grid, 1, dims=(2, 3)), atol=1e-4)  # the general path agrees


def test_a_45_degree_rotation_leaves_the_corners_out() -> None:
    """At 45° the corners of the rotated picture come from outside: grey in the picture, left out of ρ."""
    found = cs.robustness(toy_model((40, 56)), cs.sample_image("coffee"), perturbations={"rotation": [45.0]}, progress=False)
    corner = found.pictures[0, 0, 0]
    assert np.all(np.abs(corner.astype(int) - 128) <= 1) and found.pictures.shape == (1, 40, 56, 3)
    assert found.rows[0].rank_correlation > 0.9  # the toy's map still moves with the picture


def test_strong_damage_costs_more_than_mild(sweep) -> None:
    blur = {r.strength: r.original_probability for r in sweep.rows if r.perturbation == "blur"}
    noise = {r.strength: r.original_probability for r in sweep.rows if r.perturbation == "noise"}
    assert blur[8.0] < blur[1.0] / 2 and noise[0.4] < noise[0.05] / 2
    assert sweep.worst(3)[0].original_probability == min(r.original_probability for r in sweep.rows)
    assert sweep.flips == [r for r in sweep.rows if r.predicted != sweep.original_class]


def test_the_patch_covers_the_maps_peak(sweep) -> None:
    y, x = sweep.original.peak
    for row, picture in zip(sweep.rows, sweep.pictures):
        if row.perturbation == "patch":
            assert np.all(np.abs(picture[y, x].astype(int) - 128) <= 1)


def test_deterministic_and_batch_size_free(lite0: cs.Model, sweep) -> None:
    x = lite0.preprocess(cs.sample_image("cat"))
    kinds = {"noise": [0.1], "shadow": [0.3, 0.7], "patch": [0.2]}
    a = cs.robustness(lite0, x, perturbations=kinds, seed=3, batch_size=1, progress=False)
    b = cs.robustness(lite0, x, perturbations=kinds, seed=3, batch_size=16, progress=False)
    assert np.array_equal(a.pictures, b.pictures)
    for ra, rb in zip(a.rows, b.rows):
        assert ra.predicted == rb.predicted and ra.original_probability == pytest.approx(rb.original_probability, abs=1e-4)
        assert ra.rank_correlation == pytest.approx(rb.rank_correlation, abs=1e-3)
    c = cs.robustness(lite0, x, perturbations=kinds, seed=4, progress=False)
    assert not np.array_equal(a.pictures[0], c.pictures[0])  # another seed, other noise
    # a perturbation's draws do not depend on what else is swept: noise 0.1 as in the full default sweep
    alone = cs.robustness(lite0, cs.sample_image("cat"), perturbations={"noise": [0.1]}, progress=False)
    in_sweep = next(i for i, r in enumerate(sweep.rows) if r.perturbation == "noise" and r.strength == 0.1)
    assert np.array_equal(alone.pictures[0], sweep.pictures[in_sweep])
    # the shadow stays put as it darkens: the same pixels are shaded at 0.3 and 0.7
    light, dark = (a.pictures[1].astype(int).sum(-1) < a.original.picture.astype(int).sum(-1) * 0.85,
                   a.pictures[2].astype(int).sum(-1) < a.original.picture.astype(int).sum(-1) * 0.85)
    assert light.any() and (light & ~dark).sum() == 0


def test_one_channel_model_and_custom_perturbations() -> None:
    digits = cs.load_model("digits_cnn")
    found = cs.robustness(digits, cs.sample_image("coffee"), progress=False)
    assert any("colour skipped" in note for note in found.notes) and "colour skipped" in found.table()
    assert "colour" not in {r.perturbation for r in found.rows} and found.pictures.shape[1:] == (32, 32, 3)

    def invert(x: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
        return (1 - x) * strength + x * (1 - strength)

    mix = Perturbation("mix", lambda x, s, g: x * (1 - s) + 0.5 * s, (0.5, 1.0), "share of grey", limits=(0, 1))
    custom = cs.robustness(digits, cs.sample_image("coffee"), perturbations={"blur": [1.0], mix: None, invert: [0.0, 1.0]},
                           progress=False)
    assert [(r.perturbation, r.strength) for r in custom.rows] == [
        ("blur", 1.0), ("mix", 0.5), ("mix", 1.0), ("invert", 0.0), ("invert", 1.0)]
    assert custom.rows[3].rank_correlation == pytest.approx(1.0, abs=1e-3)  # invert at 0 is the identity
    assert custom.pictures[2].std() == 0  # all grey


def test_errors_are_one_line(lite0: cs.Model) -> None:
    x = lite0.preprocess([cs.sample_image("cat"), cs.sample_image("coffee")])
    cat = cs.sample_image("cat")
    cases = [
        (dict(image=cat, perturbations="shadw"), "did you mean 'shadow'"),
        (dict(image=cat, perturbations={"shadow": [1.5]}), "outside 0..1"),
        (dict(image=cat, perturbations={"blur": ["strong"]}), "must be numbers"),
        (dict(image=cat, perturbations=["blur", "blur"]), "twice"),
        (dict(image=cat, perturbations={"rotation": []}), "no strengths"),
        (dict(image=cat, perturbations=[lambda x: x]), "must take"),
        (dict(image=cat, perturbations=[lambda x, s, g: x[:, :1]]), "not a picture of shape"),
        (dict(image=x), "one picture"),
        (dict(image=x[0]), "batch dimension"),
        (dict(image=cat, method="gradcm"), "gradcam"),
        (dict(image=cat, target=1000), "out of range"),
        (dict(image=cat, batch_size=0), "batch_size"),
        (dict(image=cat, batch_size=10**6), "1 ≤ value ≤ 4,096"),
        (dict(image=cat, seed=-1), "seed"),
        (dict(image=cat, method="rank"), "attribution methods"),
        (dict(image=cat, method="scorecam", top_channels=0), "top_channels"),
        (dict(image=cat, colour=2), "gradcam has no option 'colour'"),
    ]
    for options, match in cases:
        with pytest.raises(cs.ConvscopeError, match=match) as caught:
            cs.robustness(lite0, progress=False, **options)
        assert "\n" not in str(caught.value)
    with pytest.raises(cs.ConvscopeError, match="needs colour"):
        cs.robustness(cs.load_model("digits_cnn"), cat, perturbations="colour", progress=False)


def test_model_and_input_untouched(lite0: cs.Model) -> None:
    x = lite0.preprocess(cs.sample_image("rocket"))
    before = snapshot(lite0.module, x)
    cs.robustness(lite0, x, perturbations={"noise": [0.1], "rotation": [45]}, progress=False)
    with pytest.raises(cs.ConvscopeError):
        cs.robustness(lite0, x, perturbations={"rotation": [45]}, layer="_conv_haed", progress=False)

    def cancel(done: int, total: int, what: str) -> None:
        if done > 1:
            raise cs.progress.Cancelled("stopped")

    with pytest.raises(cs.progress.Cancelled):
        cs.robustness(lite0, x, perturbations={"blur": [1, 2]}, batch_size=1, progress=cancel)
    assert_unchanged(before, lite0.module, x)


class Counting(nn.Module):
    """A model's module with a count of its forward calls: the work done."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_cancel_stops_the_work_and_bad_options_start_none() -> None:
    """A cancel raised by the progress callback stops the sweep (no forward after it), also from inside a method
    that loops (Score-CAM); the method's options are checked before any forward."""
    digits = cs.load_model("digits_cnn")
    counted = cs.Model(Counting(digits.module), input_size=digits.input_size, mean=digits.mean, std=digits.std,
                       labels=digits.labels, name="digits")
    picture = cs.sample_image("coffee")
    for method, extra in (("gradcam", {}), ("scorecam", {"top_channels": 8})):
        at_cancel: list[int] = []

        def cancel(done: int, total: int, what: str, at_cancel: list[int] = at_cancel) -> None:
            if done >= 1 or at_cancel:  # the second report (Score-CAM's first comes from inside it, at done = 0)
                at_cancel.append(counted.module.calls)
                raise Cancelled("stopped")
            at_cancel.append(-1)

        counted.module.calls = 0
        with pytest.raises(Cancelled):
            cs.robustness(counted, picture, perturbations={"blur": [1, 2, 4, 8]}, batch_size=1, method=method,
                          progress=cancel, **extra)
        assert counted.module.calls == at_cancel[-1], method  # nothing ran after the cancel
        assert 0 < at_cancel[-1] <= 6, method  # far from the whole sweep
    counted.module.calls = 0
    with pytest.raises(cs.OptionError, match="scorecam: option top_channels=0"):
        cs.robustness(counted, picture, method="scorecam", top_channels=0, progress=False)
    with pytest.raises(cs.ConvscopeError, match="did you mean 'gradcam'"):
        cs.robustness(counted, picture, method="gradcm", progress=False)
    assert counted.module.calls == 0


def test_registered_with_its_cost(lite0: cs.Model) -> None:
    tool = cs.registry.get("robustness")
    assert (tool.family, tool.takes, tool.returns, tool.inputs) == ("workflow", "image", "robustness", ("model", "image"))
    assert cs.robustness is tool.fn and tool.loops and tool.report is not None and tool.report.note
    specs = {spec.name: spec for spec in tool.option_specs()}
    assert set(specs) == {"perturbations", "method", "batch_size", "seed"} and all(s.help for s in specs.values())
    gradcam = cs.registry.get("gradcam").cost_of(lite0, torch.zeros(1, 3, 224, 224)).forwards
    everything = sum(len(p.strengths) for p in PERTURBATIONS.values())
    cat = cs.sample_image("cat")
    # the method on the picture and every perturbed one, and one forward for the original's top two classes
    assert tool.cost_of(lite0, cat).forwards == pytest.approx((everything + 1) * gradcam + 1)
    assert tool.cost_of(lite0, cat, perturbations={"blur": [1, 2], "noise": None}).forwards == pytest.approx(7 * gradcam + 1)
    assert tool.cost_of(lite0, cat, **tool.quick).forwards < tool.cost_of(lite0, cat).forwards
    with pytest.raises(cs.InputError, match="did you mean 'shadow'"):
        tool.cost_of(lite0, cat, perturbations="shadw")
    with cs.limits(max_forwards=20), pytest.raises(cs.CostError, match=r"robustness would take about \d+ forward passes"):
        cs.robustness(lite0, cat)


def test_a_preprocessed_tensor_gives_the_same_sweep(lite0: cs.Model) -> None:
    picture = cs.sample_image("coffee")
    kinds = {"contrast": [0.5]}
    from_picture = cs.robustness(lite0, picture, perturbations=kinds, progress=False)
    from_tensor = cs.robustness(lite0, lite0.preprocess(picture), perturbations=kinds, progress=False)
    assert np.abs(from_picture.pictures.astype(int) - from_tensor.pictures.astype(int)).max() <= 1
    assert from_picture.rows[0].original_probability == pytest.approx(from_tensor.rows[0].original_probability, abs=1e-3)
    assert not from_tensor.notes


def test_pictures(sweep, tmp_path) -> None:
    from convscope.render.robustness import robustness_figure

    assert sweep.kind == "robustness" and isinstance(sweep, cs.result.Displayable)
    sweep.save(tmp_path / "grid.png")
    sweep.save(tmp_path / "scaled.png", scale="original", peaks=False)
    sweep.save(tmp_path / "curves.png", view="curves")
    width, height = Image.open(tmp_path / "grid.png").size
    assert height > width > 600  # 8 perturbations down, the strengths across
    assert Image.open(tmp_path / "curves.png").size[0] > 400
    with pytest.raises(ValueError, match="scale"):
        robustness_figure(sweep, scale="log")
    with pytest.raises(ValueError, match="view"):
        sweep.figure(view="table")
    assert cs.render.text(sweep) == sweep.table() and "costliest" in cs.render.caption(sweep)
    page = sweep.to_html()
    assert page.count("<img") == 2 and "<table" in page and "peak moved" in page


def _original(probability: float, second: float, target: int = 0) -> Original:
    blank = np.zeros((4, 4, 3), np.uint8)
    return Original(target, "cat", probability, 0, "cat", probability, blank, np.zeros((4, 4)), runner_up=1,
                    runner_up_label="lynx", runner_up_probability=second)


def test_a_near_tie_is_detected_from_the_top_two_classes() -> None:
    assert _original(0.40, 0.38).tied and _original(0.40, 0.38).tied_with == (1, "lynx", 0.38)
    assert not _original(0.40, 0.40 - TIE_MARGIN - 0.01).tied  # a clear lead
    assert not _original(0.40, 0.38, target=5).tied  # a class outside the pair is followed
    assert _original(0.9, 0.0).margin == pytest.approx(0.9)


def test_changes_between_two_tied_classes_are_counted_apart(sweep) -> None:
    """The cat on Lite0 is a near-tie (tiger cat 38% vs Egyptian cat 37%): a top-1 that swaps to Egyptian cat is said
    to swap within the tie, not counted as a loss of robustness."""
    o = sweep.original
    assert o.tied and o.label == "tiger cat" and o.tied_with[1] == "Egyptian cat" and o.margin < 0.05
    assert sweep.tie_swaps and all(r.label == "Egyptian cat" and r.flipped for r in sweep.tie_swaps)
    assert all(r.label != "Egyptian cat" for r in sweep.real_flips)
    assert len(sweep.tie_swaps) + len(sweep.real_flips) == len(sweep.flips)
    caption = cs.render.caption(sweep)
    assert "near-tie" in caption and f"swapped between the two tied classes on {len(sweep.tie_swaps)} of 30" in caption
    assert f"changed to another class on {len(sweep.real_flips)}" in caption
    page = sweep.to_html()
    assert 'class="verdict"' in page and "Egyptian cat ≈" in page and "could not decide" in page
    assert "a near-tie with Egyptian cat" in sweep.table() and json.loads(json.dumps(sweep.to_dict()))["original"]["tied"]


def test_no_tie_no_tie_words() -> None:
    model = toy_model()
    with torch.no_grad():
        model.module[-1].bias.copy_(torch.tensor([4.0, 0.0]))  # class a leads by far
    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    sweep = cs.robustness(model, picture, perturbations={"brightness": [0.5]}, progress=False)
    assert not sweep.original.tied and sweep.original.margin > 0.5
    assert not sweep.tie_swaps and "near-tie" not in cs.render.caption(sweep) and 'class="verdict"' not in sweep.to_html()
    assert "the top-1 changed on" in cs.render.caption(sweep)
