"""Embeddings: the shipped digits CNN, features of every kind of input, 2-D maps, pictures, projector files."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from test_state import assert_unchanged, set_mode, snapshot, total_hooks
from torch import nn

import convscope as cs
from convscope.features.embed import Embedding, Projection, embed, pca, tsne, tsne_sweep, umap
from convscope.features.projector import METADATA_COLUMNS, export_projector, sprite_image
from convscope.render.embedding import perplexity_figure, scatter_figure, thumbnail_canvas, thumbnail_figure
from convscope.zoo.digits import DigitsDataset, digits_dataset, weights_path

SAMPLES = ("cat", "coffee", "astronaut", "rocket")


@pytest.fixture(scope="module")
def digits() -> cs.Model:
    return cs.load_model("digits_cnn")


@pytest.fixture(scope="module")
def test_digits() -> DigitsDataset:
    return digits_dataset("test")


@pytest.fixture(scope="module")
def held_out(digits: cs.Model, test_digits: DigitsDataset) -> Embedding:
    return embed(digits, test_digits, projection="none", progress=False)


def subset(dataset: DigitsDataset, rows: list[int]) -> DigitsDataset:
    return DigitsDataset(dataset.images[rows], dataset.targets[rows], dataset.indices[rows])


def one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


def knn_accuracy(points: np.ndarray, labels: np.ndarray, train: np.ndarray, test: np.ndarray, k: int = 5) -> float:
    """k-nearest-neighbour majority vote (numpy): fit on ``train`` rows, score on ``test`` rows."""
    distance = ((points[test, None, :] - points[None, train, :]) ** 2).sum(-1)
    nearest = np.argsort(distance, axis=1)[:, :k]
    votes = labels[train][nearest]
    predicted = np.array([np.bincount(row, minlength=10).argmax() for row in votes])
    return float((predicted == labels[test]).mean())


# --- the shipped digits CNN --------------------------------------------------------------------------
def test_digits_cnn_loads_offline_and_reaches_its_test_accuracy(digits, test_digits) -> None:
    from safetensors import safe_open

    assert "digits_cnn" in cs.available_models()
    assert digits.channels == 1 and digits.input_size == (32, 32) and digits.labels == [str(d) for d in range(10)]
    assert len(test_digits) == 450 and len(digits_dataset("train")) == 1347
    assert not set(test_digits.indices) & set(digits_dataset("train").indices)
    x = digits.preprocess(test_digits.pictures())
    assert x.shape == (450, 1, 32, 32)
    accuracy = float((digits(x).argmax(1).numpy() == test_digits.targets).mean())
    assert accuracy >= 0.95
    with safe_open(str(weights_path()), "pt") as handle:  # what the training script measured and recorded
        assert abs(float(handle.metadata()["test_accuracy"]) - accuracy) < 1e-3
    same = cs.load_model(weights_path(), arch="digits_cnn")  # a state dict + arch loads the same network
    assert torch.equal(same(x[:8]), digits(x[:8]))


# --- 2-D maps ------------------------------------------------------------------------------------------
def test_tsne_of_held_out_digits_separates_them(held_out, test_digits) -> None:
    projection = tsne(held_out, perplexity=30, seed=0)
    assert isinstance(projection, Projection) and projection.coords.shape == (450, 2)
    assert projection.params["pca_dims"] == 50 and projection.params["perplexity"] == 30
    rows = np.arange(450)
    accuracy = knn_accuracy(projection.coords, test_digits.targets, rows[::2], rows[1::2])
    assert accuracy >= 0.9, accuracy
    assert held_out.accuracy() is not None and held_out.accuracy() >= 0.95


def test_tsne_is_seeded_and_adapts_perplexity_to_few_points(held_out) -> None:
    few = held_out[:40]
    a, b = tsne(few, perplexity=5, seed=3), tsne(few.features, perplexity=5, seed=3)
    np.testing.assert_array_equal(a.coords, b.coords)
    tiny = tsne(held_out[:7], perplexity=30)
    assert tiny.params["perplexity"] == 2.0 and tiny.params["requested_perplexity"] == 30
    maps = tsne_sweep(few, (3, 8), seed=3)
    assert [m.params["perplexity"] for m in maps] == [3, 8] and maps[0].title == "t-SNE, perplexity 3"


def test_pca_is_the_top_two_principal_components(held_out) -> None:
    projection = pca(held_out)
    centred = held_out.features - held_out.features.mean(0)
    _, singular, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    expected = centred @ vt[:2].T
    for axis in range(2):  # principal axes are defined up to sign
        sign = np.sign(np.dot(projection.coords[:, axis], expected[:, axis]))
        np.testing.assert_allclose(projection.coords[:, axis] * sign, expected[:, axis], rtol=1e-3, atol=1e-3 * singular[0])
    variance = singular**2 / (singular**2).sum()
    np.testing.assert_allclose(projection.params["explained_variance"], variance[:2], rtol=1e-3)


# --- every kind of input gives the same features ----------------------------------------------------------
def test_folder_paths_tensor_and_dataset_give_the_same_features(tmp_path, digits, test_digits, assert_close) -> None:
    rows = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    part = subset(test_digits, rows)
    for i in range(len(part)):  # ImageFolder layout: one sub-folder per label, nested folders searched too
        folder = tmp_path / "digits" / str(part.targets[i]) / ("nested" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(part.images[i]).save(folder / f"{i:02d}.png")
    (tmp_path / "digits" / "README.txt").write_text("not an image")  # skipped: not an image file
    (tmp_path / "digits" / str(part.targets[0]) / ".hidden.png").write_bytes(b"junk")  # skipped: hidden

    from_folder = embed(digits, tmp_path / "digits", batch_size=5, progress=False)
    order = [int(Path(p).stem) for p in from_folder.paths]
    assert sorted(order) == list(range(len(part)))
    assert from_folder.labels == [str(part.targets[i]) for i in order]

    paths = [from_folder.paths[order.index(i)] for i in range(len(part))]
    from_paths = embed(digits, paths, labels=part.targets.tolist(), batch_size=4, progress=False)
    x = digits.preprocess(part.pictures())
    from_tensor = embed(digits, x, batch_size=64, progress=False)
    from_dataset = embed(digits, part, batch_size=7, progress=False)

    class Tensors(torch.utils.data.Dataset):  # a dataset whose transform already preprocessed: (C, H, W) tensors
        def __len__(self) -> int:
            return len(part)

        def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
            return x[i], int(part.targets[i])

    from_tensors = embed(digits, Tensors(), progress=False)
    reference = torch.from_numpy(from_tensor.features)
    for other in (from_paths, from_dataset, from_tensors):
        assert_close(torch.from_numpy(other.features), reference)
    assert_close(torch.from_numpy(from_folder.features[np.argsort(order)]), reference)
    assert from_paths.labels == from_dataset.labels == from_tensors.labels == [str(t) for t in part.targets]
    assert from_tensor.labels == [None] * len(part) and from_tensor.paths == [None] * len(part)
    assert from_paths.paths == paths
    np.testing.assert_array_equal(from_dataset.thumbnails, from_tensor.thumbnails)
    assert from_dataset.thumbnails.shape == (len(part), 32, 32, 3)  # never larger than the input


def test_default_layer_is_the_head_input(digits, test_digits, lite0, assert_close) -> None:
    x = digits.preprocess(subset(test_digits, list(range(20))).pictures())
    result = embed(digits, x, progress=False)
    with torch.no_grad():
        by_hand = digits.module.features(x)  # the pooled block3 maps that fc reads
        logits = digits.module(x)
    assert result.layer == "input of fc" and result.features.shape == (20, 64)
    assert_close(torch.from_numpy(result.features), by_hand)
    np.testing.assert_array_equal(result.predictions, logits.argmax(1).numpy())
    np.testing.assert_allclose(result.probabilities, logits.softmax(1).amax(1).numpy(), rtol=1e-5)



def test_lite0_features_of_the_sample_photos(lite0, assert_close) -> None:
    photos = [cs.sample_image(name) for name in SAMPLES]
    result = embed(lite0, photos, progress=False)
    x = lite0.preprocess(photos)
    with torch.no_grad():  # EfficientNet: convolutional trunk, average pooling, dropout (identity in eval), _fc
        penultimate = lite0.module._avg_pooling(lite0.module.extract_features(x)).flatten(1)
        logits = lite0.module._fc(penultimate)
    assert result.features.shape == (4, 1280) and result.layer == "input of _fc"
    assert_close(torch.from_numpy(result.features), penultimate)
    assert result.predicted_labels == [lite0.label(int(i)) for i in logits.argmax(1)]
    assert result.predicted_labels[1] == "espresso" and result.thumbnails.shape == (4, 48, 48, 3)
    assert not result.misclassified().any()  # no labels: nothing to compare


def test_a_named_layer_is_pooled(digits, test_digits, assert_close) -> None:
    x = digits.preprocess(subset(test_digits, list(range(6))).pictures())
    with torch.no_grad():
        maps = digits.module.block3(digits.module.pool2(digits.module.block2(digits.module.pool1(digits.module.block1(x)))))
    average = embed(digits, x, layer="block3", progress=False)
    assert average.layer == "block3"
    assert_close(torch.from_numpy(average.features), maps.mean((2, 3)))
    assert_close(torch.from_numpy(embed(digits, x, layer="block3", pool="max", progress=False).features), maps.amax((2, 3)))
    flat = embed(digits, x, layer=digits.module.block3, pool="flatten", batch_size=4, progress=False)
    assert_close(torch.from_numpy(flat.features), maps.flatten(1))


def test_labels_and_misclassified(digits) -> None:
    features = np.zeros((4, 2), dtype=np.float32)
    result = Embedding(features, ["1", "2", None, "cat"], np.array([1, 3, 0, 0]), np.ones(4, np.float32),
                       ["1", "3", "0", "0"], [None] * 4, None, "input of fc", "digits_cnn", classes=list(digits.labels))
    np.testing.assert_array_equal(result.misclassified(), [False, True, False, False])  # "cat" is no class of the model
    assert result.accuracy() == 0.5 and result.label_names() == ["1", "2", "cat"]
    assert len(result[[1, 3]]) == 2 and result[[1, 3]].labels == ["2", "cat"]


# --- the model and the caller's input are left alone -------------------------------------------------------
@pytest.mark.parametrize("mode", ["train", "mixed"])
def test_the_model_and_input_are_untouched(digits, test_digits, mode) -> None:
    model = cs.load_model("digits_cnn")  # a private copy: this test changes its modes
    set_mode(model.module, mode)
    x = model.preprocess(subset(test_digits, list(range(10))).pictures())
    before = snapshot(model.module, x)
    result = embed(model, x, batch_size=3, projection="none", progress=False)
    assert_unchanged(before, model.module, x)
    reference = embed(digits, x, projection="none", progress=False)  # another batch size: CPU kernels round differently
    torch.testing.assert_close(torch.from_numpy(result.features), torch.from_numpy(reference.features), rtol=1e-4,
                               atol=1e-5 * float(np.abs(reference.features).max()))

    def cancel(done: int, total: int, what: str) -> None:
        if done >= 6:
            raise cs.progress.Cancelled("stopped")

    with pytest.raises(cs.progress.Cancelled):
        embed(model, x, batch_size=3, progress=cancel)
    relu = embed(model, x, layer="block1.2", progress=False)  # an in-place ReLU: captured before anything changes it
    assert (relu.features >= 0).all() and relu.features.shape == (10, 16)
    with pytest.raises(cs.LayerError):
        embed(model, x, layer="block9", progress=False)
    assert_unchanged(before, model.module, x)
    assert total_hooks(model.module) == 0


def test_progress_reports_every_image(digits, test_digits) -> None:
    calls: list[tuple[int, int, str]] = []
    embed(digits, subset(test_digits, list(range(10))), batch_size=4, progress=lambda *a: calls.append(a))
    assert calls[:3] == [(4, 10, "embedding"), (8, 10, "embedding"), (10, 10, "embedding")]
    assert set(calls[3:-1]) <= {(0, 1, "t-SNE map")} and calls[-1] == (1, 1, "t-SNE map")  # heartbeats, then done
    calls.clear()
    embed(digits, subset(test_digits, list(range(10))), batch_size=4, projection="none", progress=lambda *a: calls.append(a))
    assert calls == [(4, 10, "embedding"), (8, 10, "embedding"), (10, 10, "embedding")]


def test_cancel_stops_before_the_next_batch_and_during_the_map(digits, test_digits) -> None:
    state = {"cancelled": False, "after": 0}

    def count(module: nn.Module, args: Any) -> None:
        state["after"] += state["cancelled"]

    def cancel(done: int, total: int, what: str) -> None:
        if (what == "embedding" and done >= 8) or what == "t-SNE map":
            state["cancelled"] = True
            raise cs.progress.Cancelled("stopped")

    handle = digits.module.register_forward_pre_hook(count)
    try:
        with pytest.raises(cs.progress.Cancelled):
            embed(digits, subset(test_digits, list(range(20))), batch_size=4, progress=cancel)
        assert state["after"] == 0  # no batch after the cancel
        part = subset(test_digits, list(range(8)))
        with pytest.raises(cs.progress.Cancelled):  # the t-SNE map: a heartbeat (or its end) lets the cancel through
            embed(digits, part, batch_size=8, progress=cancel)
    finally:
        handle.remove()
    assert total_hooks(digits.module) == 0


def test_embed_stores_its_map_and_draws_it(digits, test_digits, tmp_path) -> None:
    part = subset(test_digits, list(range(60)))
    found = embed(digits, part, progress=False)
    assert found.kind == "embedding" and found.projection.method == "t-SNE" and found.projection.coords.shape == (60, 2)
    assert found.projection.params["perplexity"] == pytest.approx(59 / 3)  # lowered for 60 points
    np.testing.assert_array_equal(found.projection.coords, tsne(found, perplexity=30, seed=0).coords)  # seeded, same map
    assert "t-SNE, perplexity 19.7" in repr(found)
    np.testing.assert_array_equal(found[:10].projection.coords, found.projection.coords[:10])
    flat = embed(digits, part, projection="pca", progress=False)
    np.testing.assert_array_equal(flat.projection.coords, pca(found).coords)
    bare = embed(digits, part, projection="none", progress=False)
    assert bare.projection is None and "PCA" in cs.render.figure(bare).axes[0].get_title()  # drawn with PCA then
    title = cs.render.figure(found).axes[0].get_title()
    assert title.startswith("digits_cnn · input of fc · t-SNE, perplexity 19.7") and "accuracy" in title
    assert Image.open(found.save(tmp_path / "map.png")).size[0] > 500
    assert found.save(tmp_path / "thumbs.png", view="thumbnails").stat().st_size > 0
    assert "60 images in the feature space of digits_cnn" in cs.render.text(found)
    assert embed(digits, subset(test_digits, [0, 1, 2]), progress=False).projection.method == "PCA"  # t-SNE needs 4
    one = embed(digits, subset(test_digits, [0]), progress=False)
    assert one.projection is None and one.to_png()[:4] == b"\x89PNG"
    projection = tsne(found, perplexity=10)
    assert projection.kind == "projection" and projection.source is not None and projection.source.projection is None
    assert len(projection.figure().legends) == 1  # coloured by label, with its legend
    assert Projection(projection.coords, "t-SNE", {"perplexity": 10}).to_png()[:4] == b"\x89PNG"  # plain dots
    cost = cs.registry.get("embed").cost_of(digits, part)
    assert cost.per_item and cost.forwards == 1 and cost.memory > 0
    with pytest.raises(cs.OptionError, match="projection='umap' is not one of 'tsne', 'pca', 'none'"):
        embed(digits, part, projection="umap")
    with pytest.raises(cs.OptionError, match=r"perplexity=0 is out of range"):
        embed(digits, part, perplexity=0)


# --- bad inputs: one-line errors -------------------------------------------------------------------------
def test_bad_inputs_give_one_line_errors(tmp_path, digits) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(cs.InputError) as err:
        embed(digits, empty)
    assert "no image files" in one_line(err)
    (empty / "notes.txt").write_text("hello")
    (empty / "label").mkdir()
    (empty / "label" / "data.csv").write_text("1,2")
    with pytest.raises(cs.InputError):
        embed(digits, empty)
    broken = tmp_path / "broken" / "7"
    broken.mkdir(parents=True)
    (broken / "bad.png").write_bytes(b"this is not a png")
    with pytest.raises(cs.ImageError) as err:
        embed(digits, broken.parent, progress=False)
    assert "bad.png" in one_line(err)
    with pytest.raises(cs.ImageError) as err:
        embed(digits, [str(empty / "notes.txt")], progress=False)
    one_line(err)
    with pytest.raises(cs.InputError) as err:
        embed(digits, tmp_path / "missing")
    assert "no such" in one_line(err)
    x = torch.zeros(2, 1, 32, 32)
    cases: list[tuple[Callable[[], Any], type[Exception], str]] = [
        (lambda: embed(digits, x[0]), cs.InputError, "batch dimension"),
        (lambda: embed(digits, torch.zeros(2, 3, 32, 32)), cs.InputError, "channels"),
        (lambda: embed(digits, []), cs.InputError, "empty"),
        (lambda: embed(digits, x, labels=["1"]), cs.InputError, "one label per image"),
        (lambda: embed(digits, x, pool="median"), cs.ConvscopeError, "pool"),
        (lambda: embed(digits, x, batch_size=0), cs.ConvscopeError, "batch_size"),
        (lambda: embed(digits, 42), cs.InputError, "folder"),
        (lambda: embed(nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU()), x), cs.LayerError, "layer="),
        (lambda: tsne(np.zeros((3, 5))), cs.InputError, "at least 4"),
        (lambda: tsne(np.zeros(5)), cs.InputError, "(N, D)"),
        (lambda: tsne(np.full((6, 2), np.nan)), cs.InputError, "NaN"),
        (lambda: tsne(np.zeros((6, 2)), threads=0), cs.ConvscopeError, "threads"),
    ]
    for call, kind, fragment in cases:
        with pytest.raises(kind) as err:
            call()
        assert fragment in one_line(err), (fragment, str(err.value))


def test_umap_says_what_to_install_when_missing(held_out) -> None:
    try:
        import umap as _  # noqa: F401
    except ImportError:
        with pytest.raises(cs.ConvscopeError) as err:
            umap(held_out)
        assert "umap-learn" in one_line(err)
    else:  # pragma: no cover - only where umap-learn is installed
        assert umap(held_out[:60], n_neighbors=5).coords.shape == (60, 2)


# --- pictures ----------------------------------------------------------------------------------------
def test_pictures_mark_the_misclassified_and_snap_thumbnails_without_overlap(held_out) -> None:
    projection = pca(held_out)
    wrong = held_out.misclassified()
    assert 0 < wrong.sum() < 20  # the shipped model misses a few held-out digits
    fig = scatter_figure(held_out, projection)
    crosses = [c for c in fig.axes[0].collections if len(c.get_offsets()) == wrong.sum() and c.get_edgecolor().size]
    assert crosses and np.allclose(crosses[-1].get_offsets(), projection.coords[wrong])
    canvas, corners, drawn = thumbnail_canvas(held_out, projection, size=900, thumb=20)
    assert canvas.shape == (900, 900, 3) and len(drawn) == len(held_out)
    assert len({tuple(c) for c in corners}) == len(corners) and (corners % 20 == 0).all()  # one grid cell each
    x, y = corners[0]
    small = np.asarray(Image.fromarray(held_out.thumbnails[drawn[0]]).resize((20, 20), Image.BILINEAR))
    np.testing.assert_array_equal(canvas[y + 2:y + 18, x + 2:x + 18], small[2:18, 2:18])  # inside the frame
    free, _, _ = thumbnail_canvas(held_out, projection, size=600, thumb=16, snap=False)
    assert free.shape == (600, 600, 3)
    assert len(thumbnail_figure(held_out, projection, size=600).axes) == 1
    panels = perplexity_figure(held_out, [projection, Projection(projection.coords[:, ::-1].copy(), "PCA")], ncols=2)
    assert len([ax for ax in panels.axes if ax.has_data()]) == 2


# --- TensorBoard projector files ----------------------------------------------------------------------------
_EMBEDDING_FIELDS = {"tensor_name": str, "metadata_path": str, "bookmarks_path": str, "tensor_shape": int,
                     "tensor_path": str}
_SPRITE_FIELDS = {"image_path": str, "single_image_dim": int}


def parse_projector_config(text: str) -> list[dict[str, Any]]:
    """A strict reader of projector_config.pbtxt: only ProjectorConfig's fields, quoted strings, integers."""
    embeddings: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line:
            continue
        if line == "embeddings {" and not stack:
            embeddings.append({})
            stack.append(embeddings[-1])
        elif line == "sprite {" and len(stack) == 1:
            stack[0]["sprite"] = {}
            stack.append(stack[0]["sprite"])
        elif line == "}" and stack:
            stack.pop()
        else:
            match = re.fullmatch(r'(\w+): (?:"((?:[^"\\]|\\.)*)"|(\d+))', line)
            fields = _EMBEDDING_FIELDS if len(stack) == 1 else _SPRITE_FIELDS
            assert match and stack and match.group(1) in fields, f"line {number}: {raw!r}"
            name, text_value, int_value = match.groups()
            kind = fields[name]
            assert (kind is str) == (text_value is not None), f"line {number}: wrong type for {name}"
            value = text_value if kind is str else int(int_value)
            if name in ("tensor_shape", "single_image_dim"):
                stack[-1].setdefault(name, []).append(value)
            else:
                assert name not in stack[-1], f"line {number}: {name} repeated"
                stack[-1][name] = value
    assert not stack, "unclosed block"
    return embeddings


def test_projector_files_are_what_tensorboard_reads(tmp_path, held_out) -> None:
    part = held_out[:50]
    projection = Projection(part.features[:, :2].copy(), "t-SNE", {"perplexity": 12})
    config = export_projector(part, tmp_path / "logs", coords=projection)
    assert config == tmp_path / "logs" / "projector_config.pbtxt"
    entries = parse_projector_config(config.read_text())
    assert [e["tensor_path"] for e in entries] == ["tensors.tsv", "coords.tsv"]
    main = entries[0]
    assert main["tensor_name"] == "digits_cnn: input of fc" and main["tensor_shape"] == [50, 64]
    assert main["metadata_path"] == "metadata.tsv" and main["sprite"] == {"image_path": "sprite.png", "single_image_dim": [32, 32]}
    assert entries[1]["tensor_shape"] == [50, 2] and entries[1]["sprite"] == main["sprite"]

    rows = (tmp_path / "logs" / "tensors.tsv").read_text().splitlines()
    values = np.array([[float(v) for v in row.split("\t")] for row in rows], dtype=np.float32)  # as the plugin parses
    np.testing.assert_allclose(values, part.features, rtol=1e-6, atol=1e-7)
    metadata = (tmp_path / "logs" / "metadata.tsv").read_text().split("\n")
    assert metadata[-1] == "" and len(metadata) - 1 == len(part) + 1  # header + one row per point
    assert metadata[0] == "\t".join(METADATA_COLUMNS)
    assert metadata[1:-1] == [f"{label}\t{predicted}\t" for label, predicted in zip(part.labels, part.predicted_labels)]
    sprite = np.asarray(Image.open(tmp_path / "logs" / "sprite.png"))
    side = math.ceil(math.sqrt(len(part))) * 32
    assert sprite.shape == (side, side, 3)
    np.testing.assert_array_equal(sprite[32:64, 64:96], part.thumbnails[8 + 2])  # row-major, 8 per row

    try:
        from google.protobuf import text_format
        from tensorboard.plugins.projector import projector_config_pb2
    except ImportError:
        return
    parsed = text_format.Parse(config.read_text(), projector_config_pb2.ProjectorConfig())
    assert text_format.MessageToString(parsed) == config.read_text()  # exactly the canonical text
    assert list(parsed.embeddings[0].sprite.single_image_dim) == [32, 32]


def test_sprite_shrinks_to_the_size_limit() -> None:
    thumbs = np.random.default_rng(0).integers(0, 256, (300, 12, 12, 3), dtype=np.uint8)
    sprite = sprite_image(thumbs, limit=100)  # 18 per row: 5-px cells
    assert sprite.shape == (90, 90, 3)
    assert sprite_image(thumbs).shape == (18 * 12, 18 * 12, 3)
    flat = np.full((5, 12, 12, 3), 200, dtype=np.uint8)
    np.testing.assert_array_equal(sprite_image(flat, limit=18)[:6, :6], 200)  # 3 per row, 6-px cells, averaged
    with pytest.raises(cs.InputError):
        sprite_image(thumbs, limit=10)


def test_tensorboard_projector_plugin_serves_the_export(tmp_path, held_out) -> None:
    pytest.importorskip("werkzeug")
    plugin_module = pytest.importorskip("tensorboard.plugins.projector.projector_plugin")
    from tensorboard.plugins import base_plugin
    from werkzeug.test import Client

    part = held_out[:30]
    export_projector(part, tmp_path)

    class Runs:  # no runs: the plugin then reads the log folder itself
        def list_runs(self, ctx: Any, experiment_id: str) -> list[Any]:
            return []

    plugin = plugin_module.ProjectorPlugin(base_plugin.TBContext(logdir=str(tmp_path), data_provider=Runs()))
    apps = plugin.get_plugin_apps()

    def get(route: str, **query: str) -> bytes:
        response = Client(apps[route]).get(route, query_string=query)
        assert response.status_code == 200, response.get_data()
        return response.get_data()

    name = "digits_cnn: input of fc"
    tensor = np.frombuffer(get("/tensor", run=".", name=name), dtype=np.float32).reshape(30, 64)
    np.testing.assert_allclose(tensor, part.features, rtol=1e-6, atol=1e-7)
    assert get("/metadata", run=".", name=name).decode().count("\n") == 31
    assert get("/sprite_image", run=".", name=name)[:8] == b"\x89PNG\r\n\x1a\n"
