"""The registry: every tool with typed, bounded options described for the front ends, checked before any work."""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal

import pytest
import torch
from pydantic import Field
from torch import nn

import convscope as cs
from convscope import registry
from convscope.engine import Cost
from convscope.options import PythonOnly, parse_text

TOOLS = cs.tools()
KINDS = {"int", "float", "bool", "str", "choice", "list", "pair", "dict"}


def test_every_family_has_tools_and_every_tool_says_what_it_is() -> None:
    assert {t.family for t in TOOLS} == set(registry.FAMILIES)
    for tool in TOOLS:
        assert tool.summary and tool.paper and tool.takes in registry.TAKES, tool.name
        assert (tool.group in registry.GROUPS) == (tool.family == "attribution"), tool.name
        assert tool.returns in cs.render.kinds(), f"{tool.name} returns {tool.returns!r}, which render cannot draw"
        assert registry.get(tool.name) is tool and all(registry.get(a) is tool for a in tool.aliases)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_every_offered_option_is_described_for_forms(tool: registry.Tool) -> None:
    """The CLI, the web forms and the OpenAPI schema are built from these: every option has help for a person,
    a kind, a default among its choices, a JSON-safe description, and bounds where a big value costs time."""
    for spec in tool.option_specs():
        assert spec.help and len(spec.help) > 12, f"{tool.name}.{spec.name} has no real help in its Options: section"
        words = re.sub(r"\([^)]*\)", "", spec.help).split()  # the words outside brackets: a sentence, not a type
        assert len(words) >= 4, f"{tool.name}.{spec.name}: help reads like a type, not for a person: {spec.help!r}"
        assert set(spec.kind.split("|")) <= KINDS, f"{tool.name}.{spec.name}: {spec.kind}"
        if spec.choices and not spec.required and isinstance(spec.default, str):
            assert spec.default in spec.choices, f"{tool.name}.{spec.name}"
        if spec.kind == "int" and spec.name not in ("k",):
            assert spec.maximum is not None, f"{tool.name}.{spec.name}: an int option without a maximum"
        assert json.loads(json.dumps(spec.as_json()))["name"] == spec.name
    schema = tool.options_schema()
    assert set(schema["properties"]) == {s.name for s in tool.option_specs()}
    json.dumps(schema)


@pytest.mark.parametrize("tool", TOOLS, ids=lambda t: t.name)
def test_defaults_and_quick_options_are_valid(tool: registry.Tool) -> None:
    required = {name for name, field in tool.options_model.model_fields.items() if field.is_required()}
    given = {**{name: tool.quick[name] for name in required if name in tool.quick}}
    if required <= set(given):
        tool.validate({**tool.quick, **given})
    assert set(tool.quick) <= set(tool.options_model.model_fields), tool.name


def test_option_help_parsing_and_kinds() -> None:
    def fn(model: Any, x: Any, *, target: Any = None, steps: Annotated[int, Field(ge=1, le=9)] = 3,
           mode: Literal["a", "b"] = "a", scale: float | None = None, baseline: PythonOnly[torch.Tensor] | None = None) -> None:
        """Title.

        Options:
            steps: how many
                steps, continued.
            ``mode``: the mode.
            scale: a float.
            baseline: a tensor only Python can give.

        Not an option: text after the section.
        """

    specs = {s.name: s for s in cs.options.describe_options(fn, skip=("model", "x", "target"))}
    assert specs["steps"].help == "how many steps, continued." and specs["steps"].kind == "int"
    assert (specs["steps"].minimum, specs["steps"].maximum, specs["steps"].range) == (1, 9, "1 to 9")
    assert specs["mode"].help == "the mode." and specs["mode"].choices == ("a", "b") and specs["mode"].kind == "choice"
    assert specs["scale"].kind == "float" and specs["scale"].default is None and specs["scale"].nullable
    assert "baseline" not in specs  # python-only: not offered by the CLI or the web


@pytest.mark.parametrize(("text", "schema", "value"), [
    ("32", {"type": "integer"}, 32),
    ("0.25", {"anyOf": [{"type": "number"}, {"type": "null"}]}, 0.25),
    ("none", {"anyOf": [{"type": "number"}, {"type": "null"}]}, None),
    ("32,16", {"anyOf": [{"type": "number"}, {"type": "array", "prefixItems": [{"type": "number"}, {"type": "number"}]}]},
     [32.0, 16.0]),
    ("off", {"type": "boolean"}, False),
    ("Blur", {"enum": ["zeros", "blur"]}, "blur"),
    ("²", {"type": "integer"}, "²"),  # not a number: passed on, so the options model names the option
    ("1" * 5000, {"type": "integer"}, "1" * 5000),
])
def test_command_line_text_becomes_the_schema_value(text: str, schema: dict, value: Any) -> None:
    assert parse_text(text, schema) == value


def _tiny() -> cs.Model:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    return cs.Model(net, input_size=(16, 16), mean=None, std=None, name="tiny")


def test_bad_options_are_refused_before_any_work() -> None:
    """Python keyword arguments go through the same options model as CLI flags and web JSON: one line naming the
    option and its range, the option in ``.field``, and not one forward pass."""
    model, x = _tiny(), torch.rand(1, 3, 16, 16)
    calls: list[int] = []
    handle = model.module.register_forward_hook(lambda *a: calls.append(1))
    try:
        cases = [(cs.integrated_gradients, {"steps": 0}, "steps", "1 ≤ value"),
                 (cs.integrated_gradients, {"steps": True}, "steps", "bool"),
                 (cs.occlusion, {"window": -3}, "window", "out of range"),
                 (cs.occlusion, {"windw": 3}, "windw", "did you mean 'window'"),
                 (cs.rise, {"p": float("nan")}, "p", "p="),
                 (cs.integrated_gradients, {"rule": "simpson"}, "rule", "'gausslegendre'")]
        for fn, options, field, words in cases:
            with pytest.raises(cs.OptionError) as info:
                fn(model, x, **options)
            message = str(info.value)
            assert "\n" not in message and words in message and info.value.field == field, message
    finally:
        handle.remove()
    assert not calls


def test_the_cost_limit_refuses_with_the_estimate_and_can_be_raised() -> None:
    model, x = _tiny(), torch.rand(2, 3, 16, 16)
    plan = registry.get("rise").plan(model, x, masks=500)
    assert isinstance(plan.cost, Cost) and plan.cost.forwards >= 1000
    with cs.limits(max_forwards=100):
        assert registry.get("rise").cost_of(model, x, masks=500).forwards == plan.cost.forwards  # estimated, not refused
    with cs.limits(max_forwards=100), pytest.raises(cs.CostError) as info:
        cs.rise(model, x, masks=500)
    assert "forward passes" in str(info.value) and info.value.cost.forwards >= 1000 and info.value.limits.max_forwards == 100
    with cs.limits(max_forwards=100), cs.limits(max_forwards=math.inf):
        assert cs.rise(model, x, masks=60, progress=False).kind == "map"


def test_a_tool_is_one_function_and_its_registration() -> None:
    """A throwaway tool: registered, its options checked, its cost estimated, found by get() and tools()."""

    def brightness_cost(context: registry.CostContext) -> Cost:
        return Cost(context.pictures * context.options["repeats"])

    @registry.register("throwaway_brightness", family="attribution", group="perturbation", takes="images", returns="map",
                       paper="none (a test)", cost=brightness_cost, quick={"repeats": 1})
    def throwaway(model: Any, x: torch.Tensor, *, target: Any = None, layer: None = None,
                  repeats: Annotated[int, Field(ge=1, le=5)] = 2) -> cs.Result:
        """Brightness: each pixel's mean over channels, as a map.

        Options:
            repeats: how many times to pretend to compute it (a test of the cost).
        """
        wrapped = cs.models.as_model(model)
        output = wrapped.forward(x)
        scores, classes = cs.targets.resolve_target(target, output)
        return cs.engine.package(wrapped, x, x.mean(1, keepdim=True), method="throwaway_brightness", classes=classes,
                                 scores=scores, output=output)

    try:
        tool = registry.get("throwaway_brightness")
        assert tool in cs.tools("attribution") and tool in cs.methods("perturbation")
        model, x = _tiny(), torch.rand(2, 3, 16, 16)
        assert tool.plan(model, x, repeats=5).cost.forwards == 10
        assert throwaway(model, x).kind == "map"
        with pytest.raises(cs.OptionError, match="repeats"):
            throwaway(model, x, repeats=6)
        with pytest.raises(ValueError, match="registered twice"):
            registry.register("throwaway_brightness", family="features", takes="model", returns="map", paper="x")(throwaway)
    finally:
        registry.unregister("throwaway_brightness")
    with pytest.raises(cs.ConvscopeError, match="unknown tool"):
        registry.get("throwaway_brightness")


def test_registration_mistakes_fail_at_import() -> None:
    def fn(model: Any, *, steps: Annotated[int, Field(ge=1, le=9)] = 3) -> None:
        """A tool.

        Options:
            steps: how many steps.
        """

    with pytest.raises(ValueError, match="family"):
        registry.register("bad", family="nope", takes="model", returns="map", paper="x")(fn)
    with pytest.raises(ValueError, match="group"):
        registry.register("bad", family="attribution", takes="images", returns="map", paper="x")(fn)
    with pytest.raises(cs.OptionError, match="steps"):
        registry.register("bad", family="features", takes="model", returns="map", paper="x", quick={"steps": 99})(fn)
    assert "bad" not in [t.name for t in cs.tools()]


def test_front_end_help_speaks_to_a_person() -> None:
    """What the command line and the web show: no clause about what only Python can pass, no tensor shapes, and
    descriptions that read whole once their shape notes are gone."""
    for tool in registry.tools():
        assert not re.search(r"  |\s[,.;:]|``|\bdata\b\s*[;,.]", tool.description), (tool.name, tool.description)
        for spec in tool.option_specs():
            assert "from Python also" not in spec.help and "callable target" not in spec.help, (tool.name, spec.name)
            assert not re.search(r"\((?:B|N), ", spec.help) or spec.name == "regions", (tool.name, spec.name, spec.help)
