"""Attribution methods: which pixels drove a decision. Importing this registers them."""

from .cam import (
    ablationcam,
    cam,
    eigencam,
    gradcam,
    gradcam_pp,
    guided_gradcam,
    hirescam,
    layercam,
    scorecam,
    xgradcam,
)
from .drise import drise
from .gradient import deconvnet, guided_backprop, input_x_gradient, integrated_gradients, saliency, smoothgrad
from .perturbation import masked_image, occlusion, occlusion_mask, rise, superpixels

__all__ = ["ablationcam", "cam", "deconvnet", "drise", "eigencam", "gradcam", "gradcam_pp", "guided_backprop", "guided_gradcam",
           "hirescam", "input_x_gradient", "integrated_gradients", "layercam", "masked_image", "occlusion", "occlusion_mask",
           "rise", "saliency", "scorecam", "smoothgrad", "superpixels", "xgradcam"]
