"""The registry: every tool with typed, bounded options described for the front ends."""

from __future__ import annotations

import json
from typing import Any

import convscope as cs


def test_every_registered_option_is_described_for_forms() -> None:
    """The web app and `convscope methods NAME` build forms from the registry: every option has help
    text, a kind, and a default that is one of its choices."""
    for info in cs.methods():
        specs = info.option_specs()
        assert [s.name for s in specs] == list(info.options), info.name
        for spec in specs:
            assert spec.help, f"{info.name}.{spec.name} has no help text in the docstring's Options: section"
            assert spec.kind in ("int", "float", "bool", "str", "choice", "any")
            if spec.choices:
                assert spec.default in spec.choices, f"{info.name}.{spec.name}"
            assert json.loads(json.dumps(spec.as_json()))["name"] == spec.name


def test_option_help_parsing() -> None:
    def fn(model: Any, x: Any, *, target: Any = None, steps: int = 3, mode: str = "a", scale: float | None = None) -> None:
        """Title.

        Options:
            steps: how many
                steps, continued.
            ``mode``: the mode.
            scale: a float.

        Not an option: text after the section.
        """

    fn = cs.registry.choices(mode=("a", "b"))(fn)
    specs = {s.name: s for s in cs.options.describe_options(fn, skip=("target",))}
    assert specs["steps"].help == "how many steps, continued." and specs["steps"].kind == "int"
    assert specs["mode"].help == "the mode." and specs["mode"].choices == ("a", "b") and specs["mode"].kind == "choice"
    assert specs["scale"].kind == "float" and specs["scale"].default is None
