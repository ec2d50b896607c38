"""cs.compare: models (or target classes) × methods on one common frame (seed 004); the registered tool (typed
options, a cost from its methods' costs, methods checked before any model is loaded, cancellation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from convscope.compare import crop_box, place_in_frame
from convscope.progress import Cancelled


def small_model(size: int = 64, name: str = "small64") -> cs.Model:
    """A GAP-headed CNN on 64×64 pictures with its own normalization (mean 0.5, std 0.25), 3 classes."""
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3)).eval()
    return cs.Model(net, input_size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                    labels=["red", "green", "blue"], name=name)


def flat_head_model() -> cs.Model:
    """A Flatten -> Linear head: ``cam`` does not apply to it."""
    torch.manual_seed(2)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2)).eval()
    return cs.Model(net, input_size=(32, 32), mean=None, std=None, labels=["a", "b"], name="flat")


@pytest.fixture(scope="module")
def three(lite0: cs.Model) -> cs.Comparison:
    """Lite0 (224 centre crop, ImageNet normalization), the 1-channel 32×32 digits CNN and a 64×64 model."""
    return cs.compare([lite0, "digits_cnn", small_model()], ["cat", "coffee"], "gradcam,saliency", progress=False)


def test_grid_has_a_cell_per_model_method_and_picture(three: cs.Comparison) -> None:
    assert three.rows == ["efficientnet_lite0", "digits_cnn", "small64"]
    assert three.methods == ["gradcam", "saliency"] and three.images == ["cat", "coffee"]
    assert len(three.cells) == 3 * 2 * 2 and three.rows_are == "models"
    cat = three.cell("efficientnet_lite0", "gradcam", "cat")
    assert cat.top1.label in ("tiger cat", "tabby", "Egyptian cat") and cat.explained == cat.top1.label
    assert cat.probability == pytest.approx(cat.top1.probability, abs=1e-4)
    assert three.cell("digits_cnn", "gradcam", "coffee").top1.label in [str(d) for d in range(10)]
    # each model saw the picture its own way: maps at each model's input size
    assert three.cell(0, 0, 0).result.data.shape[-2:] == (224, 224)
    assert three.cell(1, 0, 0).result.data.shape[-2:] == (32, 32)
    assert three.cell(2, 1, 1).result.data.shape[-2:] == (64, 64)


def test_cells_equal_the_direct_calls(lite0: cs.Model, three: cs.Comparison) -> None:
    """Batched over the pictures, with each model's own preprocessing: the same maps as calling the method."""
    x = lite0.preprocess(cs.sample_image("coffee"))
    direct = cs.gradcam(lite0, x)
    cell = three.cell("efficientnet_lite0", "gradcam", "coffee")
    assert torch.allclose(cell.result.data, direct.data, atol=1e-4 * float(direct.data.abs().max()))
    digits = cs.load_model("digits_cnn")
    assert torch.allclose(three.cell("digits_cnn", "saliency", "cat").result.data,
                          cs.saliency(digits, digits.preprocess(cs.sample_image("cat"))).data, atol=1e-6)


def test_crop_box_is_what_the_model_sees(lite0: cs.Model) -> None:
    """Cutting the box out of the original and resizing it gives the model's own crop."""
    picture = cs.sample_image("cat")  # 451 × 300
    x0, y0, x1, y1 = crop_box(lite0, picture.size)
    assert 0 < x0 < x1 < picture.width and 0 < y0 < y1 <= picture.height
    ours = np.asarray(picture.resize((224, 224), Image.BILINEAR, box=(x0, y0, x1, y1)), dtype=np.float32)
    theirs = np.asarray(lite0.crop(picture), dtype=np.float32)
    assert np.abs(ours - theirs).mean() < 4  # a few grey levels of resampling difference
    assert crop_box(cs.load_model("digits_cnn"), picture.size) == (0.0, 0.0, 451.0, 300.0)  # resized whole


def test_maps_land_where_the_model_looked(lite0: cs.Model) -> None:
    picture = cs.sample_image("cat")
    peak = torch.zeros(224, 224)
    peak[0, 0] = 1.0  # the top-left pixel of the crop
    placed, seen = place_in_frame(lite0, peak, picture.size, (150, 225))
    x0, y0, _, _ = crop_box(lite0, picture.size)
    row, col = np.unravel_index(np.nanargmax(placed), placed.shape)
    assert abs(col - x0 * 225 / 451) <= 1.5 and abs(row - y0 * 150 / 300) <= 1.5
    assert not seen[:, :5].any() and seen[75, 112] and np.isnan(placed[~seen]).all()


def test_agreement_is_one_with_itself_and_rows_are_named_apart(lite0: cs.Model) -> None:
    twice = cs.compare([lite0, lite0], "coffee", ["gradcam"], progress=False)
    assert twice.rows == ["efficientnet_lite0", "efficientnet_lite0 #2"]
    assert np.allclose(twice.agreement("gradcam"), 1.0, atol=1e-5)
    assert "ρ=1.00" in twice.table()


def test_rows_can_be_target_classes(lite0: cs.Model) -> None:
    top3 = cs.compare(lite0, "cat", ["gradcam"], targets="top3", scale="column", progress=False)
    assert top3.rows_are == "targets" and len(top3.rows) == 3
    best = lite0.predict(lite0.preprocess(cs.sample_image("cat")), k=3)[0]
    assert [top3.cell(r, 0).explained for r in range(3)] == [p.label for p in best]
    assert [round(top3.cell(r, 0).probability, 3) for r in range(3)] == [round(p.probability, 3) for p in best]
    # class-discriminative: the three classes' maps are not the same map
    assert top3.agreement("gradcam")[0, 2] < 0.999
    # one colour scale for the column: the same limits in every row, one colour bar
    from convscope.render.compare import comparison_scales

    scales = comparison_scales(top3, "cat")
    assert len({(s.low, s.high) for s in scales.values()}) == 1 and "column" in next(iter(scales.values())).scope
    assert sum(ax.get_label() == "<colorbar>" for ax in top3.figure().axes) == 1
    listed = cs.compare(lite0, "coffee", ["gradcam"], targets=[967, 504], progress=False)  # espresso, coffee mug
    assert listed.rows == ["efficientnet_lite0: espresso", "efficientnet_lite0: coffee mug"]
    as_text = cs.compare(lite0, "coffee", "gradcam", targets="967, 504", progress=False)  # what the command line passes
    assert as_text.rows == listed.rows


def test_a_method_that_does_not_apply_leaves_an_explained_cell(lite0: cs.Model, tmp_path) -> None:
    comparison = cs.compare([lite0, flat_head_model()], "cat", ["cam", "gradcam"], progress=False)
    cell = comparison.cell("flat", "cam")
    assert cell.result is None and "global average pooling" in cell.error and "use gradcam" in cell.error
    assert comparison.cell("flat", "gradcam").result is not None
    assert "n/a" in comparison.table()
    path = comparison.save(tmp_path / "grid.png")
    assert Image.open(path).size[0] > 600


def test_figure_has_rows_times_picture_and_methods(three: cs.Comparison, tmp_path) -> None:
    assert three.kind == "comparison" and cs.render.text(three) == three.table()
    assert cs.render.caption(three) == "3 models × 2 methods (gradcam, saliency) on 2 picture(s)"
    fig = three.figure(image="cat")
    pictures = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
    assert len(pictures) == 3 * 3 and len(bars) == 3 * 2  # every map cell has its colour bar (scale="each")
    titles = [ax.get_title() for ax in pictures]
    assert any("top-1 tiger cat" in t or "top-1 tabby" in t or "top-1 Egyptian cat" in t for t in titles)
    both = three.save(tmp_path / "all.png")
    width, height = Image.open(both).size
    assert height > width  # two pictures' blocks stacked
    one = three.save(tmp_path / "cat.png", image="cat")
    assert Image.open(one).size[1] < height
    page = three.to_html(image=0)
    assert page.count("<img") == 1 and "top-1" in page
    assert len(three.records()) == len(three.cells) and {"row", "method", "image", "explained"} <= set(three.records()[0])


def test_bad_requests_are_one_line_errors(lite0: cs.Model) -> None:
    with pytest.raises(cs.ConvscopeError, match="gradcam"):
        cs.compare(lite0, "cat", ["gradcm"], progress=False)
    with pytest.raises(cs.TargetError, match="out of range"):
        cs.compare(lite0, "cat", ["gradcam"], targets=1000, progress=False)
    with pytest.raises(cs.TargetError, match="one per model"):
        cs.compare([lite0, "digits_cnn"], "cat", ["gradcam"], targets=[1, 2, 3], progress=False)
    with pytest.raises(cs.TargetError, match="one model"):
        cs.compare([lite0, "digits_cnn"], "cat", ["gradcam"], targets="top3", progress=False)
    with pytest.raises(cs.OptionError, match="scale"):
        cs.compare(lite0, "cat", ["gradcam"], scale="global", progress=False)
    with pytest.raises(cs.ConvscopeError, match="not in methods"):
        cs.compare(lite0, "cat", ["gradcam"], options={"saliency": {}}, progress=False)
    with pytest.raises(cs.OptionError, match="targets"):
        cs.compare(lite0, "cat", ["gradcam"], targets=-1, progress=False)
    with pytest.raises(cs.OptionError, match="targets"):
        cs.compare(lite0, "cat", ["gradcam"], targets="best3", progress=False)
    with pytest.raises(cs.OptionError, match="scorecam: option top_channels"):
        cs.compare(lite0, "cat", ["scorecam"], options={"scorecam": {"top_channels": 0}}, progress=False)
    with pytest.raises(cs.ImageError):
        cs.compare(lite0, "no/such/picture.png", ["gradcam"], progress=False)


def test_models_are_untouched(lite0: cs.Model) -> None:
    other = small_model()
    other.module.train()  # a model left in training mode stays in training mode
    before = [snapshot(lite0.module), snapshot(other.module)]
    cs.compare([lite0, other], ["cat"], ["gradcam", "guided_backprop"], progress=False)
    with pytest.raises(cs.TargetError):
        cs.compare([lite0, other], ["cat"], ["gradcam"], targets=[5, 7], progress=False)  # 7 is out of range for 3 classes
    assert_unchanged(before[0], lite0.module)
    assert_unchanged(before[1], other.module)


def test_registered_with_a_cost_from_its_methods(lite0: cs.Model) -> None:
    tool = cs.registry.get("compare")
    assert (tool.family, tool.takes, tool.returns, tool.inputs) == ("workflow", "models", "comparison", ("models", "images"))
    assert cs.compare is tool.fn and tool.loops and tool.report is not None and tool.report.options["targets"] == "top3"
    assert {s.name for s in tool.option_specs()} == {"methods", "targets", "options", "scale"}
    x = torch.zeros(1, 3, 224, 224)
    gradcam = cs.registry.get("gradcam").cost_of(lite0, x).forwards
    scorecam = cs.registry.get("scorecam").cost_of(lite0, x, top_channels=8).forwards
    options = {"scorecam": {"top_channels": 8}}
    # per model: one forward of each picture, then every method on the pictures for each row
    assert tool.cost_of(lite0, "cat", ["gradcam", "scorecam"], options=options).forwards == pytest.approx(1 + gradcam + scorecam)
    assert tool.cost_of(lite0, ["cat", "coffee"], ["gradcam"], targets="top3").forwards == pytest.approx(2 + 3 * 2 * gradcam)
    assert tool.cost_of([lite0, lite0], "cat", ["gradcam"]).forwards == pytest.approx(2 * (1 + gradcam))
    by_name = tool.cost_of(["efficientnet_lite0", "resnet18"], "cat", "gradcam")  # estimated without loading them
    assert by_name.forwards == pytest.approx(2 * (1 + gradcam))
    with pytest.raises(cs.ConvscopeError, match="did you mean 'gradcam'"):
        tool.cost_of(["no_such_model"], "cat", ["gradcm"])  # the methods are checked before any model is loaded
    with cs.limits(max_forwards=5), pytest.raises(cs.CostError, match="compare would take about"):
        cs.compare(lite0, "cat", ["gradcam"], targets="top5", progress=False)


def test_a_cancel_stops_the_grid_from_inside_a_method() -> None:
    """Score-CAM's per-channel progress reaches the caller: a cancel raised there stops the grid (it is not
    taken for "the method does not apply")."""
    model = small_model()
    calls: list[str] = []

    def cancel(done: int, total: int, what: str) -> None:
        calls.append(what)
        raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        cs.compare(model, ["cat", "coffee"], ["scorecam", "gradcam"], options={"scorecam": {"batch_size": 1}},
                   progress=cancel)
    assert len(calls) == 1
    seen: list[int] = []
    other = small_model(name="other")
    before = snapshot(other.module)

    def after_the_first_row(done: int, total: int, what: str) -> None:
        seen.append(done)
        raise Cancelled("stopped")

    with pytest.raises(Cancelled):
        cs.compare([model, other], "cat", ["gradcam"], progress=after_the_first_row)
    assert seen == [1]  # the first row's report stopped it: the second model was never explained
    assert_unchanged(before, other.module)


def test_class_regions_is_a_tool(lite0: cs.Model, tmp_path) -> None:
    """The regions a map points at: one per picture, or one per class of one picture; flat maps have none."""
    tool = cs.registry.get("class_regions")
    assert (tool.family, tool.takes, tool.returns) == ("workflow", "images", "regions") and cs.class_regions is tool.fn
    assert tool.report is not None and tool.report.title == "Region of interest"
    x = lite0.preprocess([cs.sample_image("cat"), cs.sample_image("coffee")])
    regions = cs.class_regions(lite0, x, threshold=0.4)
    assert regions.kind == "regions" and len(regions) == 2 and regions.names == ["image 0", "image 1"]
    for region, result_map in zip(regions, cs.gradcam(lite0, x).maps()):
        scaled = (result_map - result_map.min()) / (result_map.max() - result_map.min())
        assert region.mask.shape == (224, 224) and (scaled.numpy()[region.mask] >= 0.4).all()
        left, top, right, bottom = region.box
        assert region.crop.shape == (bottom - top, right - left, 3) and region.masked[~region.mask].max() == 0
    per_class = cs.class_regions(lite0, x[:1], [281, 285])
    assert [r.label for r in per_class] == ["tabby", "Egyptian cat"] and per_class.names == ["class 281", "class 285"]
    assert tool.cost_of(lite0, x[:1], [281, 285]).forwards == pytest.approx(2 * tool.cost_of(lite0, x[:1]).forwards)
    blind = small_model()
    with torch.no_grad():
        blind.module[-1].weight.zero_()  # no class depends on any channel: every Grad-CAM map is flat
    flat = cs.class_regions(blind, torch.rand(1, 3, 64, 64))
    assert flat[0] is None and "flat" in flat.notes[0] and "no region" in flat.table()
    with pytest.raises(cs.ConvscopeError, match="one image"):
        cs.class_regions(lite0, x, [281, 285])
    with pytest.raises(cs.OptionError, match="threshold"):
        cs.class_regions(lite0, x, threshold=1.5)
    regions.save(tmp_path / "regions.png")
    assert Image.open(tmp_path / "regions.png").size[1] > Image.open(tmp_path / "regions.png").size[0]  # a row per picture
    page = regions.to_html()
    assert page.count("<img") == 4 and "of the picture" in page and cs.render.text(regions) == regions.table()
