"""convscope: see inside convolutional neural networks.

    import convscope as cs
    m = cs.load_model("efficientnet_lite0")
    x = m.preprocess(cs.sample_image("cat"))
    cs.gradcam(m, x).save("cat_gradcam.png")

Every method is ``cs.<method>(model, x, *, target=None, layer=None, **options) -> cs.Result``.
"""

from . import features, metrics, targets
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
    masked_image,
    occlusion,
    occlusion_mask,
    rise,
    saliency,
    scorecam,
    smoothgrad,
    superpixels,
    xgradcam,
)
from .compare import Comparison, compare
from .errors import ConvscopeError, ImageError, InputError, LayerError, ModelError, TargetError
from .features import class_image, compare_filters, dream, feature_maps, filters, layer_info, maximize
from .features import objectives as objectives
from .features.embed import Embedding, Projection, embed, pca, tsne, tsne_sweep, umap
from .features.projector import export_projector
from .hooks import Guard, LayerRef
from .images import load_image, sample_image
from .layers import LayerInfo, default_cam_layer, layers, resolve_layer, summary
from .metrics.audit import Audit, audit
from .metrics.robustness import Robustness, robustness
from .models import Model, Prediction, available_models, imagenet_labels, load_model
from .registry import explain, methods
from .report import build_report as report
from .result import Result
from .roi import RegionOfInterest, class_regions, roi
from .zoo.digits import digits_dataset

__version__ = "0.1.0"

__all__ = [
    "Audit",
    "Comparison",
    "ConvscopeError",
    "Embedding",
    "Guard",
    "ImageError",
    "InputError",
    "LayerError",
    "LayerInfo",
    "LayerRef",
    "Model",
    "ModelError",
    "Prediction",
    "Projection",
    "RegionOfInterest",
    "Result",
    "Robustness",
    "TargetError",
    "__version__",
    "ablationcam",
    "audit",
    "available_models",
    "cam",
    "class_image",
    "class_regions",
    "compare",
    "compare_filters",
    "deconvnet",
    "default_cam_layer",
    "digits_dataset",
    "dream",
    "eigencam",
    "embed",
    "explain",
    "export_projector",
    "feature_maps",
    "features",
    "filters",
    "gradcam",
    "gradcam_pp",
    "guided_backprop",
    "guided_gradcam",
    "hirescam",
    "imagenet_labels",
    "input_x_gradient",
    "integrated_gradients",
    "layer_info",
    "layercam",
    "layers",
    "load_image",
    "load_model",
    "masked_image",
    "maximize",
    "methods",
    "metrics",
    "objectives",
    "occlusion",
    "occlusion_mask",
    "pca",
    "report",
    "resolve_layer",
    "rise",
    "robustness",
    "roi",
    "saliency",
    "sample_image",
    "scorecam",
    "smoothgrad",
    "summary",
    "superpixels",
    "targets",
    "tsne",
    "tsne_sweep",
    "umap",
    "xgradcam",
]
