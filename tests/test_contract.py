"""The method contract, checked for every method in the registry (a new method is tested for free).

``fn(model, x, *, target=None, layer=None, **options) -> Result`` with ``data`` (B, 1, H, W) for
``returns == "map"`` and (B, C, H, W) for ``"pixels"`` (``Result.kind`` says which), ``target`` the explained
classes, batch semantics (each image explained on its own), and one-line convscope errors for every bad call.
Options are checked before any work: unknown names get a close suggestion, out-of-range values name the
option and its range; every option has help and every amount of work a maximum; the cost estimate is
honest and a call over the limit is refused before its first forward.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from test_state import counting_forwards, takes_layer
from torch import nn

import convscope as cs
from conftest import registered_methods

LITE0 = "efficientnet_lite0"
METHODS = registered_methods()
LAYER_METHODS = [m for m in METHODS if takes_layer(m)]
CAM_METHODS = registered_methods("cam")
# A misspelt layer name per model, and the name the error message must suggest.
TYPOS = {LITE0: ("_conv_haed", "_conv_head"), "resnet18": ("layer4.1.cnv2", "layer4.1.conv2")}


def method_id(method: Any) -> str:
    return method.name


@pytest.fixture(scope="module", params=(LITE0, "resnet18"))
def model(request, model_factory) -> cs.Model:
    return model_factory(request.param)


@pytest.fixture
def x(model, batch_factory) -> torch.Tensor:
    """Two real pictures (cat, coffee), preprocessed for the model."""
    return batch_factory(model)


def raises_one_line(error: type[Exception], call: Callable[[], Any], match: str | None = None) -> str:
    """Assert ``call()`` raises ``error`` (a ConvscopeError) with a one-line message; return the message."""
    with pytest.raises(error, match=match) as info:
        call()
    assert isinstance(info.value, cs.ConvscopeError)
    message = str(info.value)
    assert message and "\n" not in message and "\r" not in message, repr(message)
    return message


def small_convnet() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5),
        ).eval()


def test_error_types_share_one_base():
    for error in (cs.TargetError, cs.InputError, cs.LayerError, cs.ModelError, cs.ImageError):
        assert issubclass(error, cs.ConvscopeError)


# --- the Result ---------------------------------------------------------------------------------
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_result_shape_dtype_and_provenance(model, x, method):
    result = method.fn(model, x)
    batch, channels, height, width = x.shape
    expected_shape = (batch, 1, height, width) if method.returns == "map" else (batch, channels, height, width)
    assert method.family == "attribution" and method.group in ("gradient", "cam", "perturbation")
    assert method.returns in ("map", "pixels") and method.output == method.returns
    assert result.kind == method.returns
    assert tuple(result.data.shape) == expected_shape
    assert result.data.dtype == torch.float32
    assert torch.isfinite(result.data).all()
    assert result.method == method.name
    if takes_layer(method):
        assert isinstance(result.layer, str) and result.layer


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_default_target_is_the_top1_class(model, x, method):
    result = method.fn(model, x)
    top1 = [answers[0].index for answers in model.predict(x, k=1)]
    assert result.target.dtype == torch.long
    assert result.target.tolist() == top1


TARGETS = {
    "int": (3, [3, 3]),
    "list": ([3, 7], [3, 7]),
    "tuple": ((7, 3), [7, 3]),
    "tensor": (torch.tensor([3, 7]), [3, 7]),
    "int32-tensor": (torch.tensor([3, 7], dtype=torch.int32), [3, 7]),
    "0-d-tensor": (torch.tensor(5), [5, 5]),
}


@pytest.mark.parametrize("kind", TARGETS)
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_explicit_targets_are_reported(model, x, method, kind):
    target, expected = TARGETS[kind]
    result = method.fn(model, x, target=target)
    assert result.target.dtype == torch.long
    assert result.target.tolist() == expected


@pytest.mark.parametrize("target", (None, [3, 7]), ids=("top1", "per-image"))
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_each_image_is_explained_on_its_own(model, x, method, target, assert_close):
    per_image = [None, None] if target is None else target
    whole = method.fn(model, x[0:2], target=target)
    parts = [method.fn(model, x[i:i + 1], target=per_image[i]) for i in range(2)]
    assert whole.target.tolist() == [int(part.target) for part in parts]
    assert_close(whole.data, torch.cat([part.data for part in parts]))


CLASS_ONLY = {"cam"}  # reads the class's weights in the linear head: a callable has none


@pytest.mark.parametrize("method", [m for m in METHODS if m.name in CLASS_ONLY], ids=method_id)
def test_class_only_methods_refuse_callable_targets(model, x, method):
    raises_one_line(cs.TargetError, lambda: method.fn(model, x, target=cs.targets.class_probability(281)), "class")


@pytest.mark.parametrize("method", [m for m in METHODS if m.name not in CLASS_ONLY], ids=method_id)
def test_callable_targets(model, x, method, assert_close):
    result = method.fn(model, x, target=cs.targets.class_probability(281))
    assert result.target is None
    assert result.data.shape[0] == x.shape[0] and torch.isfinite(result.data).all()
    # A callable is the same code path as a class index: class_score(k) is target=k — except for
    # Score-CAM, which scores a class by its softmax probability (the paper) and a callable as given;
    # perturbation methods score a class by its probability unless told score="logit".
    if method.name != "scorecam":
        as_logit = {"score": "logit"} if "score" in method.options else {}
        assert_close(method.fn(model, x, target=cs.targets.class_score(281)).data,
                     method.fn(model, x, target=281, **as_logit).data)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_explain_runs_the_registered_method(model, x, method, assert_close):
    assert_close(cs.explain(model, x, method.name, target=3, **method.quick).data, method.fn(model, x, target=3).data)


def test_explain_suggests_a_close_method_name(lite0, cat_x):
    message = raises_one_line(cs.ConvscopeError, lambda: cs.explain(lite0, cat_x, "gradcm"))
    assert "'gradcam'" in message


# --- bad calls ----------------------------------------------------------------------------------
def _with_nan(x: torch.Tensor) -> torch.Tensor:
    x = x.clone()
    x[0, 0, 0, 0] = float("nan")
    return x


@dataclass(frozen=True)
class BadCall:
    id: str
    make: Callable[[torch.Tensor], tuple[torch.Tensor, dict[str, Any]]]  # good x -> (x, options)
    error: type[Exception]
    match: str | None = None


BAD_CALLS = (
    BadCall("target-list-too-long", lambda x: (x, {"target": [1, 2, 3]}), cs.TargetError, "3 entries"),
    BadCall("target-list-too-short", lambda x: (x, {"target": [1]}), cs.TargetError, "1 entries"),
    BadCall("target-1000", lambda x: (x, {"target": 1000}), cs.TargetError, "1000"),
    BadCall("target-minus-1", lambda x: (x, {"target": -1}), cs.TargetError, "-1"),
    BadCall("target-in-list-out-of-range", lambda x: (x, {"target": [1, 1000]}), cs.TargetError, "1000"),
    BadCall("target-float", lambda x: (x, {"target": 3.0}), cs.TargetError),
    BadCall("target-bool", lambda x: (x, {"target": True}), cs.TargetError),
    BadCall("target-str", lambda x: (x, {"target": "cat"}), cs.TargetError),
    BadCall("target-float-tensor", lambda x: (x, {"target": torch.tensor([1.0, 2.0])}), cs.TargetError),
    BadCall("target-2d-tensor", lambda x: (x, {"target": torch.tensor([[1], [2]])}), cs.TargetError),
    BadCall("target-callable-gives-2d", lambda x: (x, {"target": lambda output: output}), cs.TargetError, "per image"),
    BadCall("target-callable-gives-int", lambda x: (x, {"target": lambda output: 3}), cs.TargetError, "int"),
    BadCall("x-3d", lambda x: (x[0], {}), cs.InputError, "batch"),
    BadCall("x-wrong-channels", lambda x: (x[:, :2], {}), cs.InputError, "channels"),
    BadCall("x-channels-last", lambda x: (x.permute(0, 2, 3, 1), {}), cs.InputError, "channels"),
    BadCall("x-uint8", lambda x: ((x.clamp(0, 1) * 255).to(torch.uint8), {}), cs.InputError, "uint8"),
    BadCall("x-nan", lambda x: (_with_nan(x), {}), cs.InputError, "NaN"),
    BadCall("x-empty-batch", lambda x: (x[:0], {}), cs.InputError),
    BadCall("x-not-a-tensor", lambda x: (x.numpy(), {}), cs.InputError, "preprocess"),
)


@pytest.mark.parametrize("bad", BAD_CALLS, ids=lambda bad: bad.id)
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_bad_calls_raise_one_line_convscope_errors(model, x, method, bad):
    bad_x, options = bad.make(x)
    raises_one_line(bad.error, lambda: method.fn(model, bad_x, **options), bad.match)


CLASS_AGNOSTIC = {"eigencam"}  # the map does not depend on the target at all


@pytest.mark.parametrize("method", [m for m in METHODS if m.name not in CLASS_AGNOSTIC], ids=method_id)
def test_target_score_that_ignores_the_input(model, x, method):
    """A constant score: an all-zero explanation or a one-line convscope error, never a raw autograd error."""
    def constant(output: torch.Tensor) -> torch.Tensor:
        return torch.zeros(output.shape[0], device=output.device)

    try:
        result = method.fn(model, x, target=constant)
    except cs.ConvscopeError as error:
        assert "\n" not in str(error)
    else:
        assert not result.data.any()


@pytest.mark.parametrize("method", LAYER_METHODS, ids=method_id)
def test_unknown_layer_suggests_a_close_name(model, x, method):
    typo, suggestion = TYPOS[model.name]
    message = raises_one_line(cs.LayerError, lambda: method.fn(model, x, layer=typo))
    assert repr(suggestion) in message


@pytest.mark.parametrize("method", CAM_METHODS, ids=method_id)
def test_cam_methods_on_a_model_without_conv_layers(method):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 5))
    raises_one_line(cs.LayerError, lambda: method.fn(mlp, torch.randn(2, 3, 8, 8)), "no layer fits as the default CAM layer")


# --- dtype and device ---------------------------------------------------------------------------
@pytest.mark.parametrize("x_dtype", (torch.float32, torch.float64), ids=("x-float32", "x-float64"))
@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_float64_model(method, x_dtype, assert_close):
    net32 = small_convnet()
    net64 = copy.deepcopy(net32).double()
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    result = method.fn(net64, x.to(x_dtype))
    assert result.data.dtype in (torch.float32, torch.float64)
    assert result.data.device == next(net64.parameters()).device
    assert torch.isfinite(result.data).all()
    assert_close(result.data.float(), method.fn(net32, x).data, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_kind_is_the_registered_kind_on_a_one_channel_model(method):
    """A (B, 1, H, W) gradient map of a grayscale model is still "pixels": the kind comes from the registry, not the shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3)).eval()
    result = method.fn(net, torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(1)))
    assert result.kind == method.returns and result.data.shape[:2] == (2, 1)


# --- options: typed, bounded, documented, checked before any work ---------------------------------
VALUE_OPTIONS = {"fill"}  # a value in the model's input space, not an amount of work: no maximum
OPTIONS = [pytest.param(m, spec, id=f"{m.name}-{spec.name}") for m in METHODS for spec in m.option_specs()]


def misspelt(name: str) -> str:
    return name[:-1] if len(name) > 2 else name + "s"


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_every_option_has_help_for_a_person_and_every_amount_a_maximum(method):
    for name, field in method.options_model.model_fields.items():
        words = (field.description or "").split()
        assert len(words) >= 6, f"{method.name}: option {name!r} has no real help: {field.description!r}"
        assert words[0].rstrip(".:;,") not in ("None", "callable", "Callable", "tensor", "Tensor")
    for spec in method.option_specs():
        numeric = {"int", "float"} & set(spec.kind.split("|"))
        if numeric and spec.name not in VALUE_OPTIONS:
            assert spec.maximum is not None, f"{method.name}: option {spec.name!r} costs time but has no maximum"


@pytest.mark.parametrize("method, spec", OPTIONS)
def test_a_misspelt_option_is_refused_with_the_close_name_before_any_work(lite0, cat_x, method, spec):
    with counting_forwards(lite0.module) as seen:
        message = raises_one_line(cs.OptionError, lambda: method.fn(lite0, cat_x, **{misspelt(spec.name): 1}))
    assert f"did you mean {spec.name!r}" in message or f"or {spec.name!r}" in message
    assert seen.calls == 0


def out_of_range(spec) -> list[Any]:
    """Values just outside an option's bounds: (value, the bound the message must name)."""
    values = []
    integer = "int" in spec.kind.split("|")
    if spec.maximum is not None:
        values.append((spec.maximum + 1 if integer else spec.maximum * 2 + 1, spec.maximum))
    if spec.minimum is not None:
        values.append((spec.minimum - 1, spec.minimum))
    return values


BOUNDED = [pytest.param(m, spec.name, value, bound, id=f"{m.name}-{spec.name}={value}")
           for m in METHODS for spec in m.option_specs() for value, bound in out_of_range(spec)]


@pytest.mark.parametrize("method, option, value, bound", BOUNDED)
def test_out_of_range_options_are_refused_before_any_work(lite0, cat_x, method, option, value, bound):
    """One line naming the option, the value and the allowed range; the model never runs."""
    with counting_forwards(lite0.module) as seen:
        message = raises_one_line(cs.OptionError, lambda: method.fn(lite0, cat_x, **{option: value}))
    assert message.startswith(method.name) and f"option {option}=" in message and "allowed" in message
    assert (f"{bound:,}" if float(bound).is_integer() else f"{bound:g}") in message
    assert seen.calls == 0


# --- cost: estimated before any work, honest, refused over the limit --------------------------------
def warm_layer_trace(model: cs.Model, x: torch.Tensor) -> None:
    """The cached layer trace (one forward per model and picture size, shared by every call) is not a call's work."""
    cs.layers(model, input_size=tuple(x.shape[1:]))


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_the_cost_estimate_bounds_the_forwards_a_call_runs(model, x, method):
    """Counted in forward passes of one picture at the model's input size (a backward is two): the estimate is
    at least what runs and at most twice that (a CAM's backward stops at the layer; zero channels are skipped)."""
    x = x[:1]
    cost = method.cost_of(model, x, **method.quick)
    warm_layer_trace(model, x)
    with counting_forwards(model.module) as seen:
        method.fn(model, x)
    area = x.shape[-2] * x.shape[-1] / (model.input_size[0] * model.input_size[1])
    counted = (seen.rows + 2 * seen.graph_rows) * area
    assert counted <= cost.forwards + 1e-9 <= 2 * counted + 1e-9, (counted, cost)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_a_call_over_the_forward_limit_is_refused_before_any_work(lite0, cat_x, method):
    cost = method.cost_of(lite0, cat_x, **method.quick)
    warm_layer_trace(lite0, cat_x)
    with counting_forwards(lite0.module) as seen, cs.limits(max_forwards=cost.forwards / 2):
        message = raises_one_line(cs.CostError, lambda: method.fn(lite0, cat_x))
    assert seen.calls == 0
    assert message.startswith(method.name) and f"about {cost.forwards:,.0f} forward passes" in message
    with cs.limits(max_forwards=cost.forwards):  # at the limit the call is let through
        assert method.plan(lite0, cat_x, **method.quick).cost == cost
