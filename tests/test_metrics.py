"""Which explanation to trust: deletion/insertion curves, ranking against a random baseline (``rank``), and
the model-randomization sanity check (Petsiuk et al. 2018; Adebayo et al. 2018); both registered tools with
typed, bounded options, costs, progress and cancellation.

Analytic checks use a model that reads one pixel region (its exact curves are known); the issue's
claims run on the pretrained EfficientNet-Lite0 and the sample photos; the rest uses resnet18 with
random weights at 64×64.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import convscope as cs
from convscope import metrics
from convscope.progress import Cancelled

REGION = (slice(8, 24), slice(8, 24))  # 16×16 of a 32×32 picture: a quarter of the pixels
SCALE = 4.0


class RegionModel(nn.Module):
    """Two logits: SCALE × the mean of the input over REGION, and 0 — so the probability of class 0
    is sigmoid(SCALE × mean over the region), whatever happens outside it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = SCALE * x[:, :, REGION[0], REGION[1]].mean(dim=(1, 2, 3))
        return torch.stack([a, torch.zeros_like(a)], dim=1)


def region_result(x: torch.Tensor, inside: float, outside: float, method: str = "region") -> cs.Result:
    data = torch.full((x.shape[0], 1, *x.shape[-2:]), outside)
    data[:, :, REGION[0], REGION[1]] = inside
    return cs.Result(data=data, method=method, target=torch.zeros(x.shape[0], dtype=torch.long))


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def one_line(error: type[Exception], call, match: str | None = None) -> str:
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, cs.ConvscopeError)
    message = str(info.value)
    assert message and "\n" not in message
    return message


@pytest.fixture(scope="module")
def region() -> tuple[nn.Module, torch.Tensor]:
    return RegionModel(), torch.ones(1, 3, 32, 32)


# --- deletion / insertion: exact curves on a model that reads one region ---------------------------------
def test_region_map_gives_the_analytic_curves(region):
    model, x = region
    steps = 8  # 128 pixels per step: the region (256 pixels) is gone after 2 steps when it goes first
    best, worst = region_result(x, 1.0, 0.0), region_result(x, 0.0, 1.0)
    removed_best = [min(128 * k, 256) for k in range(steps + 1)]  # region pixels changed at point k
    removed_worst = [max(0, 128 * k - 768) for k in range(steps + 1)]
    for kind, fn in (("deletion", metrics.deletion), ("insertion", metrics.insertion)):
        for result, removed in ((best, removed_best), (worst, removed_worst)):
            curve = fn(model, x, result, steps=steps, fill=0.0, progress=False)
            # deletion: the region's mean falls to 0 as its pixels go; insertion: it rises from 0
            expected = [sigmoid(SCALE * (1 - r / 256)) if kind == "deletion" else sigmoid(SCALE * r / 256) for r in removed]
            torch.testing.assert_close(curve.scores[0], torch.tensor(expected), rtol=0, atol=1e-6)
            torch.testing.assert_close(curve.fractions, torch.linspace(0, 1, steps + 1))
            assert curve.auc[0] == pytest.approx(float(np.trapezoid(expected, np.linspace(0, 1, steps + 1))), abs=1e-6)
            assert (curve.metric, curve.method, curve.fill, curve.kind) == (kind, "region", "0", "curve")
    # clean probability at the start of deletion / end of insertion, the fully changed one (0.5) at the other end
    deleted = metrics.deletion(model, x, best, steps=steps, fill=0.0, progress=False)
    inserted = metrics.insertion(model, x, best, steps=steps, fill=0.0, progress=False)
    assert deleted.scores[0, 0] == pytest.approx(sigmoid(SCALE)) == inserted.scores[0, -1]
    assert deleted.scores[0, -1] == pytest.approx(0.5) == inserted.scores[0, 0]


def test_region_map_beats_its_complement_and_random_maps(region):
    model, x = region
    best, worst = region_result(x, 1.0, 0.0), region_result(x, 0.0, 1.0)
    randoms = [metrics.random_map(model, x, seed=s) for s in range(3)]
    for fn, sign in ((metrics.deletion, 1), (metrics.insertion, -1)):  # deletion: lower is better
        auc = {name: sign * float(fn(model, x, r, steps=16, fill=0.0, progress=False).auc[0])
               for name, r in (("best", best), ("worst", worst), *((f"random{i}", r) for i, r in enumerate(randoms)))}
        chance = [auc[f"random{i}"] for i in range(3)]
        assert auc["best"] < min(chance) and max(chance) < auc["worst"]


def test_ties_are_broken_by_seed_not_by_position(region):
    """A constant map has no order: the curve must not depend on where the region sits in raster order."""
    model, x = region
    flat = region_result(x, 1.0, 1.0)
    aucs = {float(metrics.deletion(model, x, flat, steps=16, fill=0.0, seed=s, progress=False).auc[0]) for s in range(3)}
    assert len(aucs) == 3  # each seed a different random order
    raster = region_result(x, 0.0, 0.0)
    raster.data = -torch.arange(32 * 32, dtype=torch.float32).view(1, 1, 32, 32)  # top-left first
    # raster order removes rows 0..7 (outside the region) first: nothing changes for a quarter of the curve
    scores = metrics.deletion(model, x, raster, steps=16, fill=0.0, progress=False).scores[0]
    assert torch.allclose(scores[:5], scores[0].expand(5)) and scores[5] < scores[0]


def test_fills(region):
    model, x = region
    result = region_result(x, 1.0, 0.0)
    ends = {fill: float(metrics.deletion(model, x * 2, result, steps=2, fill=fill, progress=False).scores[0, -1])
            for fill in ("zeros", "mean", 0.5, "blur")}
    assert ends["zeros"] == pytest.approx(0.5)
    assert ends["mean"] == pytest.approx(sigmoid(SCALE * 2))  # a constant picture's mean is itself
    assert ends[0.5] == pytest.approx(sigmoid(SCALE * 0.5))
    assert ends["blur"] == pytest.approx(sigmoid(SCALE * 2), abs=1e-4)  # blurring a constant picture changes nothing


# --- batch semantics, options, provenance --------------------------------------------------------------
def test_batch_equals_single_images(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    result = cs.gradcam(model, x)
    curve = metrics.deletion(model, x, result, steps=6, progress=False)
    assert curve.scores.shape == (2, 7) and curve.auc.shape == (2,)
    torch.testing.assert_close(curve.target, result.target)
    for i in range(2):
        alone = metrics.deletion(model, x[i:i + 1], result[i], steps=6, batch_size=1, progress=False)
        torch.testing.assert_close(alone.scores[0], curve.scores[i], rtol=1e-4, atol=1e-6)
    # the clean end is the model's own probability of the explained class
    probs = model.forward(x).softmax(dim=1).gather(1, result.target[:, None])[:, 0]
    torch.testing.assert_close(curve.scores[:, 0], probs, rtol=1e-4, atol=1e-6)


def test_target_overrides_the_result(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    result = cs.gradcam(model, x, target=3)
    assert metrics.insertion(model, x, result, steps=2, progress=False).target.tolist() == [3, 3]
    assert metrics.insertion(model, x, result, steps=2, target=[5, 7], progress=False).target.tolist() == [5, 7]


def test_bf16_curves_agree_with_fp32(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    result = cs.gradcam(model, x)
    fp32 = metrics.deletion(model, x, result, steps=4, progress=False)
    bf16 = metrics.deletion(model, x, result, steps=4, precision="bf16", progress=False)
    assert bf16.scores.dtype == torch.float32
    assert (bf16.auc - fp32.auc).abs().max() < 0.05 * float(fp32.auc.abs().max()) + 1e-4


def test_random_map(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    a, b, c = (metrics.random_map(model, x, seed=s) for s in (0, 0, 1))
    assert a.method == "random" and a.data.shape == (2, 1, 64, 64)
    assert torch.equal(a.data, b.data) and not torch.equal(a.data, c.data)
    assert float(a.data.min()) >= 0 and float(a.data.max()) <= 1
    assert not torch.equal(a.data[0], a.data[1])  # each image its own noise
    # smooth: neighbouring pixels differ far less than the map's range
    assert float(a.data.diff(dim=-1).abs().max()) < 0.2
    assert "random" not in [m.name for m in cs.methods()]  # a baseline, not a method
    torch.testing.assert_close(a.target, model.forward(x).argmax(dim=1))


# --- rank ---------------------------------------------------------------------------------------------
def test_gradcam_and_ig_beat_random_on_lite0_photos(lite0):
    """The issue's requirement: on EfficientNet-Lite0 and the sample photos, Grad-CAM and integrated
    gradients order pixels better than chance (lower deletion AUC than the random baseline)."""
    x = lite0.preprocess([cs.sample_image(s) for s in ("cat", "coffee", "astronaut", "rocket")])
    ranking = metrics.rank(lite0, x, ["gradcam", "integrated_gradients"], metric="deletion", steps=8,
                              options={"integrated_gradients": {"steps": 8}}, progress=False)
    chance = ranking.row("random").deletion_auc
    assert ranking.row("gradcam").deletion_auc < 0.8 * chance
    assert ranking.row("integrated_gradients").deletion_auc < 0.9 * chance
    assert ranking.rows[-1].method == "random"
    assert ranking.target.tolist() == lite0.forward(x).argmax(dim=1).tolist()


def test_rank_rows_table_and_dict(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    ranking = metrics.rank(model, x, ["gradcam", "saliency", "random"], steps=4, baseline_samples=2, progress=False)
    assert [r.method for r in ranking.rows].count("random") == 1 and len(ranking.rows) == 3
    deletion = [r.deletion_auc for r in ranking.rows]
    assert deletion == sorted(deletion)  # best (lowest) first
    for row in ranking.rows:
        assert len(row.deletion_per_image) == len(row.insertion_per_image) == 2
        assert row.deletion_auc == pytest.approx(float(np.mean(row.deletion_per_image)))
        assert row.seconds >= 0 and row.baseline == (row.method == "random")
    # every method explained the same classes; the rows agree with the standalone curves
    gradcam = cs.gradcam(model, x, target=ranking.target)
    alone = metrics.insertion(model, x, gradcam, steps=4, progress=False)
    assert ranking.row("gradcam").insertion_per_image == pytest.approx(alone.auc.tolist(), abs=1e-6)
    # the baseline row is the mean of its draws
    draws = [metrics.deletion(model, x, metrics.random_map(model, x, seed=k), steps=4, progress=False).auc for k in (0, 1)]
    assert ranking.row("random").deletion_per_image == pytest.approx(torch.stack(draws).mean(0).tolist(), abs=1e-6)
    table = ranking.table()
    assert table.splitlines()[0].split()[0] == "method" and "random (baseline)" in table
    assert len(table.splitlines()) == 2 + 3 + 2 and table.splitlines()[-1] == f"verdict: {ranking.verdict}"
    data = json.loads(json.dumps(ranking.as_dict()))
    assert [r["method"] for r in data["rows"]] == [r.method for r in ranking.rows]
    assert data["verdict"] == ranking.verdict and data["trusted"] == ranking.trusted
    by_insertion = metrics.rank(model, x, ["gradcam"], metric="insertion", steps=4, progress=False)
    assert by_insertion.rows[0].insertion_auc >= by_insertion.rows[1].insertion_auc
    assert by_insertion.rows[0].deletion_auc is None


def hand_ranking(metric: tuple[str, ...] = ("deletion", "insertion"), **aucs: tuple[float | None, float | None]) -> metrics.Ranking:
    """A ranking built by hand: method -> (deletion AUC, insertion AUC); "random" is the baseline."""
    rows = [metrics.RankingRow(m, d, i, None if d is None else [d], None if i is None else [i], 0.0, baseline=m == "random")
            for m, (d, i) in aucs.items()]
    rows.sort(key=lambda r: r.deletion_auc if metric[0] == "deletion" else -r.insertion_auc)
    return metrics.Ranking(rows, metric, 8, "blur")


def test_the_verdict_names_the_method_that_beats_a_random_map() -> None:
    ranking = hand_ranking(gradcam=(0.05, 0.30), saliency=(0.12, 0.10), integrated_gradients=(0.07, 0.20),
                           occlusion=(0.125, 0.196), random=(0.10, 0.15))
    assert ranking.trusted == ["gradcam", "integrated_gradients"]  # both tests passed, best first
    assert ranking.beats_random("saliency") == {"deletion": False, "insertion": False}
    verdict = ranking.verdict
    assert verdict.startswith("Believe gradcam here: it beats a random map on deletion and insertion")
    assert "deletion AUC 0.050 against random's 0.100" in verdict and "insertion AUC 0.300 against random's 0.150" in verdict
    assert "integrated_gradients also beats it" in verdict and "saliency did no better than a random map" in verdict
    assert "occlusion beats it on insertion only (insertion AUC 0.196 against random's 0.150)" in verdict


def test_the_verdict_says_so_when_no_method_beats_a_random_map() -> None:
    """The report's case (main, quick settings): a random map beat saliency, occlusion and IG on deletion."""
    none = hand_ranking(saliency=(0.1216, 0.0835), integrated_gradients=(0.1217, 0.125), occlusion=(0.1271, 0.15),
                        random=(0.0962, 0.156))
    assert none.trusted == [] and all(not any(none.beats_random(m).values()) for m in ("saliency", "occlusion"))
    assert none.verdict.startswith("No method beats a random map here: on these pictures none of saliency, "
                                   "integrated_gradients, occlusion finds the pixels the prediction needs better than chance")
    # better on one test only is said, and is not trust
    partly = hand_ranking(gradcam=(0.0972, 0.131), occlusion=(0.1271, 0.1807), random=(0.0962, 0.156))
    assert partly.trusted == []
    assert partly.verdict.startswith("No method beats a random map on both tests here: occlusion beats it on insertion only "
                                     "(insertion AUC 0.181 against random's 0.156); gradcam did no better than a random map")
    # within the margin (10% of the random map's AUC) is a tie with chance, not a win
    tie = hand_ranking(gradcam=(0.095, 0.16), random=(0.10, 0.15))
    assert tie.beats_random("gradcam") == {"deletion": False, "insertion": False} and tie.verdict.startswith("No method")
    # one metric run: the verdict is about that one
    one = hand_ranking(("deletion",), gradcam=(0.05, None), random=(0.10, None))
    assert one.trusted == ["gradcam"] and one.verdict.startswith("Believe gradcam here: it beats a random map on deletion (")


def test_rank_passes_options_and_a_fixed_target(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    ranking = metrics.rank(model, x, ["gradcam"], target=7, steps=2, options={"gradcam": {"layer": "layer3"}}, progress=False)
    assert ranking.target.tolist() == [7, 7]
    same = metrics.deletion(model, x, cs.gradcam(model, x, target=7, layer="layer3"), steps=2, progress=False)
    assert ranking.row("gradcam").deletion_per_image == pytest.approx(same.auc.tolist(), abs=1e-6)


# --- errors and progress ---------------------------------------------------------------------------------
def test_bad_arguments_are_one_line_errors(region, model_factory):
    model, x = region
    result = region_result(x, 1.0, 0.0)
    for bad in (0, 1.5, True, 32 * 32 + 1):
        one_line(cs.ConvscopeError, lambda bad=bad: metrics.deletion(model, x, result, steps=bad), "steps")
    one_line(cs.ConvscopeError, lambda: metrics.deletion(model, x, result, fill="gray"), "fill")
    one_line(cs.ConvscopeError, lambda: metrics.deletion(model, x, result, batch_size=0), "batch_size")
    one_line(cs.ConvscopeError, lambda: metrics.deletion(model, x, result.data), "cs.Result")
    one_line(cs.ConvscopeError, lambda: metrics.deletion(model, torch.ones(2, 3, 32, 32), result), "does not fit")
    one_line(cs.InputError, lambda: metrics.insertion(model, x[0], result), "batch dimension")
    one_line(cs.ConvscopeError, lambda: metrics.insertion(model, x, result, precision="fp8"), "precision")
    one_line(cs.TargetError, lambda: metrics.insertion(model, x, result, target=[0, 1]), "entries")
    nan = region_result(x, float("nan"), 0.0)
    one_line(cs.ConvscopeError, lambda: metrics.deletion(model, x, nan), "NaN")
    resnet = model_factory("resnet18")
    xr = torch.zeros(1, 3, 64, 64)
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["gradcamm"]), "did you mean 'gradcam'")
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["gradcam"], metric="auc"), "metric")
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["gradcam"], options={"saliency": {}}), "not in methods")
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["gradcam"], options={"gradcam": {"target": 1}}), "target")
    one_line(cs.OptionError, lambda: metrics.rank(resnet, xr, ["gradcam"], baseline_samples=0), "baseline_samples")
    one_line(cs.OptionError, lambda: metrics.rank(resnet, xr, ["gradcam"], steps=5000), "1 ≤ value ≤ 1,024")
    one_line(cs.OptionError, lambda: metrics.rank(resnet, xr, ["gradcam"], fill="gray"), "fill")
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["gradcam", "gradcam"]), "twice")
    one_line(cs.ConvscopeError, lambda: metrics.rank(resnet, xr, ["rank"]), "not an attribution|attribution methods")
    one_line(cs.ConvscopeError, lambda: metrics.random_map(resnet, xr, cells=0), "cells")
    one_line(cs.OptionError, lambda: metrics.sanity(resnet, xr, "gradcam", layers=0), "layers")
    one_line(cs.LayerError, lambda: metrics.sanity(resnet, xr, "gradcam", layers=["layer5"]), "did you mean")
    one_line(cs.LayerError, lambda: metrics.sanity(resnet, xr, "gradcam", layers=["relu"]), "no parameters")
    one_line(cs.OptionError, lambda: metrics.sanity(resnet, xr, "gradcam", threshold=2), "threshold")
    one_line(cs.ConvscopeError, lambda: metrics.sanity(resnet, xr, "nope"), "unknown method")
    one_line(cs.ConvscopeError, lambda: metrics.sanity(resnet, xr, "gradcm"), "did you mean 'gradcam'")


def _state(module: nn.Module) -> tuple:
    return (tuple(m.training for m in module.modules()), tuple(p.requires_grad for p in module.parameters()),
            sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in module.modules()))


class Counting(nn.Module):
    """``inner`` with a count of the forward calls: the work done, whatever calls it. The count is the class's,
    so the deep copy the sanity check explains counts too."""

    calls = 0

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        Counting.calls += 1
        return self.inner(x)


def counting(model: cs.Model) -> cs.Model:
    return cs.Model(Counting(copy.deepcopy(model.module)), input_size=model.input_size, mean=model.mean, std=model.std,
                    labels=model.labels, name=model.name)


def cancel_after(calls: int) -> tuple[list[int], object]:
    """A progress callback that raises Cancelled at its ``calls``-th call, and the forwards counted then."""
    seen: list[int] = []

    def callback(done: int, total: int, what: str) -> None:
        seen.append(done)
        if len(seen) >= calls:
            raise Cancelled("stopped by the user")

    return seen, callback


def test_progress_and_cancel(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    before = _state(model.module)
    calls: list[tuple[int, int, str]] = []
    metrics.rank(model, x, ["saliency"], steps=3, baseline_samples=1, progress=lambda *a: calls.append(a))
    assert calls[-1][0] == calls[-1][1] == 2 * (1 + 2 * 2 * 2)  # 2 runs × (explain + 2 metrics × 2 points × 2 images)
    assert [c[0] for c in calls] == sorted(c[0] for c in calls)
    result = cs.gradcam(model, x)
    counted = counting(model)
    for run in (lambda progress: metrics.deletion(counted, x, result, steps=8, batch_size=1, progress=progress),
                lambda progress: metrics.rank(counted, x, ["gradcam"], steps=8, batch_size=2, progress=progress),
                lambda progress: metrics.sanity(counted, x, "gradcam", progress=progress)):
        seen, callback = cancel_after(2)
        Counting.calls = 0
        with pytest.raises(Cancelled):
            run(callback)
        at_cancel = Counting.calls
        assert len(seen) == 2 and at_cancel > 0
        assert Counting.calls == at_cancel  # no work after the cancel
    assert _state(model.module) == before


def test_a_cancel_gets_through_a_long_method_inside(model_factory, batch_factory):
    """Score-CAM inside rank and sanity: its per-channel progress reaches the caller, so a cancel stops it within
    one of its batches instead of after all 512 channels."""
    counted = counting(model_factory("resnet18"))
    x = batch_factory(counted)[:1]
    for run in (lambda progress: metrics.rank(counted, x, ["scorecam"], steps=2, options={"scorecam": {"batch_size": 8}},
                                              progress=progress),
                lambda progress: metrics.sanity(counted, x, "scorecam", layers=1, options={"batch_size": 8}, progress=progress)):
        seen, callback = cancel_after(1)  # the first report comes from inside Score-CAM
        Counting.calls = 0
        with pytest.raises(Cancelled):
            run(callback)
        # set-up, layer trace, explaining and blank-picture forwards, one batch of 8 masked pictures: not 512 / 8 batches
        assert Counting.calls <= 6
        assert len(seen) == 1


def test_methods_and_their_options_are_checked_before_any_work(model_factory, batch_factory):
    counted = counting(model_factory("resnet18"))
    x = batch_factory(counted)
    bad = [
        (lambda: metrics.rank(counted, x, ["gradcam", "saliency"], options={"saliency": {"abs": "sometimes"}}), "saliency"),
        (lambda: metrics.rank(counted, x, ["scorecam"], options={"scorecam": {"top_channels": 0}}), "top_channels"),
        (lambda: metrics.rank(counted, x, ["gradcam"], options={"gradcam": {"colour": 1}}), "no option 'colour'"),
        (lambda: metrics.sanity(counted, x, "scorecam", options={"batch_size": 10**6}), "batch_size"),
        (lambda: metrics.sanity(counted, x, "gradcam", options={"progress": False}), "progress"),
    ]
    Counting.calls = 0
    for call, match in bad:
        message = one_line(cs.ConvscopeError, call, match)
        assert Counting.calls == 0, message


def test_registered_as_trust_tools_with_costs():
    rank, sanity = cs.registry.get("rank"), cs.registry.get("sanity")
    assert rank.family == sanity.family == "trust" and cs.registry.get("trust") is rank
    assert (rank.returns, sanity.returns) == ("ranking", "sanity") and rank.loops and sanity.loops
    assert cs.metrics.rank is rank.fn and not hasattr(cs.metrics, "compare")
    for tool in (rank, sanity):
        assert tool.report is not None and tool.report.title and tool.report.note
        for spec in tool.option_specs():
            assert spec.help and "None" not in spec.help, (tool.name, spec.name)
        tool.validate(tool.quick)
    bounded = {s.name: (s.minimum, s.maximum) for s in rank.option_specs()}
    assert bounded["steps"] == (1, 1024) and bounded["baseline_samples"] == (1, 64) and bounded["batch_size"][1] == 4096


def test_costs_count_the_forwards(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)  # 2 pictures at the model's size
    gradcam = cs.registry.get("gradcam").cost_of(model, x).forwards
    cost = cs.registry.get("rank").cost_of(model, x, ["gradcam"], steps=5, baseline_samples=2)
    area = x.shape[-2] * x.shape[-1] / (model.input_size[0] * model.input_size[1])  # 64x64 pictures, 224x224 input
    # gradcam, then (1 method + 2 random maps) x 2 curves x 4 points x 2 pictures, the two ends and the random maps' forwards
    assert cost.forwards == pytest.approx(gradcam + (3 * 2 * 4 * 2 + (2 + 2) * 2) * area)
    assert cs.registry.get("rank").cost_of(model, x, ["gradcam"], steps=5, metric="deletion").forwards < cost.forwards
    with pytest.raises(cs.ConvscopeError, match="did you mean 'gradcam'"):
        cs.registry.get("rank").cost_of(model, x, ["gradcm"])
    sanity = cs.registry.get("sanity").cost_of(model, x, "gradcam", layers=["fc", "layer4", "layer3"])
    assert sanity.forwards == pytest.approx(4 * gradcam) and sanity.memory > 0
    every = cs.registry.get("sanity").cost_of(model, x, "gradcam").forwards
    assert every == pytest.approx((len(metrics.layer_groups(model, (3, 64, 64))) + 1) * gradcam)
    assert cs.registry.get("sanity").cost_of(model, x, "gradcam", layers=3).forwards == pytest.approx(5 * gradcam)
    with cs.limits(max_forwards=10), pytest.raises(cs.CostError, match="rank would take about"):
        metrics.rank(model, x, ["gradcam"])


def test_results_know_their_kind_and_metrics_never_draw(model_factory, batch_factory):
    import re
    from pathlib import Path

    import convscope.metrics as package

    for path in Path(package.__file__).parent.glob("*.py"):  # compute code never imports render, not even lazily
        assert not re.search(r"^\s*(from|import)\s+\S*render", path.read_text(), re.MULTILINE), path.name
    model = model_factory("resnet18")
    x = batch_factory(model)
    ranking = metrics.rank(model, x, ["gradcam"], steps=2, baseline_samples=1, progress=False)
    report = metrics.sanity(model, x, "gradcam", layers=1, progress=False)
    curve = ranking.curves["gradcam"]["deletion"]
    for obj, kind in ((ranking, "ranking"), (curve, "curve"), (report, "sanity")):
        assert obj.kind == kind and isinstance(obj, cs.result.Displayable)
        assert cs.render.text(obj) == obj.table() and cs.render.caption(obj)
        assert obj.records() and json.dumps(obj.records())
    assert "<table" in ranking.to_html() and "random (baseline)" in ranking.to_html()
    assert "PASSED" in cs.render.caption(report) or "FAILED" in cs.render.caption(report)


# --- sanity check ------------------------------------------------------------------------------------------
def test_guided_backprop_fails_and_gradcam_passes_on_lite0(lite0, cat_x):
    """Adebayo et al. 2018: guided backprop's maps survive randomizing the top of the network (they
    show the input's edges), Grad-CAM's and the gradient's do not. The user's model is untouched."""
    module = lite0.module
    ids = [id(p) for p in module.parameters()]
    values = copy.deepcopy(module.state_dict())
    rng = torch.get_rng_state()
    reports = {m: metrics.sanity(lite0, cat_x, m, layers=4, progress=False) for m in ("guided_backprop", "gradcam", "saliency")}
    assert not reports["guided_backprop"].passed and reports["guided_backprop"].score[0] > 0.7
    assert reports["guided_backprop"].rank_correlation[0, 0] > 0.95  # the head randomized: the same map
    assert reports["gradcam"].passed and reports["gradcam"].score[0] < 0.4
    assert reports["saliency"].passed
    report = reports["gradcam"]
    assert report.layers == ["_fc", "_conv_head + _bn1", "_blocks.15", "_blocks.14", "(all remaining)"]
    assert report.rank_correlation.shape == report.ssim.shape == (5, 1) and report.maps.shape == (6, 1, 224, 224)
    assert report.rank_correlation_signed is None and reports["guided_backprop"].rank_correlation_signed is not None
    assert report.target.tolist() == lite0.forward(cat_x).argmax(dim=1).tolist()
    assert "PASSED" in report.table() and "FAILED" in reports["guided_backprop"].table()
    json.dumps(report.as_dict())
    # the user's model: same parameter objects, same values, and the global RNG untouched
    assert [id(p) for p in module.parameters()] == ids
    for name, value in module.state_dict().items():
        assert torch.equal(value, values[name]), name
    assert torch.equal(torch.get_rng_state(), rng)


def test_sanity_steps_are_reproducible_and_cascade(model_factory, batch_factory):
    model = model_factory("resnet18")
    x = batch_factory(model)
    a = metrics.sanity(model, x, "gradcam", layers=["fc", "layer4", "layer3"], seed=1, progress=False)
    b = metrics.sanity(model, x, "gradcam", layers=["fc", "layer4"], seed=1, progress=False)
    c = metrics.sanity(model, x, "gradcam", layers=["fc", "layer4", "layer3"], seed=2, progress=False)
    assert a.layers == ["fc", "layer4", "layer3"] and a.rank_correlation.shape == a.ssim.shape == (3, 2)
    torch.testing.assert_close(a.maps[:3], b.maps)  # same seed, same new weights step by step
    torch.testing.assert_close(a.rank_correlation[:2], b.rank_correlation)
    assert not torch.equal(a.maps[-1], c.maps[-1])
    assert not torch.equal(a.maps[3], a.maps[2])  # layer3 feeds Grad-CAM's layer (layer4): the cascade goes on


def test_layer_groups(model_factory):
    groups = metrics.layer_groups(model_factory("resnet18"), (3, 64, 64))
    assert [label for label, _ in groups] == ["fc", "layer4.1", "layer4.0", "layer3.1", "layer3.0", "layer2.1", "layer2.0",
                                              "layer1.1", "layer1.0", "conv1 + bn1"]
    module = model_factory("resnet18").module
    assert groups[-1][1] == [module.conv1, module.bn1]
    covered = [id(m) for _, modules in groups for m in modules]
    assert sorted(covered) == sorted(id(m) for m in module.modules() if next(m.parameters(recurse=False), None) is not None)


def test_similarity_measures_match_scipy_and_skimage():
    from scipy.stats import spearmanr
    from skimage.metrics import structural_similarity

    generator = torch.Generator().manual_seed(0)
    a = torch.rand(2, 40, 48, generator=generator)
    b = a + 0.5 * torch.rand(2, 40, 48, generator=generator)
    a[:, :10] = 0  # ties, as in a ReLU'd map
    b[1] = b[1].round(decimals=1)
    rho = metrics.rank_correlation(a, b)
    for i in range(2):
        assert float(rho[i]) == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-5)
        unit = lambda m: ((m - m.min()) / (m.max() - m.min())).double().numpy()
        expected = structural_similarity(unit(a[i]), unit(b[i]), gaussian_weights=True, sigma=1.5,
                                         use_sample_covariance=False, data_range=1.0)
        assert float(metrics.ssim(a, b)[i]) == pytest.approx(expected, abs=1e-5)
    assert metrics.rank_correlation(a, torch.ones_like(a)).tolist() == [0.0, 0.0]  # a constant map: no order
    assert metrics.ssim(a, a).tolist() == pytest.approx([1.0, 1.0])


# --- pictures ---------------------------------------------------------------------------------------------
def test_figures_render(model_factory, batch_factory, tmp_path):
    from PIL import Image

    model = model_factory("resnet18")
    x = batch_factory(model)
    ranking = metrics.rank(model, x, ["gradcam", "saliency"], steps=4, progress=False)
    report = metrics.sanity(model, x, "gradcam", layers=2, progress=False)
    written = [ranking.curves["gradcam"]["deletion"].save(tmp_path / "curve.png"), ranking.save(tmp_path / "ranking.png"),
               report.save(tmp_path / "sanity.png", index=1), ranking.save(tmp_path / "ranking.html")]
    for path in written[:3]:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and Image.open(path).size[0] > 300
    assert len(ranking.figure().axes) == 2  # one panel per metric
    assert "<table" in written[3].read_text()
