"""The contract of every registered tool, whatever its family: it returns the kind it says, draws, leaves the model
and its inputs as they were (after success and after an error), and refuses a bad option before any work.

A new tool is tested here with no new test code (the attribution methods' finer contract is in test_contract.py
and test_state.py).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from test_state import assert_unchanged, counting_forwards, snapshot

import convscope as cs
from convscope import registry
from convscope.images import to_uint8

TOOLS = cs.tools()


@pytest.fixture(scope="module")
def shapes() -> tuple[cs.Model, torch.Tensor, dict[str, Any]]:
    """The small snow/sand model in train mode (the tools must explain it in eval mode and leave it in train mode),
    16 of its test pictures with their labels and masks."""
    model = cs.load_model("shapes_biased")
    model.module.train()
    x, brought = cs.data.named_dataset("shapes", model)
    return model, x[:16].clone(), {"labels": brought["labels"][:16], "regions": brought["regions"][:16]}


def call_of(tool: registry.Tool, model: cs.Model, x: torch.Tensor, brought: dict[str, Any]) -> tuple[tuple, dict]:
    """(inputs, keyword arguments) running ``tool`` on the shapes pictures with its quick options."""
    from PIL import Image

    picture = Image.fromarray(to_uint8(model.denormalize(x[:1]))[0])
    inputs = {"images": (model, x[:2]), "image": (model, picture), "model": (model,), "models": ([model], [picture]),
              "dataset": (model, x)}[tool.takes]
    kwargs = dict(tool.quick)
    if tool.takes == "dataset":
        kwargs.update({k: v for k, v in brought.items() if k in tool.options_model.model_fields})
    if tool.takes == "model" and tool.uses_target:
        kwargs["target"] = 1
    return inputs, kwargs


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_every_tool_returns_its_kind_draws_it_and_leaves_the_model_as_it_was(tool: registry.Tool, shapes) -> None:
    model, x, brought = shapes
    inputs, kwargs = call_of(tool, model, x, brought)
    before = snapshot(model.module, x)
    result = tool.fn(*inputs, progress=False, **kwargs) if tool.loops else tool.fn(*inputs, **kwargs)
    assert_unchanged(before, model.module, x)
    assert result.kind == tool.returns or (tool.name == "feature_maps" and result.kind == "feature_walk"), result.kind
    assert cs.render.to_png(result).startswith(b"\x89PNG") and cs.render.text(result).strip()


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_every_tool_refuses_a_bad_option_before_any_work(tool: registry.Tool, shapes) -> None:
    model, x, brought = shapes
    inputs, kwargs = call_of(tool, model, x, brought)
    before = snapshot(model.module, x)
    with counting_forwards(model.module) as seen, pytest.raises(cs.OptionError) as info:
        tool.fn(*inputs, **kwargs, no_such_option=1)
    assert "no_such_option" in str(info.value) and "\n" not in str(info.value) and not seen.calls
    bounded = next((s for s in tool.option_specs() if s.maximum is not None and s.kind == "int"), None)
    if bounded is not None:
        with counting_forwards(model.module) as seen, pytest.raises(cs.OptionError) as info:
            tool.fn(*inputs, **{**kwargs, bounded.name: int(bounded.maximum) + 1})
        assert info.value.field == bounded.name and "allowed" in str(info.value) and not seen.calls
    assert_unchanged(before, model.module, x)


@pytest.mark.parametrize("tool", [t for t in TOOLS if t.cost is not None], ids=lambda t: t.name)
def test_every_tool_over_the_limit_is_refused_with_its_estimate_before_any_work(tool: registry.Tool, shapes) -> None:
    model, x, brought = shapes
    inputs, kwargs = call_of(tool, model, x, brought)
    cost = tool.plan(*inputs, **kwargs).cost
    if cost.forwards <= 0:  # filters reads weights: it runs under any limit
        with cs.limits(max_forwards=1e-9):
            assert tool.fn(*inputs, **kwargs).kind == tool.returns
        return
    with counting_forwards(model.module) as seen, cs.limits(max_forwards=cost.forwards / 2), \
            pytest.raises(cs.CostError) as info:
        tool.fn(*inputs, **kwargs)
    assert "forward passes" in str(info.value) and info.value.cost.forwards == cost.forwards and not seen.calls
