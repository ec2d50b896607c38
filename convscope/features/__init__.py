"""Feature visualization: filters, feature maps, layer details, and optimization (activation
maximization, class images, Deep Dream) with Lucid-style objectives, parameterizations and transforms.

    import convscope as cs
    from convscope.features import objectives as obj
    m = cs.load_model("efficientnet_lite0")
    cs.features.filters(m)                                        # first-layer kernels
    cs.features.feature_maps(m, x, layers=["_blocks.2", "_blocks.9"])
    cs.features.maximize(m, obj.channel("_blocks.9", range(64)), steps=256)   # 64 channels, one run
    cs.features.class_image(m, 281)
    cs.features.dream(m, cs.sample_image("cat"), "_blocks.8")
"""

from . import objectives, param
from .activations import LayerDetails, feature_maps, layer_access, layer_info, top_channels
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

__all__ = [
    "LayerDetails",
    "Objective",
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
    "top_channels",
    "total_variation",
]
