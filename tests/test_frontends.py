"""The CLI (driven in-process), the HTML report and rendering."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
from convscope import render
from convscope.cli import main


def test_cli_predict_summary_methods(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["predict", "cat", "coffee", "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "espresso" in out and re.search(r"(tabby|tiger cat|Egyptian cat)", out)
    assert main(["summary", "--model", "vgg11", "--weights", "none"]) == 0
    out = capsys.readouterr().out
    assert "features.0 (Conv2d)" in out and "Total params: 132,863,336" in out
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert all(info.name in listed for info in cs.methods())


def test_cli_explain_writes_an_overlay(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    photo = tmp_path / "cat.jpg"
    cs.sample_image("cat").save(photo)
    out = tmp_path / "cat_gradcam.png"
    assert main(["explain", "gradcam", str(photo), "--target", "281", "--out", str(out)]) == 0
    assert "tabby" in capsys.readouterr().out
    assert Image.open(out).size == (224, 224)


def test_cli_errors_are_one_line_with_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["explain", "gradcam", "cat", "--layer", "_conv_haed"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("convscope: error: unknown layer") and "_conv_head" in err and err.count("\n") == 1
    assert main(["explain", "saliency", "cat", "--target", "1000"]) == 2
    assert "out of range" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not a picture")
    assert main(["predict", str(tmp_path / "notes.txt")]) == 2
    assert "notes.txt" in capsys.readouterr().err
    assert main(["explain", "gradcm", "cat"]) == 2
    assert "gradcam" in capsys.readouterr().err


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


def test_every_registered_option_is_described_for_forms() -> None:
    """The web app and `convscope methods NAME` build forms from the registry: every option has help
    text, a kind, and a default that is one of its choices."""
    for info in cs.methods():
        specs = info.option_specs()
        assert [s.name for s in specs] == list(info.options), info.name
        for spec in specs:
            assert spec.help, f"{info.name}.{spec.name} has no help text in the docstring's Options: section"
            assert spec.kind in ("int", "float", "bool", "str", "choice", "any")
            if spec.choices:
                assert spec.default in spec.choices, f"{info.name}.{spec.name}"
            assert json.loads(json.dumps(spec.as_json()))["name"] == spec.name


def test_option_help_parsing() -> None:
    def fn(model: Any, x: Any, *, target: Any = None, steps: int = 3, mode: str = "a", scale: float | None = None) -> None:
        """Title.

        Options:
            steps: how many
                steps, continued.
            ``mode``: the mode.
            scale: a float.

        Not an option: text after the section.
        """

    fn = cs.registry.choices(mode=("a", "b"))(fn)
    specs = {s.name: s for s in cs.registry.describe_options(fn, skip=("target",))}
    assert specs["steps"].help == "how many steps, continued." and specs["steps"].kind == "int"
    assert specs["mode"].help == "the mode." and specs["mode"].choices == ("a", "b") and specs["mode"].kind == "choice"
    assert specs["scale"].kind == "float" and specs["scale"].default is None


def test_cli_describes_a_method_and_checks_option_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "integrated_gradients"]) == 0
    out = capsys.readouterr().out
    assert "baseline = 'zeros'" in out and "one of zeros, black, blur" in out and "Sundararajan" in out
    assert main(["explain", "integrated_gradients", "cat", "--set", "rule=simpson"]) == 2
    err = capsys.readouterr().err
    assert "choose one of gausslegendre" in err and err.count("\n") == 1


def _digit_folder(root: Path, count: int = 40) -> Path:
    from convscope.zoo.digits import digits_dataset

    data = digits_dataset("test")
    for i in range(count):
        picture, label = data[i]
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        picture.save(root / str(label) / f"{i}.png")
    return root


def test_cli_embed_writes_maps_and_projector_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _digit_folder(tmp_path / "digits")
    out = tmp_path / "out"
    assert main(["embed", str(folder), "--model", "digits_cnn", "--out", str(out), "--perplexity", "5,10", "--projector"]) == 0
    printed = capsys.readouterr().out
    assert "40 images, 64 features from input of fc" in printed and "accuracy" in printed
    for name in ("scatter.png", "thumbnails.png", "perplexities.png", "features.npy", "projector/projector_config.pbtxt",
                 "projector/sprite.png", "projector/metadata.tsv", "projector/tensors.tsv"):
        assert (out / name).stat().st_size > 0, name
    assert np.load(out / "features.npy").shape == (40, 64)


def test_report_maps_a_folder_in_feature_space(tmp_path: Path) -> None:
    folder = _digit_folder(tmp_path / "digits", 30)
    model = cs.load_model("digits_cnn")
    path = cs.report(model, [str(folder / "0" / next(p.name for p in (folder / "0").iterdir()))], tmp_path / "r",
                     methods=["gradcam"], folder=folder)
    page = path.read_text()
    assert "The dataset in feature space" in page and "30 images" in page and "perplexity 15 and 25" in page


def test_cli_trust_and_feature_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`trust`, `filters`, `features`, `maximize`, `dream`: thin layers over the API, each writing a real PNG."""
    assert main(["trust", "cat", "--methods", "gradcam,saliency", "--steps", "4", "--out", str(tmp_path / "t.png")]) == 0
    table = capsys.readouterr().out
    assert "gradcam" in table and "random" in table and "deletion AUC" in table
    commands = [
        ["filters", "--out", str(tmp_path / "f.png")],
        ["features", "cat", "--layers", "_conv_stem,_blocks.5", "-k", "4", "--out", str(tmp_path / "fm.png")],
        ["maximize", "logit:281", "--steps", "4", "--size", "64", "--out", str(tmp_path / "mx.png")],
        ["dream", "cat", "--octaves", "1", "--steps", "2", "--out", str(tmp_path / "dr.png")],
    ]
    for command in commands:
        assert main(command) == 0, command
    for name in ("t.png", "f.png", "fm.png", "mx.png", "dr.png"):
        with Image.open(tmp_path / name) as picture:
            assert min(picture.size) > 32, name
    capsys.readouterr()
    assert main(["maximize", "_blocks.5:99999", "--steps", "2", "--out", str(tmp_path / "bad.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "out of range" in err


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`convscope compare IMAGE --models a,b --methods ...`: the table on stdout and the grid PNG."""
    out = tmp_path / "cmp.png"
    assert main(["compare", "cat", "coffee", "--models", "efficientnet_lite0,digits_cnn", "--methods", "gradcam,saliency",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "efficientnet_lite0" in printed and "digits_cnn" in printed and "coffee" in printed and "ρ=" in printed
    with Image.open(out) as picture:
        assert picture.size[0] > 600 and picture.size[1] > picture.size[0]  # 2 models × 2 pictures stacked
    assert main(["compare", "cat", "--targets", "top2", "--out", str(tmp_path / "top.png")]) == 0
    assert "class #2" in capsys.readouterr().out
    assert main(["compare", "cat", "--targets", "tabby", "--out", str(tmp_path / "bad.png")]) == 2
    assert "--targets" in capsys.readouterr().err


def test_cli_robustness_and_audit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`robustness IMAGE` prints the sweep and writes the grid and curves; `audit --demo` tells the snow/sand
    story; `audit FOLDER --masks FOLDER` audits a dataset on disk."""
    assert main(["robustness", "coffee", "--perturbations", "shadow,rotation", "--out", str(tmp_path / "r.png")]) == 0
    out = capsys.readouterr().out
    assert "shadow" in out and "rotation" in out and "espresso" in out
    assert (tmp_path / "r.png").exists() and (tmp_path / "r_curves.png").exists()
    assert main(["robustness", "coffee", "--perturbations", "shadw"]) == 2
    assert "did you mean 'shadow'" in capsys.readouterr().err
    assert main(["audit", "--demo", "--demo-images", "64", "--out", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out
    assert out.count("verdict: RELIES ON THE BACKGROUND") == 1 and out.count("verdict: looks at the objects") == 1
    assert (tmp_path / "a_biased.png").exists() and (tmp_path / "a_balanced.png").exists()
    from convscope.zoo.shapes import SHAPES_LABELS, shapes_dataset

    data = shapes_dataset(8, biased=True, split="test")
    for i in range(8):
        label = SHAPES_LABELS[int(data.labels[i])]
        for kind, picture in (("images", data.images[i].permute(1, 2, 0).numpy()), ("masks", data.masks[i].float().numpy())):
            (tmp_path / kind / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray((picture * 255).round().astype("uint8")).save(tmp_path / kind / label / f"{i}.png")
    assert main(["audit", str(tmp_path / "images"), "--masks", str(tmp_path / "masks"), "--model", "shapes_biased",
                 "--json", "--out", str(tmp_path / "folder.png")]) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["relies_on_background"] is True and summary["images"] == 8
    assert main(["audit", str(tmp_path / "images")]) == 2
    assert "--masks" in capsys.readouterr().err
