"""The command line, driven in-process: every command is generated from the registry; errors are one line, exit 2."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import convscope as cs
from conftest import digit_folder
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


def test_cli_describes_a_method_and_checks_option_values(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["methods", "integrated_gradients"]) == 0
    out = capsys.readouterr().out
    assert "baseline = 'zeros'" in out and "one of zeros, black, blur" in out and "Sundararajan" in out
    assert main(["explain", "integrated_gradients", "cat", "--set", "rule=simpson"]) == 2
    err = capsys.readouterr().err
    assert "choose one of gausslegendre" in err and err.count("\n") == 1


def test_cli_embed_writes_maps_and_projector_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = digit_folder(tmp_path / "digits")
    out = tmp_path / "out"
    assert main(["embed", str(folder), "--model", "digits_cnn", "--out", str(out), "--perplexity", "5,10", "--projector"]) == 0
    printed = capsys.readouterr().out
    assert "40 images, 64 features from input of fc" in printed and "accuracy" in printed
    for name in ("scatter.png", "thumbnails.png", "perplexities.png", "features.npy", "projector/projector_config.pbtxt",
                 "projector/sprite.png", "projector/metadata.tsv", "projector/tensors.tsv"):
        assert (out / name).stat().st_size > 0, name
    assert np.load(out / "features.npy").shape == (40, 64)


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

    summary = json.loads(capsys.readouterr().out)
    assert summary["relies_on_background"] is True and summary["images"] == 8
    assert main(["audit", str(tmp_path / "images")]) == 2
    assert "--masks" in capsys.readouterr().err
