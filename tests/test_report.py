"""The HTML report (the main job): one self-contained file, its sections from the registry."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
from conftest import digit_folder
from convscope.cli import main


def _inline_images(html: str) -> list[np.ndarray]:
    blobs = re.findall(r'src="data:image/png;base64,([^"]+)"', html)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in blobs]


def _between(html: str, start: str, end: str) -> str:
    """The part of ``html`` from the heading that contains ``start`` up to the one that contains ``end``."""
    assert start in html and end in html, (start, end)
    return html[html.index(start):html.index(end)]


def test_report_is_one_self_contained_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--quick", "--out", str(tmp_path / "rep"), "--image", "cat", "--image", "coffee",
                 "--methods", "saliency,gradcam"]) == 0
    assert "index.html" in capsys.readouterr().out
    files = list((tmp_path / "rep").iterdir())
    assert [f.name for f in files] == ["index.html"]
    html = files[0].read_text()
    assert "efficientnet_lite0" in html and "espresso" in html and "tiger cat" in html
    assert "saliency" in html and "gradcam" in html and "_swish@1" in html
    assert "http://" not in html and "https://" not in html  # nothing fetched when opened
    head = _inline_images(html[:html.index("Which pixels drove the decision")])
    assert len(head) == 2 and all(p.shape == (224, 224, 3) for p in head)  # the two inputs
    methods = _inline_images(_between(html, "Which pixels drove the decision", "Region of interest"))
    assert len(methods) == 2 * 2 * 2 and all(p.shape == (224, 224, 3) for p in methods)  # (overlay, map) per method per image
    region = _inline_images(_between(html, "Region of interest", "classes side by side"))
    assert len(region) == 2 * 2 and region[0].shape == (224, 224, 3)  # masked picture and (smaller) crop per image
    assert region[1].shape[0] < 224 or region[1].shape[1] < 224
    compared = _inline_images(_between(html, "classes side by side", "Robustness: light"))
    assert len(compared) == 1 and "explains Egyptian cat" not in html  # one figure; matplotlib text is not HTML
    occluded = _inline_images(_between(html, "Occlusion: heatmap", "Which explanation to trust"))
    assert len(occluded) == 2 * 3  # seed 000's triple per image


def test_report_says_when_a_method_does_not_apply(tmp_path: Path) -> None:
    """A head that is not GAP -> linear: the cam section explains why, the rest of the report is made."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 3))
    model = cs.Model(net, input_size=(32, 32), labels=["a", "b", "c"], name="tiny")
    html = cs.report(model, ["coffee"], tmp_path, methods=["cam", "gradcam"]).read_text()
    assert "not applicable to this model" in html and "use gradcam" in html
    assert len(_inline_images(html[:html.index("Which pixels drove the decision")])) == 1  # the input
    assert len(_inline_images(_between(html, "Which pixels drove the decision", "Region of interest"))) == 2  # gradcam
    for title in ("Region of interest", "The top 3 classes", "Robustness", "Occlusion: heatmap", "Which explanation to trust",
                  "First-layer filters",
                  "What the channels want to see", "Deep Dream"):  # a one-conv model gets every section
        assert title in html, title


def test_main_job_report_has_every_attribution_method(tmp_path: Path) -> None:
    """`convscope report` on the defaults (--quick settings to keep the suite fast): the cat, its top-5,
    one section per registered method, the trust ranking and the feature-visualization sections."""
    assert main(["report", "--quick", "--out", str(tmp_path)]) == 0
    html = (tmp_path / "index.html").read_text()
    for info in cs.methods():
        assert f'id="{info.name}"' in html
    assert "not applicable" not in html and "Region of interest" in html
    for title in ("The top 3 classes side by side", "Robustness: light, colour", "Occlusion: heatmap, mask", "Which explanation to trust",
                  "First-layer filters", "Feature maps at four depths",
                  "What the channels want to see", "The picture the model wants for", "Deep Dream"):
        assert title in html, title
    assert re.search(r"(tabby|tiger cat|Egyptian cat)", html)


def test_report_maps_a_folder_in_feature_space(tmp_path: Path) -> None:
    folder = digit_folder(tmp_path / "digits", 30)
    model = cs.load_model("digits_cnn")
    path = cs.report(model, [str(folder / "0" / next(p.name for p in (folder / "0").iterdir()))], tmp_path / "r",
                     methods=["gradcam"], folder=folder)
    page = path.read_text()
    assert "The dataset in feature space" in page and "30 images" in page and "perplexity 15 and 25" in page
