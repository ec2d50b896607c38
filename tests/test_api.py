"""The public API is pinned (httpx style) and importing convscope stays cheap."""

from __future__ import annotations

import subprocess
import sys

import convscope as cs

PUBLIC = {
    "ConvscopeError", "Guard", "ImageError", "InputError", "LayerError", "LayerInfo", "LayerRef", "Model",
    "ModelError", "Prediction", "Result", "TargetError", "available_models", "default_cam_layer", "explain",
    "gradcam", "imagenet_labels", "layers", "load_image", "load_model", "methods", "report", "resolve_layer",
    "saliency", "sample_image", "summary", "targets", "__version__",
    "deconvnet", "guided_backprop", "input_x_gradient", "integrated_gradients", "smoothgrad",
    "RegionOfInterest", "Regions", "roi", "class_regions",
    "ablationcam", "cam", "eigencam", "gradcam_pp", "guided_gradcam", "hirescam", "layercam", "scorecam", "xgradcam",
    "occlusion", "rise", "drise", "superpixels", "occlusion_mask", "masked_image", "metrics",
    "features", "filters", "compare_filters", "feature_maps", "layer_info", "maximize", "class_image", "dream", "objectives",
    "Embedding", "Projection", "embed", "pca", "tsne", "tsne_sweep", "umap", "export_projector", "digits_dataset",
    "Comparison", "compare", "Audit", "audit", "Robustness", "robustness",
    "tools", "registry", "options", "engine", "data", "render", "limits", "Cost", "CostError", "OptionError", "Table",
    "FeatureWalk", "Predictions", "predict",
    "Explanations", "explain_dataset", "open_explanations", "StrategyAudit", "Strategies", "spray", "spray_classes",
}


def test_public_api_is_pinned() -> None:
    assert set(cs.__all__) == PUBLIC
    assert all(hasattr(cs, name) for name in cs.__all__)


def test_every_registered_method_is_public_and_follows_the_contract() -> None:
    import inspect

    for info in cs.methods():
        assert getattr(cs, info.name) is info.fn, f"{info.name} is registered but not exported"
        assert info.fn.__wrapped__ is info.impl
        params = inspect.signature(info.fn).parameters
        names = list(params)
        assert names[:2] == ["model", "x"]
        assert params["target"].kind is inspect.Parameter.KEYWORD_ONLY and params["target"].default is None
        assert params["layer"].kind is inspect.Parameter.KEYWORD_ONLY and params["layer"].default is None
        assert info.summary and info.paper


def test_errors_are_value_errors() -> None:
    for kind in (cs.ImageError, cs.LayerError, cs.TargetError, cs.ModelError, cs.InputError):
        assert issubclass(kind, cs.ConvscopeError) and issubclass(kind, ValueError)


def test_import_is_cheap() -> None:
    code = ("import sys, convscope; heavy = [m for m in ('matplotlib', 'torchvision', 'skimage', 'sklearn', "
            "'efficientnet_lite_pytorch', 'safetensors') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
