"""Every kind render knows is seen the same ways: saved in each format (chosen by the suffix), drawn as a
figure, shown from a plain script without a display, and displayed in a notebook.

The objects are real: each kind has a snippet (``SNIPPETS``) that calls a tool the way a user would, on
EfficientNet-Lite0 or convscope's small digits and shapes models (quick options). The snippets are also the
cells of the notebook test (``test_notebook.py``), after ``SETUP``.

While the tools are being converted to kinds, ``PENDING`` names the kinds whose tool does not return a
displayable object of that kind yet: their tests xfail saying what is missing, and
``test_pending_kinds_are_still_pending`` fails as soon as one works, so it is taken off the list.
"""

from __future__ import annotations

import ast
import io
import os
import pickle
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from convscope import render

SETUP = """\
import convscope as cs
from convscope.zoo.shapes import shapes_dataset

lite0 = cs.load_model("efficientnet_lite0")
cat = lite0.preprocess(cs.sample_image("cat"))
digits = cs.load_model("digits_cnn")
digit_pictures, digit_labels = zip(*(cs.digits_dataset("test")[i] for i in range(40)))
seven = digits.preprocess(digit_pictures[digit_labels.index(7)])
shapes = cs.load_model("shapes_biased")
scenes = shapes_dataset(24, split="test")
"""

# kind -> the code that makes an object of that kind (its last line is the object)
SNIPPETS = {
    "map": "cs.gradcam(lite0, cat)",
    "pixels": "cs.saliency(lite0, cat)",
    "picture": "cs.class_image(digits, 3, steps=8)",
    "feature_maps": "cs.feature_maps(digits, seven, layers='block2.2')",
    "filters": "cs.filters(lite0)",
    "table": "cs.summary(digits)",
    "embedding": "cs.embed(digits, digit_pictures, labels=digit_labels, progress=False)",
    "projection": "cs.pca(cs.embed(digits, digit_pictures, labels=digit_labels, progress=False))",
    "comparison": "cs.compare([lite0], 'cat', 'gradcam,saliency', progress=False)",
    "robustness": "cs.robustness(shapes, scenes.inputs(shapes)[:1], perturbations={'blur': [1.0, 2.0], 'noise': [0.1]}, progress=False)",
    "audit": "cs.audit(shapes, scenes.inputs(shapes), labels=scenes.labels.tolist(), regions=scenes.masks, swaps=8, progress=False)",
    "ranking": "cs.metrics.rank(digits, seven, ['gradcam', 'saliency'], steps=4, baseline_samples=1, progress=False)",
    "curve": "cs.metrics.deletion(digits, seven, cs.gradcam(digits, seven), steps=4, progress=False)",
    "sanity": "cs.metrics.sanity(digits, seven, 'gradcam', progress=False)",
    "feature_walk": "cs.feature_maps(digits, seven, layers=['block1.2', 'block2.2', 'block3.2'])",
    "regions": "cs.class_regions(digits, seven, [7, 1])",
    "region": "cs.roi(cs.gradcam(digits, seven))",
    "strategies": "cs.metrics.spray(cs.gradcam(shapes, scenes.inputs(shapes)))",
    "explanations": "cs.explain_dataset(shapes, (scenes.inputs(shapes), scenes.labels), thumbnail=32, progress=False)",
    "strategy_audit": "cs.audit(shapes, scenes.inputs(shapes), labels=scenes.labels.tolist(), progress=False)",
}

# kind -> what has to land before it is displayable (remove a kind once its snippet gives that kind)
PENDING: dict[str, str] = {
}

KINDS = [*SNIPPETS, *(kind for kind in render.kinds() if kind not in SNIPPETS)]
# suffix -> what the file starts with
MAGIC = {".png": b"\x89PNG\r\n\x1a\n", ".jpg": b"\xff\xd8\xff", ".pdf": b"%PDF-", ".svg": b"<?xml", ".html": b"<!doctype html>"}


def run_snippet(code: str, namespace: dict[str, Any]) -> Any:
    """Run ``code`` in ``namespace``; the value of its last line (an expression), as a notebook cell gives."""
    tree = ast.parse(code)
    last = tree.body.pop()
    assert isinstance(last, ast.Expr), f"the last line of {code!r} is not an expression"
    exec(compile(tree, "<snippet>", "exec"), namespace)
    return eval(compile(ast.Expression(last.value), "<snippet>", "eval"), namespace)


@cache
def _namespace() -> dict[str, Any]:
    namespace: dict[str, Any] = {}
    exec(SETUP, namespace)
    return namespace


@cache
def _built(kind: str) -> tuple[Any, str | None, BaseException | None]:
    """(the object, None, None), or (None, what is wrong, the exception if one was raised)."""
    code = SNIPPETS[kind]
    try:
        obj = run_snippet(code, _namespace())
    except Exception as error:
        return None, f"`{code}` raised {type(error).__name__}: {error}", error
    found = getattr(obj, "kind", None)
    if found != kind:
        return None, f"`{code}` gives a {type(obj).__name__} of kind {found!r}", None
    if kind not in render.kinds():
        return None, "render has no drawer for it", None
    return obj, None, None


def build(kind: str) -> Any:
    """The object of ``kind`` its snippet makes. A pending kind that is not displayable yet xfails saying why;
    any other kind fails (with the tool's own traceback when it raised)."""
    if kind not in SNIPPETS:
        pytest.fail(f"render draws kind {kind!r} but tests/test_display.py has no snippet that makes one")
    obj, problem, error = _built(kind)
    if problem is None:
        return obj
    if kind in PENDING:
        pytest.xfail(f"kind {kind!r} is not displayable yet ({PENDING[kind]}): {problem}")
    if error is not None:
        raise error
    pytest.fail(f"kind {kind!r}: {problem}")


def displayable_kinds() -> list[str]:
    """The kinds whose snippet makes a displayable object now."""
    return [kind for kind in SNIPPETS if _built(kind)[1] is None]


def check_png(data: bytes) -> Image.Image:
    assert data.startswith(MAGIC[".png"]), data[:16]
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == "PNG" and image.width > 8 and image.height > 8, (image.format, image.size)
    return image


# -- the table of kinds ------------------------------------------------------------------------------------
def test_every_kind_render_knows_has_a_snippet() -> None:
    missing = [kind for kind in render.kinds() if kind not in SNIPPETS]
    assert not missing, f"render draws {missing} but SNIPPETS in tests/test_display.py has no snippet making one"


def test_pending_kinds_are_still_pending() -> None:
    landed = [kind for kind in PENDING if _built(kind)[1] is None]
    assert not landed, f"{landed} are displayable now: take them off PENDING in tests/test_display.py"


def test_explanations_are_never_pending() -> None:
    """map and pixels were kinds before the conversion began: they cannot hide behind PENDING."""
    assert not {"map", "pixels"} & set(PENDING)
    assert {"map", "pixels"} <= set(displayable_kinds())


# -- per kind ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_saves_in_every_format(kind: str, tmp_path: Path) -> None:
    obj = build(kind)
    for suffix, magic in MAGIC.items():
        path = obj.save(tmp_path / "out" / f"{kind}{suffix}")
        data = path.read_bytes()
        assert data.startswith(magic), f"{kind}{suffix} starts with {data[:16]!r}"
        if suffix == ".png":
            check_png(data)
        elif suffix == ".jpg":
            image = Image.open(path)
            image.load()
            assert image.format == "JPEG" and image.mode == "RGB"
            assert image.size == Image.open(tmp_path / "out" / f"{kind}.png").size  # the same picture
        elif suffix == ".pdf":
            assert data.rstrip().endswith(b"%%EOF")
        elif suffix == ".svg":
            assert b"<svg" in data and data.rstrip().endswith(b"</svg>")
        else:
            page = data.decode("utf-8")
            assert page.rstrip().endswith("</html>") and ("<img src=\"data:image/" in page or "<table" in page)


@pytest.mark.parametrize("kind", KINDS)
def test_figure_picture_and_words(kind: str) -> None:
    from matplotlib.figure import Figure

    obj = build(kind)
    assert isinstance(render.figure(obj), Figure)
    array = render.picture(obj)
    assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3 and min(array.shape[:2]) > 8
    assert array.std() > 0, "a blank picture"
    words = render.caption(obj)
    assert isinstance(words, str) and "\n" not in words
    assert render.text(obj).strip()


@pytest.mark.parametrize("kind", KINDS)
def test_notebook_display(kind: str) -> None:
    """What IPython asks for: a PNG (a table has none: it is text) and the bundle render gives a notebook (the
    kind's HTML when it has its own, else the PNG, drawn once); the HTML fragment reports use."""
    obj = build(kind)
    found = render.dispatch.drawer_for(obj)
    png = obj._repr_png_()
    if found.textual:
        assert png is None
    else:
        check_png(png)
    fragment = obj.to_html()
    assert isinstance(fragment, str) and fragment.strip() and "<html" not in fragment
    if found.textual:
        assert "<table" in fragment
    elif found.html is None:  # the picture inline, with its caption
        assert fragment.startswith("<figure") and "data:image/png;base64," in fragment
    bundle = render.mimebundle(obj)
    assert list(bundle) == (["text/html"] if found.html else ["image/png"])
    if "image/png" in bundle:
        check_png(bundle["image/png"])
    # what IPython puts in the notebook, whichever of the display methods the object has
    from IPython.core.formatters import DisplayFormatter

    data, _ = DisplayFormatter().format(obj)
    assert set(bundle) <= set(data)
    if found.textual:
        assert data["text/plain"] == render.text(obj)  # the table's text, not a quoted, escaped str


# -- show() from a plain script ------------------------------------------------------------------------------
# The objects travel pickled (made once, here); one that cannot be pickled is made in the script from its snippet.
SHOW_SCRIPT = """\
import os
import pickle
import sys

snippets = {snippets!r}
namespace = None
for kind in sys.argv[1:]:
    for stream in (sys.stdout, sys.stderr):
        print("=== " + kind, file=stream, flush=True)
    if os.path.exists(kind + ".pickle"):
        with open(kind + ".pickle", "rb") as file:
            shown = pickle.load(file)
    else:
        if namespace is None:
            namespace = {{}}
            exec({setup!r}, namespace)
        shown = eval(snippets[kind], namespace)
    shown.show()
"""


def _sections(output: str) -> dict[str, str]:
    """The script's output after each ``=== kind`` line, by kind."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in output.splitlines():
        if line.startswith("=== "):
            current = sections.setdefault(line[4:], [])
        else:
            current.append(line)
    return {kind: "\n".join(lines) for kind, lines in sections.items()}


@pytest.fixture(scope="module")
def shown(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, str]]:
    """Each displayable kind's ``show()`` in one plain script (no display, MPLBACKEND=Agg): kind -> (stdout,
    stderr) of that call."""
    folder = tmp_path_factory.mktemp("show")
    kinds = displayable_kinds()
    for kind in kinds:
        try:
            data = pickle.dumps(_built(kind)[0])
        except Exception:  # made in the script instead
            continue
        (folder / f"{kind}.pickle").write_bytes(data)
    script = folder / "show.py"
    script.write_text(SHOW_SCRIPT.format(setup=SETUP, snippets=SNIPPETS))
    env = {key: value for key, value in os.environ.items() if key not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(MPLBACKEND="Agg", TMPDIR=str(folder))
    run = subprocess.run([sys.executable, str(script), *kinds], capture_output=True, text=True, env=env, timeout=600, cwd=folder)
    assert run.returncode == 0, run.stderr[-3000:]
    out, err = _sections(run.stdout), _sections(run.stderr)
    return {kind: (out.get(kind, ""), err.get(kind, "")) for kind in out}


@pytest.mark.parametrize("kind", KINDS)
def test_show_from_a_plain_script_without_a_display(kind: str, shown: dict[str, tuple[str, str]]) -> None:
    obj = build(kind)
    out, err = shown[kind]
    if render.dispatch.drawer_for(obj).textual:  # a table is printed, as print() would
        assert out.strip() == render.text(obj).strip() and "convscope:" not in err
        return
    lines = [line for line in err.splitlines() if line.startswith("convscope:")]
    assert len(lines) == 1 and "the picture is in " in lines[0], err
    path = Path(lines[0].split("the picture is in ", 1)[1].strip())
    assert path.is_file() and path.suffix == ".png"
    check_png(path.read_bytes())
    assert not out.strip()
