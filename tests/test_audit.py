"""The shortcut audit on the snow/sand shapes: it flags the model that learned the background and
clears the one that learned the shapes; analytic cases for the measures; inputs; model safety; the registered
tool (typed options, per-picture cost, the method's options checked before any work, cancellation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, snapshot

import convscope as cs
from convscope.metrics.audit import _boxes, audit, fill_region, region_share, smooth_fill
from convscope.progress import Cancelled
from convscope.zoo.shapes import shapes_dataset


def normalized(model: cs.Model, images: torch.Tensor) -> torch.Tensor:
    return (images - torch.tensor(model.mean).view(1, 3, 1, 1)) / torch.tensor(model.std).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def data():
    """200 held-out pictures of the biased kind: circles on snow, squares on sand."""
    return shapes_dataset(200, biased=True, split="test")


@pytest.fixture(scope="module")
def audits(data):
    out = {}
    for which in ("biased", "balanced"):
        model = cs.load_model(f"shapes_{which}")
        out[which] = audit(model, normalized(model, data.images), labels=data.labels.tolist(), regions=data.masks,
                           swaps=64, progress=False)
    return out


def test_the_biased_model_is_flagged(audits) -> None:
    found = audits["biased"]
    assert found.relies_on_background and found.verdict.startswith("RELIES ON THE BACKGROUND")
    assert found.flagged_fraction > 0.9  # its Grad-CAM sits on the snow and the sand, not on the shape
    assert np.median(found.share) < np.median(found.area) * 1.5
    assert found.swap is not None and len(found.swap) == 128
    assert found.swap.follows_background > 0.9 and found.swap.follows_object < 0.1
    assert set(found.per_class()) == {"circle", "square"}
    assert (found.label == found.predicted).mean() > 0.95  # it is right on pictures like its training set


def test_the_balanced_model_is_cleared(audits) -> None:
    found = audits["balanced"]
    assert not found.relies_on_background and found.verdict.startswith("looks at the objects")
    assert found.flagged_fraction < 0.1
    assert np.median(found.share) > 4 * np.median(found.area)  # the map is concentrated on the shape
    assert found.hit.mean() > 0.8  # the pointing game
    assert found.swap.follows_object > 0.9


def test_the_training_claims_hold_on_swapped_pictures() -> None:
    """The committed weights do what scripts/train_shapes.py printed: the biased model fails when shapes
    change background, the balanced one does not."""
    swapped = shapes_dataset(200, split="test", swap=True)
    for which, low, high in (("biased", 0.0, 0.2), ("balanced", 0.9, 1.0)):
        model = cs.load_model(f"shapes_{which}")
        with torch.inference_mode():
            accuracy = (model.module(normalized(model, swapped.images)).argmax(1) == swapped.labels).float().mean()
        assert low <= float(accuracy) <= high, (which, float(accuracy))


def test_dataset_is_deterministic_and_well_formed() -> None:
    a, b = shapes_dataset(32, biased=True, split="train"), shapes_dataset(32, biased=True, split="train")
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    assert not torch.equal(a.images, shapes_dataset(32, biased=True, split="test").images)
    assert a.images.shape == (32, 3, 64, 64) and float(a.images.min()) >= 0 and float(a.images.max()) <= 1
    assert torch.equal(a.backgrounds, a.labels)  # biased: circle (0) on snow (0), square (1) on sand (1)
    balanced = shapes_dataset(400, biased=False)
    assert 0.4 < float((balanced.backgrounds == balanced.labels).float().mean()) < 0.6
    assert torch.equal(shapes_dataset(16, swap=True).backgrounds, 1 - shapes_dataset(16, swap=True).labels)
    # the shape is darker than any background, and the mask marks exactly it
    inside = a.images.mean(1)[a.masks]
    outside = a.images.mean(1)[~a.masks]
    assert float(inside.max()) < float(outside.quantile(0.001))


def test_region_share_and_pointing_game_by_hand() -> None:
    maps = torch.zeros(3, 8, 8)
    maps[0, 2:4, 2:4] = 1.0  # all the mass inside the region
    maps[1] = 1.0  # uniform: the share is the area
    maps[2, 6, 6] = 5.0
    maps[2, 2, 2] = 1.0  # a sixth inside, the peak outside
    maps[2, 0, 0] = -9.0  # negative evidence does not count
    regions = torch.zeros(3, 8, 8, dtype=torch.bool)
    regions[:, 2:4, 2:4] = True
    share, hit = region_share(maps, regions)
    assert torch.allclose(share, torch.tensor([1.0, 4 / 64, 1 / 6]))
    assert hit.tolist() == [True, False, False]  # a uniform map's first maximum is the corner, outside
    box = _boxes(torch.tensor([[2, 2, 4, 4]]), 1, (8, 8))  # (x0, y0, x1, y1): pixels 2 and 3 of each axis
    assert torch.equal(box, regions[:1]) and float(region_share(maps[:1], box)[0]) == 1.0


def test_boxes_equal_the_same_masks(data) -> None:
    model = cs.load_model("shapes_balanced")
    x = normalized(model, data.images[:24])
    rows, cols = data.masks[:24].any(2), data.masks[:24].any(1)
    boxes = torch.stack([torch.tensor([c.nonzero().min(), r.nonzero().min(), c.nonzero().max() + 1, r.nonzero().max() + 1])
                         for r, c in zip(rows, cols)]).float()
    box_masks = torch.zeros_like(data.masks[:24])
    for i, (x0, y0, x1, y1) in enumerate(boxes.long().tolist()):
        box_masks[i, y0:y1, x0:x1] = True
    by_box = audit(model, x, regions=boxes, swap_backgrounds=False, progress=False)
    by_mask = audit(model, x, regions=box_masks, swap_backgrounds=False, progress=False)
    assert np.allclose(by_box.share, by_mask.share, atol=1e-6)
    assert np.allclose(by_box.area, by_mask.area)


def test_batch_size_and_seed(data) -> None:
    model = cs.load_model("shapes_biased")
    x = normalized(model, data.images[:40])
    one = audit(model, x, labels=data.labels[:40].tolist(), regions=data.masks[:40], batch_size=7, swaps=8, progress=False)
    two = audit(model, x, labels=data.labels[:40].tolist(), regions=data.masks[:40], batch_size=40, swaps=8, progress=False)
    assert np.allclose(one.share, two.share, atol=1e-5) and (one.predicted == two.predicted).all()
    again = audit(model, x, labels=data.labels[:40].tolist(), regions=data.masks[:40], batch_size=40, swaps=8, progress=False)
    assert (again.swap.predicted == two.swap.predicted).all() and (again.swap.background_class == two.swap.background_class).all()


def test_fill_region_hides_the_object_in_its_texture(data) -> None:
    pictures, masks = data.images[:16], data.masks[:16]
    filled = fill_region(pictures, masks)
    outside = ~masks[:, None].expand_as(filled)
    assert torch.equal(filled[outside], pictures[outside]) and not torch.equal(filled, pictures)
    for i in range(16):  # the dark shape is gone, and where it was looks like the background: grain included
        inside, background = filled[i].mean(0)[masks[i]], pictures[i].mean(0)[~masks[i]]
        assert abs(float(inside.mean() - background.mean())) < 0.05
        assert 0.6 < float(inside.std() / background.std()) < 1.5
        assert float(smooth_fill(pictures[i:i + 1], masks[i:i + 1])[0].mean(0)[masks[i]].std()) < 0.5 * float(background.std())
    # an object too large for any patch of its picture falls back to the smooth fill
    large = torch.zeros(1, 64, 64, dtype=torch.bool)
    large[:, 8:56, 8:56] = True
    assert torch.equal(fill_region(pictures[:1], large), smooth_fill(pictures[:1], large))


def test_targets_datasets_and_default_batch(data) -> None:
    """target= picks the explained class; an (images, labels) pair is a dataset; batch_size=None is automatic."""
    model = cs.load_model("shapes_biased")
    swapped = shapes_dataset(24, split="test", swap=True)  # the biased model gets every one wrong
    x, labels = swapped.inputs(model), swapped.labels
    top = audit(model, (x, labels), regions=swapped.masks, swap_backgrounds=False, progress=False)
    truth = audit(model, x, labels=labels.tolist(), target="label", regions=swapped.masks, swap_backgrounds=False,
                  progress=False)
    assert (top.explained == top.predicted).all() and (top.predicted != top.label).all()
    assert (truth.explained == truth.label).all() and (truth.predicted == top.predicted).all()  # top-1 whatever is explained
    assert not np.allclose(truth.share, top.share)
    each = audit(model, x, target=labels, regions=swapped.masks, swap_backgrounds=False, batch_size=5, progress=False)
    assert np.allclose(each.share, truth.share, atol=1e-5)
    assert (audit(model, x, target=1, regions=swapped.masks, swap_backgrounds=False, progress=False).explained == 1).all()
    as_dataset = audit(model, torch.utils.data.TensorDataset(x, labels), regions=swapped.masks, swap_backgrounds=False,
                       batch_size=10, progress=False)
    assert (as_dataset.label == top.label).all() and np.allclose(as_dataset.share, top.share, atol=1e-5)


def test_a_folder_with_a_folder_of_masks(tmp_path, data) -> None:
    """ImageFolder layout for the pictures, the same relative paths for the masks."""
    for i in range(12):
        name = ("circle", "square")[int(data.labels[i])]
        (tmp_path / "images" / name).mkdir(parents=True, exist_ok=True)
        (tmp_path / "masks" / name).mkdir(parents=True, exist_ok=True)
        picture = (data.images[i].permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        Image.fromarray(picture).save(tmp_path / "images" / name / f"{i}.png")
        Image.fromarray(data.masks[i].numpy().astype("uint8") * 255).save(tmp_path / "masks" / name / f"{i}.png")
    model = cs.load_model("shapes_balanced")
    found = audit(model, tmp_path / "images", regions=tmp_path / "masks", progress=False)
    assert len(found) == 12 and (found.label == found.predicted).all() and not found.relies_on_background
    assert all(p is not None and p.endswith(".png") for p in found.paths)
    (tmp_path / "masks" / "circle").rename(tmp_path / "elsewhere")
    with pytest.raises(cs.InputError, match="no mask for"):
        audit(model, tmp_path / "images", regions=tmp_path / "masks", progress=False)


def test_bad_inputs_are_one_line_errors(data) -> None:
    model = cs.load_model("shapes_biased")
    x = normalized(model, data.images[:4])
    cases = [
        (dict(regions=None, clusters=0), "clusters"),
        (dict(regions=None, address="auto"), "engine='ray'"),
        (dict(regions=data.masks[:3]), "3 regions for 4 images"),
        (dict(regions=torch.tensor([[0, 0, 70, 10]] * 4)), "box 0"),
        (dict(regions=torch.zeros(4, 64, 64, dtype=torch.bool)), "empty"),
        (dict(regions=data.masks[:4], method="gradcm"), "gradcam"),
        (dict(regions=data.masks[:4], threshold=3), "threshold"),
        (dict(regions=torch.ones(4, 2, 3, 64, 64)), "regions must be"),
        (dict(regions=torch.ones(4, 32, 48, dtype=torch.bool)), "32x48 but the images are 64x64"),
        (dict(regions=data.masks[:4], target=[0, 1]), "2 classes for 4 images"),
        (dict(regions=data.masks[:4], target="cat"), "target must be"),
        (dict(regions=data.masks[:4], target="label"), "needs every image's label"),
        (dict(regions=data.masks[:4], batch_size=0), "batch_size"),
        (dict(regions=data.masks[:4], layer="block9"), "block9"),
        (dict(regions=data.masks[:4], swaps=0), "swaps"),
        (dict(regions=data.masks[:4], keep_examples=5000), "keep_examples"),
        (dict(regions=data.masks[:4], method="scorecam", top_channels=0), "scorecam: option top_channels"),
        (dict(regions=data.masks[:4], colour=1), "gradcam has no option 'colour'"),
    ]
    for options, match in cases:
        with pytest.raises(cs.ConvscopeError, match=match) as caught:
            audit(model, x, progress=False, **options)
        assert "\n" not in str(caught.value)


def test_model_and_input_untouched(data) -> None:
    model = cs.load_model("shapes_biased")
    model.module.train()
    x = normalized(model, data.images[:16])
    before, regions = snapshot(model.module, x), data.masks[:16].clone()
    audit(model, x, labels=data.labels[:16].tolist(), regions=regions, swaps=4, progress=False)
    assert torch.equal(regions, data.masks[:16])
    with pytest.raises(cs.InputError):
        audit(model, x, regions=data.masks[:15], progress=False)
    with pytest.raises(cs.ConvscopeError):  # fails inside the method, after the first forward has started
        audit(model, x, regions=data.masks[:16], layer="block9", progress=False)
    assert_unchanged(before, model.module, x)


def test_figure_and_table(audits, tmp_path) -> None:
    found = audits["biased"]
    assert set(found.worst(8).tolist()) <= set(found.examples) and len(found.examples) == 16  # kept for figures
    text = found.table()
    assert "circle" in text and "follows background" in text and "verdict: RELIES" in text
    assert found.kind == "audit" and cs.render.text(found) == text and cs.render.caption(found).startswith("verdict: RELIES")
    found.save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").size[0] > 800
    found.save(tmp_path / "few.png", k=3)
    assert Image.open(tmp_path / "few.png").size[0] < Image.open(tmp_path / "a.png").size[0]
    page = found.to_html()
    assert "<img" in page and "<table" in page and "concentration" in page
    records = found.records()
    assert len(records) == len(found) and {"share", "area", "flagged", "path"} <= set(records[0])
    assert sum(r["flagged"] for r in records) == len(found.flagged)
    from convscope.render.audit import share_figure, swap_figure, worst_figure

    both = swap_figure({"biased": found, "balanced": audits["balanced"]}, k=4)  # the same composites, two models
    texts = [t.get_text() for ax in both.axes for t in ax.texts]
    assert len(both.axes) == 4 and "biased → square" in texts and "balanced → circle" in texts
    worst = worst_figure(found, k=3).axes
    assert len(worst) == 3 + 1 and worst[-1].get_label() == "<colorbar>" and len(share_figure(found).axes) == 1
    few, balanced = shapes_dataset(8, split="test"), cs.load_model("shapes_balanced")
    other = audit(balanced, few.inputs(balanced), regions=few.masks, swaps=2, progress=False)
    with pytest.raises(cs.InputError, match="other composites"):
        swap_figure({"biased": found, "other": other})
    summary = found.summary()
    assert summary["relies_on_background"] is True and summary["swap"]["composites"] == 128


def test_maps_without_evidence_are_not_judged(data) -> None:
    """An untrained model's Grad-CAM can be all zeros: nothing to locate, so nothing is flagged for it."""
    model = cs.load_model("shapes_balanced", weights=None)
    with torch.no_grad():
        model.module.fc.weight.zero_()  # no class depends on any channel: every Grad-CAM map is 0
    found = audit(model, data.inputs(model)[:16], regions=data.masks[:16], swap_backgrounds=False, progress=False)
    assert found.without_evidence == 16 and len(found.flagged) == 0
    assert found.verdict.startswith("NO EVIDENCE TO JUDGE") and "16 maps without positive evidence" in found.verdict


class Counting(torch.nn.Module):
    """A model's module with a count of its forward calls: the work done."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


def test_registered_with_a_cost_per_picture(data) -> None:
    tool = cs.registry.get("audit")
    assert (tool.family, tool.takes, tool.returns, tool.inputs) == ("workflow", "dataset", "audit", ("model", "dataset"))
    assert cs.audit is tool.fn and tool.loops and tool.uses_layer and tool.uses_target
    assert tool.report is not None and tool.report.explanations  # a report section: from --folder, pictures or explanations
    specs = {spec.name: spec for spec in tool.option_specs()}
    assert specs["regions"].kind == "str" and specs["swaps"].maximum == 100_000 and all(s.help for s in specs.values())
    model = cs.load_model("shapes_biased")
    x = data.inputs(model)[:8]
    gradcam = cs.registry.get("gradcam").cost_of(model, x[:1]).forwards
    cost = tool.cost_of(model, x, regions=data.masks[:8])
    assert cost.per_item and cost.forwards == pytest.approx(gradcam + 1)  # the map, and one composite per picture
    assert tool.cost_of(model, x, regions=data.masks[:8], swap_backgrounds=False).forwards == pytest.approx(gradcam)
    assert tool.cost_of(model, x, regions=data.masks[:8], method="scorecam").forwards > 5 * cost.forwards
    with pytest.raises(cs.ConvscopeError, match="did you mean 'gradcam'"):
        tool.cost_of(model, x, regions=data.masks[:8], method="gradcm")
    assert tool.cost_of(model, x).forwards == pytest.approx(gradcam)  # without regions: the maps only, no composites


def test_cancel_stops_the_work_and_bad_options_start_none(data) -> None:
    model = cs.load_model("shapes_biased")
    counted = cs.Model(Counting(model.module), input_size=model.input_size, mean=model.mean, std=model.std,
                       labels=model.labels, name="shapes")
    x = data.inputs(model)[:40]
    at_cancel: list[int] = []

    def cancel(done: int, total: int, what: str) -> None:
        at_cancel.append(counted.module.calls)
        raise Cancelled("stopped")

    cs.default_cam_layer(counted, (3, *model.input_size))  # its one probing forward (cached) is not the audit's work
    counted.module.calls = 0
    with pytest.raises(Cancelled):
        audit(counted, x, labels=data.labels[:40].tolist(), regions=data.masks[:40], batch_size=4, progress=cancel)
    assert counted.module.calls == at_cancel[0] and at_cancel[0] <= 2  # one batch of 4, then nothing
    swaps: list[int] = []

    def cancel_swaps(done: int, total: int, what: str) -> None:
        if "swap" in what:  # the background-swap test reports too
            swaps.append(counted.module.calls)
            raise Cancelled("stopped")

    counted.module.calls = 0
    with pytest.raises(Cancelled):
        audit(counted, x, labels=data.labels[:40].tolist(), regions=data.masks[:40], batch_size=4, progress=cancel_swaps)
    assert counted.module.calls == swaps[0] <= 10 + 1 + 1  # 10 batches of the dataset, one of composites
    at_cancel.clear()
    counted.module.calls = 0
    with pytest.raises(Cancelled):  # from inside Score-CAM, after its first batch of masked pictures
        audit(counted, x, regions=data.masks[:40], batch_size=4, method="scorecam", progress=cancel)
    assert counted.module.calls == at_cancel[0] <= 4
    counted.module.calls = 0
    with pytest.raises(cs.OptionError, match="top_channels"):
        audit(counted, x, regions=data.masks[:40], method="scorecam", top_channels=-1, progress=False)
    assert counted.module.calls == 0


def test_an_audit_reads_the_maps_explain_dataset_wrote(data, tmp_path) -> None:
    """The region audit of a folder of explanations equals the audit made from the pictures (up to the maps'
    float16 storage), and an audit that saves its explanations leaves a folder a later audit reads."""
    model = cs.load_model("shapes_biased")
    x = normalized(model, data.images[:48])
    labels = data.labels[:48].tolist()
    direct = audit(model, x, labels=labels, regions=data.masks[:48], swap_backgrounds=False, progress=False)
    saved = audit(model, x, labels=labels, regions=data.masks[:48], swap_backgrounds=False, save_explanations=tmp_path / "maps",
                  progress=False)
    read = audit(model, tmp_path / "maps", regions=data.masks[:48], swap_backgrounds=False, progress=False)
    for found in (saved, read):
        assert np.allclose(found.share, direct.share, atol=2e-3) and np.array_equal(found.hit, direct.hit)
        assert np.array_equal(found.predicted, direct.predicted) and np.array_equal(found.label, direct.label)
        assert np.array_equal(found.is_flagged, direct.is_flagged) and found.verdict.split(":")[0] == direct.verdict.split(":")[0]
        assert sorted(found.examples) == sorted(direct.examples)
    assert cs.open_explanations(tmp_path / "maps").complete
    strategies = audit(model, tmp_path / "maps", progress=False)  # no regions: SpRAy over the same maps, nothing explained again
    assert strategies.kind == "strategy_audit" and set(strategies.classes) == {"circle", "square"}
    assert sum(len(s) for s in strategies.classes.values()) == 48


def test_the_swap_test_reads_the_pictures_again_from_their_paths(tmp_path) -> None:
    from PIL import Image

    from convscope.zoo.shapes import SHAPES_LABELS, shapes_dataset

    found = shapes_dataset(16, biased=True, split="test")
    for i, (picture, label, mask) in enumerate(zip(found.images, found.labels, found.masks)):
        name = SHAPES_LABELS[int(label)]
        for folder, image in (("images", (picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)),
                              ("masks", mask.numpy().astype(np.uint8) * 255)):
            (tmp_path / folder / name).mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(tmp_path / folder / name / f"{i}.png")
    model = cs.load_model("shapes_biased")
    cs.explain_dataset(model, tmp_path / "images", out=tmp_path / "maps")
    read = audit(model, tmp_path / "maps", regions=tmp_path / "masks", swaps=4, progress=False)
    assert read.swap is not None and len(read.swap) == 8 and read.swap.follows_background > 0.5 and read.relies_on_background
    with pytest.raises(cs.InputError, match="another model"):
        audit(cs.load_model("shapes_balanced"), tmp_path / "maps", regions=tmp_path / "masks", swaps=4, progress=False)


def test_without_masks_the_audit_finds_the_corner_tag(tmp_path) -> None:
    """The PASCAL-horse story end to end: a model that learned a corner tag on half of its circles, audited with no
    mask — the dataset explained to a folder (explain_dataset), each class's maps clustered (SpRAy) — shows the
    circles split into the tag's strategy and the shape's, and the squares in one."""
    from sklearn.metrics import adjusted_rand_score

    from convscope.zoo.tagged import tagged_dataset, train_tagged_model

    model = train_tagged_model(seed=0)
    data = tagged_dataset(400, split="test")
    found = audit(model, (data.inputs(model), data.labels), save_explanations=tmp_path / "maps", progress=False)
    assert found.kind == "strategy_audit" and found.several == ["circle"]
    circles = found.classes["circle"]
    table = cs.open_explanations(tmp_path / "maps").table(["explained", "index"]).to_pydict()
    rows = [i for i, c in zip(table["index"], table["explained"]) if c == 0]  # the pictures explained as circles
    truth = data.tagged[rows].numpy().astype(int)
    assert circles.clusters == 2 and adjusted_rand_score(truth, circles.assignment) >= 0.9
    tag = int(np.bincount(circles.assignment[truth == 1]).argmax())
    assert circles.where(tag) == "the bottom-left corner" and "bottom-left corner" in found.verdict
    assert found.classes["square"].clusters == 1
    again = audit(model, tmp_path / "maps", progress=False)  # read back: the same strategies, nothing explained again
    assert np.array_equal(again.classes["circle"].assignment, circles.assignment)
