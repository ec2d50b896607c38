"""ONNX files as torch modules through onnx2torch (the optional extra ``pip install 'convscope[onnx]'``).

onnx2torch turns each graph node into a submodule named after the node (``"layer4/layer4/1/conv2/Conv"`` for a
node ``/layer4/layer4.1/conv2/Conv``), so ``cs.layers`` lists them and ``layer=`` addresses them by that name.
Before converting, ``Identity`` nodes that only copy a weight (torch's exporter writes them for weights it
shares) become weights again: onnx2torch needs a convolution's weights as initializers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ..errors import ModelError

__all__ = ["input_shape", "load_onnx"]

EXTRA = "pip install 'convscope[onnx]'"


def _one_line(exc: BaseException, limit: int = 200) -> str:
    return " ".join(str(exc).split())[:limit] or type(exc).__name__


def _import() -> tuple[Any, Any]:
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        raise ModelError(f"ONNX files need the packages onnx and onnx2torch ({exc.name} is missing): {EXTRA}") from None
    return onnx, onnx2torch


def _fold_weight_copies(onnx: Any, proto: Any) -> None:
    """Replace ``Identity(initializer)`` nodes by a copy of the initializer under the node's output name."""
    graph = proto.graph
    weights = {tensor.name: tensor for tensor in graph.initializer}
    kept = []
    for node in graph.node:
        if node.op_type == "Identity" and len(node.input) == 1 and node.input[0] in weights:
            copy = onnx.TensorProto()
            copy.CopyFrom(weights[node.input[0]])
            copy.name = node.output[0]
            graph.initializer.append(copy)
            weights[copy.name] = copy
        else:
            kept.append(node)
    if len(kept) != len(graph.node):
        del graph.node[:]
        graph.node.extend(kept)


def input_shape(proto: Any) -> tuple[int | None, ...]:
    """The first graph input's shape (None for a named or unknown dimension), skipping inputs that are weights."""
    weights = {tensor.name for tensor in proto.graph.initializer}
    inputs = [value for value in proto.graph.input if value.name not in weights]
    if len(inputs) != 1:
        raise ModelError(f"the ONNX graph takes {len(inputs)} inputs; convscope explains models of one picture input")
    dims = inputs[0].type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def load_onnx(path: Path) -> tuple[nn.Module, tuple[int | None, ...]]:
    """An ``.onnx`` file -> (a torch module in eval mode, the input shape (B, C, H, W) with None where not fixed)."""
    onnx, onnx2torch = _import()
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # DecodeError, OSError ...
        raise ModelError(f"{path.name}: not a readable ONNX file ({_one_line(exc)})") from None
    if not proto.graph.node:
        raise ModelError(f"{path.name}: not an ONNX model (no graph nodes found)")
    shape = input_shape(proto)
    _fold_weight_copies(onnx, proto)
    try:
        module = onnx2torch.convert(proto)
    except NotImplementedError as exc:  # "Converter is not implemented (OperationDescription(...))"
        text = str(exc)
        op = text.split("operation_type='")[1].split("'")[0] if "operation_type='" in text else None
        version = text.split("version=")[1].split(")")[0] if "version=" in text else None
        what = f"the operation {op} (opset {version})" if op else _one_line(exc)
        raise ModelError(f"{path.name}: onnx2torch cannot convert {what}; export the model with another opset "
                         f"(torch.onnx.export(..., opset_version=17)) or load it in PyTorch directly") from None
    except Exception as exc:
        raise ModelError(f"{path.name}: onnx2torch cannot convert this graph ({_one_line(exc)})") from None
    return module.eval(), shape
