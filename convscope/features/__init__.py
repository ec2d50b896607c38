"""Feature visualization: filters, feature maps, layer details, and optimization (activation
maximization, class images, Deep Dream) with Lucid-style objectives, parameterizations and transforms;
and the "model" family's tables (``summary``, ``predict``). Every tool here is registered (see
``convscope.registry``): calling it checks its options and cost before any work.

    import convscope as cs
    from convscope.features import objectives as obj
    m = cs.load_model("efficientnet_lite0")
    cs.features.filters(m)                                        # first-layer kernels
    cs.features.feature_maps(m, x, layer=["_blocks.2", "_blocks.9"])
    cs.features.maximize(m, obj.channel("_blocks.9", range(16)), steps=256)   # 16 channels, one run
    cs.features.class_image(m, 281)
    cs.features.dream(m, cs.sample_image("cat"), "_blocks.8")
"""

from . import embed as _embed  # noqa: F401  (registers the embed tool; ``convscope.features.embed`` stays the module)
from . import objectives, param
from .activations import FeatureWalk, LayerDetails, feature_maps, layer_access, layer_info, top_channels
from .filters import compare_filters, filter_smoothness, filters, first_conv
from .objectives import (
    Objective,
    channel,
    channels,
    class_logit,
    direction,
    diversity,
    l1,
    l2,
    layer_l2,
    neuron,
    objective_from_string,
    total_variation,
)
from .optimize import class_image, default_dream_layer, dream, maximize
from .overview import Predictions, predict, summary

__all__ = [
    "FeatureWalk",
    "LayerDetails",
    "Objective",
    "Predictions",
    "channel",
    "channels",
    "class_image",
    "class_logit",
    "compare_filters",
    "default_dream_layer",
    "direction",
    "diversity",
    "dream",
    "feature_maps",
    "filter_smoothness",
    "filters",
    "first_conv",
    "l1",
    "l2",
    "layer_access",
    "layer_info",
    "layer_l2",
    "maximize",
    "neuron",
    "objective_from_string",
    "objectives",
    "param",
    "predict",
    "summary",
    "top_channels",
    "total_variation",
]
