"""The "model" family: what a model is (its layers, Keras-style) and what it answers (its top classes),
as tables — text when printed, HTML tables in notebooks and reports.

    import convscope as cs
    m = cs.load_model("efficientnet_lite0")
    print(cs.summary(m))                                  # every layer call, output shapes, parameters
    cs.predict(m, m.preprocess(cs.sample_image("cat")))   # top-5 classes with probabilities

Both are registered tools (family "model"): the command line, the report and the web app offer them
with their options. ``Model.predict`` stays the plain method (lists of ``Prediction``).
"""

from __future__ import annotations

from typing import Annotated, Any

import torch
from pydantic import Field

from ..engine import Cost
from ..layers import _input_shape
from ..layers import summary as layer_summary
from ..models import Model, Prediction, as_model
from ..registry import CostContext, ReportSpec, register
from ..result import Table

__all__ = ["Predictions", "predict", "summary"]

Side = Annotated[int, Field(ge=1, le=4096)]
Channels = Annotated[int, Field(ge=1, le=64)]
Frames = Annotated[int, Field(ge=1, le=1024)]


def _summary_cost(context: CostContext) -> Cost:
    """The layer trace: one forward of one picture at the traced size (cached afterwards)."""
    model = context.model
    size = context.options.get("input_size")
    if model is None:
        return Cost(0)
    try:
        shape = _input_shape(model, size)
    except ValueError:
        return Cost(0)  # the tool says what is missing
    frames = shape[1] if len(shape) == 4 else 1
    return Cost(context.area(shape[-2], shape[-1]) * frames, detail="one traced forward of one picture")


@register("summary", family="model", takes="model", returns="table", cost=_summary_cost,
          paper="Keras Model.summary() (Chollet et al. 2015), with NCHW shapes",
          report=ReportSpec(title="Layers", part="layers",
                            note="Every layer in the order it runs, with the size of what it outputs (channels × height × "
                                 "width; None stands for the number of pictures) and its parameters; open the table to read "
                                 "it. A module used twice is listed once per use (name@0, name@1)."))
def summary(model: Any, *, input_size: tuple[Side, Side] | tuple[Channels, Side, Side] | tuple[Channels, Frames, Side, Side]
            | None = None) -> Table:
    """Summary: every layer call in execution order with its output shape and parameters, and the totals.

    What Keras' ``model.summary()`` prints, as a :class:`~convscope.result.Table`: ``print`` it, or look at
    it in a notebook; ``"Total params" in cs.summary(m)`` works on its text.

    Options:
        input_size: the picture size to trace the layers with, (height, width) or (channels, height, width) — or (channels,
            frames, height, width) for a video or volume model; default: the model's own input size (a bare module needs it).
    """
    return layer_summary(model, input_size=input_size)


class Predictions(Table):
    """Top-k classes per picture as a table (kind "table"): columns picture, rank, class, label,
    probability; ``answers`` holds the same as lists of :class:`~convscope.models.Prediction`, one list per
    picture (what ``Model.predict`` returns)."""

    answers: list[list[Prediction]]

    def __new__(cls, answers: list[list[Prediction]], *, title: str = "") -> Predictions:
        columns = ("picture", "rank", "class", "label", "probability")
        rows = [(i, rank, p.index, p.label, p.probability) for i, top in enumerate(answers) for rank, p in enumerate(top, 1)]
        cells = [(str(i), str(rank), str(index), label, f"{probability:.2%}") for i, rank, index, label, probability in rows]
        widths = [max(len(c), *(len(row[j]) for row in cells)) for j, c in enumerate(columns)]
        lines = [title] if title else []
        lines.append("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
        lines += ["  ".join(v.rjust(w) if j in (0, 1, 2, 4) else v.ljust(w) for j, (v, w) in enumerate(zip(row, widths))).rstrip()
                  for row in cells]
        self = super().__new__(cls, "\n".join(lines), columns=columns, rows=rows, title=title)
        self.answers = answers
        return self


def _predict_cost(context: CostContext) -> Cost:
    return Cost(context.pictures * context.area())


@register("predict", family="model", takes="images", returns="table", cost=_predict_cost,
          paper="the softmax of the model's output (one forward per picture)",
          report=ReportSpec(options={"k": 5}, title="Predictions",
                            note="The model's five best classes for each picture with their probabilities: a low top-1, or "
                                 "two classes close together, means the model is unsure."))
def predict(model: Any, x: torch.Tensor, *, k: Annotated[int, Field(ge=1, le=1000)] = 5) -> Predictions:
    """Predict: the model's top-k classes for each picture, with their softmax probabilities, as a table.

    ``x``: a preprocessed batch (B, C, H, W) (``model.preprocess(picture)``). ``result.answers[i]`` is the list
    of :class:`~convscope.models.Prediction` (index, label, probability) of picture ``i``.

    Options:
        k: how many classes to list per picture (at most the model's number of outputs).
    """
    wrapped: Model = as_model(model)
    answers = wrapped.predict(x, k=k)
    return Predictions(answers, title=f"{wrapped.name}: top {min(k, len(answers[0]))} of {len(answers)} "
                                      f"picture{'s' if len(answers) != 1 else ''}")
