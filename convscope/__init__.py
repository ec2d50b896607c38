"""convscope: see inside convolutional neural networks.

    import convscope as cs
    m = cs.load_model("efficientnet_lite0")
    x = m.preprocess(cs.sample_image("cat"))
    cs.gradcam(m, x).save("cat_gradcam.png")

Every method is ``cs.<method>(model, x, *, target=None, layer=None, **options) -> cs.Result``.
"""

from . import targets
from .attribution import (
    ablationcam,
    cam,
    deconvnet,
    eigencam,
    gradcam,
    gradcam_pp,
    guided_backprop,
    guided_gradcam,
    hirescam,
    input_x_gradient,
    integrated_gradients,
    layercam,
    saliency,
    scorecam,
    smoothgrad,
    xgradcam,
)
from .errors import ConvscopeError, ImageError, InputError, LayerError, ModelError, TargetError
from .hooks import Guard, LayerRef
from .images import load_image, sample_image
from .layers import LayerInfo, default_cam_layer, layers, resolve_layer, summary
from .models import Model, Prediction, available_models, imagenet_labels, load_model
from .registry import explain, methods
from .report import build_report as report
from .result import Result
from .roi import RegionOfInterest, class_regions, roi

__version__ = "0.1.0"

__all__ = [
    "ConvscopeError",
    "Guard",
    "ImageError",
    "InputError",
    "LayerError",
    "LayerInfo",
    "LayerRef",
    "Model",
    "ModelError",
    "Prediction",
    "RegionOfInterest",
    "Result",
    "TargetError",
    "__version__",
    "ablationcam",
    "available_models",
    "cam",
    "class_regions",
    "deconvnet",
    "default_cam_layer",
    "eigencam",
    "explain",
    "gradcam",
    "gradcam_pp",
    "guided_backprop",
    "guided_gradcam",
    "hirescam",
    "imagenet_labels",
    "input_x_gradient",
    "integrated_gradients",
    "layercam",
    "layers",
    "load_image",
    "load_model",
    "methods",
    "report",
    "resolve_layer",
    "roi",
    "saliency",
    "sample_image",
    "scorecam",
    "smoothgrad",
    "summary",
    "targets",
    "xgradcam",
]
