"""Loading models (bundled, torchvision, files) and wrapping modules: offline, safe, clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

import convscope as cs

CAT_CLASSES = set(range(281, 288))  # tabby .. cheetah: the domestic and wild cats of ImageNet


def test_lite0_is_pretrained_offline_and_sees_the_cat() -> None:
    model = cs.load_model("efficientnet_lite0")
    x = model.preprocess(cs.sample_image("cat"))
    assert x.shape == (1, 3, 224, 224) and x.dtype == torch.float32
    top5 = model.predict(x, k=5)[0]
    assert len(top5) == 5 and {p.index for p in top5[:3]} <= CAT_CLASSES
    assert abs(sum(p.probability for p in model.predict(x, k=1000)[0]) - 1) < 1e-4
    assert top5[0].label == model.labels[top5[0].index]
    coffee = model.predict(model.preprocess(cs.sample_image("coffee")), k=1)[0][0]
    assert coffee.label == "espresso" and coffee.probability > 0.8


def test_torchvision_random_weights_are_reproducible_and_leave_the_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = cs.load_model("resnet18", weights=None)
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is untouched
    b = cs.load_model("resnet18", weights="none")
    assert all(torch.equal(p, q) for p, q in zip(a.module.parameters(), b.module.parameters()))
    assert a.input_size == (224, 224) and a.labels[281] == "tabby" and not a.module.training


def test_missing_pretrained_weights_give_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(cs.ModelError) as err:
        cs.load_model("resnet18")
    message = str(err.value)
    assert "weights=None" in message and "never downloads" in message and "\n" not in message


def test_cached_pretrained_weights_are_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torchvision.models as tvm

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = tvm.ResNet18_Weights.DEFAULT.url
    cached = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    cached.parent.mkdir(parents=True)
    source = tvm.resnet18(weights=None)
    torch.save(source.state_dict(), cached)
    model = cs.load_model("resnet18")
    assert torch.equal(model.module.fc.weight, source.fc.weight)
    assert model.input_size == (224, 224) and model.resize_size == 256


def test_state_dict_and_safetensors_files_need_arch(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = cs.load_model("resnet18", weights=None).module
    with torch.no_grad():
        source.fc.bias.fill_(0.5)
    pth, st = tmp_path / "model.pth", tmp_path / "model.safetensors"
    torch.save({"state_dict": source.state_dict()}, pth)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, st)
    for path in (pth, st):
        model = cs.load_model(path, arch="resnet18")
        assert torch.equal(model.module.fc.bias, source.fc.bias) and model.name == "model"
        with pytest.raises(cs.ModelError, match="arch="):
            cs.load_model(path)
    with pytest.raises(cs.ModelError, match="does not match"):
        cs.load_model(pth, arch="resnet34")
    custom = cs.Model(nn.Sequential(nn.Conv2d(3, 2, 3)), input_size=(8, 8))
    torch.save(custom.module.state_dict(), tmp_path / "tiny.pt")
    assert cs.load_model(tmp_path / "tiny.pt", arch=custom).input_size == (8, 8)


def test_pickled_modules_need_an_explicit_opt_in(tmp_path: Path) -> None:
    path = tmp_path / "whole.pt"
    torch.save(nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)), path)
    with pytest.raises(cs.ModelError) as err:
        cs.load_model(path)
    assert "allow_pickle=True" in str(err.value) and "\n" not in str(err.value)
    model = cs.load_model(path, allow_pickle=True)
    assert isinstance(model.module, nn.Sequential)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_torchscript_files_load(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    path = tmp_path / "scripted.pt"
    torch.jit.script(net).save(str(path))
    model = cs.load_model(path)
    x = torch.rand(1, 3, 16, 16)
    assert torch.allclose(model(x), net(x))
    assert cs.saliency(model, x).data.shape == (1, 3, 16, 16)
    with pytest.raises(cs.LayerError, match="TorchScript"):
        cs.gradcam(model, x)


def test_exported_programs_load(tmp_path: Path) -> None:
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(1, 3, 16, 16)
    path = tmp_path / "exported.pt2"
    torch.export.save(torch.export.export(net, (x,)), str(path))
    model = cs.load_model(path, arch=cs.Model(net, input_size=(16, 16)))
    assert model.input_size == (16, 16) and torch.allclose(model(x), net(x), atol=1e-6)
    assert cs.gradcam(model, x).data.shape == (1, 1, 16, 16)


def test_unknown_names_and_files() -> None:
    with pytest.raises(cs.ModelError, match="resnet50"):
        cs.load_model("resnet05")
    with pytest.raises(cs.ModelError, match="IMAGENET1K_V1"):
        cs.load_model("resnet18", weights="IMAGENET9K")
    with pytest.raises(cs.ModelError, match="not a known name"):
        cs.load_model("no/such/model.pt")


def test_wrapping_a_custom_module() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    model = cs.Model(net, input_size=28, mean=(0.5,), std=(0.25,), labels=[str(d) for d in range(10)], name="digits")
    assert model.channels == 1 and model.input_size == (28, 28)
    x = model.preprocess([cs.sample_image("coffee"), cs.sample_image("cat")])
    assert x.shape == (2, 1, 28, 28)
    assert float(x.min()) >= (0 - 0.5) / 0.25 - 1e-6 and float(x.max()) <= (1 - 0.5) / 0.25 + 1e-6
    assert model.predict(x, k=3)[0][0].label in {str(d) for d in range(10)}
    with pytest.raises(cs.ModelError):
        cs.Model("not a module")  # type: ignore[arg-type]


def test_preprocess_crop_is_what_the_network_sees() -> None:
    model = cs.load_model("efficientnet_lite0")
    image = cs.sample_image("cat")  # 451 x 300
    crop = model.crop(image)
    assert crop.size == (224, 224)
    x = model.preprocess(image)
    pictures = cs.render.tensor_to_images(x, model.mean, model.std)
    import numpy as np

    assert np.abs(pictures[0].astype(int) - np.asarray(crop).astype(int)).max() <= 1


def test_inputs_are_validated() -> None:
    model = cs.load_model("efficientnet_lite0")
    x = model.preprocess(cs.sample_image("cat"))
    cases = [(x[0], "batch dimension"), (x[:, :2], "3"), (x.to(torch.uint8), "dtype"),
             (x.permute(0, 2, 3, 1), "channels"), (torch.full_like(x, float("nan")), "NaN"), (x[:0], "empty"),
             (cs.sample_image("cat"), "preprocess")]
    for bad, words in cases:
        with pytest.raises(cs.InputError, match=words):
            cs.gradcam(model, bad)


def test_predict_tool_is_a_table_of_the_top_classes() -> None:
    model = cs.load_model("efficientnet_lite0")
    x = model.preprocess([cs.sample_image("cat"), cs.sample_image("coffee")])
    table = cs.features.predict(model, x, k=3)
    assert isinstance(table, cs.Table) and table.kind == "table"
    assert table.answers == model.predict(x, k=3)
    assert table.columns == ("picture", "rank", "class", "label", "probability") and len(table.rows) == 6
    assert table.rows[3][:4] == (1, 1, 967, "espresso")
    assert "espresso" in table and "<td>espresso</td>" in table.to_html()
    assert cs.registry.get("predict").cost_of(model, x).forwards == 2
    with pytest.raises(cs.OptionError, match=r"k=0 is out of range; allowed: 1 ≤ value ≤ 1,000"):
        cs.features.predict(model, x, k=0)
    assert len(cs.features.predict(model, x[:1], k=1000).rows) == 1000
