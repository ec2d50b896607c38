"""Attribution methods: which pixels drove a decision. Importing this registers them."""

from .cam import gradcam
from .gradient import deconvnet, guided_backprop, input_x_gradient, integrated_gradients, saliency, smoothgrad

__all__ = ["deconvnet", "gradcam", "guided_backprop", "input_x_gradient", "integrated_gradients", "saliency",
           "smoothgrad"]
