"""Regenerate the pictures in docs/images (README): `python scripts/make_docs_images.py`."""

from pathlib import Path

import convscope as cs
from convscope import render

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = cs.load_model("efficientnet_lite0")
    names = ["cat", "coffee", "rocket"]
    x = model.preprocess([cs.sample_image(n) for n in names])
    cam, sal = cs.gradcam(model, x), cs.saliency(model, x)
    panels, titles = [], []
    for i in range(len(names)):
        panels += [cam.images()[i], cam.overlay(i), sal.overlay(i)]
        titles += [f"{names[i]}", f"Grad-CAM: {cam.labels[i]} ({float(cam.meta['probabilities'][i]):.0%})",
                   f"saliency: {sal.labels[i]}"]
    render.save_grid(panels, OUT / "readme_attribution.png", titles, ncols=3)
    print("wrote", OUT / "readme_attribution.png")


if __name__ == "__main__":
    main()
