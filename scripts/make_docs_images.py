"""Regenerate the pictures in docs/images (README): `python scripts/make_docs_images.py`."""

from pathlib import Path

import convscope as cs
from convscope import render

OUT = Path(__file__).resolve().parent.parent / "docs" / "images"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model = cs.load_model("efficientnet_lite0")
    attribution(model)
    debugging(model)
    dataset_audit()


def attribution(model: cs.Model) -> None:
    """The README's first picture: Grad-CAM (unsigned, sequential colours) and occlusion (signed: red where
    covering the part lowers the class, blue where it raises it, white for no effect), each with its colour bar."""
    from matplotlib.figure import Figure

    from convscope.render.scale import colorbar, result_scale

    names = ["cat", "coffee", "rocket"]
    x = model.preprocess([cs.sample_image(n) for n in names])
    results = {"Grad-CAM": cs.gradcam(model, x), "occlusion": cs.occlusion(model, x, window=32, stride=16, progress=False)}
    fig = Figure(figsize=(8.4, 2.5 * len(names)), layout="constrained")
    axes = fig.subplots(len(names), 1 + len(results), squeeze=False)
    for i, name in enumerate(names):
        first = results["Grad-CAM"]
        axes[i, 0].imshow(first.images()[i])
        axes[i, 0].set_title(f"{name}: {first.labels[i]} ({float(first.meta['probabilities'][i]):.0%})", fontsize=8)
        for ax, (method, result) in zip(axes[i, 1:], results.items()):
            scale = result_scale(result, i)
            ax.imshow(result.overlay(i, scale=scale))
            ax.set_title(method, fontsize=8)
            colorbar(fig, ax, scale, fontsize=6)
        for ax in axes[i]:
            ax.set_axis_off()
    path = OUT / "readme_attribution.png"
    path.write_bytes(render.figure_png(fig))
    print("wrote", path)


def debugging(model: cs.Model) -> None:
    """The model-debugging pictures: compare, robustness, and the snow/sand shortcut audit."""
    from convscope.images import to_uint8
    from convscope.render.robustness import robustness_curves
    from convscope.zoo.shapes import shapes_dataset

    swapped = shapes_dataset(2, split="test", swap=True)  # a circle on sand, a square on snow: the shortcut broken
    circle, square = to_uint8(swapped.images)
    comparison = cs.compare(["shapes_biased", "shapes_balanced"], {"circle, sand": circle, "square, snow": square},
                            methods=["gradcam", "guided_gradcam"], progress=False)
    written = [comparison.save(OUT / "compare.png")]
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


def dataset_audit() -> None:
    """'Auditing a whole dataset': SpRAy on the tagged-corner model's explanations (no masks), as the README's
    example makes them — the circles' two strategies (the shape, the corner tag)."""
    import tempfile

    from convscope.zoo.tagged import tagged_dataset, train_tagged_model

    tagged = train_tagged_model(seed=0)
    pictures = tagged_dataset(400, split="test")
    with tempfile.TemporaryDirectory() as folder:
        runs = cs.explain_dataset(tagged, (pictures.inputs(tagged), pictures.labels), out=folder, progress=False)
        strategies = cs.audit(tagged, runs.folder, progress=False)
    path = OUT / "audit_strategies.png"
    path.write_bytes(render.figure_png(strategies.classes["circle"].figure()))
    print("wrote", path)


if __name__ == "__main__":
    main()
