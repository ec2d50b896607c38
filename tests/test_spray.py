"""SpRAy (Lapuschkin et al. 2019): a class's strategies found by clustering its explanations, no masks needed.

Two real shortcuts: the snow/sand shapes explained by the biased model (its Grad-CAM on the background) and by the
balanced one (on the shape), pooled — SpRAy must split them by model; and the tagged-corner set (a watermark on half
of the circles) with a tiny CNN trained here that uses the tag — SpRAy must find the tagged pictures and name the
corner. Then synthetic maps for the eigengap, forcing, determinism, sampling, the sparse eigensolver and the
errors; the words; the pictures.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_rand_score

import convscope as cs
from convscope.errors import ConvscopeError, InputError, OptionError
from convscope.metrics.spray import Strategies, relevance_features, spray, spray_classes, where_words
from convscope.zoo.shapes import shapes_dataset
from convscope.zoo.tagged import CORNERS, TAG, add_tag, tag_region, tagged_dataset, train_tagged_model

spray_module = importlib.import_module("convscope.metrics.spray")  # the module (metrics.spray is the function)


def purity(truth: np.ndarray, assignment: np.ndarray) -> float:
    """The share of pictures in the majority truth group of their cluster."""
    return sum(np.bincount(truth[assignment == c]).max() for c in np.unique(assignment)) / len(truth)


def groups(per_group: int, places: tuple[tuple[int, int], ...] = ((1, 1), (1, 11), (11, 6)), *, size: int = 16,
           seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """Maps (n, size, size) of len(places) groups: a bright 4×4 block at each group's place over faint uniform noise."""
    rng = np.random.default_rng(seed)
    maps, truth = [], []
    for group, (row, column) in enumerate(places):
        block = np.zeros((size, size), np.float32)
        block[row:row + 4, column:column + 4] = 1.0
        maps.append(block + rng.uniform(0, 0.1, (per_group, size, size)).astype(np.float32))
        truth += [group] * per_group
    return torch.from_numpy(np.concatenate(maps)), np.asarray(truth)


# -- 1. the biased and the balanced shapes models, pooled --------------------------------------------------------
@pytest.fixture(scope="module")
def two_models() -> tuple[torch.Tensor, np.ndarray, torch.Tensor]:
    """Grad-CAM of the 200 circles of the biased test set (on snow: both models get them right) from the biased
    model (truth 0) and the balanced one (truth 1): maps (400, 64, 64), truth (400,), pictures (400, 3, 64, 64)."""
    data = shapes_dataset(400, biased=True, split="test")
    circles = data[data.labels == 0]
    maps = []
    for which in ("biased", "balanced"):
        model = cs.load_model(f"shapes_{which}")
        maps.append(cs.gradcam(model, circles.inputs(model), target=0).maps())
    truth = np.repeat([0, 1], len(circles))
    return torch.cat(maps), truth, torch.cat([circles.images, circles.images])


def test_spray_tells_the_shortcut_model_from_the_honest_one(two_models) -> None:
    maps, truth, pictures = two_models
    ids = [f"{'biased' if t == 0 else 'balanced'} {i}" for i, t in enumerate(truth)]
    found = spray(maps, pictures=pictures, ids=ids, name="circle", method="gradcam")
    assert found.suggested == 2 and found.clusters == 2 and not found.forced
    # measured: ARI 1.00, purity 1.00 (a random split: ARI about 0, purity about 0.5)
    assert adjusted_rand_score(truth, found.assignment) >= 0.9
    assert purity(truth, found.assignment) >= 0.95
    assert found.eigengap > 2 * np.delete(spray_module.gaps(found.eigenvalues)[:8], 1).max()  # measured 0.18 vs 0.05
    biased = int(np.bincount(found.assignment[truth == 0]).argmax())
    balanced = 1 - biased
    # the biased model's maps cover the background (half their mass needs most of the picture), the balanced
    # model's sit on the shape
    rows = found.describe()
    assert rows[biased]["where"] == "maps spread over the whole picture" and rows[biased]["focus"] > 0.4
    assert rows[balanced]["focus"] < rows[biased]["focus"] / 1.4
    assert found.records()[0] == {"id": "biased 0", "cluster": int(found.assignment[0]), "evidence": True}
    assert set(found.examples) == {0, 1} and all(len(v) == 8 for v in found.examples.values())
    assert set(found.pictures) == {i for v in found.examples.values() for i in v}  # thumbnails of the examples only
    assert all(p.dtype == np.uint8 and p.shape == (64, 64, 3) for p in found.pictures.values())


# -- 2. the tagged corner: a watermark shortcut the model really uses -------------------------------------------
@pytest.fixture(scope="module")
def tagged_model() -> cs.Model:
    """The tiny CNN trained (seeded, a few seconds) on 400 tagged-corner pictures: half of the circles carry the tag."""
    return train_tagged_model(tagged_dataset(400, seed=0), epochs=4, seed=0)


@pytest.fixture(scope="module")
def tagged_circles():
    """The 200 circles of 400 held-out pictures, half of them tagged."""
    test = tagged_dataset(400, split="test")
    return test[test.labels == 0]


def test_the_tagged_dataset_is_deterministic_and_tagged_where_it_says() -> None:
    a, b = tagged_dataset(40, seed=3), tagged_dataset(40, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.tagged, b.tagged)
    assert not torch.equal(a.images, tagged_dataset(40, seed=3, split="test").images)
    assert a.images.shape == (40, 3, 64, 64) and (a.labels[a.tagged] == 0).all()
    assert int(a.tagged.sum()) == round(0.5 * int((a.labels == 0).sum()))
    rows, columns = tag_region("bottom-left")
    assert (rows.start, rows.stop, columns.start, columns.stop) == (64 - 2 - TAG, 64 - 2, 2, 2 + TAG)
    changed = (a.images != a.clean).any(1)  # (N, 64, 64): only the tag's pixels of the tagged pictures
    assert not changed[~a.tagged].any() and changed[a.tagged][:, rows, columns].all()
    assert changed[a.tagged].sum((1, 2)).eq(TAG * TAG).all()
    assert not (a.masks[:, rows, columns]).any()  # the shape never touches the tag
    for corner in CORNERS:
        rows, columns = tag_region(corner)
        assert add_tag(a.clean[:1], corner)[0, :, rows, columns].amax() == 1.0
    with pytest.raises(InputError, match="corner"):
        tagged_dataset(8, corner="middle")


def test_the_model_uses_the_tag(tagged_model, tagged_circles) -> None:
    """A real shortcut: removing the tag lowers the circle probability of every tagged circle, pasting it on squares
    makes them circles; and the model also learned the shapes (untagged pictures)."""
    model, circles = tagged_model, tagged_circles
    tagged = circles[circles.tagged]
    squares = tagged_dataset(400, split="test")
    squares = squares[squares.labels == 1]
    with torch.inference_mode():
        with_tag = model.forward(tagged.inputs(model)).softmax(1)[:, 0]
        without = model.forward(model.normalize(tagged.clean)).softmax(1)[:, 0]
        squares_tagged = model.forward(model.normalize(add_tag(squares.images))).argmax(1)
        clean = tagged_dataset(400, split="test")
        accuracy = (model.forward(model.normalize(clean.clean)).argmax(1) == clean.labels).float().mean()
    drop = with_tag - without  # measured: mean 0.16, smallest 0.14
    assert float(drop.mean()) > 0.08 and float((drop > 0).float().mean()) >= 0.95
    assert float((squares_tagged == 0).float().mean()) > 0.8  # measured 1.00
    assert float(accuracy) > 0.9  # measured 1.00 on untagged pictures: it sees the shapes too


def test_spray_finds_the_tag_without_any_mask(tagged_model, tagged_circles) -> None:
    result = cs.gradcam(tagged_model, tagged_circles.inputs(tagged_model), target=0)
    found = spray(result)  # a Result: the method, the class and the thumbnails come with it
    truth = tagged_circles.tagged.numpy().astype(int)
    assert found.suggested == 2 and found.clusters == 2
    assert found.method == "gradcam" and found.name == "circle" and found.pictures is not None
    # measured: ARI 1.00, purity 1.00
    assert adjusted_rand_score(truth, found.assignment) >= 0.9 and purity(truth, found.assignment) >= 0.95
    tag = int(np.bincount(found.assignment[truth == 1]).argmax())
    mean = found.mean_maps[tag]
    quarter = mean[8:, :8].sum()  # the bottom-left quarter: a quarter of the picture
    corner = mean[12:, :4].sum()  # the 16×16 pixels round the tag: 1/16 of the picture
    assert quarter > 0.5 and corner > 0.4  # measured 0.69 and 0.60
    assert found.mean_maps[1 - tag][12:, :4].sum() < 0.05  # the other strategy ignores the corner (measured 0.00)
    assert found.where(tag) == "the bottom-left corner" and found.where(1 - tag) == "the centre"
    assert "bottom-left corner" in found.verdict and found.verdict.startswith("2 strategies (eigengap): 50% of 'circle'")
    assert found.describe()[tag]["quadrant"] == "bottom-left"


# -- 3. the algorithm on synthetic maps ----------------------------------------------------------------------------
def test_the_eigengap_counts_well_separated_groups() -> None:
    maps, truth = groups(20)
    found = spray(maps)
    assert found.suggested == 3 and found.clusters == 3
    assert adjusted_rand_score(truth, found.assignment) == 1.0
    assert np.all(np.diff(found.sizes) <= 0) and found.sizes.sum() == 60
    assert found.eigenvalues.shape == (9,) and np.all(np.diff(found.eigenvalues) >= -1e-9) and found.eigenvalues[0] < 1e-6
    assert found.separation > 0.5
    assert [found.where(c) for c in range(3)] == ["the top-left corner", "the top-right corner", "the bottom edge"]
    one = spray(groups(20, ((6, 6),))[0])
    assert one.suggested == 1 and one.clusters == 1 and np.isnan(one.separation)
    assert one.verdict == "1 strategy: all 20 pictures are explained by the centre"


def test_forcing_the_number_of_clusters() -> None:
    maps, truth = groups(20)
    two = spray(maps, clusters=2)
    assert two.clusters == 2 and two.forced and two.suggested == 3 and two.verdict.startswith("2 strategies (forced)")
    assert sorted(two.sizes.tolist()) == [20, 40]  # two of the groups merged, none split
    assert purity(truth, two.assignment) == pytest.approx(2 / 3)
    four = spray(maps, clusters=4, max_clusters=3)
    assert four.clusters == 4 and len(four.eigenvalues) == 5 and four.suggested == 3


def test_same_inputs_same_strategies() -> None:
    maps, _ = groups(15, ((1, 1), (11, 11)), seed=4)
    first, second = spray(maps, seed=3), spray(maps.numpy(), seed=3)
    assert np.array_equal(first.assignment, second.assignment)
    assert np.array_equal(first.eigenvalues, second.eigenvalues) and np.array_equal(first.mean_maps, second.mean_maps)
    assert first.examples == second.examples


def test_maps_of_any_size() -> None:
    """A 7×7 Grad-CAM grid is upsampled, a 224×224 saliency map area-pooled: the same strategies either way."""
    maps, truth = groups(12, ((0, 0), (12, 12)))
    small = torch.nn.functional.adaptive_avg_pool2d(maps[:, None], 7)[:, 0]
    large = torch.nn.functional.interpolate(maps[:, None], size=224, mode="nearest")[:, 0]
    for found in (spray(small), spray(large), spray(maps[:, None])):
        assert found.clusters == 2 and adjusted_rand_score(truth, found.assignment) == 1.0
        assert found.mean_maps.shape == (2, 16, 16)
        assert {found.where(0), found.where(1)} == {"the top-left corner", "the bottom-right corner"}
    assert spray(maps, size=8).mean_maps.shape == (2, 8, 8)


def test_relevance_features_keep_the_positive_mass_at_unit_sum() -> None:
    maps = torch.zeros(4, 32, 32)
    maps[0, :16, :16] = 2.0
    maps[0, 16:, 16:] = -5.0  # negative evidence does not count
    maps[1] = 1.0
    maps[2] = -1.0  # no positive mass at all
    maps[3, 0, 0] = 3.0
    features, evidence = relevance_features(maps, 4)
    assert features.shape == (4, 16) and evidence.tolist() == [True, True, False, True]
    assert np.allclose(features[evidence].sum(1), 1.0) and not features[2].any()
    assert np.allclose(features[0].reshape(4, 4)[:2, :2], 0.25) and np.allclose(features[1], 1 / 16)
    assert features[3, 0] == 1.0
    stacked = torch.cat([maps, torch.rand(4, 32, 32)])
    assert spray(stacked).without_evidence == 1


def test_limit_clusters_a_sample_and_assigns_everyone() -> None:
    maps, truth = groups(40)
    found = spray(maps, limit=45, seed=1)
    assert found.clustered == 45 and found.sampled and len(found) == 120
    assert found.assignment.shape == (120,) and set(found.assignment.tolist()) == {0, 1, 2}
    assert adjusted_rand_score(truth, found.assignment) == 1.0
    assert "a sample of 45 of 120 pictures clustered" in found.verdict and found.summary()["clustered"] == 45
    assert np.array_equal(found.assignment, spray(maps, limit=45, seed=1).assignment)


def test_the_sparse_eigensolver_agrees_with_the_dense_one(monkeypatch) -> None:
    """Above DENSE pictures the spectrum comes from scipy's eigsh on the sparse graph (no N×N matrix)."""
    maps, truth = groups(30)
    dense = spray(maps)
    monkeypatch.setattr(spray_module, "DENSE", 10)
    sparse = spray(maps)
    assert np.allclose(dense.eigenvalues, sparse.eigenvalues, atol=1e-6)
    assert sparse.suggested == 3 and adjusted_rand_score(truth, sparse.assignment) == 1.0


def test_many_pictures_stay_sparse() -> None:
    maps, truth = groups(450, size=8, places=((0, 0), (0, 4), (4, 2)))  # 1,350 maps: the sparse path for real
    found = spray(maps, size=8)
    assert found.clusters == 3 and adjusted_rand_score(truth, found.assignment) == 1.0


def test_spray_classes_runs_each_class() -> None:
    maps, truth = groups(10)
    classes = np.where(truth == 2, 1, 0)  # class 0: the first two groups, class 1: the third
    classes[-8:] = 2  # 8 of the third group are class 2: class 1 keeps 2 pictures
    found = spray_classes(maps, classes, ["cat", "dog", "cow"], min_pictures=4)
    assert list(found) == ["cat", "cow"] and found["cat"].clusters == 2 and found["cat"].name == "cat"
    assert found["cow"].ids == list(range(22, 30))  # ids are positions in the whole set
    assert "dog" not in found  # 2 pictures: too few
    assert all(isinstance(s, Strategies) for s in found.values())


@pytest.mark.parametrize(("maps", "words"), [
    (torch.rand(3, 8, 8), "at least 4 maps"),
    (torch.full((5, 8, 8), float("nan")), "NaN or infinite"),
    (torch.tensor([[[float("inf")]]]).expand(6, 4, 4), "NaN or infinite"),
    (torch.rand(8, 8), "must be (N, h, w)"),
    (torch.rand(5, 2, 8, 8), "must be (N, h, w)"),
    ("maps", "(N, h, w)"),
])
def test_bad_maps_are_one_line_input_errors(maps, words) -> None:
    with pytest.raises(InputError) as error:
        spray(maps)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_bad_options_are_one_line_errors() -> None:
    maps = torch.rand(6, 8, 8)
    for call, field in ((lambda: spray(maps, clusters=0), "clusters"), (lambda: spray(maps, clusters=7), "clusters"),
                        (lambda: spray(maps, size=1), "size"), (lambda: spray(maps, neighbours=6), "neighbours"),
                        (lambda: spray(maps, max_clusters=0), "max_clusters"), (lambda: spray(maps, limit=2), "limit")):
        with pytest.raises(OptionError) as error:
            call()
        assert error.value.field == field and "\n" not in str(error.value)
    for call in (lambda: spray(maps, ids=["a"]), lambda: spray(maps, pictures=torch.rand(2, 3, 8, 8)),
                 lambda: spray_classes(maps, [0, 1])):
        with pytest.raises(ConvscopeError) as error:
            call()
        assert "\n" not in str(error.value)


def test_where_words() -> None:
    corner = np.zeros((16, 16))
    corner[13:, :3] = 1
    assert where_words(corner) == "the bottom-left corner"
    edge = np.zeros((16, 16))
    edge[:3, 6:10] = 1
    assert where_words(edge) == "the top edge"
    centre = np.zeros((16, 16))
    centre[6:10, 6:10] = 1
    assert where_words(centre) == "the centre"
    assert where_words(np.ones((16, 16))) == "maps spread over the whole picture"
    assert where_words(np.zeros((16, 16))) == "maps with no positive evidence"
    straddle = np.zeros((16, 16))
    straddle[4:8, 4:8] = 1  # across the top-left corner's ninth and the centre's
    assert where_words(straddle).startswith("mostly the ")


# -- 4. words, numbers and pictures --------------------------------------------------------------------------------
def test_table_summary_and_records(two_models) -> None:
    maps, _, _ = two_models
    found = spray(maps[::10], name="circle", method="gradcam")
    table = found.table()
    assert table.splitlines()[0].startswith("SpRAy of 40 gradcam maps of 'circle': ")
    assert "richest quarter" in table and "Laplacian eigenvalues" in table and table.splitlines()[-1] == f"verdict: {found.verdict}"
    summary = json.loads(json.dumps(found.summary()))
    assert summary["pictures"] == 40 and summary["clusters"] == found.clusters and len(summary["strategies"]) == found.clusters
    assert summary["strategies"][0]["pictures"] == int(found.sizes[0]) and summary["verdict"] == found.verdict
    assert [r["id"] for r in found.records()] == list(range(40))


def test_strategies_are_drawn(two_models, tmp_path) -> None:
    maps, _, pictures = two_models
    found = spray(maps[::8], pictures=pictures[::8], name="circle", method="gradcam")
    png = found.save(tmp_path / "s.png")
    with Image.open(png) as picture:
        assert picture.width <= 1280 and picture.height > 300
    page = found.save(tmp_path / "s.html").read_text()
    assert "data:image/" in page and "richest quarter" in page and "SpRAy" in page
    assert cs.render.caption(found) == f"SpRAy: {found.verdict}" and "\n" not in cs.render.caption(found)
    assert cs.render.text(found) == found.table()
    without = spray(maps[::8])  # no pictures: the examples are drawn as maps
    assert without.pictures is None and without.save(tmp_path / "maps.png").stat().st_size > 0
    forced = spray(maps[::8], clusters=3)
    assert forced.save(tmp_path / "forced.png").stat().st_size > 0
