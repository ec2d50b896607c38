"""The Ray engine on a local Ray cluster (``ray.init(num_cpus=2)``): the same output as the local engine, every
picture exactly once when an actor dies mid-run, resuming across engines. Ray is a test dependency (the
``convscope[ray]`` extra): these tests run in CI, never skip."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import convscope as cs


@pytest.fixture(scope="module", autouse=True)
def cluster():
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the actors unpickle this module's dataset class
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, object_store_memory=256 * 2**20)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def shapes():
    from convscope.zoo.shapes import shapes_dataset

    model = cs.load_model("shapes_biased")
    found = shapes_dataset(64, biased=True, split="test")
    return model, found.inputs(model), found.labels


class DiesOnce(torch.utils.data.Dataset):
    """Shapes pictures; reading picture ``fatal`` the first time kills the process reading it (a Ray actor): no
    exception, no cleanup — like a machine lost or the OOM killer. A marker file makes it happen once."""

    def __init__(self, x: torch.Tensor, labels: torch.Tensor, fatal: int, marker: Path) -> None:
        self.x, self.labels, self.fatal, self.marker = x, labels, fatal, str(marker)

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, index: int):
        if index == self.fatal and not os.path.exists(self.marker):
            Path(self.marker).write_text(str(os.getpid()))
            os._exit(1)
        return self.x[index], int(self.labels[index])


def _steps(a: torch.Tensor) -> torch.Tensor:
    """How far apart two float16-stored maps may be: one float16 step of each map's largest value."""
    return a.abs().flatten(1).amax(1)[:, None, None] * 2.0**-10


def test_ray_writes_what_the_local_engine_writes(tmp_path, shapes):
    model, x, labels = shapes
    local = cs.explain_dataset(model, (x, labels), out=tmp_path / "local", shard_size=16, dtype="float32")
    remote = cs.explain_dataset(model, (x, labels), out=tmp_path / "ray", shard_size=16, dtype="float32", engine="ray", actors=2)
    peak = local.maps().abs().max()
    assert float((remote.maps() - local.maps()).abs().max()) <= 1e-5 * float(peak)
    a, b = local.table().to_pydict(), remote.table().to_pydict()
    assert a["index"] == b["index"] == list(range(64))
    for column in ("id", "label", "predicted", "explained", "top_classes", "shard"):
        assert a[column] == b[column], column
    assert np.allclose(a["probability"], b["probability"], atol=1e-6)
    # float16 storage: equal up to the rounding of the stored value
    half_local = cs.explain_dataset(model, (x, labels), out=tmp_path / "local16", shard_size=16)
    half_ray = cs.explain_dataset(model, (x, labels), out=tmp_path / "ray16", shard_size=16, engine="ray", actors=2)
    assert bool(((half_ray.maps() - half_local.maps()).abs() <= _steps(half_local.maps()) + 1e-12).all())


def test_an_actor_killed_mid_run_leaves_every_picture_exactly_once(tmp_path, shapes):
    model, x, labels = shapes
    marker = tmp_path / "died"
    dataset = DiesOnce(x, labels, fatal=37, marker=marker)
    found = cs.explain_dataset(model, dataset, out=tmp_path / "ray", shard_size=8, batch_size=4, engine="ray", actors=2,
                               dtype="float32", thumbnail=16)
    assert marker.exists() and int(marker.read_text()) != os.getpid()  # an actor died, not the driver
    table = found.table().to_pydict()
    assert table["index"] == list(range(64))  # every picture once, in order
    assert sorted(p.name for p in (tmp_path / "ray" / "shards").iterdir()) == [
        f"{n:05d}.{ext}" for n in range(8) for ext in ("npz", "parquet")]
    local = cs.explain_dataset(model, (x, labels), out=tmp_path / "local", shard_size=8, batch_size=4, dtype="float32",
                               thumbnail=16)
    assert float((found.maps() - local.maps()).abs().max()) <= 1e-5 * float(local.maps().abs().max())
    assert table["predicted"] == local.table().column("predicted").to_pylist()


def test_a_local_run_is_resumed_on_ray(tmp_path, shapes):
    model, x, labels = shapes

    def stop(done, total, what):
        if done >= 32:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cs.explain_dataset(model, (x, labels), out=tmp_path / "run", shard_size=16, progress=stop)
    before = {p.name: p.read_bytes() for p in (tmp_path / "run" / "shards").iterdir()}
    resumed = cs.explain_dataset(model, (x, labels), out=tmp_path / "run", shard_size=16, engine="ray", actors=2)
    after = {p.name: p.read_bytes() for p in (tmp_path / "run" / "shards").iterdir()}
    assert all(after[name] == data for name, data in before.items()) and len(after) == 8
    assert resumed.table().column("index").to_pylist() == list(range(64))


def test_embed_on_ray_gives_the_local_features(shapes):
    model, x, labels = shapes
    local = cs.embed(model, (x, labels), projection="none", thumbnail_size=16, batch_size=16)
    remote = cs.embed(model, (x, labels), projection="none", thumbnail_size=16, batch_size=16, engine="ray", actors=2)
    assert np.allclose(remote.features, local.features, rtol=1e-5, atol=1e-5 * float(np.abs(local.features).max()))
    assert remote.labels == local.labels and remote.paths == local.paths
    assert np.array_equal(remote.predictions, local.predictions) and np.array_equal(remote.thumbnails, local.thumbnails)
    assert remote.meta["engine"] == "ray"


def test_audit_on_ray_matches_the_local_audit(shapes):
    from convscope.zoo.shapes import shapes_dataset

    model, x, labels = shapes
    masks = shapes_dataset(64, biased=True, split="test").masks
    local = cs.audit(model, x, labels=labels.tolist(), regions=masks, swaps=8, progress=False)
    remote = cs.audit(model, x, labels=labels.tolist(), regions=masks, swaps=8, engine="ray", actors=2, progress=False)
    assert np.allclose(remote.share, local.share, atol=2e-3) and np.array_equal(remote.is_flagged, local.is_flagged)
    assert remote.relies_on_background and local.relies_on_background
    assert remote.swap is not None and remote.swap.follows_background > 0.5
    clustered = cs.audit(model, x, labels=labels.tolist(), engine="ray", actors=2, progress=False)
    assert clustered.kind == "strategy_audit" and sum(len(s) for s in clustered.classes.values()) == 64
