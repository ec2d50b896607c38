"""convscope: see inside convolutional neural networks.

    import convscope as cs
    m = cs.load_model("efficientnet_lite0")
    x = m.preprocess(cs.sample_image("cat"))
    cs.gradcam(m, x).save("cat_gradcam.png")

Every attribution method is ``cs.<method>(model, x, *, target=None, layer=None, **options) -> cs.Result``;
``cs.tools()`` lists every tool (attribution, features, trust, workflows, embeddings) with its typed options.
"""

from . import data, engine, features, metrics, options, registry, render, targets
from .attribution import (
    ablationcam,
    cam,
    deconvnet,
    drise,
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
from .engine import Cost, limits
from .errors import ConvscopeError, CostError, ImageError, InputError, LayerError, ModelError, OptionError, TargetError
from .features import (
    FeatureWalk,
    Predictions,
    class_image,
    compare_filters,
    dream,
    feature_maps,
    filters,
    layer_info,
    maximize,
    predict,
    summary,
)
from .features import objectives as objectives
from .features.embed import Embedding, Projection, embed, pca, tsne, tsne_sweep, umap
from .features.projector import export_projector
from .hooks import Guard, LayerRef
from .images import load_image, sample_image
from .layers import LayerInfo, default_cam_layer, layers, resolve_layer
from .metrics.audit import Audit, StrategyAudit, audit
from .metrics.robustness import Robustness, robustness
from .metrics.spray import Strategies, spray, spray_classes
from .models import Model, Prediction, available_models, imagenet_labels, load_model
from .registry import explain, methods, tools
from .report import build_report as report
from .result import Result, Table
from .roi import RegionOfInterest, Regions, class_regions, roi
from .store import Explanations, open_explanations
from .sweep import explain_dataset
from .zoo.digits import digits_dataset

__version__ = "0.1.0"

__all__ = [
    "Audit",
    "Comparison",
    "ConvscopeError",
    "Cost",
    "CostError",
    "Embedding",
    "Explanations",
    "FeatureWalk",
    "Guard",
    "ImageError",
    "InputError",
    "LayerError",
    "LayerInfo",
    "LayerRef",
    "Model",
    "ModelError",
    "OptionError",
    "Prediction",
    "Predictions",
    "Projection",
    "RegionOfInterest",
    "Regions",
    "Result",
    "Robustness",
    "Strategies",
    "StrategyAudit",
    "Table",
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
    "data",
    "deconvnet",
    "default_cam_layer",
    "digits_dataset",
    "dream",
    "drise",
    "eigencam",
    "embed",
    "engine",
    "explain",
    "explain_dataset",
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
    "limits",
    "load_image",
    "load_model",
    "masked_image",
    "maximize",
    "methods",
    "metrics",
    "objectives",
    "occlusion",
    "occlusion_mask",
    "open_explanations",
    "options",
    "pca",
    "predict",
    "registry",
    "render",
    "report",
    "resolve_layer",
    "rise",
    "robustness",
    "roi",
    "saliency",
    "sample_image",
    "scorecam",
    "smoothgrad",
    "spray",
    "spray_classes",
    "summary",
    "superpixels",
    "targets",
    "tools",
    "tsne",
    "tsne_sweep",
    "umap",
    "xgradcam",
]
