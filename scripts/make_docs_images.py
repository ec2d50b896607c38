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
    debugging(model)


def debugging(model: cs.Model) -> None:
    """The model-debugging pictures: compare, robustness, and the snow/sand shortcut audit."""
    from convscope.render.robustness import robustness_curves
    from convscope.zoo.shapes import shapes_dataset

    models = {"efficientnet_lite0 (trained)": model,
              "efficientnet_lite0 (random weights)": cs.load_model("efficientnet_lite0", weights=None),
              "digits_cnn (1x32x32)": cs.load_model("digits_cnn")}
    written = [cs.compare(models, ["cat"], ["gradcam", "guided_gradcam", "saliency"], progress=False).save(OUT / "compare.png")]
    sweep = cs.robustness(model, cs.sample_image("cat"), progress=False)
    written.append(OUT / "robustness_cat.png")
    written[-1].write_bytes(render.figure_png(sweep.figure()))
    written.append(OUT / "robustness_cat_curves.png")
    written[-1].write_bytes(render.figure_png(robustness_curves(sweep)))
    from convscope.render.audit import swap_figure

    data = shapes_dataset(400, biased=True, split="test")
    audits = {}
    for which in ("biased", "balanced"):
        shapes = cs.load_model(f"shapes_{which}")
        audits[which] = cs.audit(shapes, data.inputs(shapes), labels=data.labels.tolist(), regions=data.masks, progress=False)
        written.append(OUT / f"audit_{which}.png")
        written[-1].write_bytes(render.figure_png(audits[which].figure()))
    written.append(OUT / "audit_swap.png")
    written[-1].write_bytes(render.figure_png(swap_figure(audits)))
    for path in written:
        print("wrote", path)



if __name__ == "__main__":
    main()
