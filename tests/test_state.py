"""A method must never corrupt the user's model or input, whether it succeeds or raises.

Every call is bracketed by :func:`snapshot`, which records everything of the model's and the
input's state a method could disturb: train/eval flags, ``requires_grad``, ``.grad``, submodule
identity and type, ``inplace`` flags, every hook dict (per module and global), buffers (BatchNorm
statistics), parameter values, autograd's global mode, and the input's value, version and grad.
"""

from __future__ import annotations

import copy
import gc
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from threading import Barrier
from typing import Any

import pytest
import torch
import torch.nn.modules.module as torch_module
from torch import nn

import convscope as cs
from conftest import registered_methods
from convscope.progress import Cancelled

LITE0 = "efficientnet_lite0"
ARCHS = ("resnet18", "densenet121", "mobilenet_v2", "vgg11", LITE0)
METHODS = registered_methods()
MODES = ("eval", "train", "mixed")
# A module that runs more than once per forward: naming it without "@k" is an error raised mid-forward.
SHARED_LAYER = {"resnet18": "layer1.0.relu", LITE0: "_swish"}


def method_id(method: Any) -> str:
    return method.name


def takes_layer(method: Any) -> bool:
    """Whether a method explains a layer (gradient and perturbation methods declare ``layer: None``: they take none)."""
    import inspect

    param = inspect.signature(method.impl).parameters.get("layer")
    return param is not None and param.annotation not in (None, "None")


@dataclass
class Forwards:
    """What a model was run on: ``calls`` forwards, ``rows`` pictures in all, ``graph_rows`` of them with a graph
    kept for a backward (their input requires grad)."""

    calls: int = 0
    rows: int = 0
    graph_rows: int = 0


@contextmanager
def counting_forwards(module: nn.Module) -> Iterator[Forwards]:
    """Count ``module``'s forwards while the block runs (a plain forward pre-hook, removed after)."""
    seen = Forwards()

    def count(module: nn.Module, args: tuple[Any, ...]) -> None:
        rows = int(args[0].shape[0]) if args and isinstance(args[0], torch.Tensor) and args[0].dim() else 1
        seen.calls += 1
        seen.rows += rows
        seen.graph_rows += rows if torch.is_grad_enabled() and args[0].requires_grad else 0

    handle = module.register_forward_pre_hook(count)
    try:
        yield seen
    finally:
        handle.remove()


# --- snapshot ----------------------------------------------------------------------------------
@dataclass
class Snapshot:
    values: dict[str, Any]  # compared with ==
    tensors: dict[str, torch.Tensor | None]  # compared bitwise


def hook_counts(namespace: dict[str, Any], where: str) -> dict[str, int]:
    """The number of entries of every hook dict in ``namespace`` (a module's or torch's ``vars``)."""
    return {f"{where} {key}": len(value) for key, value in namespace.items()
            if "hooks" in key and isinstance(value, dict)}


def clone(tensor: torch.Tensor | None) -> torch.Tensor | None:
    return None if tensor is None else tensor.detach().clone()


def snapshot(module: nn.Module, x: torch.Tensor | None = None) -> Snapshot:
    values: dict[str, Any] = {
        "grad mode": torch.is_grad_enabled(),
        "inference mode": torch.is_inference_mode_enabled(),
        **hook_counts(vars(torch_module), "global"),
    }
    tensors: dict[str, torch.Tensor | None] = {}
    for name, sub in module.named_modules():
        where = f"module {name or '<root>'!r}"
        values[f"{where} training"] = sub.training
        values[f"{where} identity"] = (id(sub), type(sub).__qualname__)
        if hasattr(sub, "inplace"):
            values[f"{where} inplace"] = sub.inplace
        values.update(hook_counts(vars(sub), where))
    for name, param in module.named_parameters():
        values[f"parameter {name!r} identity"] = id(param)
        values[f"parameter {name!r} requires_grad"] = param.requires_grad
        tensors[f"parameter {name!r}"] = clone(param)
        tensors[f"parameter {name!r} grad"] = clone(param.grad)
    for name, buffer in module.named_buffers():
        tensors[f"buffer {name!r}"] = clone(buffer)
    if x is not None:
        values["x requires_grad"] = x.requires_grad
        values["x version"] = x._version
        tensors["x"] = clone(x)
        tensors["x grad"] = clone(x.grad)
    return Snapshot(values, tensors)


def same_tensor(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    if a is None or b is None:
        return a is b
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)


def differences(before: Snapshot, after: Snapshot) -> list[str]:
    missing = object()
    changes = [f"{key}: {before.values.get(key, missing)!r} -> {after.values.get(key, missing)!r}"
               for key in before.values.keys() | after.values.keys()
               if before.values.get(key, missing) != after.values.get(key, missing)]
    changes += [f"{key} changed" for key in before.tensors.keys() | after.tensors.keys()
                if not same_tensor(before.tensors.get(key), after.tensors.get(key))]
    return sorted(changes)


def assert_unchanged(before: Snapshot, module: nn.Module, x: torch.Tensor | None = None) -> None:
    changes = differences(before, snapshot(module, x))
    assert not changes, f"{len(changes)} change(s): " + "; ".join(changes[:8])


def total_hooks(module: nn.Module) -> int:
    """Hooks on every submodule plus torch's global module hooks."""
    counts = hook_counts(vars(torch_module), "global")
    for name, sub in module.named_modules():
        counts.update(hook_counts(vars(sub), name))
    return sum(counts.values())


def _forward_in_train_mode(module: nn.Module, x: torch.Tensor) -> None:
    module.train()
    with torch.no_grad():
        module(x)
    module.eval()


# Each corrupts one thing the snapshot must notice: (module, x) -> None.
CORRUPTIONS: dict[str, Callable[[nn.Module, torch.Tensor], Any]] = {
    "training flag": lambda m, x: setattr(m.layer1[0].bn1, "training", not m.layer1[0].bn1.training),
    "requires_grad": lambda m, x: m.fc.weight.requires_grad_(False),
    "grad": lambda m, x: setattr(m.fc.bias, "grad", torch.zeros_like(m.fc.bias)),
    "parameter value": lambda m, x: m.fc.bias.data.add_(1.0),
    "parameter swapped": lambda m, x: setattr(m.fc, "bias", nn.Parameter(m.fc.bias.detach().clone())),
    "module swapped": lambda m, x: setattr(m, "avgpool", nn.AdaptiveAvgPool2d(1)),
    "inplace flag": lambda m, x: setattr(m.relu, "inplace", False),
    "forward hook": lambda m, x: m.layer4.register_forward_hook(lambda *args: None),
    "backward hook": lambda m, x: m.layer4.register_full_backward_hook(lambda *args: None),
    "batchnorm statistics": _forward_in_train_mode,
    "x value": lambda m, x: x.data.add_(1.0),
    "x requires_grad": lambda m, x: x.requires_grad_(True),
}


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_snapshot_notices_each_kind_of_corruption(borrow, batch_factory, corruption):
    model = borrow("resnet18")
    x = batch_factory(model)
    before = snapshot(model.module, x)
    CORRUPTIONS[corruption](model.module, x)
    assert differences(before, snapshot(model.module, x))


def test_snapshot_notices_global_hooks_and_autograd_mode(borrow):
    module = borrow("resnet18").module
    before = snapshot(module)
    handle = torch_module.register_module_forward_pre_hook(lambda *args: None)
    try:
        assert differences(before, snapshot(module))
    finally:
        handle.remove()
    with torch.no_grad():
        assert differences(before, snapshot(module))
    assert not differences(before, snapshot(module))


# --- putting models in a state, and back -----------------------------------------------------
def set_mode(module: nn.Module, mode: str) -> None:
    """eval, train, or mixed: submodules alternate between train and eval."""
    if mode == "mixed":
        for index, sub in enumerate(module.modules()):
            sub.training = index % 2 == 1
    else:
        module.train(mode == "train")


def give_grads(module: nn.Module) -> None:
    """What a model looks like mid-training: some parameters hold a gradient, the rest None."""
    for index, param in enumerate(module.parameters()):
        if index % 3 == 0:
            param.grad = torch.full_like(param, 0.5)


def last_linear(module: nn.Module) -> nn.Linear:
    return [m for m in module.modules() if isinstance(m, nn.Linear)][-1]


class Pristine:
    """A shared model's state when a test borrowed it, to put back whatever the test (or a bug) did."""

    def __init__(self, module: nn.Module) -> None:
        self.state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        self.requires_grad = [p.requires_grad for p in module.parameters()]
        self.hooks = [{k: set(v) for k, v in vars(sub).items() if "hooks" in k and isinstance(v, dict)}
                      for sub in module.modules()]

    def restore(self, module: nn.Module) -> None:
        module.load_state_dict(self.state)
        module.eval()
        for param, flag in zip(module.parameters(), self.requires_grad, strict=True):
            param.requires_grad_(flag)
            param.grad = None
        for sub, hooks in zip(module.modules(), self.hooks, strict=True):
            for key, kept in hooks.items():
                for handle_id in set(getattr(sub, key)) - kept:
                    del getattr(sub, key)[handle_id]


@pytest.fixture
def borrow(model_factory: Callable[[str], cs.Model]) -> Iterator[Callable[[str], cs.Model]]:
    """``borrow(name)`` -> a shared cs.Model, restored after the test so a failure cannot cascade."""
    borrowed: list[tuple[nn.Module, Pristine]] = []

    def get(name: str) -> cs.Model:
        model = model_factory(name)
        borrowed.append((model.module, Pristine(model.module)))
        return model

    yield get
    for module, pristine in reversed(borrowed):
        pristine.restore(module)


# --- every architecture x method x mode, after success and after each kind of failure ----------
def _raise(output: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("target callable failed on purpose")


@dataclass(frozen=True)
class Scenario:
    id: str
    options: Callable[[str], dict[str, Any]]  # arch -> call options
    raises: type[BaseException] | None = None
    match: str | None = None
    needs_layer: bool = False  # only for methods with uses_layer
    archs: tuple[str, ...] = ARCHS

    def applies(self, arch: str, method: Any) -> bool:
        return arch in self.archs and (takes_layer(method) or not self.needs_layer)


SCENARIOS = (
    Scenario("success", lambda arch: {}),
    Scenario("class-out-of-range", lambda arch: {"target": 1000}, cs.TargetError, "out of range"),
    Scenario("target-callable-raises", lambda arch: {"target": _raise}, RuntimeError, "on purpose"),
    Scenario("unknown-layer", lambda arch: {"layer": "no_such.layer"}, cs.LayerError, "unknown layer",
             needs_layer=True),
    Scenario("shared-layer-fails-mid-forward", lambda arch: {"layer": SHARED_LAYER[arch]}, cs.LayerError, "@",
             needs_layer=True, archs=tuple(SHARED_LAYER)),
)


# (arch, method) pairs that refuse with a clear error: cam needs a GAP -> linear head; VGG has none, and
# DenseNet applies a functional ReLU between its last map and the pooling
REFUSES: dict[tuple[str, str], type[BaseException]] = {("vgg11", "cam"): cs.LayerError, ("densenet121", "cam"): cs.LayerError}


def _applicable(arch: str, method: Any) -> bool:
    return (arch, method.name) not in REFUSES


def _state_cases() -> Iterator[Any]:
    for arch in ARCHS:
        for method in METHODS:
            for scenario in SCENARIOS:
                if scenario.applies(arch, method):
                    for mode in MODES:
                        yield pytest.param(arch, method, scenario, mode,
                                           id=f"{arch}-{method.name}-{scenario.id}-{mode}")


@pytest.mark.parametrize("arch, method, scenario, mode", list(_state_cases()))
def test_call_leaves_model_and_input_untouched(borrow, batch_factory, arch, method, scenario, mode):
    model = borrow(arch)
    x = batch_factory(model)
    set_mode(model.module, mode)
    give_grads(model.module)
    before = snapshot(model.module, x)
    options = scenario.options(arch)
    if scenario.raises is None and (arch, method.name) in REFUSES:
        with pytest.raises(REFUSES[arch, method.name]):  # a clear refusal is an exception path like any other
            method.fn(model, x, **options)
    elif scenario.raises is None:
        result = method.fn(model, x, **options)
        assert torch.isfinite(result.data).all()
    else:
        with pytest.raises(scenario.raises, match=scenario.match):
            method.fn(model, x, **options)
    assert_unchanged(before, model.module, x)
    assert not x.requires_grad and x.grad is None


@pytest.mark.parametrize("arch, method", [pytest.param(a, m, id=f"{a}-{m.name}") for a in ARCHS for m in METHODS
                                          if _applicable(a, m)])
def test_train_and_mixed_mode_models_are_explained_in_eval_mode(borrow, batch_factory, arch, method, assert_close):
    model = borrow(arch)
    x = batch_factory(model)
    expected = method.fn(model, x).data
    for mode in ("train", "mixed"):
        set_mode(model.module, mode)
        assert_close(method.fn(model, x).data, expected)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_bare_module_in_train_mode(borrow, batch_factory, method, assert_close):
    model = borrow("resnet18")
    x = batch_factory(model)
    expected = method.fn(model, x).data
    set_mode(model.module, "train")
    before = snapshot(model.module, x)
    assert_close(method.fn(model.module, x).data, expected)
    assert_unchanged(before, model.module, x)


def test_users_own_hooks_are_kept_and_still_run(borrow, batch_factory):
    model = borrow("resnet18")
    x = batch_factory(model)
    seen: list[str] = []
    model.module.layer4.register_forward_pre_hook(lambda module, args: seen.append("pre"))
    model.module.layer4.register_forward_hook(lambda module, args, output: seen.append("forward"))
    global_hook = torch_module.register_module_forward_hook(lambda module, args, output: None)
    try:
        before = snapshot(model.module, x)
        for method in METHODS:
            seen.clear()
            method.fn(model, x)
            assert seen[-2:] == ["pre", "forward"], method.name
        assert_unchanged(before, model.module, x)
    finally:
        global_hook.remove()


# --- requires_grad, autograd modes, the caller's input ----------------------------------------
@pytest.mark.parametrize("arch", ("resnet18", LITE0))
def test_frozen_backbone_keeps_its_requires_grad_pattern(borrow, batch_factory, arch, assert_close):
    model = borrow(arch)
    x = batch_factory(model)
    expected = {method.name: method.fn(model, x).data for method in METHODS}
    model.module.requires_grad_(False)
    last_linear(model.module).requires_grad_(True)
    give_grads(model.module)
    before = snapshot(model.module, x)
    for method in METHODS:
        assert_close(method.fn(model, x).data, expected[method.name])
    assert_unchanged(before, model.module, x)


GRAD_MODES = {"no_grad": torch.no_grad, "inference_mode": torch.inference_mode}


@pytest.mark.parametrize("grad_mode", GRAD_MODES)
@pytest.mark.parametrize("method", METHODS, ids=method_id)
@pytest.mark.parametrize("arch", ("resnet18", LITE0))
def test_methods_work_under_no_grad_and_inference_mode(borrow, batch_factory, arch, method, grad_mode, assert_close):
    model = borrow(arch)
    x = batch_factory(model)
    expected = method.fn(model, x).data
    with GRAD_MODES[grad_mode]():
        before = snapshot(model.module, x)
        result = method.fn(model, x)
        assert_unchanged(before, model.module, x)  # includes grad / inference mode being restored
        made_inside = batch_factory(model)  # under inference_mode: an inference tensor
        result_inside = method.fn(model, made_inside)
    assert_close(result.data, expected)
    assert_close(result_inside.data, expected)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_input_that_requires_grad_gets_no_grad_and_keeps_its_flag(borrow, batch_factory, method):
    model = borrow("resnet18")
    x = batch_factory(model).requires_grad_(True)
    before = snapshot(model.module, x)
    method.fn(model, x)
    assert_unchanged(before, model.module, x)
    assert x.requires_grad and x.grad is None


# --- in-place activations ------------------------------------------------------------------------
def without_inplace(module: nn.Module) -> nn.Module:
    twin = copy.deepcopy(module)
    for sub in twin.modules():
        if hasattr(sub, "inplace"):
            sub.inplace = False
    return twin


def _inplace_cases() -> Iterator[Any]:
    # (arch, layer): None is the default layer; the named ones are followed by an in-place op.
    for arch, layer in (("resnet18", None), ("resnet18", "layer4.1.bn2"), ("vgg11", None), ("vgg11", "features.18")):
        for method in METHODS:
            # cam reads only the map right before global pooling: VGG has none, and other layers are refused
            usable = method.name != "cam" or (arch != "vgg11" and layer is None)
            if (layer is None or takes_layer(method)) and usable:
                yield pytest.param(arch, layer, method, id=f"{arch}-{layer or 'default'}-{method.name}")


@pytest.mark.parametrize("arch, layer, method", list(_inplace_cases()))
def test_inplace_activations_give_the_same_answer_and_keep_their_flag(
    borrow, batch_factory, arch, layer, method, assert_close
):
    model = borrow(arch)
    assert any(getattr(sub, "inplace", False) for sub in model.module.modules())
    x = batch_factory(model)
    options = {} if layer is None else {"layer": layer}
    expected = method.fn(without_inplace(model.module), x, **options).data
    before = snapshot(model.module, x)
    assert_close(method.fn(model, x, **options).data, expected)
    assert_unchanged(before, model.module, x)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_inplace_relu_on_the_input_does_not_modify_the_callers_x(method):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3)).eval()
        x = torch.randn(2, 3, 16, 16)
    assert (x < 0).any()
    before = snapshot(net, x)
    result = method.fn(net, x)
    assert torch.isfinite(result.data).all()
    assert_unchanged(before, net, x)


# --- hooks, graphs and references do not outlive a call --------------------------------------------
class Spy(nn.Module):
    """Identity on the logits that keeps weak references to the tensors it returns (and their graph)."""

    def __init__(self) -> None:
        super().__init__()
        self.outputs: list[weakref.ref] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x * 1.0
        self.outputs.append(weakref.ref(out))
        return out


def result_tensors(result: cs.Result) -> dict[str, torch.Tensor]:
    named = {"data": result.data, "target": result.target, "inputs": result.inputs,
             **{f"meta[{k!r}]": v for k, v in result.meta.items()}}
    return {k: v for k, v in named.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_repeated_calls_leak_no_hooks_and_keep_no_graph_alive(borrow, cat_x, method, assert_close):
    spy = Spy()
    spied = nn.Sequential(borrow(LITE0).module, spy)
    assert total_hooks(spied) == 0
    results = []
    for _ in range(30):
        results.append(method.fn(spied, cat_x))
        assert total_hooks(spied) == 0
    for result in results:
        for name, tensor in result_tensors(result).items():
            assert not tensor.requires_grad and tensor.grad_fn is None, name
    gc.collect()
    alive = [ref for ref in spy.outputs if ref() is not None]
    assert not alive, f"{len(alive)} of {len(spy.outputs)} model outputs (with their graphs) are still referenced"
    assert_close(results[-1].data, results[0].data)


@pytest.mark.parametrize("method", METHODS, ids=method_id)
def test_convscope_keeps_no_reference_to_a_model_it_explained(method):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    method.fn(net, torch.randn(1, 3, 8, 8))
    gone = weakref.ref(net)
    del net
    gc.collect()
    assert gone() is None


# --- threads ----------------------------------------------------------------------------------
def test_concurrent_calls_on_one_model_match_sequential_ones(borrow, batch_factory, assert_close):
    workers = 4
    model = borrow(LITE0)
    x = batch_factory(model)
    expected = {method.name: method.fn(model, x).data for method in METHODS}
    set_mode(model.module, "train")
    give_grads(model.module)
    before = snapshot(model.module, x)
    barrier = Barrier(workers)

    def work(worker: int) -> list[tuple[str, torch.Tensor]]:
        barrier.wait()
        order = METHODS if worker % 2 == 0 else METHODS[::-1]  # interleave different methods
        return [(method.name, method.fn(model, x).data) for _ in range(2) for method in order]

    with ThreadPoolExecutor(workers) as pool:
        answers = [answer for answers in pool.map(work, range(workers)) for answer in answers]
    assert len(answers) == workers * 2 * len(METHODS)
    for name, data in answers:
        assert_close(data, expected[name])
    assert_unchanged(before, model.module, x)


# --- shared modules (ResNet's relu runs twice per block) -------------------------------------------
def test_shared_relu_must_be_named_per_call(borrow, batch_factory, assert_close):
    model = borrow("resnet18")
    x = batch_factory(model)
    before = snapshot(model.module, x)
    with pytest.raises(cs.LayerError, match="@"):
        cs.gradcam(model, x, layer="layer1.0.relu")
    with pytest.raises(cs.LayerError, match="@1"):  # BasicBlock's relu runs twice: @0 and @1 only
        cs.gradcam(model, x, layer="layer4.1.relu@2")
    second = cs.gradcam(model, x, layer="layer4.1.relu@1")
    assert second.layer == "layer4.1.relu@1"
    assert second.data.shape == (x.shape[0], 1, *x.shape[-2:])
    # The block's second relu is the block's, and layer4's, output.
    assert_close(second.data, cs.gradcam(model, x, layer="layer4").data)
    assert_unchanged(before, model.module, x)


# --- cancellation -------------------------------------------------------------------------------------
LOOPING = [m for m in METHODS if m.loops]


@pytest.mark.parametrize("method", LOOPING, ids=method_id)
def test_cancel_at_the_first_progress_report_stops_the_work_and_restores_the_model(borrow, batch_factory, method):
    """A progress callback that raises Cancelled at its first report (after the first batch of work): the
    call stops there — no forward runs after the cancel — and the model is as it was."""
    model = borrow("resnet18")
    x = batch_factory(model)
    set_mode(model.module, "train")
    give_grads(model.module)
    before = snapshot(model.module, x)
    reports: list[tuple[int, int, int]] = []
    with counting_forwards(model.module) as seen:
        def cancel(done: int, total: int, what: str) -> None:
            reports.append((done, total, seen.rows))
            raise Cancelled("stopped by the user")

        with pytest.raises(Cancelled):
            method.fn(model, x, batch_size=2, progress=cancel)
    assert len(reports) == 1
    done, total, rows_at_cancel = reports[0]
    assert done < total  # stopped part-way
    assert seen.rows == rows_at_cancel  # nothing ran after the cancel
    assert_unchanged(before, model.module, x)
    assert not x.requires_grad and x.grad is None
