"""Adapters: models from other frameworks and file formats as torch modules convscope can hook.

- :mod:`convscope.adapters.keras`: Keras 3 models and ``.keras`` files (torch backend), one wrapper module per layer.
- :mod:`convscope.adapters.onnx`: ``.onnx`` files through onnx2torch (the ``convscope[onnx]`` extra).

Importing this package imports neither keras nor onnx; each adapter imports its framework when it is used.
"""
