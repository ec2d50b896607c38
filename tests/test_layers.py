"""Layer listing, summary, name resolution and the automatic CAM layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import convscope as cs


class Shared(nn.Module):
    """A module that reuses one ReLU three times (like torchvision's Bottleneck)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.relu = nn.ReLU()
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.conv1(x))
        x = self.relu(self.conv2(x) + x)
        return self.head(self.relu(x).mean(dim=(2, 3)))


def test_layers_in_execution_order_with_shared_calls_named() -> None:
    rows = cs.layers(Shared(), input_size=(3, 8, 8))
    assert [r.name for r in rows] == ["conv1", "relu@0", "conv2", "relu@1", "relu@2", "head"]
    assert rows[0].output_shape == (4, 8, 8) and rows[-1].output_shape == (2,)
    assert rows[0].params == 3 * 4 * 9 + 4 and rows[1].params == 0 and all(r.trainable for r in rows)


def test_summary_totals_and_frozen_layers() -> None:
    model = cs.load_model("vgg11", weights=None)
    for p in model.module.features.parameters():
        p.requires_grad_(False)
    text = cs.summary(model)
    total = sum(p.numel() for p in model.module.parameters())
    frozen = sum(p.numel() for p in model.module.features.parameters())
    assert f"Total params: {total:,}" in text and f"Non-trainable params: {frozen:,}" in text
    assert "features.0 (Conv2d)" in text and "(None, 64, 224, 224)" in text
    rows = cs.layers(model)
    assert sum(r.params for r in rows) == total
    assert not rows[0].trainable and rows[-1].trainable


@pytest.mark.parametrize("name, expected", [
    ("vgg16", "features.29"), ("alexnet", "features.11"), ("resnet18", "layer4"),
    ("densenet121", "features.norm5"), ("mobilenet_v2", "features.18"), ("efficientnet_lite0", "_swish@1"),
])
def test_default_cam_layer_is_the_last_conv_map(name: str, expected: str) -> None:
    model = cs.load_model(name, weights=None)
    assert cs.default_cam_layer(model, (3, 224, 224)).label == expected


def test_resolve_layer_names_modules_and_calls() -> None:
    model = cs.load_model("resnet18", weights=None)
    assert cs.resolve_layer(model, "layer4.1.conv2").module is model.module.layer4[1].conv2
    assert cs.resolve_layer(model, model.module.layer3).name == "layer3"
    ref = cs.resolve_layer(model, "layer1.0.relu@1")
    assert ref.call == 1 and ref.label == "layer1.0.relu@1"
    with pytest.raises(cs.LayerError, match="did you mean 'layer4'"):
        cs.resolve_layer(model, "layer5")
    with pytest.raises(cs.LayerError, match="not part of this model"):
        cs.resolve_layer(model, nn.Conv2d(1, 1, 1))
    with pytest.raises(cs.LayerError, match="call number"):
        cs.resolve_layer(model, "layer1.0.relu@x")
    with pytest.raises(cs.LayerError, match="whole model"):
        cs.resolve_layer(model, model.module)


def test_shared_layer_calls_work_in_methods() -> None:
    model = cs.load_model("resnet18", weights=None)
    x = torch.rand(1, 3, 64, 64)
    block_out = cs.gradcam(model, x, layer="layer4.1")
    last_relu = cs.gradcam(model, x, layer="layer4.1.relu@1")  # the block's final ReLU = its output
    assert torch.allclose(block_out.data, last_relu.data, atol=1e-6)
    with pytest.raises(cs.LayerError, match="@"):
        cs.gradcam(model, x, layer="layer4.1.relu")
    with pytest.raises(cs.LayerError, match="fewer than call 5"):
        cs.gradcam(model, x, layer="layer4.1.relu@5")


def test_models_without_conv_or_unused_layers() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5), nn.Linear(5, 5))
    x = torch.rand(2, 3, 8, 8)
    with pytest.raises(cs.LayerError, match=r"no layer fits as the default CAM layer.*map or a token grid"):
        cs.gradcam(mlp, x)
    with pytest.raises(cs.LayerError, match="not a \\(B, C, h, w\\)"):
        cs.gradcam(mlp, x, layer="1")

    class Unused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 3)
            self.spare = nn.Conv2d(3, 2, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.conv(x).mean(dim=(2, 3))

    with pytest.raises(cs.LayerError, match="did not run"):
        cs.gradcam(Unused(), x, layer="spare")
    with pytest.raises(cs.ModelError, match="input_size"):
        cs.layers(mlp)


def test_summary_is_a_table_that_prints_as_text() -> None:
    model = cs.load_model("resnet18", weights=None)
    table = cs.features.summary(model)
    assert isinstance(table, cs.Table) and isinstance(table, str) and table.kind == "table"
    assert "Total params" in table and str(table).splitlines()[0].startswith('Model: "resnet18"')
    assert table.columns == ("layer", "type", "output shape", "parameters")
    assert table.rows[0] == ("conv1", "Conv2d", (64, 112, 112), 64 * 3 * 49)
    assert len(table.rows) == len(cs.layers(model)) and sum(r[3] for r in table.rows) == sum(p.numel() for p in model.module.parameters())
    html = table.to_html()
    assert html.startswith("<details") and "<table" in html and "<td>layer4.1.conv2</td>" in html  # 60 rows: folded
    assert cs.summary(model) == table  # the same text whichever way it is called
    small = cs.features.summary(model, input_size=(3, 64, 64))
    assert "(None, 64, 32, 32)" in small
    assert cs.registry.get("summary").cost_of(model, input_size=(112, 112)).forwards == 0.25
    with pytest.raises(cs.OptionError, match="input_size"):
        cs.features.summary(model, input_size=(0, 64))
