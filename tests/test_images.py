"""Behavioural tests for convscope.images: loading, mode conversion and refusals."""

from __future__ import annotations

import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from convscope.errors import ImageError
from convscope.images import MAX_PIXELS, SAMPLE_IMAGES, load_image, sample_image

# --- helpers ---------------------------------------------------------------------------------


def refusal(source: object, match: str, **kwargs: int) -> str:
    """Assert that load_image refuses ``source`` with a single-line ImageError matching ``match``."""
    with pytest.raises(ImageError, match=match) as info:
        load_image(source, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message and "\r" not in message
    return message


def write_png(path: Path, width: int, height: int, *, bit_depth: int, color_type: int, idat: bytes) -> Path:
    """Write a minimal PNG by hand (lets tests make 16-bit RGB files and bomb-sized headers)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def write_png16_rgb(path: Path, array: np.ndarray) -> Path:
    """Write an HxWx3 uint16 array as a genuine 16-bit RGB PNG."""
    rows = b"".join(b"\x00" + row.astype(">u2").tobytes() for row in array)
    return write_png(path, array.shape[1], array.shape[0], bit_depth=16, color_type=2, idat=zlib.compress(rows))


def pixels(image: Image.Image) -> np.ndarray:
    """The image as an HxWx3 uint8 array, after checking it is RGB."""
    assert image.mode == "RGB"
    array = np.asarray(image)
    assert array.dtype == np.uint8
    return array


@pytest.fixture
def rgb_array() -> np.ndarray:
    """A small deterministic colour image (12x16)."""
    return np.random.default_rng(0).integers(0, 256, size=(12, 16, 3), dtype=np.uint8)


# --- sample images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "size"), [("cat", (451, 300)), ("coffee", (600, 400)), ("astronaut", (512, 512)), ("rocket", (640, 427))]
)
def test_sample_images_load_as_rgb(name: str, size: tuple[int, int]) -> None:
    image = sample_image(name)
    assert image.size == size
    array = pixels(image)
    assert array.std() > 10  # a real photo, not a blank canvas


def test_sample_image_names_and_aliases() -> None:
    assert SAMPLE_IMAGES == ("cat", "coffee", "astronaut", "rocket")
    assert np.array_equal(pixels(sample_image("chelsea")), pixels(sample_image()))
    with pytest.raises(ImageError, match="cat, coffee, astronaut, rocket") as info:
        sample_image("dog")
    assert "dog" in str(info.value)


# --- formats and sources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("suffix", "options"), [(".png", {}), (".bmp", {}), (".tiff", {}), (".webp", {"lossless": True})]
)
def test_lossless_round_trips(tmp_path: Path, rgb_array: np.ndarray, suffix: str, options: dict) -> None:
    path = tmp_path / f"image{suffix}"
    Image.fromarray(rgb_array).save(path, **options)
    for source in (path, str(path), path.read_bytes()):
        assert np.array_equal(pixels(load_image(source)), rgb_array)


def test_jpeg_round_trip(tmp_path: Path) -> None:
    array = np.zeros((16, 16, 3), np.uint8)
    array[:, :8] = (200, 40, 30)
    path = tmp_path / "photo.jpg"
    Image.fromarray(array).save(path, quality=95)
    loaded = pixels(load_image(path)).astype(int)
    assert np.abs(loaded[:, :4] - array[:, :4]).max() < 8 and np.abs(loaded - array).mean() < 4  # lossy edges


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    path = tmp_path / "print.jpg"
    Image.new("RGB", (8, 8), (255, 0, 0)).convert("CMYK").save(path, quality=95)
    red, green, blue = pixels(load_image(path))[4, 4].astype(int)
    assert red > 240 and green < 15 and blue < 15


def test_returns_a_new_image_and_leaves_inputs_untouched(rgb_array: np.ndarray) -> None:
    original = Image.fromarray(rgb_array)
    loaded = load_image(original)
    assert loaded is not original
    loaded.putpixel((0, 0), (1, 2, 3))
    assert np.array_equal(np.asarray(original), rgb_array)

    before = rgb_array.copy()
    from_array = load_image(rgb_array)
    assert not np.shares_memory(np.asarray(from_array), rgb_array)
    from_array.putpixel((0, 0), (1, 2, 3))
    assert np.array_equal(rgb_array, before)


# --- mode conversion -------------------------------------------------------------------------


def test_grayscale_and_bilevel_become_gray_rgb(tmp_path: Path) -> None:
    gray = np.arange(0, 240, 10, dtype=np.uint8).reshape(4, 6)
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    assert np.array_equal(pixels(load_image(path)), np.stack([gray] * 3, axis=-1))

    bilevel = Image.new("1", (3, 2), 0)
    bilevel.putpixel((1, 0), 1)
    result = pixels(load_image(bilevel))
    assert result[0, 1].tolist() == [255, 255, 255] and result[0, 0].tolist() == [0, 0, 0]


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 0)  # fully transparent -> white
    rgba[0, 1] = (10, 20, 30, 255)  # opaque -> unchanged
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black -> mid gray
    path = tmp_path / "alpha.png"
    Image.fromarray(rgba).save(path)
    for source in (path, rgba):
        result = pixels(load_image(source))
        assert result[0, 0].tolist() == [255, 255, 255]
        assert result[0, 1].tolist() == [10, 20, 30]
        assert all(126 <= value <= 128 for value in result[0, 2])


def test_la_image_is_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1), (50, 255))
    la.putpixel((1, 0), (50, 0))
    path = tmp_path / "la.png"
    la.save(path)
    result = pixels(load_image(path))
    assert result[0, 0].tolist() == [50, 50, 50] and result[0, 1].tolist() == [255, 255, 255]


def test_palette_with_transparency_becomes_white(tmp_path: Path) -> None:
    palette_image = Image.new("P", (3, 1))
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette_image.putdata([0, 1, 0])
    plain = tmp_path / "palette.png"
    palette_image.save(plain)
    assert pixels(load_image(plain))[0].tolist() == [[255, 0, 0], [0, 0, 255], [255, 0, 0]]

    transparent = tmp_path / "palette_transparent.png"
    palette_image.save(transparent, transparency=1)
    assert Image.open(transparent).mode == "P"
    assert pixels(load_image(transparent))[0].tolist() == [[255, 0, 0], [255, 255, 255], [255, 0, 0]]


def test_16bit_grayscale_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[65535, 32896, 257, 0]], np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    assert pixels(load_image(path))[0, :, 0].tolist() == [255, 128, 1, 0]


def test_16bit_rgb_png_and_tiff(tmp_path: Path) -> None:
    import tifffile

    deep = np.zeros((2, 3, 3), np.uint16)
    deep[0, 0] = (65535, 32896, 257)
    deep[1, 2] = (0, 65535, 32896)
    expected = [[255, 128, 1], [0, 255, 128]]
    tiff = tmp_path / "deep.tiff"
    tifffile.imwrite(tiff, deep)
    for path in (write_png16_rgb(tmp_path / "deep.png", deep), tiff):
        result = pixels(load_image(path))
        assert [result[0, 0].tolist(), result[1, 2].tolist()] == expected


def test_32bit_integer_mode() -> None:
    small = Image.fromarray(np.array([[0, 100, 255]], np.int32))
    assert small.mode == "I"
    assert pixels(load_image(small))[0, :, 0].tolist() == [0, 100, 255]
    wide = Image.fromarray(np.array([[0, 32896, 65535]], np.int32))
    assert pixels(load_image(wide))[0, :, 0].tolist() == [0, 128, 255]


def test_float_mode_image() -> None:
    unit = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert unit.mode == "F"
    assert pixels(load_image(unit))[0, :, 0].tolist() == [0, 128, 255]
    wide = Image.fromarray(np.array([[0.0, 100.0, 300.0]], np.float32))
    assert pixels(load_image(wide))[0, :, 0].tolist() == [0, 100, 255]


# --- numpy arrays ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (np.array([[0.0, 0.5, 1.0]]), [0, 128, 255]),  # float in [0, 1]
        (np.array([[-3.0, 127.6, 400.0]], np.float32), [0, 128, 255]),  # float in [0, 255], clipped
        (np.array([[False, True, True]]), [0, 255, 255]),
        (np.array([[0, 32896, 65535]], np.uint16), [0, 128, 255]),
        (np.array([[0, 7, 200]]), [0, 7, 200]),  # int64 within 0..255
        (np.array([[[0], [9], [255]]], np.uint8), [0, 9, 255]),  # HxWx1
    ],
)
def test_array_dtypes_and_gray_shapes(array: np.ndarray, expected: list[int]) -> None:
    result = pixels(load_image(array))
    assert result.shape == (1, 3, 3)
    assert result[0, :, 0].tolist() == expected
    assert np.array_equal(result[..., 0], result[..., 2])


def test_float_rgb_array() -> None:
    array = np.zeros((2, 2, 3), np.float64)
    array[0, 0] = (1.0, 0.5, 0.0)
    assert pixels(load_image(array))[0, 0].tolist() == [255, 128, 0]


def test_non_finite_float_array_is_refused() -> None:
    message = refusal(np.array([[0.0, np.nan]]), "NaN or infinite")
    assert message.startswith("<array>:")
    refusal(np.array([[0.0, np.inf]]), "NaN or infinite")


def test_out_of_range_integer_array_is_refused() -> None:
    refusal(np.array([[-1, 5]]), r"\[-1, 5\]")


def test_channel_first_array_is_refused_with_a_hint() -> None:
    message = refusal(np.zeros((3, 224, 224), np.float32), "expected an HxW or HxWx")
    assert "(3, 224, 224)" in message and "transpose(1, 2, 0)" in message
    assert "(1, 3, 8, 8)" in refusal(np.zeros((1, 3, 8, 8)), "got shape")
    refusal(np.zeros((4, 4, 2), np.uint8), "got shape")


def test_tensor_is_refused_with_advice() -> None:
    torch = pytest.importorskip("torch")
    message = refusal(torch.zeros(3, 8, 8), "torch tensor")
    assert "permute(1, 2, 0)" in message and "method" in message


def test_unsupported_source_type_is_refused() -> None:
    refusal([[0, 1]], "unsupported image source of type list")


# --- EXIF orientation ------------------------------------------------------------------------


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    stored = Image.new("RGB", (40, 20), (255, 255, 255))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # red marker in the stored top-left corner
    exif = stored.getexif()
    exif[0x0112] = 6  # display = stored rotated 90 degrees clockwise
    path = tmp_path / "rotated.jpg"
    stored.save(path, exif=exif, quality=95)

    loaded = load_image(path)
    assert loaded.size == (20, 40)
    red, green, blue = loaded.getpixel((16, 3))  # top-left goes to the top-right corner
    assert red > 200 and green < 60 and blue < 60
    assert loaded.getpixel((3, 3))[1] > 200  # the top-left is now white
    assert load_image(path.read_bytes()).size == (20, 40)
    assert load_image(Image.open(path)).size == (20, 40)


# --- refusals --------------------------------------------------------------------------------


def test_truncated_jpeg_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)
    source = tmp_path / "source.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (64, 64, 3), np.uint8)).save(source)
    data = source.read_bytes()
    cut = tmp_path / "cat.jpg"
    cut.write_bytes(data[: len(data) // 2])
    message = refusal(cut, "truncated or corrupt image file")
    assert "cat.jpg" in message
    assert refusal(cut.read_bytes(), "truncated").startswith("<bytes>:")


def test_truncated_png_is_refused(tmp_path: Path, rgb_array: np.ndarray) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(rgb_array).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    assert "cut.png" in refusal(path, "truncated or corrupt")


def test_text_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("not a picture\nsecond line\n")
    assert "notes.txt" in refusal(path, "not an image file")
    assert "<bytes>" in refusal(b"hello", "not an image file")


def test_missing_file_and_directory_are_refused(tmp_path: Path) -> None:
    assert "nowhere.png" in refusal(tmp_path / "nowhere.png", "no such file")
    assert str(tmp_path) in refusal(tmp_path, "is a directory")
    refusal("https://example.com/cat.jpg", "URLs are not downloaded")


def test_empty_images_are_refused() -> None:
    assert refusal(Image.new("RGB", (0, 0)), "empty image").startswith("<PIL image>:")
    refusal(np.zeros((0, 5), np.uint8), "empty image")


def test_pixel_limit_is_checked(tmp_path: Path) -> None:
    assert MAX_PIXELS == 64_000_000
    path = tmp_path / "cat.png"
    sample_image("cat").save(path)
    message = refusal(path, "451x300 = 135300 pixels exceeds the limit of 1000", max_pixels=1000)
    assert "cat.png" in message and "max_pixels" in message
    refusal(np.zeros((300, 451, 3), np.uint8), "exceeds the limit", max_pixels=1000)
    assert load_image(path, max_pixels=135_300).size == (451, 300)


def test_pixel_limit_is_checked_before_decoding(tmp_path: Path) -> None:
    # A header claiming 9000x9000 (81 MP, below PIL's own bomb limit) with garbage pixel data:
    # decoding would fail as corrupt, so the limit message proves the refusal came first.
    path = write_png(tmp_path / "big.png", 9000, 9000, bit_depth=1, color_type=0, idat=b"garbage")
    message = refusal(path, "9000x9000 = 81000000 pixels exceeds the limit of 64000000")
    assert "big.png" in message


@pytest.mark.parametrize("side", [10_000, 30_000])  # above PIL's warning limit, and above its error limit
def test_decompression_bombs_are_refused_without_touching_pil_settings(tmp_path: Path, side: int) -> None:
    limit_before = Image.MAX_IMAGE_PIXELS
    path = write_png(tmp_path / "bomb.png", side, side, bit_depth=1, color_type=0, idat=b"garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning may escape load_image
        for max_pixels in (MAX_PIXELS, 10**10):
            message = refusal(path, f"{side * side} pixels.*decompression bomb", max_pixels=max_pixels)
            assert "bomb.png" in message and "MAX_IMAGE_PIXELS" in message
    assert limit_before == Image.MAX_IMAGE_PIXELS
