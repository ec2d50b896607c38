"""Rendering: values to colours, and the one entry point that draws every kind of result."""

from __future__ import annotations

import re
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
    single = result.save(tmp_path / "one.png", index=0)  # the overlay and its colour bar on the right
    width, height = Image.open(single).size
    assert height == 224 and 224 + 60 < width < 224 + 120
    assert np.array_equal(np.asarray(Image.open(single).convert("RGB"))[:, :224], result.overlay(0))
    bare = result.save(tmp_path / "bare.png", index=0, colorbar=False)
    assert Image.open(bare).size == (224, 224)
    grid = result.save(tmp_path / "grid.png")
    assert Image.open(grid).size[0] > 448
    over = result.overlay(0)
    assert over.shape == (224, 224, 3) and over.dtype == np.uint8
    # a user-supplied picture of another size is resized to the map
    assert result.overlay(1, image=cs.sample_image("cat")).shape == (224, 224, 3)
    assert result._repr_png_().startswith(b"\x89PNG")
    # Grad-CAM is unsigned: the map alone is bright yellow where it peaks (inferno's top)
    heat = render.result_map(result, 0)
    peak = np.unravel_index(int(result.maps()[0].argmax()), (224, 224))
    assert heat[peak][0] > 200 and heat[peak][1] > 200 and heat[peak][2] < 180


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
        for index in (None, 1):  # the batch's figure; one image's overlay, pixel for pixel, without its colour bar
            path = digits_result.save(tmp_path / f"{index}{suffix.upper()}", index=index, colorbar=None if index is None else False)
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
    assert np.array_equal(render.picture(digits_result, index=0, cmap=None, colorbar=False), digits_result.overlay(0))
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
    assert np.array_equal(np.asarray(Image.open(path)), render.picture(digits_result, index=0))  # with its colour bar


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
    assert shown == [(render.picture(digits_result, index=1).shape, render.caption(digits_result))]


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


# -- colour by meaning: signed maps diverge around a neutral 0, unsigned maps are sequential, every heatmap has a bar --
def test_a_signed_scale_is_symmetric_and_zero_is_the_neutral_white() -> None:
    from convscope.render.scale import DIVERGING, SEQUENTIAL, scale_of

    values = np.array([[-1.0, 0.0], [0.5, 3.0]], np.float32)
    signed = scale_of(values)
    assert signed.signed and signed.cmap == DIVERGING and (signed.low, signed.high) == (-3.0, 3.0)
    white = signed.colours(np.zeros(1))[0]
    assert white.min() > 235 and int(white.max()) - int(white.min()) < 12  # RdBu's centre: (near) white
    assert np.array_equal(signed.neutral(), white)
    red, blue = signed.colours(np.array([3.0]))[0], signed.colours(np.array([-3.0]))[0]
    assert red[0] > red[2] + 60 and blue[2] > blue[0] + 60  # for the class: red; against: blue
    assert signed.strength(np.array([0.0]))[0] == 0 and signed.strength(np.array([-3.0]))[0] == 1
    unsigned = scale_of(np.array([0.2, 0.8], np.float32))
    assert not unsigned.signed and unsigned.cmap == SEQUENTIAL and (unsigned.low, unsigned.high) == (0.0, pytest.approx(0.8))
    assert unsigned.colours(np.zeros(1))[0].max() < 10  # inferno starts black: nothing
    clipped = scale_of(np.r_[np.zeros(999), 100.0].astype(np.float32), signed=False, clip=99.5)
    assert clipped.high == 0 and clipped.clipped
    assert scale_of(np.zeros((3, 3))).position(np.zeros(2)).tolist() == [0.0, 0.0]  # a flat map is not stretched


def test_an_overlay_leaves_the_picture_where_the_map_says_nothing() -> None:
    from convscope.render.scale import blend, scale_of

    picture = np.full((4, 4, 3), 90, np.uint8)
    values = np.zeros((4, 4), np.float32)
    values[0, 0], values[3, 3] = 2.0, -2.0
    out = blend(picture, values, scale_of(values))
    assert np.array_equal(out[1:3, 1:3], picture[1:3, 1:3])  # 0 = no effect: the photo untouched
    assert int(out[0, 0, 0]) > int(out[0, 0, 2]) + 30 and int(out[3, 3, 2]) > int(out[3, 3, 0]) + 30  # red for, blue against


@pytest.fixture(scope="module")
def signed_and_unsigned() -> dict[str, cs.Result]:
    model = cs.load_model("digits_cnn")
    x = model.preprocess([cs.digits_dataset("test")[0][0]])
    return {"occlusion": cs.occlusion(model, x, window=8, stride=4), "rise": cs.rise(model, x, masks=50, cells=4),
            "superpixels": cs.superpixels(model, x, segments=8, samples=32),
            "integrated_gradients": cs.integrated_gradients(model, x, steps=8), "input_x_gradient": cs.input_x_gradient(model, x),
            "gradcam": cs.gradcam(model, x), "saliency": cs.saliency(model, x), "guided_backprop": cs.guided_backprop(model, x),
            "signed_saliency": cs.saliency(model, x, abs=False)}


def test_each_method_says_whether_its_values_are_signed(signed_and_unsigned: dict[str, cs.Result]) -> None:
    from convscope.render.scale import display_values, is_signed, result_scale

    signed = {"occlusion", "rise", "superpixels", "integrated_gradients", "input_x_gradient", "signed_saliency"}
    for name, result in signed_and_unsigned.items():
        assert is_signed(result) == (name in signed), name
        scale = result_scale(result, 0)
        assert scale.signed == (name in signed)
        if scale.signed:
            assert scale.low == -scale.high  # symmetric
        assert result.meta["units"] and scale.units == result.meta["units"]
    ig = signed_and_unsigned["integrated_gradients"]
    # signed pixel attributions keep their sign: summed over colour channels, not |max|
    assert np.allclose(display_values(ig)[0], ig.data[0].sum(0).numpy(), atol=1e-6)
    rise = signed_and_unsigned["rise"]  # RISE is centred on its average masked score: "no effect" is 0
    assert np.allclose(display_values(rise)[0], rise.data[0, 0].numpy() - float(rise.meta["neutral"][0]), atol=1e-6)
    assert display_values(rise).min() < 0 < display_values(rise).max()


def test_every_explanation_picture_figure_and_page_carries_its_colour_bar(signed_and_unsigned: dict[str, cs.Result]) -> None:
    for name in ("occlusion", "gradcam", "integrated_gradients"):
        result = signed_and_unsigned[name]
        picture = render.picture(result)
        bare = render.picture(result, colorbar=False)
        assert picture.shape[0] >= 160 and picture.shape[1] > picture.shape[0]  # enlarged to be read, the bar on the right
        strip = picture[:, -picture.shape[1] + picture.shape[0]:]
        assert len(np.unique(strip.reshape(-1, 3), axis=0)) > 50, name  # a gradient of colours, not a blank margin
        assert bare.shape[:2] == (32, 32)
        fig = render.figure(result)
        assert any(ax.get_label() == "<colorbar>" for ax in fig.axes), name
        page = render.to_html(result)
        assert "colours: " + result.meta["units"] in page
    assert "0 = white" in render.to_html(signed_and_unsigned["occlusion"])


def test_deconvnet_says_why_it_looks_like_a_checkerboard() -> None:
    model = cs.load_model("digits_cnn")
    result = cs.deconvnet(model, model.preprocess([cs.digits_dataset("test")[0][0]]))
    assert "ignores the forward's" in result.meta["caveat"]
    assert "ignores the forward" in render.text(result) and "ignores the forward" in render.to_html(result)


# -- pictures for pages: the format that suits them, never wider than the page (render.encode) -------------------
def test_photos_become_jpeg_and_line_art_stays_png() -> None:
    import base64
    import io

    from convscope.render.encode import encode, image_uri

    photo = np.asarray(cs.sample_image("cat").convert("RGB").resize((224, 224)))
    chart = np.full((200, 300, 3), 255, np.uint8)
    chart[100, :] = chart[:, 150] = (30, 80, 200)  # two lines on white
    assert encode(photo)[0] == "image/jpeg" and encode(chart)[0] == "image/png"  # decided by the picture
    assert encode(chart, photo=True)[0] == "image/jpeg" and encode(photo, photo=False)[0] == "image/png"
    _, jpeg = encode(photo, photo=True)
    assert len(jpeg) * 4 < len(encode(photo, photo=False)[1])  # a quarter of the PNG or less
    back = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB")).astype(float)
    assert np.abs(back - photo).mean() < 4  # quality 85: no visible loss
    uri = image_uri(np.linspace(0, 1, 64 * 64 * 3).reshape(64, 64, 3))  # floats in [0, 1] too
    assert uri.startswith("data:image/") and Image.open(io.BytesIO(base64.b64decode(uri.split(",")[1]))).size == (64, 64)


def test_a_wide_figure_is_drawn_to_the_page_width() -> None:
    from matplotlib.figure import Figure

    from convscope.render.encode import CONTENT_WIDTH, figure_array, figure_img

    wide = Figure(figsize=(16, 2))
    wide.subplots().plot([0, 1], [1, 0])
    assert figure_array(wide, max_width=None).shape[1] > CONTENT_WIDTH
    assert CONTENT_WIDTH - 12 <= figure_array(wide).shape[1] <= CONTENT_WIDTH
    tag = figure_img(wide, "a <wide> chart")
    assert f'width="{figure_array(wide).shape[1]}"' in tag and "a &lt;wide&gt; chart" in tag


def test_the_ranking_page_says_which_method_to_believe() -> None:
    model = cs.load_model("digits_cnn")
    x = model.preprocess([cs.digits_dataset("test")[0][0]])
    ranking = cs.metrics.rank(model, x, ["gradcam", "saliency"], steps=4, progress=False)
    page = render.to_html(ranking)
    assert f'<p class="verdict">{ranking.verdict.replace(chr(39), "&#x27;")}</p>' in page
    assert "against random" in page and page.count("<img") == 1 and "data:image/png" in page  # a chart: PNG
    assert ranking.verdict in render.caption(ranking)


def test_filters_are_read_for_their_kernel_size() -> None:
    from convscope.render.features import filters_reading

    stem = cs.filters(cs.load_model("efficientnet_lite0"))
    assert tuple(stem.data.shape[-2:]) == (3, 3)
    assert "3×3 kernels" in filters_reading(stem) and "too small for the oriented edges" in filters_reading(stem)
    big = cs.Result(data=torch.randn(8, 3, 11, 11), method="filters", layer="conv1", kind="filters", meta={"colour": True})
    assert "oriented edges" in filters_reading(big) and "too small" not in filters_reading(big)
    page = render.to_html(stem)
    assert "3×3 kernels" in page and "data:image/png" in page  # sharp squares: PNG


def test_optimized_pictures_wrap_as_tiles_and_a_dream_sits_by_its_photo() -> None:
    from convscope.render.encode import CONTENT_WIDTH

    model = cs.load_model("digits_cnn")
    several = cs.maximize(model, "0-5", steps=2, size=32, progress=False)
    page = render.to_html(several)
    assert 'class="convscope picture tiles"' in page and page.count("<img") == 6 and "data:image/jpeg" in page
    assert page.count("<figcaption>ch ") == 6
    dream = cs.dream(model, cs.digits_dataset("test")[0][0], octaves=1, steps=1, progress=False)
    pair = render.to_html(dream)
    assert pair.count("<img") == 2 and "the photo" in pair and "the dream at" in pair
    assert all(int(w) <= CONTENT_WIDTH // 2 for w in re.findall(r' width="(\d+)"', pair))
