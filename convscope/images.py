"""Load images from files, bytes, PIL images or numpy arrays as validated 8-bit RGB PIL images.

Every refusal raises :class:`~convscope.errors.ImageError` with one line that names the source
(the path, or ``<bytes>``, ``<array>``, ``<PIL image>``) and the problem.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from convscope.errors import ImageError

__all__ = ["MAX_PIXELS", "SAMPLE_IMAGES", "ImageLike", "load_image", "named_images", "sample_image", "to_uint8"]

MAX_PIXELS: int = 64_000_000
"""Default limit on width * height, checked from the file header before decoding."""

ImageLike = str | os.PathLike | bytes | Image.Image | np.ndarray

SAMPLE_IMAGES: tuple[str, ...] = ("cat", "coffee", "astronaut", "rocket")

# convscope sample name -> scikit-image ``skimage.data`` function name.
_SKIMAGE_SAMPLES: dict[str, str] = {"cat": "chelsea", "coffee": "coffee", "astronaut": "astronaut", "rocket": "rocket"}
_SAMPLE_ALIASES: dict[str, str] = {skimage_name: name for name, skimage_name in _SKIMAGE_SAMPLES.items()}

# Exceptions PIL raises for unreadable, corrupt or truncated data.
_PIL_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error)


def load_image(source: ImageLike, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Return a validated 8-bit RGB PIL image (mode "RGB"), EXIF-orientation applied.

    ``source`` is a path, the raw bytes of an encoded file, a PIL image or a numpy array
    (HxW or HxWx{1,3,4}; uint8, uint16, bool or float). Images with more than ``max_pixels``
    pixels are refused before decoding; transparency is composited onto white. The result is
    always a new image: the caller's image or array is never modified.
    """
    if isinstance(source, Image.Image):
        return _pil_to_rgb(source, "<PIL image>", max_pixels)
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source, max_pixels)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _encoded_to_rgb(io.BytesIO(source), "<bytes>", max_pixels)
    if isinstance(source, (str, os.PathLike)):
        name = _one_line(os.fspath(source))
        return _encoded_to_rgb(_existing_file(source, name), name, max_pixels)
    if type(source).__module__.split(".")[0] == "torch":
        raise _error(
            f"<{type(source).__name__}>",
            "load_image takes a file, PIL image or HxWxC numpy array, not a torch tensor; pass a preprocessed "
            "tensor to the method directly, or convert with tensor.detach().cpu().permute(1, 2, 0).numpy()",
        )
    raise _error(
        f"<{type(source).__name__}>",
        f"unsupported image source of type {type(source).__name__}; "
        "expected a path, the bytes of an image file, a PIL image or a numpy array",
    )


def sample_image(name: str = "cat") -> Image.Image:
    """Return a real photo bundled with scikit-image (works offline) as an RGB PIL image.

    Names: cat, coffee, astronaut, rocket (scikit-image's own names, e.g. "chelsea", also work).
    """
    key = str(name).strip().lower()
    key = _SAMPLE_ALIASES.get(key, key)
    if key not in _SKIMAGE_SAMPLES:
        raise _error(
            repr(name),
            f"unknown sample image; choose one of {', '.join(SAMPLE_IMAGES)} "
            f"(aliases: {', '.join(a for a in _SAMPLE_ALIASES if a not in _SKIMAGE_SAMPLES)})",
        )
    try:
        import skimage.data
    except ImportError as exc:
        raise _error(repr(name), "sample images need scikit-image: pip install scikit-image") from exc
    array = getattr(skimage.data, _SKIMAGE_SAMPLES[key])()
    return load_image(array)


def to_uint8(pictures: Any) -> np.ndarray:
    """Pictures (B, C, H, W) with values in [0, 1] (clamped) -> uint8 RGB (B, H, W, 3): one channel is
    repeated, more than three keep the first three (two: their mean)."""
    import torch

    data = pictures.detach().float().cpu().clamp(0, 1)
    if data.shape[1] == 1:
        data = data.expand(-1, 3, -1, -1)
    elif data.shape[1] != 3:
        data = data[:, :3] if data.shape[1] > 3 else data.mean(1, keepdim=True).expand(-1, 3, -1, -1)
    return (data * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def named_images(images: Sequence[Any] | None) -> list[tuple[str, Image.Image]]:
    """Paths, sample names (cat, coffee, astronaut, rocket) or pictures -> (name, PIL image); default: the cat."""
    items = list(images) if images else ["cat"]
    named: list[tuple[str, Image.Image]] = []
    for item in items:
        if isinstance(item, str) and item.strip().lower() in SAMPLE_IMAGES + tuple(_SAMPLE_ALIASES) and not Path(item).exists():
            named.append((item, sample_image(item)))
        elif isinstance(item, (str, Path)):
            named.append((Path(item).name, load_image(item)))
        else:
            named.append((f"image {len(named) + 1}", load_image(item)))
    return named


# --- sources ---------------------------------------------------------------------------------


def _existing_file(source: str | os.PathLike, name: str) -> Path:
    """Return the path of an existing file, or raise an ImageError saying what it is instead."""
    if isinstance(source, str) and source.lower().startswith(("http://", "https://")):
        raise _error(name, "URLs are not downloaded; save the image and pass its path")
    path = Path(source).expanduser()
    if path.is_dir():
        raise _error(name, "is a directory, not an image file")
    if not path.exists():
        raise _error(name, "no such file")
    return path


def _encoded_to_rgb(fp: Path | io.BytesIO, name: str, max_pixels: int) -> Image.Image:
    """Open an encoded image lazily (header only), then validate, decode and convert it."""
    with _pil_errors(name, "cannot read image file"):
        image = Image.open(fp)
    with image:
        return _pil_to_rgb(image, name, max_pixels)


def _pil_to_rgb(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    """Check the size, force a full decode, apply EXIF orientation and convert to RGB."""
    _check_size(image.width, image.height, name, max_pixels)
    with _pil_errors(name, "truncated or corrupt image file"):
        image.load()
        oriented = ImageOps.exif_transpose(image)
    return _to_rgb(oriented, name)


def _array_to_rgb(array: np.ndarray, max_pixels: int) -> Image.Image:
    """Validate an HxW or HxWx{1,3,4} array and convert it to an RGB image."""
    name = "<array>"
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4))):
        raise _error(name, f"expected an HxW or HxWx{{1,3,4}} array, got shape {array.shape}{_shape_hint(array.shape)}")
    _check_size(array.shape[1], array.shape[0], name, max_pixels)
    return _to_rgb(Image.fromarray(_to_uint8(array, name)), name)


def _shape_hint(shape: tuple[int, ...]) -> str:
    """A suggestion for common array layout mistakes (channel-first, batched)."""
    if len(shape) == 3 and shape[0] in (1, 3, 4):
        return " — channel-first? use arr.transpose(1, 2, 0)"
    if len(shape) == 4 and shape[0] == 1:
        return " — batched? use arr[0] (and arr[0].transpose(1, 2, 0) if channel-first)"
    return ""


# --- validation and conversion ---------------------------------------------------------------


def _check_size(width: int, height: int, name: str, max_pixels: int) -> None:
    """Refuse empty images and images with more than ``max_pixels`` pixels."""
    if width <= 0 or height <= 0:
        raise _error(name, f"empty image ({width}x{height} pixels)")
    if width * height > max_pixels:
        raise _error(
            name,
            f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels} "
            "(pass max_pixels=... if you trust this file)",
        )


def _to_rgb(image: Image.Image, name: str) -> Image.Image:
    """Convert any PIL mode to a new 8-bit RGB image; transparency is composited onto white."""
    if image.mode == "F" or image.mode.startswith("I"):
        image = Image.fromarray(_to_uint8(np.asarray(image), name))
    with _pil_errors(name, f"cannot convert image mode {image.mode} to RGB"):
        if image.mode == "La":  # premultiplied; PIL only converts it to LA
            image = image.convert("LA")
        if image.has_transparency_data:
            rgba = image.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return image.convert("RGB")


def _to_uint8(array: np.ndarray, name: str) -> np.ndarray:
    """Scale pixel values to uint8: uint16 by 1/257, floats from [0,1] or [0,255], other ints if in range."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind == "u" and array.dtype.itemsize == 2:
        return _scale_16bit(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all():
            raise _error(name, "image contains NaN or infinite values")
        scale = 255.0 if array.max() <= 1.0 else 1.0
        return np.rint(np.clip(array * scale, 0.0, 255.0)).astype(np.uint8)
    if array.dtype.kind in "iu":
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise _error(name, f"integer pixel values span [{low}, {high}]; expected 0..255 or 0..65535")
        return array.astype(np.uint8) if high <= 255 else _scale_16bit(array)
    raise _error(name, f"unsupported pixel dtype {array.dtype}; expected uint8, uint16, bool or float")


def _scale_16bit(array: np.ndarray) -> np.ndarray:
    """Map 16-bit values 0..65535 to 0..255 (value / 257, rounded)."""
    return np.rint(array.astype(np.float32) / 257.0).astype(np.uint8)


# --- errors ----------------------------------------------------------------------------------


@contextmanager
def _pil_errors(name: str, problem: str) -> Iterator[None]:
    """Turn PIL exceptions (and decompression-bomb warnings) raised inside into one-line ImageErrors."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            yield
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _error(
                name,
                f"{exc} (PIL's decompression bomb guard; if you trust this file, raise "
                "PIL.Image.MAX_IMAGE_PIXELS and pass max_pixels=...)",
            ) from exc
        except UnidentifiedImageError as exc:
            raise _error(name, "not an image file (PIL cannot identify it)") from exc
        except _PIL_ERRORS as exc:
            raise _error(name, f"{problem} ({exc})") from exc


def _error(name: str, problem: str) -> ImageError:
    """An ImageError whose single-line message names the source and the problem."""
    return ImageError(_one_line(f"{name}: {problem}"))


def _one_line(text: str) -> str:
    """Join the lines of ``text`` with spaces so that a message is always a single line."""
    return " ".join(text.splitlines())
