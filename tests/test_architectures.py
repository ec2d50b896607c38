"""Any classifier a user brings: the default CAM layer is the one a person would choose, its Grad-CAM has spread, and
every registered attribution method works — or refuses with a one-line reason — with the model left untouched.

Random weights (nothing is downloaded), BatchNorm statistics warmed on noise so outputs are not ~0, and heads that
their constructors initialize to zeros (torchvision's ViT: every gradient would be zero) drawn at random instead.
"""

from __future__ import annotations

import functools

import pytest
import torch
from test_state import assert_unchanged, snapshot
from torch import nn

import convscope as cs
from conftest import registered_methods

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")

# (source:name, expected default CAM layer, picture side); tv = torchvision, timm = timm. The expected layers were
# each looked at: the last stage/block output that is still a map (VGG's last ReLU before the pooling, ResNet's layer4),
# the final norm of channels-last (Swin) or token (EfficientFormer, MaxViT) stages, the input of the last attention
# (norm1) for class-token transformers whose last block's patch tokens never reach the head.
ARCHITECTURES = [
    ("tv:alexnet", "features.11", 224),
    ("tv:vgg11_bn", "features.27", 128),
    ("tv:resnet18", "layer4", 128),
    ("tv:densenet121", "features.norm5", 128),
    ("tv:mobilenet_v2", "features.18", 128),
    ("tv:mobilenet_v3_small", "features.12", 128),
    ("tv:shufflenet_v2_x0_5", "conv5", 128),
    ("tv:squeezenet1_1", "features.12", 128),
    ("tv:mnasnet0_5", "layers.16", 128),
    ("tv:efficientnet_b0", "features.8", 128),
    ("tv:regnet_y_400mf", "trunk_output", 128),
    ("tv:googlenet", "inception5b", 128),
    ("tv:convnext_tiny", "features.7", 128),
    ("tv:swin_t", "norm", 224),
    ("tv:maxvit_t", "blocks.3", 224),
    ("tv:vit_b_16", "encoder.layers.encoder_layer_11.ln_1", 224),
    ("timm:resnet18d", "layer4", 128),
    ("timm:dla34", "level5", 128),
    ("timm:ghostnet_100", "blocks", 128),
    ("timm:ese_vovnet19b_dw", "stages", 128),
    ("timm:fastvit_t8", "final_conv", 128),
    ("timm:convnext_atto", "stages", 128),
    ("timm:efficientnet_b0", "bn2", 128),
    ("timm:tf_efficientnet_lite0", "bn2", 128),
    ("timm:mixnet_s", "bn2", 128),
    ("timm:rexnet_100", "features", 128),
    ("timm:mobilenetv3_small_050", "blocks", 128),
    ("timm:lcnet_050", "blocks", 128),
    ("timm:regnetx_002", "s4", 128),
    ("timm:repvgg_a0", "stages", 128),
    ("timm:hrnet_w18_small", "final_layer", 128),
    ("timm:mobilevit_xxs", "final_conv", 128),
    ("timm:edgenext_xx_small", "stages", 128),
    ("timm:poolformer_s12", "stages", 128),
    ("timm:efficientformer_l1", "norm", 224),
    ("timm:levit_128s", "stages", 224),
    ("timm:vit_tiny_patch16_224", "blocks.11.norm1", 224),
    ("timm:deit_tiny_distilled_patch16_224", "blocks.11.norm1", 224),
    ("timm:swin_tiny_patch4_window7_224", "norm", 224),
    ("timm:maxvit_tiny_tf_224", "stages", 224),
    ("timm:coat_lite_tiny", "serial_blocks4.1.norm1", 224),
    ("timm:pit_ti_224", "transformers.2.blocks.3.norm1", 224),
    ("timm:cait_xxs24_224", "blocks_token_only.1.norm1", 224),
    ("timm:xcit_nano_12_p16_224", "cls_attn_blocks.1.norm1", 224),
]
IDS = [name.split(":", 1)[1] for name, _, _ in ARCHITECTURES]


def _redraw_zero_heads(module: nn.Module) -> None:
    """A Linear initialized to all zeros (a constant output) gets random weights: 'random weights' means a model whose
    output depends on its input."""
    generator = torch.Generator().manual_seed(1)
    for sub in module.modules():
        if isinstance(sub, nn.Linear) and not sub.weight.any():
            with torch.no_grad():
                sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * 0.02)


@functools.cache
def build(name: str, side: int) -> cs.Model:
    """The architecture with random weights (seeded), BatchNorm warmed on noise, in eval mode, as a cs.Model."""
    source, arch = name.split(":", 1)
    torch.manual_seed(0)
    if source == "tv":
        kwargs = {"aux_logits": False, "init_weights": True} if arch in ("googlenet", "inception_v3") else {}
        module = getattr(torchvision.models, arch)(weights=None, **kwargs)
    else:
        module = timm.create_model(arch, pretrained=False, **({"img_size": side} if "maxvit" in arch else {}))
    _redraw_zero_heads(module)
    module.train()
    with torch.no_grad():
        module(torch.rand(4, 3, side, side, generator=torch.Generator().manual_seed(2)))
    module.eval()
    return cs.Model(module, input_size=(side, side), name=arch)


def picture(side: int) -> torch.Tensor:
    return torch.rand(1, 3, side, side, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("name, expected, side", ARCHITECTURES, ids=IDS)
def test_the_default_layer_is_the_pinned_one_and_its_map_has_spread(name: str, expected: str, side: int) -> None:
    model = build(name, side)
    assert cs.default_cam_layer(model, (3, side, side)).label == expected
    x = picture(side)
    with torch.no_grad():
        top3 = model.module(x).topk(3, dim=1).indices[0].tolist()
    result = cs.gradcam(model, x.expand(3, -1, -1, -1), target=top3)  # random weights: one class's map may be all < 0
    assert result.layer == expected
    maps = result.maps()
    assert torch.isfinite(maps).all()
    shares = [float((m > 0.1 * m.max()).float().mean()) if m.max() > 0 else 0.0 for m in maps]
    assert max(shares) > 0.005, f"flat Grad-CAM maps for the top-3 classes (lit shares {shares})"


def test_there_are_thirty_or_more_architectures_from_both_libraries() -> None:
    assert len(ARCHITECTURES) >= 30 and len(MATRIX_CASES) == len(MATRIX)
    assert {name.split(":")[0] for name, _, _ in ARCHITECTURES} == {"tv", "timm"}


METHODS = registered_methods()
# one of each kind for the every-method matrix (the whole table would take CI ten minutes): plain, dense and mobile CNNs,
# a 1x1-conv head (DLA), SE gates (GhostNet), channels-last inner layers (ConvNeXt), channels-last stages (Swin), a
# conv/attention hybrid (FastViT), tokens without a class token (LeViT), a class token (ViT), class + distillation
# tokens (DeiT)
MATRIX = ["tv:resnet18", "tv:densenet121", "tv:mobilenet_v3_small", "timm:dla34", "timm:ghostnet_100", "timm:convnext_atto",
          "tv:swin_t", "timm:fastvit_t8", "timm:levit_128s", "timm:vit_tiny_patch16_224", "timm:deit_tiny_distilled_patch16_224"]
MATRIX_CASES = [case for case in ARCHITECTURES if case[0] in MATRIX]


def _one_line(error: Exception) -> str:
    text = str(error)
    assert "\n" not in text.strip() and text.strip(), f"not one line: {text!r}"
    assert "Traceback" not in text
    return text


@pytest.mark.parametrize("name, expected, side", MATRIX_CASES, ids=[name.split(":", 1)[1] for name, _, _ in MATRIX_CASES])
def test_every_method_works_or_refuses_in_one_line_and_the_model_is_untouched(name: str, expected: str, side: int) -> None:
    """Each (architecture, method) cell: a finite map or picture of the input's size, or a one-line ConvscopeError.
    The one refusal allowed is the honest one: CAM needs the head to be global average pooling of the layer and one
    linear layer (not DenseNet's ReLU after it, MobileNetV3's extra convolution, DLA's 1x1 conv, a class token)."""
    model = build(name, side)
    x = picture(side)
    before = snapshot(model.module, x)
    refused = {}
    for method in METHODS:
        try:
            result = method.fn(model, x, target=0)
        except cs.ConvscopeError as error:
            refused[method.name] = _one_line(error)
            continue
        data = result.data
        assert data.shape[0] == 1 and tuple(data.shape[-2:]) == (side, side), (method.name, tuple(data.shape))
        assert torch.isfinite(data).all(), method.name
    assert_unchanged(before, model.module, x)
    allowed = {"cam"}
    assert set(refused) <= allowed, {k: v for k, v in refused.items() if k not in allowed}


# -- other kinds of model: Keras, ONNX, segmentation, detection, video -------------------------------------------------
def _keras_vgg() -> tuple[cs.Model, torch.Tensor, object]:
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((64, 64, 3)), keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
                            keras.layers.MaxPooling2D(), keras.layers.Conv2D(16, 3, activation="relu", name="conv2"),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, name="logits")])
    return cs.load_model(net), picture(64), 0


def _onnx_resnet18(tmp_path_factory: pytest.TempPathFactory) -> tuple[cs.Model, torch.Tensor, object]:
    pytest.importorskip("onnx2torch")
    torch.manual_seed(0)
    net = torchvision.models.resnet18(weights=None).eval()
    path = tmp_path_factory.mktemp("onnx") / "resnet18.onnx"
    torch.onnx.export(net, torch.rand(1, 3, 64, 64), str(path), dynamo=False)
    return cs.load_model(path), picture(64), 0


def _segmentation() -> tuple[cs.Model, torch.Tensor, object]:
    torch.manual_seed(0)
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None)
    net.train()
    with torch.no_grad():
        net(torch.rand(4, 3, 96, 96))
    region = torch.zeros(96, 96, dtype=torch.bool)
    region[24:72, 24:72] = True
    return cs.Model(net.eval(), input_size=(96, 96)), picture(96), cs.targets.segmentation(1, mask=region)


def _detection() -> tuple[cs.Model, torch.Tensor, object]:
    torch.manual_seed(0)
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                             box_score_thresh=0.0).eval()
    x = picture(128)
    with torch.no_grad():
        first = net(x)[0]["boxes"][0]
    return cs.Model(net, input_size=(128, 128), mean=None, std=None), x, cs.targets.box(first.tolist())


def _video() -> tuple[cs.Model, torch.Tensor, object]:
    torch.manual_seed(0)
    net = torchvision.models.video.r3d_18(weights=None).eval()
    clip = torch.rand(1, 3, 4, 56, 56, generator=torch.Generator().manual_seed(3))
    return cs.Model(net, input_size=(4, 56, 56), mean=None, std=None), clip, 0


# kind -> (builder, expected default layer, the methods it may refuse: the README's table says why)
KINDS = {
    "keras_vgg": (_keras_vgg, "conv2", set()),
    "onnx_resnet18": (_onnx_resnet18, None, set()),
    "lraspp": (_segmentation, "backbone.16", {"cam"}),
    "fasterrcnn_mobilenet": (_detection, "backbone.body.16", {"cam"}),
    "r3d_18": (_video, "layer4", {"rise", "superpixels", "drise"}),
}


@pytest.fixture(scope="module")
def kind_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[cs.Model, torch.Tensor, object]]:
    built: dict[str, tuple[cs.Model, torch.Tensor, object]] = {}

    def get(kind: str) -> tuple[cs.Model, torch.Tensor, object]:
        if kind not in built:
            builder = KINDS[kind][0]
            built[kind] = builder(tmp_path_factory) if builder is _onnx_resnet18 else builder()
        return built[kind]

    return get


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_method_on_each_kind_of_model(kind: str, kind_models) -> None:
    """Keras, ONNX, segmentation, detection and video models: the default layer, then every registered method works
    (a finite result the input's size) or refuses in one line — only where the README's table says it does."""
    model, x, target = kind_models(kind)
    _, expected, may_refuse = KINDS[kind]
    layer = cs.default_cam_layer(model, tuple(x.shape[1:])).label
    if expected is not None:
        assert layer == expected
    before = snapshot(model.module, x)
    refused = {}
    for method in METHODS:
        try:
            result = method.fn(model, x, target=target)
        except cs.ConvscopeError as error:
            refused[method.name] = _one_line(error)
            continue
        assert tuple(result.data.shape[2:]) == tuple(x.shape[2:]), (method.name, tuple(result.data.shape))
        assert torch.isfinite(result.data).all(), method.name
    assert_unchanged(before, model.module, x)
    assert set(refused) <= may_refuse, {k: v for k, v in refused.items() if k not in may_refuse}
