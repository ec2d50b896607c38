"""Keras 3 models as torch modules convscope can hook (the torch backend, ``KERAS_BACKEND=torch``).

A Keras 3 model on the torch backend is an ``nn.Module``, but its layers are invisible to torch
(``named_modules`` shows only ``_torch_params``) and ``keras.Layer.__call__`` bypasses ``nn.Module.__call__``,
so forward hooks on Keras layers never fire. :class:`KerasModule` holds one small wrapper ``nn.Module`` per
Keras layer, registered under the Keras layer name (``"block5_conv3"``), and its ``forward`` runs the Keras graph
(``Functional._run_through_graph``) calling those wrappers — so hooks fire and every convscope method works.

The adapted module takes (B, C, H, W) like every other model (a channels-last Keras model gets its input
permuted to (B, H, W, C) at the entry); the inner layers keep Keras' own layout, and wrappers whose 4-D outputs
are (B, H, W, C) carry ``convscope_channels_last = True`` so layer views read them as (B, C, H, W).
The user's Keras model is used as it is: the same variables, no ``trainable`` flag changed.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError

__all__ = ["KerasLayer", "KerasModule", "adapt", "from_keras", "import_keras", "is_keras", "load_keras_file"]

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def is_keras(obj: Any) -> bool:
    """Whether ``obj`` is a Keras 3 layer or model (checked by class, without importing keras)."""
    return any(cls.__module__.split(".")[0] == "keras" for cls in type(obj).__mro__)


def import_keras() -> Any:
    """``keras`` on the torch backend: sets ``KERAS_BACKEND=torch`` when keras is not imported yet and the
    variable is unset; one line when keras runs (or would run) on another backend."""
    if "keras" not in sys.modules:
        wanted = os.environ.setdefault("KERAS_BACKEND", "torch")
        if wanted != "torch":
            raise ModelError(f"KERAS_BACKEND is {wanted!r}; convscope runs Keras models on the torch backend: "
                             f"set KERAS_BACKEND=torch before starting Python")
    try:
        import keras
    except ImportError:
        raise ModelError("Keras models need keras 3: pip install 'convscope[keras]'") from None
    backend = keras.backend.backend()
    if backend != "torch":
        raise ModelError(f"keras was imported with the {backend!r} backend; convscope needs the torch backend: "
                         f"set KERAS_BACKEND=torch before importing keras")
    return keras


def _module_name(name: str, taken: nn.Module) -> str:
    """A Keras layer name as a module name: no dots (they separate submodules), not an attribute of nn.Module."""
    name = name.replace(".", "_") or "layer"
    while hasattr(taken, name) and name not in taken._modules:
        name += "_"
    return name


def _param_name(path: str) -> str:
    return path.rsplit("/", 1)[-1].replace(".", "_") or "weight"


_WRAPPER_TYPES: dict[str, type] = {}


def _wrapper_type(keras_class: type, base: type) -> type:
    """A subclass of ``base`` named like the Keras class (``Conv2D``), so summaries show the Keras type."""
    key = f"{base.__name__}:{keras_class.__name__}"
    if key not in _WRAPPER_TYPES:
        _WRAPPER_TYPES[key] = type(keras_class.__name__, (base,), {"__module__": __name__, "__qualname__": keras_class.__name__})
    return _WRAPPER_TYPES[key]


class KerasLayer(nn.Module):
    """One Keras layer as a torch module: ``forward`` calls the layer; its variables are registered as this
    module's parameters (the same tensors, under their Keras names ``kernel``, ``bias`` …).

    ``keras_layer``: the wrapped layer (not a submodule). ``convscope_channels_last``: its 4-D outputs are
    (B, H, W, C)."""

    def __init__(self, layer: Any, *, channels_last: bool) -> None:
        super().__init__()
        self.__dict__["keras_layer"] = layer  # held, not registered: torch must not see the Keras module tree
        self.convscope_channels_last = channels_last
        for variable in layer.weights:
            value = variable.value
            if isinstance(value, nn.Parameter):
                name = _param_name(variable.path)
                while name in self._parameters or hasattr(self, name):
                    name += "_"
                self.register_parameter(name, value)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.keras_layer(*args, **kwargs)

    @property
    def convscope_linear(self) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """A Dense layer without activation as (weight (out, in), bias), for cs.cam; None otherwise."""
        layer = self.keras_layer
        kernel = getattr(getattr(layer, "kernel", None), "value", None)
        activation = getattr(getattr(layer, "activation", None), "__name__", "linear")
        if type(layer).__name__ != "Dense" or not isinstance(kernel, torch.Tensor) or kernel.dim() != 2 or activation != "linear":
            return None
        bias = getattr(getattr(layer, "bias", None), "value", None)
        return kernel.t(), bias if isinstance(bias, torch.Tensor) else None

    @property
    def convscope_conv_weight(self) -> torch.Tensor | None:
        """A Conv2D's kernels as (out, in, kh, kw) (Keras keeps (kh, kw, in, out)), for cs.filters; None otherwise."""
        kernel = getattr(self.keras_layer, "kernel", None)
        value = getattr(kernel, "value", None)
        if type(self.keras_layer).__name__ != "Conv2D" or not isinstance(value, torch.Tensor) or value.dim() != 4:
            return None
        return value.permute(3, 2, 0, 1)

    def extra_repr(self) -> str:
        return f"keras {type(self.keras_layer).__name__} {self.keras_layer.name!r}"


def _graph_of(model: Any) -> Any:
    """The Functional graph a Keras model runs (a Sequential's functional build), or None (subclassed, unbuilt)."""
    if hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth"):
        return model
    inner = getattr(model, "_functional", None)
    return inner if inner is not None and hasattr(inner, "_run_through_graph") else None


def _is_graph(layer: Any) -> bool:
    return _graph_of(layer) is not None


def _channels_last(layer: Any, default: bool) -> bool:
    data_format = getattr(layer, "data_format", None)
    return default if data_format is None else data_format == "channels_last"


class KerasModule(nn.Module):
    """A Keras model (or a nested Functional / Sequential model inside one) as a torch module whose children
    are one :class:`KerasLayer` per Keras layer, named like the Keras layers, called in the Keras graph's order.

    ``nchw_input``: the outermost adapter takes (B, C, H, W) and permutes to the Keras model's channels-last
    input; nested ones pass tensors through in Keras' layout."""

    def __init__(self, model: Any, *, channels_last: bool, nchw_input: bool = True) -> None:
        super().__init__()
        self.__dict__["keras_model"] = model
        self.__dict__["_graph"] = _graph_of(model)
        self.convscope_channels_last = channels_last
        self.nchw_input = nchw_input
        self.__dict__["_wrappers"] = {}
        input_layer = _input_layer_type()
        for op in self._graph.operations:
            if input_layer is not None and isinstance(op, input_layer):
                continue
            if not hasattr(op, "weights"):  # a plain keras.ops operation: no weights, called as it is
                continue
            layout = _channels_last(op, channels_last)
            if _is_graph(op):
                wrapper: nn.Module = _wrapper_type(type(op), KerasModule)(op, channels_last=layout, nchw_input=False)
            else:
                wrapper = _wrapper_type(type(op), KerasLayer)(op, channels_last=layout)
            self.add_module(_module_name(op.name, self), wrapper)
            self._wrappers[id(op)] = wrapper

    def _operation(self, op: Any) -> Any:
        wrapper = self._wrappers.get(id(op), op)
        training = self.training

        def call(*args: Any, **kwargs: Any) -> Any:
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = training
            return wrapper(*args, **kwargs)

        return call

    def forward(self, *inputs: Any, **context: Any) -> Any:
        # context: what the outer graph passes a nested model (training, mask); this module's own mode decides
        if self.nchw_input:
            inputs = tuple(x.permute(0, 2, 3, 1) if self.convscope_channels_last and x.dim() == 4 else x for x in inputs)
        outputs = self._graph._run_through_graph(list(inputs), operation_fn=self._operation)
        return outputs[0] if isinstance(outputs, (list, tuple)) and len(outputs) == 1 else outputs

    def extra_repr(self) -> str:
        return f"keras {type(self.keras_model).__name__} {self.keras_model.name!r}"


def _input_layer_type() -> type | None:
    try:
        from keras.layers import InputLayer
    except ImportError:  # pragma: no cover - keras is imported before any adapter is built
        return None
    return InputLayer


def _data_format(model: Any) -> str:
    """The model's image layout: the first layer that says (Conv2D, pooling …), else keras' global setting."""
    graph = _graph_of(model)
    for op in (graph.operations if graph is not None else []):
        fmt = getattr(op, "data_format", None)
        if fmt in ("channels_last", "channels_first"):
            return fmt
    import keras

    return keras.config.image_data_format()


def _input_shape(model: Any) -> tuple[Any, ...] | None:
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    if not inputs or len(inputs) != 1:
        raise ModelError(f"Keras model {model.name!r} takes {len(inputs or [])} inputs; convscope explains models of one "
                         f"picture input")
    return tuple(inputs[0].shape)


def adapt(model: Any) -> tuple[KerasModule, tuple[int, int] | None, int]:
    """A Keras model -> (the adapted module, its input (H, W) or None when not fixed, its channel count)."""
    import_keras()
    if _graph_of(model) is None:
        raise ModelError(f"Keras model {model.name!r} has no layer graph convscope can follow (a subclassed model, or a "
                         f"Sequential model that was never built); build it as a Functional model, or call "
                         f"model.build((None, H, W, C)) first")
    shape = _input_shape(model)
    if shape is None or len(shape) != 4:
        got = "no known input shape" if shape is None else f"input shape {shape}"
        raise ModelError(f"Keras model {model.name!r} has {got}; convscope explains models of pictures, (None, H, W, C): "
                         f"build it with keras.Input(shape=(H, W, C))")
    channels_last = _data_format(model) == "channels_last"
    height, width, channels = (shape[1], shape[2], shape[3]) if channels_last else (shape[2], shape[3], shape[1])
    module = KerasModule(model, channels_last=channels_last).eval()
    size = (int(height), int(width)) if height is not None and width is not None else None
    return module, size, int(channels) if channels is not None else 3


def from_keras(model: Any, *, input_size: Sequence[int] | int | None = None, mean: Sequence[float] | None = None,
               std: Sequence[float] | None = None, labels: Sequence[str] | None = None, name: str | None = None,
               resize_size: int | None = None) -> Any:
    """A :class:`convscope.Model` for a Keras 3 model (torch backend) that takes (B, C, H, W) pictures.

    Input size and channels are read from the Keras model. ``mean``/``std`` default to None (no
    normalization): ``keras.applications`` models include their own preprocessing in the graph or expect
    ``keras.applications.<family>.preprocess_input`` — give ``mean=``/``std=`` (of [0, 1] pixels) if yours
    expects normalized input. Keras classifiers often end in a softmax: the output is then probabilities.
    """
    from ..models import Model

    module, size, channels = adapt(model)
    return Model(module, input_size=input_size if input_size is not None else size, mean=mean, std=std, labels=labels,
                 name=name or model.name, resize_size=resize_size, channels=channels)


def load_keras_file(path: Path, *, allow_pickle: bool = False) -> Any:
    """A ``.keras`` (or legacy ``.h5``) file -> the Keras model (``safe_mode`` unless ``allow_pickle``: Lambda layers
    hold Python code)."""
    keras = import_keras()
    try:
        return keras.saving.load_model(str(path), compile=False, safe_mode=not allow_pickle)
    except Exception as exc:  # keras raises ValueError, TypeError, OSError, ImportError (h5py) ...
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        hint = "; if you trust the file, pass allow_pickle=True (--allow-pickle)" if "safe_mode" in str(exc) else ""
        raise ModelError(f"{path.name}: not a loadable Keras model ({reason}){hint}") from None
