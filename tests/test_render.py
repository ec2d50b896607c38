"""Rendering: values to colours, and the one entry point that draws every kind of result."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
from convscope import render


def test_normalize_modes() -> None:
    maps = torch.tensor([[[0.0, 1.0], [2.0, 4.0]], [[-2.0, 0.0], [1.0, 2.0]]])
    assert np.allclose(render.normalize(maps, "minmax")[0], [[0, 0.25], [0.5, 1]])
    assert np.allclose(render.normalize(maps, "max")[1], [[0, 0], [0.5, 1]])
    assert np.allclose(render.normalize(maps, "signed")[1], [[0, 0.5], [0.75, 1]])
    assert np.allclose(render.normalize(maps[0], "percentile", percentile=100), [[0, 0.25], [0.5, 1]])
    assert np.all(render.normalize(torch.ones(3, 3), "minmax") == 0)
    with pytest.raises(ValueError):
        render.normalize(maps, "nope")


def test_result_pictures(tmp_path: Path) -> None:
    model = cs.load_model("efficientnet_lite0")
    x = model.preprocess([cs.sample_image("coffee"), cs.sample_image("cat")])
    result = cs.gradcam(model, x)
    single = result.save(tmp_path / "one.png", index=0)
    assert Image.open(single).size == (224, 224)
    grid = result.save(tmp_path / "grid.png")
    assert Image.open(grid).size[0] > 448
    over = result.overlay(0)
    assert over.shape == (224, 224, 3) and over.dtype == np.uint8
    # a user-supplied picture of another size is resized to the map
    assert result.overlay(1, image=cs.sample_image("cat")).shape == (224, 224, 3)
    assert result._repr_png_().startswith(b"\x89PNG")
    # the heat is red where the map peaks and blue where it is zero
    heat = render.colorize(render.normalize(result.maps()[0], "minmax"))
    peak = np.unravel_index(int(result.maps()[0].argmax()), (224, 224))
    assert heat[peak][0] > 100 and heat[peak][2] < 100


# -- the entry point: formats, options, show ------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_result() -> cs.Result:
    """Grad-CAM of two digits (32×32 pictures: drawing is quick)."""
    model = cs.load_model("digits_cnn")
    data = cs.digits_dataset("test")
    return cs.gradcam(model, model.preprocess([data[0][0], data[1][0]]))


def test_save_writes_the_format_of_the_suffix(digits_result: cs.Result, tmp_path: Path) -> None:
    pillow = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".tif": "TIFF", ".tiff": "TIFF",
              ".bmp": "BMP", ".gif": "GIF"}
    assert set(pillow) == set(render.dispatch.RASTER_FORMATS)
    for suffix, fmt in pillow.items():
        for index in (None, 1):  # the batch's figure; one image's overlay, pixel for pixel
            path = digits_result.save(tmp_path / f"{index}{suffix.upper()}", index=index)
            with Image.open(path) as image:
                assert image.format == fmt, (suffix, image.format)
                assert (image.size == (32, 32)) == (index is not None)
    starts = {".pdf": b"%PDF-", ".svg": b"<?xml", ".eps": b"%!PS-Adobe", ".html": b"<!doctype html>", ".htm": b"<!doctype html>"}
    for suffix, start in starts.items():
        assert digits_result.save(tmp_path / f"r{suffix}", index=0).read_bytes().startswith(start)
    # one picture in a vector format is that picture, embedded once, not the batch figure
    assert (tmp_path / "r.svg").read_text().count("<image") == 1
    overlay = np.asarray(Image.open(tmp_path / "1.PNG"))  # upper-case suffixes too
    assert np.array_equal(overlay, digits_result.overlay(1))
    # parent folders are made
    assert digits_result.save(tmp_path / "a" / "b" / "c.png").is_file()


def test_a_jpeg_is_a_jpeg_for_every_kind_of_drawing(digits_result: cs.Result, tmp_path: Path) -> None:
    """save("x.jpg") used to write PNG bytes under a .jpg name."""
    for index in (None, 0):
        data = digits_result.save(tmp_path / f"{index}.jpg", index=index).read_bytes()
        assert data[:3] == b"\xff\xd8\xff" and not data.startswith(b"\x89PNG")


def test_an_unknown_suffix_is_one_line_listing_the_formats(digits_result: cs.Result, tmp_path: Path) -> None:
    for name in ("x.xyz", "x", "x.png.bak"):
        with pytest.raises(cs.ConvscopeError) as error:
            digits_result.save(tmp_path / "sub" / name)
        message = str(error.value)
        assert "\n" not in message and ".png" in message and ".jpg" in message and ".pdf" in message and ".html" in message
    assert not (tmp_path / "sub").exists()  # nothing is made before the format is known


def test_style_none_is_the_default_and_unknown_options_are_one_line(digits_result: cs.Result) -> None:
    assert render.to_png(digits_result, index=None, image=None, mode=None) == render.to_png(digits_result)
    assert np.array_equal(render.picture(digits_result, index=0, cmap=None), digits_result.overlay(0))
    with pytest.raises(cs.ConvscopeError, match="no option colour"):
        render.to_png(digits_result, index=0, colour="red")
    with pytest.raises(cs.ConvscopeError, match="no option ncols"):
        digits_result.save("never.png", ncols=3)


def test_objects_that_are_not_convscope_results_are_refused() -> None:
    for thing in (object(), "text", np.zeros((4, 4, 3), np.uint8)):
        with pytest.raises(cs.ConvscopeError, match=r"cannot draw a .*: it has no kind; render draws map, pixels"):
            render.to_png(thing)
    odd = type("Odd", (), {"kind": "hologram"})()
    with pytest.raises(cs.ConvscopeError, match="kind 'hologram' has no drawer"):
        render.save(odd, "never.png")


def test_show_without_a_window_writes_a_png_and_says_where(digits_result: cs.Result, monkeypatch: pytest.MonkeyPatch,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)
    path = render.show(digits_result, index=0)
    err = capsys.readouterr().err
    assert path is not None and path.parent == tmp_path and f"the picture is in {path}" in err
    assert np.array_equal(np.asarray(Image.open(path)), digits_result.overlay(0))


def test_show_falls_back_to_a_file_when_the_window_fails(digits_result: cs.Result, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    from convscope.render import dispatch

    def no_display(array: np.ndarray, title: str) -> None:
        raise RuntimeError("couldn't connect to display ':0'")

    monkeypatch.setenv("MPLBACKEND", "TkAgg")
    monkeypatch.setattr(dispatch, "_opens_window", lambda: True)
    monkeypatch.setattr(dispatch, "_window", no_display)
    path = render.show(digits_result)
    err = capsys.readouterr().err
    assert path is not None and path.is_file() and "the window did not open (RuntimeError: couldn't connect" in err
    path.unlink()
    shown: list[tuple[tuple[int, ...], str]] = []
    monkeypatch.setattr(dispatch, "_window", lambda array, title: shown.append((array.shape, title)))
    assert render.show(digits_result, index=1) is None
    assert shown == [((32, 32, 3), render.caption(digits_result))]


def test_window_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    import matplotlib

    from convscope.render import dispatch

    for backend, opens in [("agg", False), ("pdf", False), ("TkAgg", True), ("QtAgg", True), ("MacOSX", True),
                           ("module://matplotlib_inline.backend_inline", False), ("nbAgg", False)]:
        monkeypatch.setattr(matplotlib, "get_backend", lambda name=backend: name)
        assert dispatch._opens_window() is opens, backend


def test_show_in_a_notebook_displays_the_drawing_with_its_options(digits_result: cs.Result,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    import IPython.display

    from convscope.render import dispatch

    shown: list[tuple[dict, dict]] = []
    monkeypatch.setattr(dispatch, "_in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend((obj, kw) for obj in objs))
    assert render.show(digits_result, index=1) is None
    (bundle, options), = shown
    assert options == {"raw": True} and bundle["text/plain"] == repr(digits_result)
    assert bundle["text/html"] == render.to_html(digits_result, index=1)  # one picture: its overlay and map


def test_a_table_is_text_html_and_a_picture(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = cs.Table("a  b\n1  2.5", columns=["a", "b<"], rows=[(1, 2.5)], title="numbers")
    assert render.text(table) == str(table) and render.caption(table) == "numbers"
    fragment = render.to_html(table)
    assert "<table" in fragment and "<th>b&lt;</th>" in fragment and "<td>2.5</td>" in fragment
    assert render.mimebundle(table) == {"text/html": fragment}
    assert table._repr_png_() is None and table._repr_mimebundle_() == {"text/html": fragment}
    assert render.show(table) is None and capsys.readouterr().out == str(table) + "\n"  # printed, not drawn
    assert Image.open(table.save(tmp_path / "t.png")).size[0] > 50
