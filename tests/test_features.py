"""Inspection: filters, feature maps, layer details, and their pictures.

Oracles: the model's own weights, forward hooks registered by the test itself (an independent
capture), hand-computed statistics and masks.
"""

from __future__ import annotations

import numpy as np
import pytest
import test_state
import torch
from pydantic import ValidationError
from test_state import assert_unchanged, give_grads, set_mode, snapshot
from torch import nn

import convscope as cs
from convscope import features
from convscope.render import features as render_features

borrow = test_state.borrow  # the fixture lending a shared model, restored after the test


# -- filters ---------------------------------------------------------------------------------------
def test_filters_default_is_the_first_conv_with_its_raw_weights(lite0):
    result = features.filters(lite0)
    assert result.method == "filters" and result.layer == "_conv_stem"
    assert torch.equal(result.data, lite0.module._conv_stem.weight.detach())
    assert result.data.data_ptr() != lite0.module._conv_stem.weight.data_ptr()  # a copy, not the parameter
    assert result.meta["colour"] and result.meta["shape"] == (32, 3, 3, 3) and result.meta["stride"] == (2, 2)


def test_smoothness_separates_smooth_from_random_kernels():
    ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(8, 3, 5, 5) + torch.arange(5.0).view(1, 1, 5, 1)
    assert features.filter_smoothness(ramp) > 0.9
    noise = torch.randn(256, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert abs(features.filter_smoothness(noise)) < 0.05
    assert np.isnan(features.filter_smoothness(torch.ones(4, 4, 1, 1)))


def test_trained_and_random_filters_are_told_apart(lite0):
    random_init = cs.load_model("efficientnet_lite0", weights=None)
    trained, untrained = features.compare_filters(lite0, random_init)
    assert trained.layer == untrained.layer == "_conv_stem"
    assert trained.meta["smoothness"] > 0.15 > 0.05 > abs(untrained.meta["smoothness"])
    figure = render_features.compare_filters_figure(trained, untrained)
    assert "smoothness" in figure.axes[0].get_title()


def test_filter_mosaic_draws_each_kernel_symmetrically(lite0, model_factory):
    colour = features.filters(lite0)
    mosaic = render_features.filter_mosaic(colour)
    w = colour.data[0]  # (3, 3, 3): the first tile, upscaled 8x, after a 1-pixel separator
    expected = (0.5 + 0.5 * w / w.abs().max()).permute(1, 2, 0).numpy()
    np.testing.assert_allclose(mosaic[1:25:8, 1:25:8], expected, atol=1e-6)
    vgg = model_factory("vgg11")
    deeper = features.filters(vgg, "features.3")
    assert deeper.data.shape == (128, 64, 3, 3) and not deeper.meta["colour"]
    grey = render_features.filter_mosaic(deeper, max_filters=16, max_inputs=4)
    assert grey.ndim == 2 and grey.min() >= 0 and grey.max() <= 1
    title = render_features.filters_figure(deeper, max_filters=16).axes[0].get_title()
    assert "(128, 64, 3, 3)" in title and "16 of 128 filters" in title


@pytest.mark.parametrize("layer, match", [("_bn0", "not a 2-D convolution"), ("_conv_stme", "did you mean '_conv_stem'")])
def test_filters_errors_are_one_line(lite0, layer, match):
    with pytest.raises(cs.LayerError, match=match) as info:
        features.filters(lite0, layer)
    assert "\n" not in str(info.value)


# -- feature maps ----------------------------------------------------------------------------------
LITE0_LAYERS = ["_swish@0", "_blocks.2", "_blocks.7._depthwise_conv", "_blocks.14"]


def independent_capture(module: nn.Module, x: torch.Tensor, names: list[str]) -> dict[str, torch.Tensor]:
    """Each named layer's output (``name@k``: its k-th call) from hooks this test registers and removes."""
    modules = dict(module.named_modules())
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for label in names:
        name, _, call = label.partition("@")
        calls = [0]

        def hook(mod, args, output, label=label, want=int(call or 0), calls=calls):
            if calls[0] == want:
                seen[label] = output.detach().clone()
            calls[0] += 1

        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            module(x)
    finally:
        for handle in handles:
            handle.remove()
    return seen


def test_feature_maps_equal_an_independent_capture(lite0, cat_x, assert_close):
    expected = independent_capture(lite0.module, cat_x, LITE0_LAYERS)
    before = snapshot(lite0.module, cat_x)
    maps = features.feature_maps(lite0, cat_x, layers=LITE0_LAYERS)
    assert_unchanged(before, lite0.module, cat_x)
    assert list(maps) == LITE0_LAYERS
    for label in LITE0_LAYERS:
        assert maps[label].layer == label and maps[label].method == "feature_maps"
        assert_close(maps[label].data, expected[label])
        assert_close(maps[label].meta["mean_activation"], expected[label].mean(dim=(2, 3)))
    assert maps["_blocks.14"].data.shape == (1, 192, 7, 7)


def test_feature_maps_run_one_forward_that_stops_after_the_deepest_layer(lite0, cat_x):
    forwards, head_calls = [], []
    handles = [lite0.module.register_forward_pre_hook(lambda m, a: forwards.append(1)),
               lite0.module._fc.register_forward_hook(lambda m, a, o: head_calls.append(1))]
    try:
        features.feature_maps(lite0, cat_x, layers=["_blocks.7", "_blocks.2"])
    finally:
        for handle in handles:
            handle.remove()
    assert len(forwards) == 1 and not head_calls


def test_feature_maps_default_walks_every_conv_in_order(model_factory, batch_factory):
    vgg = model_factory("vgg11")
    x = batch_factory(vgg)
    maps = features.feature_maps(vgg, x)
    assert list(maps) == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    assert all(r.data.shape[0] == 2 for r in maps.values())
    one = features.feature_maps(vgg, x, layers="features.8")
    assert isinstance(one, cs.Result) and torch.equal(one.data, maps["features.8"].data)
    figure = render_features.feature_walk_figure(maps, k=4)
    assert len([ax for ax in figure.axes if ax.images]) == 1 + 8 * 4  # the input, then 4 maps per layer


@pytest.mark.parametrize("mode", ["train", "mixed"])
def test_feature_maps_leave_train_mode_models_untouched(borrow, batch_factory, mode, assert_close):
    model = borrow("resnet18")
    x = batch_factory(model)
    expected = features.feature_maps(model, x, layers=["layer1", "layer3"])
    set_mode(model.module, mode)
    give_grads(model.module)
    before = snapshot(model.module, x)
    again = features.feature_maps(model, x, layers=["layer1", "layer3"])
    assert_unchanged(before, model.module, x)
    assert_close(again["layer3"].data, expected["layer3"].data)  # computed in eval mode


@pytest.mark.parametrize("layers, error, match", [
    (["_swish"], cs.LayerError, "_swish@0"),
    (["_blocks.2", "_blcks.7"], cs.LayerError, "unknown layer"),
    ([], cs.LayerError, "empty"),
])
def test_feature_maps_errors_are_one_line(lite0, cat_x, layers, error, match):
    before = snapshot(lite0.module, cat_x)
    with pytest.raises(error, match=match) as info:
        features.feature_maps(lite0, cat_x, layers=layers)
    assert "\n" not in str(info.value)
    assert_unchanged(before, lite0.module, cat_x)


def test_top_channels_and_the_grid(lite0, cat_x):
    result = features.feature_maps(lite0, cat_x, layers="_swish@0")
    means = result.data[0].mean(dim=(1, 2))
    top = features.top_channels(result, 8)
    assert top.tolist() == means.argsort(descending=True)[:8].tolist()
    figure = render_features.feature_map_grid(result)  # seed 001: 2 x 4 maps
    titled = [ax.get_title() for ax in figure.axes if ax.images]
    assert len(titled) == 8 and titled[0].startswith(f"ch {int(top[0])} ")


def test_saturated_maps_are_drawn_bright_not_blank():
    maps = torch.stack([torch.full((2, 2), 6.0), torch.tensor([[-1.0, 1.0], [0.0, 3.0]]), torch.tensor([[0.0, 2.0], [1.0, 4.0]])])
    scaled = render_features.scale_maps(maps)  # a layer with negative values: each map by its largest |value|
    assert np.allclose(scaled[0], 1)  # ReLU6 at 6 everywhere: maximal, not "nothing"
    assert np.allclose(scaled[1], [[-1 / 3, 1 / 3], [0, 1]])  # signed: 0 stays 0 (the diverging map's white)
    assert np.allclose(scaled[2], [[0, 0.5], [0.25, 1]])
    assert render_features.maps_scale(maps).signed and render_features.maps_scale(maps).cmap == "RdBu_r"
    unsigned = render_features.scale_maps(maps[[0, 2]])  # no negative values: in [0, 1], 0 stays dark
    assert np.allclose(unsigned[1], [[0, 0.5], [0.25, 1]]) and not render_features.maps_scale(maps[[0, 2]]).signed


# -- activation as a mask --------------------------------------------------------------------------
def test_activation_mask_is_the_picture_times_the_scaled_activation():
    picture = np.full((8, 8, 3), 200, dtype=np.uint8)
    constant = render_features.activation_mask(picture, torch.ones(2, 2))
    assert np.array_equal(constant, picture)
    corner = torch.zeros(4, 4)
    corner[0, 0] = 3.0
    masked = render_features.activation_mask(picture, corner)
    assert masked[0, 0].min() > 100 and masked[-1, -1].max() == 0  # bright where active, black elsewhere
    negative = render_features.activation_mask(picture, -torch.ones(2, 2))
    assert negative.max() == 0  # negative activations are clipped to zero
    hard = render_features.activation_mask(picture, corner, threshold=0.5)
    assert set(np.unique(hard)) <= {0, 200}


def test_activation_masks_figure(lite0, cat_x):
    result = features.feature_maps(lite0, cat_x, layers="_blocks.7")
    figure = render_features.activation_masks_figure(result, k=3)
    assert next(ax.get_title() for ax in figure.axes if ax.images) == "input"
    assert len([ax for ax in figure.axes if ax.images]) == 4


# -- layer details ---------------------------------------------------------------------------------
def test_layer_info_has_config_and_weight_shapes(model_factory):
    vgg = model_factory("vgg11")
    info = features.layer_info(vgg, "features.0")
    assert info.type == "Conv2d" and info.output_shape == (64, 224, 224)
    assert info.config["in_channels"] == 3 and info.config["out_channels"] == 64 and info.config["kernel_size"] == (3, 3)
    assert info.weights == {"weight": (64, 3, 3, 3), "bias": (64,)} and info.params == 64 * 27 + 64
    assert info.as_dict()["weights"]["weight"] == [64, 3, 3, 3]
    table = features.layer_access(vgg)
    assert list(table)[:3] == ["features.0", "features.1", "features.2"]
    assert table["classifier.0"].weights["weight"] == (64, 512 * 7 * 7)
    assert sum(row.params for row in table.values()) == sum(p.numel() for p in vgg.module.parameters())
    resnet = model_factory("resnet18")
    bn = features.layer_info(resnet, "bn1")
    assert bn.weights["running_mean"] == (64,) and bn.config["eps"] == 1e-5


# -- registered tools: kinds, pictures, options ------------------------------------------------------
MY_FAMILIES = ("features", "model", "embedding")


def test_every_tool_here_is_described_bounded_and_drawable():
    """Each tool offers options with help for a person, bounds on what costs time or memory, a cost function,
    a report title and note, and returns a kind render can draw."""
    tools = [t for family in MY_FAMILIES for t in cs.tools(family)]
    assert {t.name for t in tools} >= {"filters", "feature_maps", "maximize", "class_image", "dream", "summary", "predict", "embed"}
    for tool in tools:
        assert tool.cost is not None and tool.report is not None and tool.report.title and tool.report.note, tool.name
        assert tool.returns in cs.render.kinds(), tool.name
        for spec in tool.option_specs():
            assert spec.help and len(spec.help) > 15, f"{tool.name}.{spec.name}"
            if spec.kind in ("int", "float", "int|pair", "pair", "int|list") and spec.name not in ("seed",):
                assert spec.maximum is not None, f"{tool.name}.{spec.name} has no upper bound"
        given = tool.report.options  # a dict, or a function of the model
        given = given(cs.load_model("efficientnet_lite0")) if callable(given) else given
        for options in (tool.quick, given, tool.report.quick or {}):  # valid where given
            try:
                tool.options_model.model_validate(options)
            except ValidationError as error:
                assert all(e["type"] == "missing" for e in error.errors()), (tool.name, options, error)


def test_filters_and_feature_maps_know_their_kind_and_save(lite0, cat_x, tmp_path):
    from PIL import Image

    kernels = features.filters(lite0)
    assert kernels.kind == "filters"
    for suffix in ("png", "jpg", "pdf", "html"):
        assert kernels.save(tmp_path / f"filters.{suffix}").stat().st_size > 0
    assert "smoothness" in cs.render.text(kernels) and kernels._repr_png_()[:4] == b"\x89PNG"
    one = features.feature_maps(lite0, cat_x, layer="_blocks.7")
    assert one.kind == "feature_maps" and one.data.shape == (1, 80, 14, 14)
    assert Image.open(one.save(tmp_path / "maps.png")).size[0] > 200
    assert "strongest channels of picture 0" in cs.render.text(one)
    assert len([ax for ax in cs.render.figure(one, masks=True, k=3).axes if ax.images]) == 4  # the picture seen through 3
    walk = features.feature_maps(lite0, cat_x, layer=["_blocks.2", "_blocks.7", "_fc"])
    assert isinstance(walk, dict) and isinstance(walk, features.FeatureWalk) and walk.kind == "feature_walk"
    assert list(walk) == ["_blocks.2", "_blocks.7", "_fc"] and walk["_fc"].data.shape == (1, 1000)
    assert Image.open(walk.save(tmp_path / "walk.png")).size[1] > 300
    assert cs.render.text(walk).splitlines()[0] == "_blocks.2: (24, 56, 56)"
    assert "vector of 1000 values" in "".join(t.get_text() for ax in cs.render.figure(walk).axes for t in ax.texts)
    assert cs.render.figure(walk["_fc"]).axes[0].get_title().startswith("_fc: the 16 largest")
    legacy = features.feature_maps(lite0, cat_x, layers=["_blocks.2", "_blocks.7"])  # the older keyword
    assert torch.equal(legacy["_blocks.7"].data, walk["_blocks.7"].data)
    with pytest.raises(cs.ConvscopeError, match="not both"):
        features.feature_maps(lite0, cat_x, layer="_blocks.2", layers=["_blocks.7"])


def test_feature_maps_max_layers_spreads_the_walk(model_factory, batch_factory):
    vgg = model_factory("vgg11")
    x = batch_factory(vgg)
    walk = features.feature_maps(vgg, x, max_layers=3)
    assert list(walk) == ["features.0", "features.11", "features.18"]  # first, middle, last of the 8 convolutions
    cost = cs.registry.get("feature_maps").cost_of(vgg, x, max_layers=3)
    assert cost.forwards == 2 * (64 / 224) ** 2
    assert cost.memory == 3 * 4 * 2 * sum(r.data[0].numel() for r in walk.values())  # each map three times, float32
    with pytest.raises(cs.OptionError, match="max_layers=0 is out of range"):
        features.feature_maps(vgg, x, max_layers=0)


def test_feature_modules_never_import_render():
    """Compute code hands objects to render by their kind; it never draws (nor imports render, even lazily)."""
    import ast
    from pathlib import Path

    package = Path(features.__file__).parent
    for source in [*package.glob("*.py"), package.parent / "layers.py"]:
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom | ast.Import):
                names = [getattr(node, "module", None) or "", *(alias.name for alias in node.names)]
                assert not any("render" in name for name in names), f"{source.name} imports {names}"
