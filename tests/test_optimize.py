"""Feature visualization by optimization: objectives, parameterizations, maximize, class_image, dream.

Oracles: hand-built activations with hand-computed objective values; "the objective goes up"
(Lucid's test); natural pictures as the bar a maximized channel must clear; the model's own
probability of the class; an independent forward on the returned pictures; state snapshots
(tests/test_state.py) after success, errors and cancellation.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import test_state
import torch
from test_state import assert_unchanged, give_grads, set_mode, snapshot
from torch import nn

import convscope as cs
from convscope import features
from convscope.features import objectives as obj
from convscope.features import param
from convscope.progress import Cancelled
from convscope.render import features as render_features

QUICK = {"steps": 6, "progress": False}


def tiny_cnn(channels: int = 3, size: int = 32, classes: int = 10) -> cs.Model:
    """A seeded CNN with a fixed-size head (Flatten -> Linear): the transformed picture must reach it
    at exactly ``size``. ReLU in place after the first conv, BatchNorm in the middle."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = nn.Sequential(
            nn.Conv2d(channels, 8, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU(),
            nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(16 * (size // 2) ** 2, classes),
        ).eval()
    mean, std = ((0.5,), (0.25,)) if channels == 1 else ((0.4, 0.45, 0.5), (0.25, 0.25, 0.25))
    return cs.Model(module, input_size=(size, size), mean=mean, std=std, name=f"tiny{channels}x{size}")


@pytest.fixture(scope="module")
def tiny() -> cs.Model:
    return tiny_cnn()


borrow = test_state.borrow  # the fixture lending a shared model, restored after the test


# -- objectives on hand-built activations ----------------------------------------------------------
def evaluation() -> obj.Evaluation:
    acts = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)  # (B=2, C=3, 2, 2)
    image = torch.zeros(2, 1, 2, 2)
    image[0, 0, 0, 1] = 1.0  # one bright pixel in picture 0
    return obj.Evaluation({"L": acts}, torch.tensor([[1.0, 5.0], [7.0, 3.0]]), image)


def test_leaf_objectives_give_hand_computed_values():
    ev = evaluation()
    a = ev.acts["L"]
    torch.testing.assert_close(obj.channel("L", 1)(ev), a[:, 1].mean(dim=(1, 2)))
    torch.testing.assert_close(obj.channel("L", [2, 0])(ev), torch.stack([a[0, 2].mean(), a[1, 0].mean()]))
    torch.testing.assert_close(obj.neuron("L", 1)(ev), a[:, 1, 1, 1])  # centre of a 2x2 map: row 1, column 1
    torch.testing.assert_close(obj.neuron("L", 1, x=1, y=0)(ev), a[:, 1, 0, 1])
    torch.testing.assert_close(obj.class_logit(1)(ev), torch.tensor([5.0, 3.0]))
    torch.testing.assert_close(obj.class_logit([1, 0])(ev), torch.tensor([5.0, 7.0]))
    torch.testing.assert_close(obj.layer_l2("L")(ev), a.pow(2).flatten(1).mean(1))
    torch.testing.assert_close(obj.direction("L", [1.0, 0.0, -1.0])(ev), (a[:, 0] - a[:, 2]).mean(dim=(1, 2)))
    torch.testing.assert_close(obj.total_variation()(ev), torch.tensor([0.5 + 0.5, 0.0]))  # |dx| and |dy| means
    torch.testing.assert_close(obj.l1(constant=0.5)(ev), torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(obj.l2()(ev), torch.tensor([0.5, 0.0]), atol=1e-5, rtol=0)


def test_diversity_is_minus_the_gram_cosine_between_pictures():
    same = torch.ones(2, 2, 3, 3)
    ev = obj.Evaluation({"L": same}, None, torch.zeros(2, 3, 3, 3))
    torch.testing.assert_close(obj.diversity("L")(ev), torch.tensor([-1.0, -1.0]))
    apart = torch.zeros(2, 2, 3, 3)
    apart[0, 0], apart[1, 1] = 1.0, 1.0  # Gram matrices with disjoint support: cosine 0
    ev = obj.Evaluation({"L": apart}, None, torch.zeros(2, 3, 3, 3))
    torch.testing.assert_close(obj.diversity("L")(ev), torch.zeros(2))
    assert obj.diversity("L")(obj.Evaluation({"L": same[:1]}, None, torch.zeros(1, 3, 3, 3))).item() == 0


def test_objectives_compose_with_arithmetic():
    ev = evaluation()
    a, b = obj.channel("L", 0), obj.class_logit(1)
    combined = 2 * a - b / 4 + 1
    torch.testing.assert_close(combined(ev), 2 * a(ev) - b(ev) / 4 + 1)
    torch.testing.assert_close((-a)(ev), -a(ev))
    torch.testing.assert_close((a * b)(ev), a(ev) * b(ev))
    torch.testing.assert_close((1 - a)(ev), 1 - a(ev))
    torch.testing.assert_close(sum([a, b])(ev), a(ev) + b(ev))
    assert combined.layers == ("L",) and combined.needs_output and not a.needs_output
    assert repr(a - 0.1 * obj.total_variation()) == "channel('L', 0) - 0.1 * total_variation()"
    assert repr(2 * (a + b)) == "2 * (channel('L', 0) + class_logit(1))"
    assert repr(a - (b - a)) == "channel('L', 0) - (class_logit(1) - channel('L', 0))"
    assert obj.channel("L", range(4)).batch == 4 and (obj.channel("L", range(4)) + a).batch == 4
    with pytest.raises(cs.ConvscopeError, match="batches of 4 and 2"):
        obj.channel("L", range(4)) + obj.channel("L", [0, 1])


@pytest.mark.parametrize("text, expected", [
    ("features.28:17", "channel('features.28', 17)"),
    ("_swish@1:5", "channel('_swish@1', 5)"),
    ("features.28:17:3:4", "neuron('features.28', 17, x=3, y=4)"),
    ("features.28:0-63", "channel('features.28', range(0, 64))"),
    ("layer4:3,5,9", "channel('layer4', [3, 5, 9])"),
    ("logit:281", "class_logit(281)"),
])
def test_objective_strings(text, expected):
    assert repr(obj.objective_from_string(text)) == expected


@pytest.mark.parametrize("text, match", [
    ("features.28", "needs a channel"),
    ("features.28:x", "not a channel number"),
    ("features.28:9-3", "backwards"),
    ("features.28:1:2", "has 3 parts"),
    ("features.28:1:a:b", "must be numbers"),
    ("logit:1:2", "logit:CLASS"),
    (":5", "needs a channel"),
])
def test_bad_objective_strings_are_one_line_errors(text, match):
    with pytest.raises(cs.ConvscopeError, match=match) as info:
        obj.objective_from_string(text)
    assert "\n" not in str(info.value)


# -- parameterizations and transforms --------------------------------------------------------------
@pytest.mark.parametrize("kind", param.PARAMS)
@pytest.mark.parametrize("channels", [1, 3])
def test_parameterizations_give_pictures_in_range_near_grey(kind, channels):
    picture = param.image_param(kind, 2, channels, (28, 33), generator=torch.Generator().manual_seed(0))
    images = picture.image()
    assert images.shape == (2, channels, 28, 33) and images.min() >= 0 and images.max() <= 1
    assert (images - 0.5).abs().max() < 0.1  # the start is grey with a little noise
    (grad,) = torch.autograd.grad(images.sum(), picture.params)
    assert grad.abs().sum() > 0


def test_fft_parameterization_has_a_one_over_f_spectrum():
    picture = param.image_param("fft", 64, 1, (64, 64), decorrelate=False, generator=torch.Generator().manual_seed(0))
    raw = torch.logit(picture.image().detach()).squeeze(1)  # before the sigmoid
    power = torch.fft.rfft2(raw).abs().pow(2).mean(0)
    low, high = power[1:3, 1:3].mean(), power[20:30, 20:30].mean()
    assert low / high > 50  # amplitude ~ 1/f: low frequencies dominate


def test_transforms_are_seeded_and_keep_the_size():
    images = torch.rand(2, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    chain = param.compose(param.pad(4), param.jitter(6), param.random_scale([0.9, 1.1]), param.random_rotate([-10, 10]))
    a = chain(images, torch.Generator().manual_seed(3))
    b = chain(images, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    fused = param.default_transforms(40)
    out = fused(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and not torch.equal(out, images)
    identity = param.random_affine(shift=0, scales=[1.0], angles=[0.0])
    torch.testing.assert_close(identity(images, torch.Generator()), images, atol=1e-5, rtol=0)
    shifted = param.random_affine(shift=3, scales=[1.0], angles=[0.0])(images, torch.Generator().manual_seed(5))
    rows = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
            if torch.allclose(shifted[0, :, 5:-5, 5:-5], images[0, :, 5 + dy:35 + dy, 5 + dx:35 + dx], atol=1e-5)]
    assert len(rows) == 1  # an integer shift of the picture


# -- every objective goes up -----------------------------------------------------------------------
OBJECTIVES = {
    "channel": lambda: obj.channel("4", 3),
    "neuron": lambda: obj.neuron("2", 5),
    "class_logit": lambda: obj.class_logit(7),
    "layer_l2": lambda: obj.layer_l2("5"),
    "direction": lambda: obj.direction("6", torch.linspace(-1, 1, 16)),
    "diversity": lambda: obj.channel("6", 2) + obj.diversity("6"),
    "total_variation": lambda: -obj.total_variation(),
    "l1": lambda: -obj.l1(constant=0.2),
    "l2": lambda: obj.l2("0"),
    "composed": lambda: obj.channel("4", 1) - 0.5 * obj.channel("4", 2) + 0.1 * obj.class_logit(3),
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_increases(tiny, name):
    objective = OBJECTIVES[name]()
    batch = 2 if name == "diversity" else None
    # the start is already almost flat: total variation needs steps smaller than its noise (Adam moves every value by ~lr)
    lr = 0.001 if name == "total_variation" else 0.1
    result = features.maximize(tiny, objective, steps=12, batch=batch, transforms="none", lr=lr, progress=False)
    start, end = result.meta["history"][:, 0], result.meta["values"]
    assert (end > start).all(), f"{objective}: {start.tolist()} -> {end.tolist()}"
    assert result.data.shape == (batch or 1, 3, 32, 32) and result.data.min() >= 0 and result.data.max() <= 1


# -- quality on the pretrained EfficientNet-Lite0 --------------------------------------------------
def natural_crops(model: cs.Model, count: int, size: int, seed: int = 0) -> torch.Tensor:
    """``count`` random size×size crops (at random zoom) of the four sample photos, preprocessed."""
    rng = np.random.default_rng(seed)
    photos = [np.asarray(cs.sample_image(name)) for name in ("cat", "coffee", "astronaut", "rocket")]
    crops = []
    for _ in range(count):
        photo = photos[rng.integers(len(photos))]
        side = int(rng.integers(size, min(photo.shape[:2]) + 1))
        top, left = (int(rng.integers(0, photo.shape[i] - side + 1)) for i in (0, 1))
        crops.append(cs.load_image(photo[top:top + side, left:left + side]).resize((size, size)))
    return model.preprocess(crops, size=(size, size))


def test_maximized_channel_beats_the_best_natural_crops(lite0):
    layer, size = "_blocks.3._project_conv", 128
    crops = natural_crops(lite0, 40, size)
    natural = features.feature_maps(lite0, crops, layers=layer).meta["mean_activation"]  # (40, C)
    channel = int(natural.mean(0).argmax())  # the channel these photos excite most: the hardest bar
    best_natural = natural[:, channel].topk(20).values
    result = features.maximize(lite0, obj.channel(layer, channel), steps=24, size=size, progress=False)
    achieved = float(result.meta["values"][0])
    assert achieved > float(best_natural.max()), (achieved, best_natural[:3].tolist())
    # independently: run the returned picture through the model again
    check = features.feature_maps(lite0, result.inputs, layers=layer).meta["mean_activation"][0, channel]
    assert abs(float(check) - achieved) < 1e-3 * max(1.0, abs(achieved))


def test_batched_channels_each_excite_their_own_channel(lite0):
    layer, wanted = "_blocks.5._project_conv", [3, 11, 40]
    result = features.maximize(lite0, obj.channel(layer, wanted), steps=16, size=96, progress=False)
    assert result.data.shape == (3, 3, 96, 96) and result.meta["targets"] == wanted
    acts = features.feature_maps(lite0, result.inputs, layers=layer).meta["mean_activation"][:, wanted]  # (3, 3)
    assert torch.equal(acts.argmax(dim=0), torch.arange(3))  # picture i is the best of the three for channel i
    figure = render_features.optimization_grid(result, ncols=3)
    assert next(ax.get_title() for ax in figure.axes if ax.images).startswith("ch 3: ")


def test_class_image_of_lite0_reaches_high_probability(lite0):
    # Steps chosen for speed with margin: at 224x224, 16 steps already gave 0.96-0.99997 for classes 281, 948,
    # 1, 530, 207, 417 (12 steps: one at 0.87); 20 steps here, about 1 s per step-batch on a busy 2-core machine.
    result = features.class_image(lite0, [281, 948], steps=20, progress=False)
    assert result.target.tolist() == [281, 948] and result.labels == ["tabby", "Granny Smith"]
    assert (result.meta["probability"] >= 0.9).all(), result.meta["probability"]
    assert result.meta["predicted"].tolist() == [281, 948]
    probs = lite0.forward(result.inputs).softmax(dim=1)  # independent forward on the returned pictures
    torch.testing.assert_close(probs[[0, 1], [281, 948]], result.meta["probability"], atol=1e-4, rtol=1e-4)


def double_precision(model: cs.Model) -> cs.Model:
    """A float64 copy of ``model`` (same weights, normalization and size)."""
    return cs.Model(copy.deepcopy(model.module).double(), input_size=model.input_size, mean=model.mean, std=model.std,
                    name=f"{model.name}-f64")


def test_chunks_of_the_batch_give_the_same_pictures(tiny, assert_close):
    """Chunking is exact maths: the gradients of different pictures are independent, and the transforms run on the
    whole batch before it is split. What is not exact is float32 rounding: CPU kernels differ between batch sizes
    (~1e-7), and Adam's normalized step g / (|g| + 1e-8) turns a rounding-level difference in a near-zero gradient
    into a step of lr, so float32 pictures of chunked and whole runs drift apart over many steps (up to ~4e-4 after
    60 steps here). So this asserts what the maths guarantees:
    1. a run with a fixed batch_size is deterministic, to the bit;
    2. the first step (same start picture, same transforms) agrees to float32 rounding;
    3. in float64 the rounding (~1e-16 of the gradient's scale) stays far below Adam's eps and cannot be
       amplified: chunked and whole runs give the same pictures after many steps."""
    objective = obj.channel("4", [1, 5, 9]) - 0.1 * obj.total_variation()  # reads a layer and the picture
    whole = features.maximize(tiny, objective, batch_size=3, **QUICK)
    chunked = features.maximize(tiny, objective, batch_size=1, **QUICK)
    again = features.maximize(tiny, objective, batch_size=1, **QUICK)
    assert torch.equal(chunked.data, again.data) and torch.equal(chunked.meta["history"], again.meta["history"])
    assert_close(chunked.meta["history"][:, 0], whole.meta["history"][:, 0], rtol=1e-4, atol=1e-5)
    tiny64 = double_precision(tiny)
    whole64 = features.maximize(tiny64, objective, batch_size=3, steps=20, progress=False)
    chunked64 = features.maximize(tiny64, objective, batch_size=1, steps=20, progress=False)
    assert whole64.data.dtype == torch.float32  # results are float32 whatever the model computes in
    torch.testing.assert_close(chunked64.data, whole64.data, rtol=0, atol=1e-6)
    torch.testing.assert_close(chunked64.meta["values"], whole64.meta["values"], rtol=1e-6, atol=1e-9)
    coupled = features.maximize(tiny, obj.channel("4", 1) + obj.diversity("4"), batch=3, batch_size=1, **QUICK)
    assert coupled.data.shape == (3, 3, 32, 32)  # diversity needs the whole batch: no chunks


def test_the_forward_stops_at_the_objectives_layer(lite0):
    features.maximize(lite0, "_blocks.2._project_conv:0", size=64, **QUICK)  # the layer trace at 64x64 is cached now
    calls: list[int] = []
    handle = lite0.module._fc.register_forward_hook(lambda m, a, o: calls.append(1))
    try:
        features.maximize(lite0, "_blocks.2._project_conv:0", size=64, **QUICK)
        assert not calls  # the head never ran
        features.class_image(lite0, 1, size=64, **QUICK)
        assert len(calls) == QUICK["steps"] + 1  # every step and the final check run the whole network
    finally:
        handle.remove()


# -- determinism, state, errors --------------------------------------------------------------------
def test_maximize_is_deterministic_for_a_seed(tiny):
    a = features.maximize(tiny, "4:3", seed=5, **QUICK)
    b = features.maximize(tiny, "4:3", seed=5, **QUICK)
    c = features.maximize(tiny, "4:3", seed=6, **QUICK)
    assert torch.equal(a.data, b.data) and torch.equal(a.meta["history"], b.meta["history"])
    assert not torch.equal(a.data, c.data)


@pytest.mark.parametrize("mode", ["eval", "train", "mixed"])
def test_model_untouched_after_success_error_and_cancel(borrow, mode):
    model = borrow("resnet18")
    set_mode(model.module, mode)
    give_grads(model.module)
    before = snapshot(model.module)
    features.maximize(model, "layer2:3", size=48, **QUICK)
    features.dream(model, torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0)), "layer2",
                   octaves=2, steps=2, progress=False)
    assert_unchanged(before, model.module)
    with pytest.raises(cs.LayerError, match="out of range"):
        features.maximize(model, "layer2:999", size=48, **QUICK)
    assert_unchanged(before, model.module)

    def cancel(done: int, total: int, what: str) -> None:
        if done == 2:
            raise Cancelled("stopped by the test")

    with pytest.raises(Cancelled):
        features.maximize(model, "layer2:3", size=48, steps=6, progress=cancel)
    with pytest.raises(Cancelled):
        features.dream(model, torch.zeros(1, 3, 48, 48), "layer2", octaves=1, steps=4, progress=cancel)
    assert_unchanged(before, model.module)


def test_optimization_works_under_no_grad_and_inference_mode(tiny):
    expected = features.maximize(tiny, "4:3", **QUICK).data
    with torch.inference_mode():
        assert torch.equal(features.maximize(tiny, "4:3", **QUICK).data, expected)
    with torch.no_grad():
        assert torch.equal(features.maximize(tiny, "4:3", **QUICK).data, expected)
        features.dream(tiny, torch.zeros(1, 3, 32, 32), "2", steps=2, octaves=1, progress=False)
    assert torch.is_grad_enabled()


def test_one_channel_28x28_model():
    mnist = tiny_cnn(channels=1, size=28)
    result = features.maximize(mnist, obj.channel("4", range(4)), **QUICK)  # default transforms, fixed-size head
    assert result.data.shape == (4, 1, 28, 28)
    assert render_features.optimization_images(result).shape == (4, 28, 28, 3)
    cls = features.class_image(mnist, 2, **QUICK)
    assert cls.meta["probability"].shape == (1,) and cls.labels == ["class 2"]
    digit = np.kron(np.eye(7, dtype=np.uint8) * 255, np.ones((4, 4), dtype=np.uint8))  # a 28x28 diagonal stroke
    dreamed = features.dream(mnist, digit, "2", steps=3, progress=False)
    assert dreamed.data.shape == (1, 1, 28, 28) and not torch.equal(dreamed.data, dreamed.meta["original"])


@pytest.mark.parametrize("objective, options, error, match", [
    ("features.3:1", {}, cs.LayerError, "unknown layer"),
    ("4:16", {}, cs.LayerError, "channel 16 is out of range: layer '4' has 16 channels"),
    ("4:1:99:0", {}, cs.LayerError, "outside layer '4'"),
    ("logit:10", {}, cs.LayerError, "class 10 is out of range"),
    ("4:1-3", {"batch": 2}, cs.ConvscopeError, "batch=2"),
    ("4:1", {"steps": 0}, cs.OptionError, r"option steps=0 is out of range; allowed: 1 ≤ value ≤ 4,096"),
    ("4:1", {"steps": 100_000}, cs.OptionError, r"steps=100000 is out of range"),
    ("4:1", {"param": "wavelet"}, cs.OptionError, "param='wavelet' is not one of 'fft', 'pixel'"),
    ("4:1", {"precision": "fp8"}, cs.OptionError, "precision='fp8' is not one of 'fp32', 'bf16'"),
    ("4:1", {"transforms": "wobble"}, cs.OptionError, "transforms='wobble' is not one of 'default', 'lucid', 'none'"),
    ("4:1", {"size": 4}, cs.OptionError, "size=4 is out of range; allowed: 8 ≤ value ≤ 2,048"),
    ("4:1", {"lr": 0}, cs.OptionError, "lr=0 is out of range"),
    ("4:1", {"batch_size": 0}, cs.OptionError, "batch_size=0 is out of range"),
    ("4:1", {"stpes": 3}, cs.OptionError, "did you mean 'steps'"),
    ("3", {"layer": "9"}, cs.LayerError, "unknown layer '9'"),
    ("4:1", {"layer": "2"}, cs.LayerError, "names its own layers; drop layer='2'"),
    (obj.Objective(lambda ev: 1.0, "constant"), {}, cs.ConvscopeError, "does not depend on the picture"),
])
def test_errors_are_one_line_and_leave_the_model_untouched(tiny, objective, options, error, match):
    before = snapshot(tiny.module)
    with pytest.raises(error, match=match) as info:
        features.maximize(tiny, objective, **{**QUICK, **options})
    assert "\n" not in str(info.value)
    assert_unchanged(before, tiny.module)


def test_shared_module_needs_a_call_number(lite0):
    with pytest.raises(cs.LayerError, match="_swish@0"):
        features.maximize(lite0, "_swish:3", size=64, **QUICK)
    result = features.maximize(lite0, "_swish@0:3", size=64, **QUICK)
    assert result.layer == "_swish@0"


def test_bare_module_needs_a_size(tiny):
    with pytest.raises(cs.InputError, match="size="):
        features.maximize(tiny.module, "4:1", **QUICK)
    assert features.maximize(tiny.module, "4:1", size=32, **QUICK).data.shape == (1, 3, 32, 32)


# -- Deep Dream ------------------------------------------------------------------------------------
def test_dream_amplifies_the_layer_and_keeps_the_photo(lite0):
    photo = cs.sample_image("cat").resize((120, 80))
    result = features.dream(lite0, photo, "_blocks.4", octaves=2, steps=4, lr=0.02, progress=False)
    assert result.data.shape == (1, 3, 80, 120) and result.layer == "_blocks.4"
    original = result.meta["original"]
    assert result.data.min() >= 0 and result.data.max() <= 1
    change = (result.data - original).abs().mean()
    assert 0.005 < change < 0.2  # changed, but still the photo
    before = features.feature_maps(lite0, lite0.preprocess(photo, size=(80, 120)), layers="_blocks.4").data.pow(2).mean()
    after = features.feature_maps(lite0, result.inputs, layers="_blocks.4").data.pow(2).mean()
    assert after > 1.5 * before  # "whatever you see there, more of it"
    again = features.dream(lite0, photo, "_blocks.4", octaves=2, steps=4, lr=0.02, progress=False)
    assert torch.equal(again.data, result.data)


def test_dream_takes_a_preprocessed_tensor_and_a_default_layer(lite0, cat_x):
    result = features.dream(lite0, cat_x, octaves=1, steps=1, size=64, progress=False)
    assert result.data.shape == (1, 3, 64, 64)
    assert result.layer == features.default_dream_layer(lite0).label
    torch.testing.assert_close(result.meta["original"].mean(), (cat_x * 0.502 + 0.498).mean(), atol=0.01, rtol=0)
    figure = render_features.dream_figure(result)
    assert [ax.get_title() for ax in figure.axes if ax.images] == ["photo", f"dream: {result.layer}"]


def test_fixed_size_head_models_optimize_at_any_size_up_to_a_layer():
    """A Flatten -> Linear head takes 32x32 only: channel pictures and Deep Dream stop at their layer and
    work at other sizes; a class picture needs the head, so another size is a clear one-line error."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 3))
    model = cs.Model(net, input_size=(32, 32), labels=["a", "b", "c"], name="tiny")
    before = snapshot(net)
    assert cs.maximize(model, "0:1", steps=2, size=64, progress=False).data.shape == (1, 3, 64, 64)
    assert cs.dream(model, cs.sample_image("coffee"), steps=1, octaves=2, size=80, progress=False).data.shape[-1] == 80
    assert cs.class_image(model, 1, steps=2, progress=False).data.shape == (1, 3, 32, 32)
    with pytest.raises(cs.InputError, match=r"built for 32x32") as caught:
        cs.class_image(model, 1, steps=2, size=64, progress=False)
    assert "\n" not in str(caught.value)
    assert_unchanged(before, net)


# -- registered tools: costs, progress and cancellation, pictures ------------------------------------
def test_readme_example_is_refused_with_its_estimate(lite0):
    """64 channels x 256 steps at 224x224 took about 80 minutes on 2 cores: the default cap refuses it, saying why."""
    objective = cs.objectives.channels("_blocks.8._expand_conv", range(64))
    with pytest.raises(cs.CostError, match=r"about 49,216 forward passes \(64 pictures x 256 steps at 224x224") as info:
        cs.maximize(lite0, objective)
    assert "over the limit of 20,000" in str(info.value) and "\n" not in str(info.value)
    tool = cs.registry.get("maximize")
    assert tool.cost_of(lite0, objective, steps=64).forwards == 64 * (3 * 64 + 1)
    assert tool.cost_of(lite0, "0-15", size=112).forwards == 16 * (3 * 256 + 1) / 4  # area counts
    assert cs.registry.get("class_image").cost_of(lite0, [1, 2, 3]).forwards == 3 * (3 * 256 + 1)
    with cs.limits(max_forwards=10):
        with pytest.raises(cs.CostError, match="class_image would take about 769 forward passes"):
            cs.class_image(lite0, 1)
        with pytest.raises(cs.CostError, match="dream would take about"):
            cs.dream(lite0, cs.sample_image("cat"))


def test_memory_estimates_refuse_what_the_machine_cannot_hold(tiny):
    tool = cs.registry.get("maximize")
    small, large = tool.cost_of(tiny, "4:0", size=32, steps=1).memory, tool.cost_of(tiny, "4:0", size=512, steps=1).memory
    assert 200 < large / small < 300  # 256 times the area (the head takes 32x32 only: traced there, scaled by area)
    with cs.limits(max_memory=large // 2, max_forwards=float("inf")):
        with pytest.raises(cs.CostError, match=r"maximize would need about .* GiB of memory .* more than the .* allowed"):
            cs.maximize(tiny, "4:0", size=512, steps=1)
        cs.maximize(tiny, "4:0", size=32, steps=1, progress=False)


def counting(model: cs.Model):
    """A forward pre-hook counting the model's forwards after ``state["cancelled"]`` is set; -> (state, handle)."""
    state = {"cancelled": False, "after": 0, "events": []}

    def hook(module, args):
        if state["cancelled"]:
            state["after"] += 1

    return state, model.module.register_forward_pre_hook(hook)


def cancel_at(state: dict, unit: int):
    def callback(done: int, total: int, what: str) -> None:
        state["events"].append((done, total, what))
        if done >= unit:
            state["cancelled"] = True
            raise Cancelled("stopped by the test")

    return callback


@pytest.mark.parametrize("call, unit, expected", [
    (lambda m, p: features.maximize(m, "4:1", steps=50, progress=p), 3, (3, 50, "maximize")),
    (lambda m, p: features.maximize(m, "4:0-3", steps=50, batch_size=1, progress=p), 5, (5, 200, "maximize")),  # per chunk
    (lambda m, p: features.class_image(m, [1, 2], steps=50, progress=p), 2, (2, 50, "class_image")),
    (lambda m, p: features.dream(m, torch.rand(1, 3, 32, 32), "2", octaves=1, steps=50, progress=p), 4, (4, 50, "dream")),
])
def test_cancel_stops_before_the_next_step(tiny, call, unit, expected):
    """Progress comes once per step (per chunk of a step when the batch is chunked); raising Cancelled from the
    callback stops the job: no forward runs after it, and the model is restored."""
    before = snapshot(tiny.module)
    state, handle = counting(tiny)
    try:
        with pytest.raises(Cancelled):
            call(tiny, cancel_at(state, unit))
    finally:
        handle.remove()
    assert state["events"][-1] == expected and [e[0] for e in state["events"]] == list(range(1, unit + 1))
    assert state["after"] == 0
    assert_unchanged(before, tiny.module)


def test_saved_picture_is_the_picture_itself(tiny, tmp_path):
    from PIL import Image

    from convscope.images import to_uint8

    one = features.maximize(tiny, "4:3", **QUICK)
    assert one.kind == "picture"
    np.testing.assert_array_equal(np.asarray(Image.open(one.save(tmp_path / "one.png"))), to_uint8(one.data)[0])
    grid = features.maximize(tiny, "4:0-3", **QUICK)
    assert np.asarray(Image.open(grid.save(tmp_path / "grid.png"))).shape[0] > 32  # a batch: the titled grid
    np.testing.assert_array_equal(np.asarray(Image.open(grid.save(tmp_path / "two.png", index=2))), to_uint8(grid.data)[2])
    dreamed = features.dream(tiny, torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)), "2", steps=2,
                             octaves=1, progress=False)
    np.testing.assert_array_equal(np.asarray(Image.open(dreamed.save(tmp_path / "dream.png"))), to_uint8(dreamed.data)[0])
    assert "dream" in cs.render.text(dreamed) and "ch 0: " in cs.render.text(grid)
    assert cs.render.figure(dreamed).axes[0].get_title() == "photo"  # the figure: before and after
    one.save(tmp_path / "one.pdf")
    assert (tmp_path / "one.pdf").stat().st_size > 0


def test_channels_only_objectives_read_the_chosen_or_default_layer(lite0):
    default = features.default_dream_layer(lite0).label
    result = features.maximize(lite0, "0-1", size=48, **QUICK)
    assert result.layer == default and result.meta["objective"] == f"channel({default!r}, [0, 1])"
    chosen = features.maximize(lite0, "5", layer="_blocks.2._project_conv", size=48, **QUICK)
    assert chosen.layer == "_blocks.2._project_conv" and chosen.meta["targets"] == [5]
    same = features.maximize(lite0, "_blocks.2._project_conv:5", layer="_blocks.2._project_conv", size=48, **QUICK)
    assert torch.equal(same.data, chosen.data)
    spot = features.dream(lite0, torch.rand(1, 3, 48, 48, generator=torch.Generator().manual_seed(0)), "_blocks.2",
                          objective="3", octaves=1, steps=2, progress=False)
    assert spot.meta["objective"] == "channel('_blocks.2', 3)"


def test_double_precision_models_optimize_in_float64(tiny):
    tiny64 = double_precision(tiny)
    result = features.maximize(tiny64, "4:0-1", **QUICK)
    expected = features.maximize(tiny, "4:0-1", **QUICK)
    torch.testing.assert_close(result.meta["history"][:, 0], expected.meta["history"][:, 0], rtol=1e-4, atol=1e-6)
    assert result.data.dtype == torch.float32 and features.class_image(tiny64, 3, **QUICK).meta["probability"].shape == (1,)
    dreamed = features.dream(tiny64, torch.rand(1, 3, 32, 32, dtype=torch.float64), "2", octaves=1, steps=2, progress=False)
    assert dreamed.data.dtype == torch.float32 and dreamed.data.shape == (1, 3, 32, 32)
