"""The command-line front end: a thin layer over the public API (``import convscope as cs``)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEFAULT_MODEL = "efficientnet_lite0"


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL,
                        help=f"a model name (efficientnet_lite0, resnet50, vgg16, ...) or a model file (default: {DEFAULT_MODEL})")
    parser.add_argument("--weights", default="default",
                        help="'default' (pretrained, from the local cache), 'none' (random), a weights name or a file")
    parser.add_argument("--arch", help="architecture name for a state-dict / safetensors --model file")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cpu)")


def _load(args: argparse.Namespace) -> Any:
    import convscope as cs

    return cs.load_model(args.model, weights=args.weights, arch=args.arch, device=args.device)


def _images(names: Sequence[str]) -> list[tuple[str, Any]]:
    from convscope.images import named_images

    return named_images(names)


def cmd_report(args: argparse.Namespace) -> int:
    import convscope as cs

    model = _load(args)
    methods = args.methods.split(",") if args.methods else None
    path = cs.report(model, args.image or ["cat"], args.out, methods=methods, folder=args.folder, quick=args.quick)
    print(f"wrote {path}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    import convscope as cs

    print(cs.summary(_load(args)))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    model = _load(args)
    named = _images(args.images)
    x = model.preprocess([image for _, image in named])
    answers = model.predict(x, k=args.k)
    if args.json:
        print(json.dumps([{"image": name, "top": [p._asdict() for p in preds]} for (name, _), preds in zip(named, answers)], indent=2))
        return 0
    for (name, _), preds in zip(named, answers):
        print(name)
        for p in preds:
            print(f"  {p.probability:7.2%}  {p.index:4d}  {p.label}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    import convscope as cs

    model = _load(args)
    named = _images([args.image])
    x = model.preprocess(named[0][1])
    info = cs.registry.get(args.method)
    options = _parse_options(info, args.set or [])
    if args.target is not None:
        options["target"] = args.target
    if args.layer:
        options["layer"] = args.layer.split(",") if "," in args.layer else args.layer
    if args.precision:
        options["precision"] = args.precision
    result = info.fn(model, x, **options)
    out = Path(args.out or f"{Path(named[0][0]).stem}_{args.method}.png")
    result.save(out)
    label = result.labels[0] if result.labels else "custom target"
    layer = f" at layer {result.layer}" if result.layer else ""
    print(f"{args.method} for '{label}'{layer} -> {out}")
    return 0


def _parse_options(info: Any, pairs: list[str]) -> dict[str, Any]:
    """``--set steps=32 --set baseline=blur`` -> typed keyword options, checked against the method's
    option specs (kind and allowed values)."""
    from convscope.errors import ConvscopeError

    specs = {spec.name: spec for spec in info.option_specs()}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise ConvscopeError(f"--set expects key=value, got {pair!r}")
        if key not in specs:
            raise ConvscopeError(f"{info.name} has no option {key!r}; options: {', '.join(specs) or 'none'}")
        spec = specs[key]
        try:
            if text.lower() == "none" and spec.default is None:
                value: Any = None
            elif spec.kind == "bool":
                if text.lower() not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                    raise ValueError
                value = text.lower() in ("1", "true", "yes", "on")
            elif spec.kind == "int":
                value = int(text)
            elif spec.kind == "float":
                value = float(text)
            else:
                value = text
        except ValueError:
            raise ConvscopeError(f"option {key}={text!r} is not a {spec.kind}") from None
        if spec.choices and value not in spec.choices:
            raise ConvscopeError(f"option {key}={text!r}: choose one of {', '.join(map(str, spec.choices))}")
        options[key] = value
    return options


def cmd_methods(args: argparse.Namespace) -> int:
    import convscope as cs

    if args.name:  # one method in full: paper and every option with its help
        info = cs.registry.get(args.name)
        print(f"{info.name} ({info.family}): {info.summary}\npaper: {info.paper}\noptions (--set name=value):")
        for spec in info.option_specs():
            allowed = f" one of {', '.join(map(str, spec.choices))};" if spec.choices else ""
            print(f"  {spec.name} = {spec.default!r} ({spec.kind};{allowed} {spec.help})")
        return 0
    for info in cs.methods():
        options = ", ".join(f"{k}={p.default!r}" for k, p in info.options.items())
        print(f"{info.name:22s} {info.family:12s} {info.summary}\n{'':35s} options: {options or 'none'}")
    print("\n`convscope methods NAME` describes a method's options.")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    import numpy as np

    import convscope as cs
    from convscope.render import embedding as draw
    from convscope.render import figure_png

    model = _load(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    perplexities = [float(p) for p in args.perplexity.split(",")]
    found = cs.embed(model, args.folder, layer=args.layer, batch_size=args.batch_size)
    maps = cs.tsne_sweep(found, perplexities)
    (out / "scatter.png").write_bytes(figure_png(draw.scatter_figure(found, maps[0])))
    (out / "thumbnails.png").write_bytes(figure_png(draw.thumbnail_figure(found, maps[0])))
    if len(maps) > 1:
        (out / "perplexities.png").write_bytes(figure_png(draw.perplexity_figure(found, maps)))
    np.save(out / "features.npy", found.features)
    accuracy = found.accuracy()
    scored = f", top-1 accuracy {accuracy:.1%} on labelled images" if accuracy is not None else ""
    print(f"{len(found.features)} images, {found.features.shape[1]} features from {found.layer}{scored} -> {out}")
    if args.projector:
        logdir = out / "projector"
        cs.export_projector(found, logdir, coords=maps[0])
        print(f"TensorBoard projector files -> {logdir}  (view: tensorboard --logdir {logdir})")
    return 0


def _figure_to(path: Path, figure: Any) -> Path:
    from convscope.render import figure_png

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(figure_png(figure))
    return path


def cmd_trust(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.metrics.faithfulness import ranking_figure

    model = _load(args)
    x = model.preprocess([picture for _, picture in _images(args.images)])
    ranking = cs.metrics.compare(model, x, args.methods.split(","), steps=args.steps)
    print(ranking.table())
    if args.out:
        print(f"-> {_figure_to(Path(args.out), ranking_figure(ranking))}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    import convscope as cs

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    targets: Any = args.targets
    if targets is not None and not targets.lower().startswith("top"):
        try:
            numbers = [int(t) for t in targets.split(",")]
        except ValueError:
            raise cs.TargetError(f"--targets {targets!r}: use class indices (281 or 281,285) or topK (top3)") from None
        targets = numbers[0] if len(numbers) == 1 else numbers
    comparison = cs.compare(models, dict(_images(args.images)), args.methods, targets=targets, scale=args.scale)
    print(comparison.table())
    print(f"-> {comparison.save(args.out)}")
    return 0


def cmd_robustness(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.render.robustness import robustness_curves

    model = _load(args)
    picture = _images([args.image])[0][1]
    sweep = cs.robustness(model, picture, perturbations=args.perturbations, target=args.target, method=args.method,
                          seed=args.seed)
    if args.json:
        print(json.dumps({"original": {"class": sweep.original_class, "label": sweep.original_label,
                                       "probability": sweep.original_probability}, "rows": sweep.records(),
                          "notes": sweep.notes}, indent=2))
    else:
        print(sweep.table())
    out = Path(args.out)
    print(f"-> {_figure_to(out, sweep.figure())}, {_figure_to(out.with_name(out.stem + '_curves.png'), robustness_curves(sweep))}",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    import convscope as cs

    if args.demo:
        return _audit_demo(args)
    if not args.dataset or not args.masks:
        raise cs.InputError("audit needs a dataset folder and --masks FOLDER (or --demo for the snow/sand story)")
    found = cs.audit(_load(args), args.dataset, regions=args.masks, method=args.method, threshold=args.threshold,
                     swap_backgrounds=not args.no_swap, batch_size=args.batch_size)
    _audit_out(found, Path(args.out), args.json)
    return 0


def _audit_out(found: Any, out: Path, as_json: bool) -> None:
    if as_json:
        print(json.dumps(found.summary(), indent=2))
    else:
        print(found.table())
    print(f"-> {_figure_to(out, found.figure())}", file=sys.stderr if as_json else sys.stdout)


def _audit_demo(args: argparse.Namespace) -> int:
    """The leopard/tank story on convscope's shapes: circles on snow and squares on sand."""
    import convscope as cs
    from convscope.zoo.shapes import shapes_dataset

    data = shapes_dataset(args.demo_images, biased=True, split="test")
    out = Path(args.out)
    for which in ("biased", "balanced"):
        model = cs.load_model(f"shapes_{which}")
        print(f"== shapes_{which}: trained on {'circles on snow, squares on sand' if which == 'biased' else 'any background'}")
        found = cs.audit(model, data.inputs(model), labels=data.labels.tolist(), regions=data.masks,
                         method=args.method, threshold=args.threshold, swap_backgrounds=not args.no_swap)
        _audit_out(found, out.with_name(f"{out.stem}_{which}{out.suffix or '.png'}"), args.json)
    return 0


def cmd_filters(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.render.features import filters_figure

    result = cs.filters(_load(args), args.layer)
    print(f"{result.layer}: kernels {tuple(result.data.shape)} -> {_figure_to(Path(args.out), filters_figure(result))}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.render.features import feature_walk_figure

    model = _load(args)
    x = model.preprocess(_images([args.image])[0][1])
    names = args.layers.split(",") if args.layers else None
    maps = cs.feature_maps(model, x, layers=names)
    maps = maps if isinstance(maps, dict) else {maps.layer: maps}
    print(f"{', '.join(maps)} -> {_figure_to(Path(args.out), feature_walk_figure(maps, k=args.k))}")
    return 0


def cmd_maximize(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.render.features import optimization_grid

    model = _load(args)
    result = cs.maximize(model, args.objective, steps=args.steps, size=args.size, seed=args.seed, progress=None)
    print(f"{args.objective} -> {_figure_to(Path(args.out), optimization_grid(result))}")
    return 0


def cmd_dream(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.render import png_bytes

    model = _load(args)
    result = cs.dream(model, _images([args.image])[0][1], args.layer, octaves=args.octaves, steps=args.steps,
                      seed=args.seed, progress=None)
    picture = (result.data[0].detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255).round().astype("uint8")
    out = Path(args.out)
    out.write_bytes(png_bytes(picture))
    print(f"Deep Dream at {result.layer} -> {out}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    import convscope as cs
    from convscope.web import serve

    models = [cs.load_model(name, weights=args.weights, arch=args.arch, device=args.device) for name in args.model or [DEFAULT_MODEL]]
    serve(models, host=args.host, port=args.port, allow_remote=args.allow_remote,
          max_upload_bytes=int(args.max_upload_mb * 2**20), max_pixels=args.max_pixels, open_browser=args.open)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="convscope", description="See inside convolutional neural networks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("report", help="write one HTML report: predictions, every explanation, trust ranking, filters, "
                                      "feature maps, feature visualization")
    _add_model_args(p)
    p.add_argument("--image", action="append", help="a picture or a sample name (cat, coffee, astronaut, rocket); repeatable")
    p.add_argument("--out", default="convscope-report", help="output folder (default: convscope-report)")
    p.add_argument("--methods", help="comma-separated method names (default: every attribution method)")
    p.add_argument("--quick", action="store_true", help="coarse, fast settings (few steps, samples, channels): a preview in seconds")
    p.add_argument("--folder", help="a folder of images (sub-folders = labels) to map in the model's feature space (t-SNE)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("summary", help="print a Keras-style layer summary of a model")
    _add_model_args(p)
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("predict", help="top-k labels with probabilities")
    _add_model_args(p)
    p.add_argument("images", nargs="+", help="pictures or sample names")
    p.add_argument("-k", type=int, default=5)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("explain", help="run one method on one picture and save the overlay PNG")
    _add_model_args(p)
    p.add_argument("method", help="a registered method, e.g. gradcam or saliency (see `convscope methods`)")
    p.add_argument("image", help="a picture or a sample name")
    p.add_argument("--target", type=int, help="class index to explain (default: the top-1 class)")
    p.add_argument("--layer", help="dotted layer name, or several separated by commas (default: the method's choice)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="a method option, e.g. --set steps=32 (see `convscope methods`); repeatable")
    p.add_argument("--precision", choices=("fp32", "bf16"), help="bf16: autocast, faster on recent CPUs")
    p.add_argument("--out", help="output PNG (default: <image>_<method>.png)")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("methods", help="list the registered methods, or describe one")
    p.add_argument("name", nargs="?", help="a method to describe in full")
    p.set_defaults(func=cmd_methods)

    p = sub.add_parser("trust", help="rank explanation methods on pictures by deletion/insertion AUC, next to a random map")
    p.add_argument("images", nargs="+", help="pictures or sample names")
    _add_model_args(p)
    p.add_argument("--methods", default="gradcam,integrated_gradients,saliency,occlusion", help="comma-separated methods")
    p.add_argument("--steps", type=int, default=16, help="points on each deletion/insertion curve (default: 16)")
    p.add_argument("--out", help="also save the curves as a PNG here")
    p.set_defaults(func=cmd_trust)

    p = sub.add_parser("compare", help="several models (or a model's top classes) x several methods, side by side in one picture")
    p.add_argument("images", nargs="+", help="pictures or sample names")
    p.add_argument("--models", default="efficientnet_lite0",
                   help="comma-separated model names or files (default: efficientnet_lite0); see `convscope predict --help`")
    p.add_argument("--methods", default="gradcam,saliency", help="comma-separated methods (default: gradcam,saliency)")
    p.add_argument("--targets", help="a class index for every model, one per model (281,285), or topK with one model (top3)")
    p.add_argument("--scale", default="each", choices=("each", "column"),
                   help="scale each map on its own, or one scale per method column")
    p.add_argument("--out", default="compare.png", help="the PNG to write (default: compare.png)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("robustness", help="perturb a picture (brightness, contrast, colour, shadow, blur, noise, rotation, "
                                          "patch) and follow the prediction and its Grad-CAM evidence")
    p.add_argument("image", help="a picture or sample name")
    _add_model_args(p)
    p.add_argument("--perturbations", help="comma-separated (default: all of brightness,contrast,colour,shadow,blur,noise,"
                                                 "rotation,patch)")
    p.add_argument("--method", default="gradcam", help="the map compared across perturbations (default: gradcam)")
    p.add_argument("--target", type=int, help="the class to follow (default: the top-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--out", default="robustness.png", help="the grid PNG (and NAME_curves.png) (default: robustness.png)")
    p.set_defaults(func=cmd_robustness)

    p = sub.add_parser("audit", help="shortcut audit: where a dataset's explanations fall relative to the objects, and "
                                     "whether predictions follow objects or backgrounds")
    p.add_argument("dataset", nargs="?", help="a folder of images, one sub-folder per class")
    _add_model_args(p)
    p.add_argument("--masks", help="a folder of object masks mirroring the dataset's files (white = object)")
    p.add_argument("--method", default="gradcam", help="the explanation method (default: gradcam)")
    p.add_argument("--threshold", type=float, default=0.1, help="flag images whose concentration on the object is below this")
    p.add_argument("--no-swap", action="store_true", help="skip the background-swap test")
    p.add_argument("--batch-size", type=int, help="images per batch (default: chosen from the image size)")
    p.add_argument("--demo", action="store_true", help="audit convscope's two snow/sand shapes models (no dataset needed)")
    p.add_argument("--demo-images", type=int, default=400, help="pictures in the demo (default: 400)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", default="audit.png", help="the figure (default: audit.png; the demo writes audit_biased/balanced.png)")
    p.set_defaults(func=cmd_audit)

    p = sub.add_parser("filters", help="a layer's filters as a picture (default: the first convolution)")
    _add_model_args(p)
    p.add_argument("--layer", help="a convolution's name (default: the first)")
    p.add_argument("--out", default="filters.png")
    p.set_defaults(func=cmd_filters)

    p = sub.add_parser("features", help="feature maps of a picture at several layers (strongest channels first)")
    p.add_argument("image", help="a picture or a sample name")
    _add_model_args(p)
    p.add_argument("--layers", help="comma-separated layer names (default: see convscope.feature_maps)")
    p.add_argument("-k", type=int, default=8, help="channels per layer (default: 8)")
    p.add_argument("--out", default="features.png")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("maximize", help='the input an objective wants, e.g. "_blocks.8._expand_conv:17" or "logit:281"')
    p.add_argument("objective", help='"layer:channel", "layer:channel:x:y" or "logit:class"')
    _add_model_args(p)
    p.add_argument("--steps", type=int, default=256)
    p.add_argument("--size", type=int, help="picture side (default: the model's input size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="maximize.png")
    p.set_defaults(func=cmd_maximize)

    p = sub.add_parser("dream", help="Deep Dream on a picture")
    p.add_argument("image", help="a picture or a sample name")
    _add_model_args(p)
    p.add_argument("--layer", help="the layer whose activations grow (default: ~60%% through the convolutions)")
    p.add_argument("--octaves", type=int, default=4)
    p.add_argument("--steps", type=int, default=10, help="steps per octave (default: 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="dream.png")
    p.set_defaults(func=cmd_dream)

    p = sub.add_parser("embed", help="a folder of images in the model's feature space: t-SNE maps, thumbnails, projector files")
    p.add_argument("folder", help="a folder of images (sub-folders name the labels, ImageFolder layout)")
    _add_model_args(p)
    p.add_argument("--out", default="convscope-embed", help="output folder (default: convscope-embed)")
    p.add_argument("--layer", help="layer whose (pooled) output is the feature vector (default: the input of the classifier head)")
    p.add_argument("--perplexity", default="15,25", help="t-SNE perplexities, comma-separated (default: 15,25)")
    p.add_argument("--batch-size", type=int, default=64, help="images per forward (default: 64)")
    p.add_argument("--projector", action="store_true", help="also write TensorBoard projector files (tensors, metadata, sprite)")
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("serve", help="the local web app: browse a model's layers and feature maps, explain pictures in a browser")
    p.add_argument("--model", action="append", metavar="NAME_OR_PATH",
                   help=f"a model name or file; repeat for several (default: {DEFAULT_MODEL})")
    p.add_argument("--weights", default="default",
                   help="'default' (pretrained, from the local cache), 'none' (random), a weights name or a file")
    p.add_argument("--arch", help="architecture name for a state-dict / safetensors --model file")
    p.add_argument("--device", help="cpu, cuda, cuda:1, mps ... (default: cpu)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default: 127.0.0.1; any other needs --allow-remote)")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow another --host (e.g. 0.0.0.0) and any Host header: anyone who can reach the port can use the app")
    p.add_argument("--max-upload-mb", type=float, default=20, help="largest uploaded picture in MiB (default: 20)")
    p.add_argument("--max-pixels", type=int, default=40_000_000, help="largest uploaded picture in pixels (default: 40,000,000)")
    p.add_argument("--open", action="store_true", help="open the page in the default web browser")
    p.set_defaults(func=cmd_serve)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from convscope.errors import ConvscopeError

    try:
        return int(args.func(args) or 0)
    except ConvscopeError as exc:
        print(f"convscope: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `convscope methods | head`
        return 0
    except KeyboardInterrupt:
        print("convscope: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
