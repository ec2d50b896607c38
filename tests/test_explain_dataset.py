"""explain_dataset: a whole dataset's explanations on disk — format, equality with direct calls, determinism,
resuming after a kill or Ctrl-C (identical output, nothing twice), refusals, file lists, the command line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import convscope as cs
from convscope.errors import ConvscopeError, InputError
from convscope.store import COLUMNS

pa = pytest.importorskip("pyarrow")  # a dependency of convscope: never skipped in practice


@pytest.fixture(scope="module")
def shapes():
    from convscope.zoo.shapes import shapes_dataset

    model = cs.load_model("shapes_biased")
    found = shapes_dataset(96, biased=True, split="test")
    return model, found.inputs(model), found.labels


@pytest.fixture(scope="module")
def folder(tmp_path_factory, shapes):
    """The shapes pictures as PNG files in an ImageFolder layout (circle/, square/)."""
    from convscope.zoo.shapes import SHAPES_LABELS, shapes_dataset

    root = tmp_path_factory.mktemp("pictures")
    found = shapes_dataset(40, biased=True, split="test")
    for i, (picture, label) in enumerate(zip(found.images, found.labels)):
        where = root / SHAPES_LABELS[int(label)]
        where.mkdir(exist_ok=True)
        Image.fromarray((picture.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(where / f"{i:03d}.png")
    return root


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((folder / "shards").iterdir())}


def test_the_folder_holds_one_row_and_one_map_per_picture(tmp_path, shapes):
    model, x, labels = shapes
    found = cs.explain_dataset(model, (x, labels), out=tmp_path / "run", shard_size=40, batch_size=20)
    assert found.complete and len(found) == 96
    table = found.table()
    assert table.column_names == list(COLUMNS)
    assert table.column("index").to_pylist() == list(range(96))
    assert (tmp_path / "run" / "explanations.parquet").is_file()
    assert sorted(p.name for p in (tmp_path / "run" / "shards").iterdir()) == [
        f"{n:05d}.{ext}" for n in range(3) for ext in ("npz", "parquet")]
    # the maps are Grad-CAM's own 16x16 grid, equal to a direct call (float16 storage: 3 significant digits)
    direct = cs.gradcam(model, x[:20])
    low = direct.meta["low_res"][:, 0]
    stored = found.maps(range(20))
    assert stored.shape == low.shape == (20, 16, 16)
    peak = low.abs().flatten(1).amax(1)[:, None, None]
    assert torch.allclose(stored, low, atol=0, rtol=0) or float(((stored - low).abs() / peak).max()) < 1e-3
    rows = table.slice(0, 20).to_pydict()
    assert rows["predicted"] == direct.meta["predicted"].tolist()
    assert rows["explained"] == rows["predicted"]  # target None: the top-1
    assert np.allclose(rows["probability"], direct.meta["predicted_probabilities"].numpy(), atol=1e-6)
    assert rows["label"] == [("circle", "square")[int(v)] for v in labels[:20]]
    assert all(len(k) == 2 for k in rows["top_classes"])  # two classes: top-5 is the top-2
    assert np.allclose([sum(p) for p in rows["top_probabilities"]], 1, atol=1e-5)
    peak_index = low.flatten(1).argmax(1)
    assert np.allclose(rows["peak_y"], ((peak_index // 16).float() + 0.5).numpy() / 16)
    assert found.thumbnails([0, 95]).shape == (2, 64, 64, 3)
    assert "96 of 96 pictures explained by gradcam" in found.text()


def test_input_resolution_float32_and_target_label(tmp_path, shapes):
    model, x, labels = shapes
    found = cs.explain_dataset(model, (x[:24], labels[:24]), out=tmp_path / "run", resolution="input", dtype="float32",
                               target="label", thumbnail=0, shard_size=16)
    direct = cs.gradcam(model, x[:24], target=labels[:24])
    assert torch.allclose(found.maps(), direct.maps(), rtol=1e-6, atol=1e-6 * float(direct.maps().abs().max()))
    assert found.table().column("explained").to_pylist() == labels[:24].tolist()
    with pytest.raises(InputError, match="no thumbnails"):
        found.thumbnails([0])


def test_two_runs_write_identical_files(tmp_path, shapes):
    model, x, labels = shapes
    cs.explain_dataset(model, (x, labels), out=tmp_path / "a", shard_size=32)
    cs.explain_dataset(model, (x, labels), out=tmp_path / "b", shard_size=32)
    assert _files(tmp_path / "a") == _files(tmp_path / "b")


def test_ctrl_c_then_resume_writes_only_the_missing_shards(tmp_path, shapes):
    model, x, labels = shapes
    cs.explain_dataset(model, (x, labels), out=tmp_path / "whole", shard_size=16)

    def interrupt(done, total, what):
        if done >= 48:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cs.explain_dataset(model, (x, labels), out=tmp_path / "cut", shard_size=16, progress=interrupt)
    written = _files(tmp_path / "cut")
    assert 0 < len(written) < 12 and not (tmp_path / "cut" / "explanations.parquet").exists()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut" / "shards").iterdir()}
    counted = []
    resumed = cs.explain_dataset(model, (x, labels), out=tmp_path / "cut", shard_size=16,
                                 progress=lambda done, total, what: counted.append(done))
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cut" / "shards").iterdir()}
    assert all(after[name] == stamp for name, stamp in before.items())  # nothing written twice
    assert counted[0] == len(written) // 2 * 16  # the progress starts at what was already there
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")
    assert resumed.table().column("index").to_pylist() == list(range(96))


KILLED = textwrap.dedent("""
    import os, signal, sys
    import convscope as cs
    model = cs.load_model("shapes_biased")

    def kill(done, total, what):
        if done >= int(sys.argv[3]):
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no finally: like a crash or the OOM killer

    cs.explain_dataset(model, sys.argv[1], out=sys.argv[2], shard_size=8, batch_size=4, progress=kill)
""")


def test_a_run_killed_mid_way_and_resumed_gives_identical_output(tmp_path, folder):
    model = cs.load_model("shapes_biased")
    whole = cs.explain_dataset(model, folder, out=tmp_path / "whole", shard_size=8, batch_size=4)
    script = tmp_path / "killed.py"
    script.write_text(KILLED)
    done = subprocess.run([sys.executable, str(script), str(folder), str(tmp_path / "cut"), "20"], capture_output=True,
                          timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()[-2000:]
    partial = _files(tmp_path / "cut")
    assert 0 < len(partial) < 10
    resumed = cs.explain_dataset(model, folder, out=tmp_path / "cut", shard_size=8, batch_size=4)
    assert _files(tmp_path / "cut") == _files(tmp_path / "whole")
    assert resumed.table().equals(whole.table())
    assert resumed.table().column("id").to_pylist()[0].endswith("circle/000.png") or "square" in resumed.table().column("id")[0].as_py()


def test_another_run_in_the_same_folder_is_refused_unless_overwrite(tmp_path, shapes):
    model, x, labels = shapes
    cs.explain_dataset(model, (x[:16], labels[:16]), out=tmp_path / "run", thumbnail=0)
    with pytest.raises(InputError, match=r"another run \(method"):
        cs.explain_dataset(model, (x[:16], labels[:16]), "saliency", out=tmp_path / "run", thumbnail=0)
    with pytest.raises(InputError, match="another run"):
        cs.explain_dataset(cs.load_model("shapes_balanced"), (x[:16], labels[:16]), out=tmp_path / "run", thumbnail=0)
    with pytest.raises(InputError, match="another run"):
        cs.explain_dataset(model, (x[16:32], labels[16:32]), out=tmp_path / "run", thumbnail=0)
    replaced = cs.explain_dataset(model, (x[:16], labels[:16]), "saliency", out=tmp_path / "run", thumbnail=0, overwrite=True)
    assert replaced.method == "saliency" and replaced.maps().shape == (16, 64, 64)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        cs.explain_dataset(model, (x[:16], labels[:16]), out=tmp_path / "other")
    assert (tmp_path / "other" / "notes.txt").read_text() == "mine"


def test_folders_and_file_lists_give_the_same_explanations(tmp_path, folder):
    model = cs.load_model("shapes_biased")
    by_folder = cs.explain_dataset(model, folder, out=tmp_path / "a", thumbnail=0)
    paths, labels = cs.data.scan_folder(folder)
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"path": [os.path.relpath(p, tmp_path) for p in paths], "label": labels}), tmp_path / "list.parquet")
    by_list = cs.explain_dataset(model, tmp_path / "list.parquet", out=tmp_path / "b", thumbnail=0)
    assert torch.equal(by_folder.maps(), by_list.maps())
    assert by_list.table().column("label").to_pylist() == labels
    assert by_list.table().column("id").to_pylist() == [str(Path(p)) for p in paths]


def test_bad_calls_are_one_line_errors_before_any_work(tmp_path, shapes):
    model, x, _labels = shapes
    (tmp_path / "file").write_text("x")
    calls = [
        (lambda: cs.explain_dataset(model, x, "nosuchmethod", out=tmp_path / "a"), "nosuchmethod"),
        (lambda: cs.explain_dataset(model, x, out=tmp_path / "file"), "is a file"),
        (lambda: cs.explain_dataset(model, x, out=tmp_path / "b", address="auto"), "engine='ray'"),
        (lambda: cs.explain_dataset(model, x, out=tmp_path / "c", top_k=0), "top_k"),
        (lambda: cs.explain_dataset(model, x, out=tmp_path / "d", engine="spark"), "engine"),
        (lambda: cs.explain_dataset(model, x, out=tmp_path / "e", target="nonsense"), "target"),
        (lambda: cs.explain_dataset(model, tmp_path / "missing", out=tmp_path / "f"), "no such"),
    ]
    for call, words in calls:
        with pytest.raises(ConvscopeError, match=words) as caught:
            call()
        assert "\n" not in str(caught.value)
    assert not any((tmp_path / name).exists() for name in "abcdef")


def test_the_ray_extra_missing_is_named(tmp_path, shapes, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    model, x, _labels = shapes
    with pytest.raises(ConvscopeError, match=r"pip install 'convscope\[ray\]'"):
        cs.explain_dataset(model, x[:8], out=tmp_path / "run", engine="ray")


def test_the_model_and_the_pictures_are_left_as_they_were(tmp_path, shapes):
    model, x, _labels = shapes
    module = model.module
    module.train()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    copy = x.clone()
    cs.explain_dataset(model, x[:16], out=tmp_path / "run")
    assert module.training and all(torch.equal(before[k], v) for k, v in module.state_dict().items())
    assert torch.equal(x, copy)
    module.eval()


def test_command_line(tmp_path, monkeypatch):
    from convscope.cli import main

    monkeypatch.chdir(tmp_path)
    out = tmp_path / "run"
    assert main(["explain-dataset", "shapes", "--out", str(out), "--model", "shapes_biased", "--shard-size", "100",
                 "--thumbnail", "0"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["count"] == 400 and manifest["method"] == "gradcam"
    assert main(["explain-dataset", "shapes", "--out", str(out), "--model", "shapes_biased", "--shard-size", "100",
                 "--thumbnail", "0", "--method", "saliency"]) == 2  # another run: refused, exit 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # the folder is the output: no picture written
    assert main(["explain-dataset", "shapes", "--model", "shapes_biased", "--engine", "ray", "--address", "not an address"]) == 2


def test_without_out_a_temporary_folder_is_used_and_removed_at_exit(tmp_path):
    script = tmp_path / "temporary.py"
    script.write_text(textwrap.dedent("""
        import convscope as cs
        from convscope.zoo.shapes import shapes_dataset
        model = cs.load_model("shapes_biased")
        data = shapes_dataset(8, split="test")
        found = cs.explain_dataset(model, data.inputs(model), thumbnail=0)
        assert found.complete and (found.folder / "explanations.parquet").is_file() and str(found.folder) in found.text()
        print(found.folder)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    folder = Path(done.stdout.strip().splitlines()[-1])
    assert folder.name.startswith("convscope-explanations-") and not folder.exists()
