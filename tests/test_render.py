"""Rendering: values to colours, and the one entry point that draws every kind of result."""

from __future__ import annotations

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
