"""Model files: whole pickled models (only when trusted), normalization and class names for any file, one-line errors
for files that cannot be read, TorchScript's missing layer views, .pt2 programs exported for a fixed batch, and
modules passed in keeping their train/eval mode. The command line is driven in-process."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from torch import nn

import convscope as cs
from convscope.cli import main
from convscope.errors import InputError, LayerError, ModelError
from convscope.models import as_model

ANSI = re.compile(r"\x1b\[")


def gray_cnn() -> nn.Module:
    """A 1-channel CNN for 16x16 pictures with 3 classes (random weights, fixed seed)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).eval()


def rgb_cnn() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                             nn.Linear(4, 5)).eval()


@pytest.fixture
def pickled_gray(tmp_path: Path) -> Path:
    path = tmp_path / "gray.pt"
    torch.save(gray_cnn(), path)
    return path


def single_line(message: str) -> str:
    assert "\n" not in message and not ANSI.search(message), message
    return message


# -- whole pickled models ----------------------------------------------------------------------------------------
def test_pickled_model_is_refused_by_default_with_one_plain_line(pickled_gray: Path) -> None:
    with pytest.raises(ModelError) as err:
        cs.load_model(pickled_gray)
    message = single_line(str(err.value))
    assert "torch.nn.modules.container.Sequential" in message and "allow_pickle=True" in message
    assert "--allow-pickle" in message and message.endswith("load that with arch=")  # not cut off


def test_trusted_pickled_one_channel_model_loads_without_a_three_value_mean(pickled_gray: Path) -> None:
    model = cs.load_model(pickled_gray, allow_pickle=True)
    assert model.channels == 1 and model.mean is None and model.std is None
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.forward(x), gray_cnn()(x))
    assert model.preprocess(cs.sample_image("cat"), size=(16, 16)).shape == (1, 1, 16, 16)


def test_normalization_and_labels_can_be_given_for_any_file(pickled_gray: Path, tmp_path: Path) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("zero\n\none\ntwo\n", encoding="utf-8")
    model = cs.load_model(pickled_gray, allow_pickle=True, mean=[0.5], std="0.25", labels=names)
    assert model.mean == (0.5,) and model.std == (0.25,) and model.labels == ["zero", "one", "two"]
    picture = torch.full((1, 1, 16, 16), 0.75)
    torch.testing.assert_close(model.normalize(picture), torch.ones(1, 1, 16, 16))
    assert model.label(2) == "two"
    rgb = tmp_path / "rgb.pt"
    torch.save(rgb_cnn(), rgb)
    assert cs.load_model(rgb, allow_pickle=True).mean == cs.models.IMAGENET_MEAN  # 3 channels: ImageNet's by default
    assert cs.load_model(rgb, allow_pickle=True, mean="none", std="none").mean is None
    with pytest.raises(ModelError, match="mean has 3 values for a 1-channel model; give 1 or 1"):
        cs.load_model(pickled_gray, allow_pickle=True, mean=[0.1, 0.2, 0.3], std=[1.0])
    with pytest.raises(ModelError, match="std must be positive"):
        cs.load_model(pickled_gray, allow_pickle=True, mean=[0.1], std=[0.0])
    with pytest.raises(ModelError, match=r"labels file .* does not exist"):
        cs.load_model(pickled_gray, allow_pickle=True, labels=tmp_path / "missing.txt")


def test_files_that_are_not_models_are_one_plain_line(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pt"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelError) as err:
        cs.load_model(junk)
    assert "not a PyTorch file" in single_line(str(err.value))
    with pytest.raises(ModelError) as err:
        cs.load_model(junk, allow_pickle=True)
    assert "cannot be unpickled" in single_line(str(err.value))
    state = tmp_path / "state.pt"
    torch.save(gray_cnn().state_dict(), state)
    with pytest.raises(ModelError, match=r"holds a state dict .* pass arch="):
        cs.load_model(state, allow_pickle=True)


# -- modules passed in keep their mode -----------------------------------------------------------------------------
@pytest.mark.parametrize("training", [False, True])
def test_arch_module_comes_back_in_the_mode_it_was_given(tmp_path: Path, training: bool) -> None:
    state = tmp_path / "gray_state.pt"
    torch.save(gray_cnn().state_dict(), state)
    arch = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 3)).train(training)
    model = cs.load_model(state, arch=arch)
    assert model.module is arch and arch.training is training and model.channels == 1 and model.mean is None
    cs.saliency(model, torch.rand(1, 1, 16, 16))
    assert all(m.training is training for m in arch.modules())  # convscope ran it in eval mode and put it back
    torch.testing.assert_close(arch[0].weight, gray_cnn()[0].weight)


# -- TorchScript -----------------------------------------------------------------------------------------------------
def test_torchscript_runs_and_explains_why_layer_methods_need_an_eager_model(tmp_path: Path) -> None:
    path = tmp_path / "scripted.pt"
    torch.jit.script(gray_cnn()).save(str(path))
    model = cs.load_model(path)
    assert model.channels == 1 and model.mean is None  # read from the scripted convolution's weight
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.forward(x), gray_cnn()(x))
    assert cs.saliency(model, x).data.shape == (2, 1, 16, 16)  # no layer: works
    with pytest.raises(LayerError) as err:
        cs.gradcam(model, x, layer="0")
    assert "TorchScript" in single_line(str(err.value)) and "arch=" in str(err.value)


# -- torch.export (.pt2) ---------------------------------------------------------------------------------------------
def test_pt2_with_a_fixed_batch_says_what_it_was_exported_for(tmp_path: Path) -> None:
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(gray_cnn(), (torch.rand(2, 1, 16, 16),)), str(path))
    model = cs.load_model(path)
    assert model.channels == 1 and model.input_size == (16, 16) and model.mean is None  # read from the program
    x = torch.rand(2, 1, 16, 16)
    torch.testing.assert_close(model.forward(x), gray_cnn()(x))
    with pytest.raises(InputError) as err:
        model.forward(torch.rand(1, 1, 16, 16))
    message = single_line(str(err.value))
    assert "exported for a batch of exactly 2, got 1" in message and "Dim('batch')" in message


def test_pt2_with_a_dynamic_batch_takes_any_batch(tmp_path: Path) -> None:
    path = tmp_path / "dynamic.pt2"
    program = torch.export.export(rgb_cnn(), (torch.rand(2, 3, 24, 24),),
                                  dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    model = cs.load_model(path)
    assert model.input_size == (24, 24) and model.mean == cs.models.IMAGENET_MEAN
    x = torch.rand(3, 3, 24, 24)
    torch.testing.assert_close(model.forward(x), rgb_cnn()(x))
    assert cs.gradcam(model, x[:1], layer="0").data.shape == (1, 1, 24, 24)


# -- the command line --------------------------------------------------------------------------------------------------
def test_cli_refuses_a_pickled_model_with_advice_it_can_follow(pickled_gray: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--model", str(pickled_gray)]) == 2
    err = capsys.readouterr().err
    line = [text for text in err.splitlines() if text.startswith("convscope: error: ")]
    assert len(line) == 1 and "--allow-pickle" in line[0] and not ANSI.search(err)
    assert line[0].endswith("load that with arch=")


def test_cli_allow_pickle_warns_and_takes_mean_std_and_class_names(pickled_gray: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    names = tmp_path / "classes.txt"
    names.write_text("circle\nsquare\ntriangle\n", encoding="utf-8")
    code = main(["predict", "cat", "--model", str(pickled_gray), "--allow-pickle", "--mean", "0.5", "--std", "0.5",
                 "--class-names", str(names), "--model-size", "16", "-k", "3"])
    captured = capsys.readouterr()
    err = captured.err
    assert code == 0, err
    assert "--allow-pickle: loading" in err and "runs code from the file" in err
    assert all(name in captured.out for name in ("circle", "square", "triangle"))
    assert "mean has 3 values" not in err


def test_cli_bad_normalization_is_one_line(pickled_gray: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary", "--model", str(pickled_gray), "--allow-pickle", "--mean", "0.4,0.5,0.6", "--std", "1"]) == 2
    err = [text for text in capsys.readouterr().err.splitlines() if text.startswith("convscope: error: ")]
    assert len(err) == 1 and "mean has 3 values for a 1-channel model" in err[0]


def test_as_model_of_a_bare_module_is_unchanged() -> None:
    module = gray_cnn().train()
    model = as_model(module)
    assert model.module is module and module.training
