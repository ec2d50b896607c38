"""ONNX files through onnx2torch (the ``convscope[onnx]`` extra): the same output as the torch model they were exported
from, layers listed and addressed by their graph node names, saliency and a CAM; one line when the extra is missing,
the file is not ONNX, or a node cannot be converted."""

from __future__ import annotations

import builtins
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import convscope as cs
from convscope.cli import main
from convscope.errors import ModelError


def resnet18() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return torchvision.models.resnet18(weights=None, num_classes=10).eval()


def export(module: nn.Module, path: Path, shape: tuple[int, ...], *, dynamic_batch: bool = True, **options: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the legacy exporter's deprecation notice
        torch.onnx.export(module, torch.rand(*shape), str(path), dynamo=False, input_names=["input"],
                          dynamic_axes={"input": {0: "batch"}} if dynamic_batch else None, **options)
    return path


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(resnet18(), tmp_path_factory.mktemp("onnx") / "resnet18.onnx", (1, 3, 64, 64))


def test_onnx_file_gives_the_torch_models_output_and_named_layers(resnet_file: Path) -> None:
    model = cs.load_model(resnet_file)
    assert model.name == "resnet18" and model.input_size == (64, 64) and model.channels == 3
    assert model.mean == cs.models.IMAGENET_MEAN and not model.module.training
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        expected = resnet18()(x)
    torch.testing.assert_close(model.forward(x), expected, atol=1e-4, rtol=1e-4)
    names = [info.name for info in cs.layers(model)]
    assert names[0] == "conv1/Conv" and "layer4/layer4/1/relu_1/Relu" in names and names[-1] == "fc/Gemm"
    assert "layer4/layer4/1/conv2/Conv (Conv2d)" in str(cs.summary(model))


def test_saliency_and_a_cam_on_a_named_onnx_layer(resnet_file: Path) -> None:
    model = cs.load_model(resnet_file, labels=[f"kind {i}" for i in range(10)])
    x = torch.rand(2, 3, 64, 64)
    saliency = cs.saliency(model, x)
    assert saliency.data.shape == (2, 3, 64, 64) and bool((saliency.data.abs().sum(dim=(1, 2, 3)) > 0).all())
    cam = cs.gradcam(model, x, layer="layer4/layer4/1/relu_1/Relu")
    assert cam.data.shape == (2, 1, 64, 64) and bool(torch.isfinite(cam.data).all())
    assert cam.labels is not None and all(label.startswith("kind ") for label in cam.labels)
    torch.testing.assert_close(cam.data, cs.gradcam(resnet18(), x, layer="layer4.1.relu@1").data, atol=1e-4, rtol=1e-3)


def test_cli_explains_an_onnx_file(resnet_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "saliency.png"
    assert main(["saliency", "cat", "--model", str(resnet_file), "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


def test_a_node_onnx2torch_cannot_convert_is_one_line(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    picture = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    spectrum = helper.make_tensor_value_info("output", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("DFT", ["input"], ["output"], name="spectrum")], "dft", [picture], [spectrum])
    path = tmp_path / "dft.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(path))
    with pytest.raises(ModelError) as err:
        cs.load_model(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("dft.onnx: onnx2torch cannot convert the operation DFT (opset 20); ")


def test_not_an_onnx_file_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x08\x01garbage that is not a protobuf graph")
    with pytest.raises(ModelError, match=r"junk\.onnx: not (a readable ONNX file|an ONNX model)"):
        cs.load_model(junk)
    with pytest.raises(ModelError, match=r"junk\.onnx: not (a readable ONNX file|an ONNX model)"):
        cs.load_model(junk, allow_pickle=True)  # never unpickled


def test_missing_extra_names_it(resnet_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def without_onnx2torch(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.split(".")[0] == "onnx2torch":
            raise ModuleNotFoundError("No module named 'onnx2torch'", name="onnx2torch")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", without_onnx2torch)
    with pytest.raises(ModelError) as err:
        cs.load_model(resnet_file)
    assert str(err.value) == ("ONNX files need the packages onnx and onnx2torch (onnx2torch is missing): "
                              "pip install 'convscope[onnx]'")
