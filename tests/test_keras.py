"""Keras 3 models (torch backend) and .keras files: layers listed and addressed by their Keras names, the same output
as Keras' own call, gradients to the input, feature maps and CAMs on a named layer, the user's Keras model untouched.
Small models with random weights, built offline."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import convscope as cs
from convscope.adapters.keras import KerasLayer, import_keras
from convscope.cli import main
from convscope.errors import InputError, ModelError
from convscope.models import as_model

keras = import_keras()  # sets KERAS_BACKEND=torch when keras is not imported yet
layers = keras.layers


def vgg_like() -> keras.Model:
    """The articles' VGG-style Sequential: two conv blocks with max pooling, then dense layers (32x32 RGB, 4 classes)."""
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((32, 32, 3)),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv1"),
        layers.Conv2D(8, 3, padding="same", activation="relu", name="block1_conv2"),
        layers.MaxPooling2D(name="block1_pool"),
        layers.Conv2D(16, 3, padding="same", activation="relu", name="block2_conv1"),
        layers.MaxPooling2D(name="block2_pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(16, activation="relu", name="fc1"),
        layers.Dense(4, name="predictions"),
    ], name="vgg_like")


def branchy() -> keras.Model:
    """A functional model with two branches joined by Add, and a BatchNormalization (moving statistics)."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((24, 24, 3))
    left = layers.Conv2D(6, 3, padding="same", name="left")(inputs)
    right = layers.Conv2D(6, 1, name="right")(inputs)
    joined = layers.Add(name="add")([left, right])
    joined = layers.BatchNormalization(name="bn")(joined)
    joined = layers.ReLU(name="relu")(joined)
    pooled = layers.GlobalAveragePooling2D(name="gap")(joined)
    return keras.Model(inputs, layers.Dense(3, name="logits")(pooled), name="branchy")


def keras_output(model: keras.Model, x: torch.Tensor) -> torch.Tensor:
    """Keras' own answer for (B, C, H, W) pictures: the model called on (B, H, W, C)."""
    with torch.no_grad():
        return model(x.permute(0, 2, 3, 1).contiguous())


def manual_gradcam(model: keras.Model, x: torch.Tensor, layer: str, target: int) -> torch.Tensor:
    """Grad-CAM (Selvaraju et al. 2017) by hand: ReLU(sum_c mean_hw(d score / d A) * A) on a channels-last layer."""
    probe = keras.Model(model.inputs, [model.get_layer(layer).output, model.outputs[0]])
    activations, scores = probe(x.permute(0, 2, 3, 1).contiguous())
    grads, = torch.autograd.grad(scores[:, target].sum(), activations)
    return torch.relu((grads.mean(dim=(1, 2), keepdim=True) * activations).sum(-1)).detach()


def snapshot(model: keras.Model) -> list[tuple[str, bool, bool, np.ndarray]]:
    return [(v.path, v.trainable, v.value.requires_grad, v.numpy().copy()) for v in model.weights]


def assert_untouched(model: keras.Model, before: list[tuple[str, bool, bool, np.ndarray]]) -> None:
    after = snapshot(model)
    assert [a[:3] for a in after] == [b[:3] for b in before]
    for (path, *_, value), (_, *_, old) in zip(after, before):
        np.testing.assert_array_equal(value, old, err_msg=path)


@pytest.fixture(scope="module")
def vgg() -> keras.Model:
    return vgg_like()


def test_layers_are_listed_and_summarized_by_their_keras_names(vgg: keras.Model) -> None:
    model = cs.load_model(vgg)
    assert model.input_size == (32, 32) and model.channels == 3 and model.mean is None and model.std is None
    names = [info.name for info in cs.layers(model)]
    assert names == ["block1_conv1", "block1_conv2", "block1_pool", "block2_conv1", "block2_pool", "flatten", "fc1",
                     "predictions"]
    table = str(cs.summary(model))
    assert "block2_conv1 (Conv2D)" in table and "predictions (Dense)" in table
    params = sum(int(np.prod(v.shape)) for v in vgg.weights)
    assert f"Total params: {params:,}" in table
    assert all(getattr(m, "convscope_channels_last", False) for m in model.module.children())


def test_output_equals_keras_and_gradients_reach_the_input(vgg: keras.Model) -> None:
    before = snapshot(vgg)
    model = as_model(vgg)
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(model.forward(x), keras_output(vgg, x), atol=1e-5, rtol=1e-5)
    picture = model.preprocess(cs.sample_image("cat"))
    assert picture.shape == (1, 3, 32, 32)
    top = model.predict(picture, k=1)[0][0]
    assert top.index == int(keras_output(vgg, picture).argmax())
    saliency = cs.saliency(model, x)
    assert saliency.data.shape == (2, 3, 32, 32) and bool((saliency.data.abs().sum(dim=(1, 2, 3)) > 0).all())
    assert_untouched(vgg, before)


def test_feature_maps_and_cams_on_a_named_keras_layer(vgg: keras.Model) -> None:
    before = snapshot(vgg)
    model = cs.load_model(vgg)
    x = torch.rand(2, 3, 32, 32)
    maps = cs.feature_maps(model, x, layer="block2_conv1")
    assert maps.data.shape == (2, 16, 16, 16)  # (B, C, h, w): read from Keras' (B, h, w, C)
    with torch.no_grad():
        inner = keras.Model(vgg.inputs, vgg.get_layer("block2_conv1").output)(x.permute(0, 2, 3, 1))
    torch.testing.assert_close(maps.data, inner.permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)
    for target in range(4):  # against Grad-CAM computed by hand on Keras' own (B, h, w, C) activations
        cam = cs.gradcam(model, x, layer="block1_conv2", target=target)
        assert cam.data.shape == (2, 1, 32, 32)
        torch.testing.assert_close(cam.data[:, 0], manual_gradcam(vgg, x, "block1_conv2", target), atol=1e-6, rtol=1e-4)
    assert float(cam.data.max()) > 0
    assert_untouched(vgg, before)


def test_functional_branches_keep_batchnorm_statistics_and_mode() -> None:
    model_k = branchy()
    before = snapshot(model_k)
    model = cs.load_model(model_k, labels=["a", "b", "c"])
    assert [info.name for info in cs.layers(model)] == ["left", "right", "add", "bn", "relu", "gap", "logits"]
    x = torch.rand(3, 3, 24, 24)
    torch.testing.assert_close(model.forward(x), keras_output(model_k, x), atol=1e-5, rtol=1e-5)
    cam = cs.gradcam(model, x, layer="add")
    assert cam.data.shape == (3, 1, 24, 24) and cam.labels is not None and set(cam.labels) <= {"a", "b", "c"}
    cs.saliency(model, x)
    assert_untouched(model_k, before)  # inference: the moving mean and variance did not move
    assert not model.module.training


def test_mobilenetv2_from_keras_applications() -> None:
    keras.utils.set_random_seed(2)
    net = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
    model = cs.load_model(net)
    expected = [layer.name for layer in net.layers if not isinstance(layer, layers.InputLayer)]
    assert [info.name for info in cs.layers(model)] == expected
    x = torch.rand(1, 3, 96, 96)
    torch.testing.assert_close(model.forward(x), keras_output(net, x), atol=1e-5, rtol=1e-5)
    cam = cs.gradcam(model, x, layer="Conv_1")
    assert cam.data.shape == (1, 1, 96, 96) and bool(torch.isfinite(cam.data).all())


def test_nested_models_are_addressed_by_dotted_names() -> None:
    inner = branchy()
    outer = keras.Sequential([keras.Input((24, 24, 3)), inner, layers.Dense(2, name="head")], name="outer")
    model = cs.load_model(outer)
    names = [name for name, _ in model.module.named_modules()]
    assert {"branchy", "branchy.add", "branchy.logits", "head"} <= set(names)
    x = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(model.forward(x), keras_output(outer, x), atol=1e-5, rtol=1e-5)
    assert cs.feature_maps(model, x, layer="branchy.add").data.shape == (2, 6, 24, 24)


def test_keras_file_loads_with_labels_and_normalization(tmp_path: Path) -> None:
    net = branchy()
    path = tmp_path / "branchy.keras"
    net.save(path)
    model = cs.load_model(path, labels=["x", "y", "z"], mean=[0.5], std=[0.5])
    assert model.name == "branchy" and model.labels == ["x", "y", "z"] and model.mean == (0.5,)
    assert isinstance(model.module.get_submodule("bn"), KerasLayer)
    x = torch.rand(2, 3, 24, 24)
    torch.testing.assert_close(model.forward(x), keras_output(net, x), atol=1e-5, rtol=1e-5)


def test_cli_explains_a_keras_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "vgg.keras"
    vgg_like().save(path)
    assert main(["summary", "--model", str(path)]) == 0
    assert "block1_conv2 (Conv2D)" in capsys.readouterr().out
    out = tmp_path / "cam.png"
    assert main(["gradcam", "cat", "--model", str(path), "--layer", "block2_conv1", "--out", str(out)]) == 0, capsys.readouterr().err
    assert out.stat().st_size > 0


def test_wrong_uses_are_one_line(tmp_path: Path) -> None:
    net = vgg_like()
    with pytest.raises(ModelError, match=r"this is a Keras model: wrap it with cs\.load_model"):
        cs.Model(net)
    with pytest.raises(InputError, match=r"channels-last\? use x.permute\(0, 3, 1, 2\)"):
        cs.load_model(net).forward(torch.rand(1, 32, 32, 3))

    class Subclassed(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            self.dense = layers.Dense(2)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    custom = Subclassed()
    custom(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ModelError, match="Functional"):
        cs.load_model(custom)
    junk = tmp_path / "junk.keras"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelError, match=r"junk\.keras: not a loadable Keras model") as err:
        cs.load_model(junk)
    assert "\n" not in str(err.value)


def run_python(code: str, backend: str) -> str:
    env = {**os.environ, "KERAS_BACKEND": backend}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_another_backend_is_one_line() -> None:
    """KERAS_BACKEND names another backend before keras is imported: refused before importing it. Keras already
    imported on another backend (only torch is installed here, so its backend() is made to answer 'jax'): refused."""
    refuse = "from convscope.adapters.keras import import_keras\ntry:\n    import_keras()\nexcept ValueError as exc:\n    print(exc)\n"
    line = run_python(refuse + "import sys\nprint('keras' in sys.modules)", "jax")
    assert line.splitlines() == ["KERAS_BACKEND is 'jax'; convscope runs Keras models on the torch backend: set "
                                 "KERAS_BACKEND=torch before starting Python", "False"]
    line = run_python("import keras\nkeras.backend.backend = lambda: 'jax'\n" + refuse, "torch")
    assert line == ("keras was imported with the 'jax' backend; convscope needs the torch backend: set KERAS_BACKEND=torch "
                    "before importing keras")


def test_default_layer_filters_and_the_original_cam_on_a_keras_model(vgg: keras.Model) -> None:
    """The articles' tools on a Keras model: the default CAM layer (the last conv block's map, before the pooling that
    leads to the dense head), first-layer filters as (out, in, kh, kw), and Zhou et al.'s CAM on a GAP + Dense head
    (where it equals Grad-CAM up to a positive factor)."""
    model = cs.load_model(vgg)
    assert cs.default_cam_layer(model, (3, 32, 32)).label == "block2_conv1"
    kernels = cs.filters(model, "block1_conv1")
    kernel = vgg.get_layer("block1_conv1").kernel.value  # (kh, kw, in, out)
    torch.testing.assert_close(kernels.data, kernel.detach().permute(3, 2, 0, 1).float())
    keras.utils.set_random_seed(1)
    gap = keras.Sequential([keras.Input((32, 32, 3)), layers.Conv2D(8, 3, activation="relu", name="conv"),
                            layers.GlobalAveragePooling2D(name="gap"), layers.Dense(3, name="logits")])
    gap_model = cs.load_model(gap)
    x = torch.rand(2, 3, 32, 32)
    original, grad = cs.cam(gap_model, x, target=1), cs.gradcam(gap_model, x, target=1)
    assert original.layer == "conv" and float(original.data.max()) > 0
    scale = original.data.max() / grad.data.max()
    torch.testing.assert_close(original.data, grad.data * scale, atol=1e-5, rtol=1e-4)
