"""Attribution methods: which pixels drove a decision. Importing this registers them."""

from .cam import gradcam
from .gradient import saliency

__all__ = ["gradcam", "saliency"]
