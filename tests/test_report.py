"""The HTML report (the main job): one self-contained file, its sections from the registry.

Most tests register a throwaway tool (one function and its ``@register`` line, unregistered in a
``finally``) and find its section with no other edit; they run on a tiny model and only the sections they
name, so they take milliseconds. One test makes the whole quick report on EfficientNet-Lite0.
"""

from __future__ import annotations

import base64
import contextlib
import io
import re
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import Field

import convscope as cs
from conftest import digit_folder
from convscope.cli import main
from convscope.engine import Cost
from convscope.errors import ConvscopeError
from convscope.progress import Cancelled, tracker
from convscope.registry import ReportSpec, register, unregister
from convscope.result import Table

Steps = Annotated[int, Field(ge=1, le=1000)]  # module level: the registry reads string annotations from here


def _tiny() -> cs.Model:
    """A one-conv classifier on 32 × 32 pictures: the model card and throwaway tools in milliseconds."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(4, 3))
    return cs.Model(net, input_size=(32, 32), labels=["ant", "bee", "cow"], name="tiny")


def _table(text: str) -> Table:
    return Table(text, columns=("what",), rows=((text,),), title="throwaway")


def _inline_images(html: str) -> list[np.ndarray]:
    blobs = re.findall(r'src="data:image/(?:png|jpeg);base64,([^"]+)"', html)
    return [np.asarray(Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")) for b in blobs]


def _section(html: str, section_id: str) -> str:
    """The ``<section>`` with this id, or the one that holds it (a variant listed in a group of variants that
    draw the same map)."""
    found = re.search(rf'<section id="{re.escape(section_id)}".*?</section>', html, re.S)
    if found:
        return found.group(0)
    where = html.find(f' id="{section_id}"')
    assert where >= 0, f"no section {section_id!r}"
    start = html.rindex("<section ", 0, where)
    return html[start:html.index("</section>", where) + len("</section>")]


def _text(html: str) -> str:
    """The page without its inline pictures: what a reader reads."""
    return re.sub(r'data:image/[a-z]+;base64,[^"]+', "", html)


def _toc(html: str) -> str:
    return html[html.index('<nav class="toc"'):html.index("</nav>")]


def test_a_registered_tool_gets_its_section_with_no_other_edit(tmp_path: Path) -> None:
    @register("throwaway_count", family="features", takes="images", returns="table", paper="Nobody 2026, A Throwaway Tool",
              report=ReportSpec(title="Pictures counted", note="How many pictures the report explains."))
    def throwaway_count(model: Any, x: torch.Tensor, *, scale: Annotated[int, Field(ge=1, le=10)] = 1) -> Table:
        """Count the pictures."""
        return _table(f"{len(x) * scale} pictures")

    try:
        html = cs.report(_tiny(), ["cat", "coffee"], tmp_path, sections=["throwaway_count"]).read_text()
    finally:
        unregister("throwaway_count")
    section = _section(html, "throwaway_count")
    assert "<h3>Pictures counted</h3>" in section and "How many pictures the report explains." in section
    assert "<cite>Nobody 2026, A Throwaway Tool</cite>" in section and re.search(r"\d+ ms", section)  # the paper, the time
    assert "<td>2 pictures</td>" in section  # its result drawn by render (a table)
    assert 'href="#throwaway_count">Pictures counted</a>' in _toc(html)
    assert html.index('id="part-model"') < html.index('id="part-features"') < html.index('id="throwaway_count"')


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """`convscope report --quick` on the defaults (EfficientNet-Lite0, the cat), made once: (folder, what it printed)."""
    out = tmp_path_factory.mktemp("quick") / "rep"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["report", "--quick", "--out", str(out)]) == 0
    return out, printed.getvalue()


def test_main_job_report_is_one_self_contained_file_with_every_tool(quick_report: tuple[Path, str]) -> None:
    """`convscope report` on the defaults (--quick settings to keep the suite fast): one file that fetches
    nothing, its contents, the model card, then a section for every registered tool with a report spec
    (dataset tools need --folder), none failing."""
    folder, printed = quick_report
    assert "index.html" in printed
    files = list(folder.iterdir())
    assert [f.name for f in files] == ["index.html"]
    html = files[0].read_text()
    # nothing fetched when opened: every picture inline, links only within the page, no scripts, styles inline
    assert all(src.startswith("data:image/") for src in re.findall(r'src="([^"]*)"', html))
    assert all(href.startswith("#") for href in re.findall(r'href="([^"]*)"', html))
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    # the contents link every part and every section, each id once
    ids = re.findall(r'<(?:section|h2)[^>]* id="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    toc = _toc(html)
    assert all(f'href="#{i}"' in toc for i in ids)
    shown = [t for t in cs.registry.tools() if t.report is not None and t.takes != "dataset"]
    assert {t.family for t in shown} >= {"attribution"}
    failed = {t.name: re.findall(r'<p class="skipped">(.*?)</p>', _section(html, t.name)) for t in shown}
    assert not {name: why for name, why in failed.items() if why}  # every section made, none skipped
    assert "efficientnet_lite0" in html and re.search(r"(tabby|tiger cat|Egyptian cat)", html)


def test_report_has_the_model_card_and_the_methods_asked_for(tmp_path: Path) -> None:
    html = cs.report(cs.load_model("efficientnet_lite0"), ["cat", "coffee"], tmp_path, methods=["gradcam", "saliency"],
                     sections=["attribution"], quick=True).read_text()
    card = _section(html, "model-card")  # the model card and the two inputs as the model sees them
    assert "4,652,008" in card and "_swish@1" in card and [p.shape for p in _inline_images(card)] == [(224, 224, 3)] * 2
    attribution = html[html.index('id="part-attribution"'):]
    assert re.findall(r'<section id="([^"]+)"', attribution) == ["saliency", "gradcam"]  # those two, in registry order
    for method in ("saliency", "gradcam"):
        assert _inline_images(_section(html, method))
    assert "tiger cat" in _section(html, "saliency")


def test_report_says_when_a_tool_does_not_apply(tmp_path: Path) -> None:
    """A head that is not GAP -> linear: the cam section says why in one line, the rest of the report is made."""
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 30 * 30, 3))
    model = cs.Model(net, input_size=(32, 32), labels=["a", "b", "c"], name="tiny")

    @register("throwaway_widgets", family="trust", takes="model", returns="table", paper="-")
    def throwaway_widgets(model: Any) -> Table:
        """Needs widgets."""
        raise ConvscopeError("this model has no <widgets>; use a widget model")

    try:
        html = cs.report(model, ["coffee"], tmp_path, methods=["cam", "gradcam"],
                         sections=["attribution", "throwaway_widgets"]).read_text()
    finally:
        unregister("throwaway_widgets")
    cam = _section(html, "cam")
    assert "not applicable to this model" in cam and "use gradcam" in cam and not _inline_images(cam)
    assert _inline_images(_section(html, "gradcam"))
    widgets = _section(html, "throwaway_widgets")
    assert "not applicable to this model: this model has no &lt;widgets&gt;; use a widget model" in widgets  # escaped
    assert 'class="off">throwaway_widgets</a>' in _toc(html)


def test_report_says_what_a_tool_over_the_cost_limit_would_cost(tmp_path: Path) -> None:
    ran = []

    @register("throwaway_costly", family="features", takes="model", returns="table", paper="-",
              cost=lambda context: Cost(3e9, detail="a billion of everything"))
    def throwaway_costly(model: Any) -> Table:
        """Costs too much."""
        ran.append(True)
        return _table("done")

    def needy(model: Any, *, count: Steps = 1) -> Table:
        """Its spec gives an option out of its range."""
        ran.append(True)
        return _table("done")

    with pytest.raises(cs.OptionError, match="count"):  # a spec's fixed options are checked when it is registered
        register("throwaway_needy", family="features", takes="model", returns="table", paper="-",
                 report=ReportSpec(options={"count": 5000}))(needy)
    # options made from the model are checked when the report runs them
    register("throwaway_needy", family="features", takes="model", returns="table", paper="-",
             report=ReportSpec(options=lambda model: {"count": 5000}))(needy)

    try:
        html = cs.report(_tiny(), ["cat"], tmp_path, sections=["throwaway_costly", "throwaway_needy"]).read_text()
    finally:
        unregister("throwaway_costly")
        unregister("throwaway_needy")
    section = _section(html, "throwaway_costly")
    assert not ran and "not run: throwaway_costly would take about 3,000,000,000 forward passes" in section
    assert "a billion of everything" in section
    assert re.search(r"not run with the report&#39;s options: .*count", _section(html, "throwaway_needy"))


def test_each_tool_gets_what_it_takes(tmp_path: Path) -> None:
    """images -> the preprocessed batch; image -> the first picture; model -> the model (and with a target, the
    first picture's class); models -> [the model] and the named pictures; dataset -> the folder."""
    model, got = _tiny(), {}

    @register("throwaway_images", family="trust", takes="images", returns="table", paper="-")
    def throwaway_images(model: Any, x: torch.Tensor) -> Table:
        """Batch."""
        got["images"] = (model, x)
        return _table("images")

    @register("throwaway_image", family="workflow", takes="image", returns="table", paper="-")
    def throwaway_image(model: Any, image: Any) -> Table:
        """One picture."""
        got["image"] = image
        return _table("image")

    @register("throwaway_model", family="features", takes="model", returns="table", paper="-")
    def throwaway_model(model: Any, *, target: Any = None) -> Table:
        """Model only."""
        got["model"] = (model, target)
        return _table("model")

    @register("throwaway_models", family="workflow", takes="models", returns="table", paper="-")
    def throwaway_models(models: Any, images: Any) -> Table:
        """Several models."""
        got["models"] = (models, images)
        return _table("models")

    names = ["throwaway_images", "throwaway_image", "throwaway_model", "throwaway_models"]
    try:
        html = cs.report(model, ["cat", "coffee"], tmp_path, sections=names).read_text()
    finally:
        for name in names:
            unregister(name)
    x = model.preprocess([cs.sample_image("cat"), cs.sample_image("coffee")])
    assert got["images"][0] is model and torch.equal(got["images"][1], x)
    assert isinstance(got["image"], Image.Image) and got["image"].size == cs.sample_image("cat").size
    assert got["model"] == (model, int(model.forward(x[:1]).argmax()))
    assert got["models"][0] == [model] and list(got["models"][1]) == ["cat", "coffee"]
    for name in names:
        assert "<td>" + name.removeprefix("throwaway_") + "</td>" in _section(html, name)
    order = [html.index(f'id="{n}"') for n in ("throwaway_models", "throwaway_images", "throwaway_model")]
    assert order == sorted(order)  # parts in reading order: workflow, trust, features


def test_dataset_tools_are_left_out_without_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    got = []

    @register("throwaway_dataset", family="embedding", takes="dataset", returns="table", paper="-")
    def throwaway_dataset(model: Any, dataset: Any) -> Table:
        """A dataset."""
        got.append(dataset)
        return _table("dataset")

    folder = digit_folder(tmp_path / "digits", 6)
    model = cs.load_model("digits_cnn")
    dataset_tools = [t.name for t in cs.registry.tools() if t.takes == "dataset" and t.report is not None]
    picture = str(next(folder.rglob("*.png")))
    try:
        without = cs.report(model, [picture], tmp_path / "a", sections=["throwaway_dataset"], progress=False).read_text()
        assert capsys.readouterr() == ("", "")  # nothing printed
        with_folder = cs.report(model, [picture], tmp_path / "b", sections=dataset_tools, folder=folder, progress=False).read_text()
    finally:
        unregister("throwaway_dataset")
    assert 'id="throwaway_dataset"' not in without and 'id="part-embedding"' not in without and got == [folder]
    assert "<td>dataset</td>" in _section(with_folder, "throwaway_dataset")
    for name in dataset_tools:  # every registered dataset tool (the dataset in feature space) gets its section
        _section(with_folder, name)


def test_quick_uses_each_tools_quick_options(tmp_path: Path) -> None:
    """quick=True: the spec's quick options on top of its options; without them the tool's own quick options."""
    seen: dict[str, dict[str, Any]] = {}

    @register("throwaway_own_quick", family="features", takes="model", returns="table", paper="-", quick={"steps": 3},
              report=ReportSpec(options={"size": 7}))
    def throwaway_own_quick(model: Any, *, steps: Steps = 100, size: int = 1) -> Table:
        """Steps."""
        seen["own"] = {"steps": steps, "size": size}
        return _table(f"{steps} steps")

    @register("throwaway_spec_quick", family="features", takes="model", returns="table", paper="-", quick={"steps": 3},
              report=ReportSpec(options=lambda model: {"size": model.input_size[0]}, quick={"steps": 5}))
    def throwaway_spec_quick(model: Any, *, steps: Steps = 100, size: int = 1) -> Table:
        """Steps."""
        seen["spec"] = {"steps": steps, "size": size}
        return _table(f"{steps} steps")

    names = ["throwaway_own_quick", "throwaway_spec_quick"]
    try:
        slow = cs.report(_tiny(), ["cat"], tmp_path / "slow", sections=names).read_text()
        assert seen == {"own": {"steps": 100, "size": 7}, "spec": {"steps": 100, "size": 32}}
        quick = cs.report(_tiny(), ["cat"], tmp_path / "quick", sections=names, quick=True).read_text()
        assert seen == {"own": {"steps": 3, "size": 7}, "spec": {"steps": 5, "size": 32}}
    finally:
        for name in names:
            unregister(name)
    assert "<code>size=7</code>" in _section(slow, "throwaway_own_quick")  # the options it ran with are shown
    assert "<code>steps=3</code>" in _section(quick, "throwaway_own_quick") and "quick settings" in quick


def test_quick_report_runs_attribution_methods_with_their_quick_options(tmp_path: Path) -> None:
    occlusion = cs.registry.get("occlusion")
    assert occlusion.quick
    html = cs.report(_tiny(), ["cat"], tmp_path, methods=["occlusion"], sections=["attribution"], quick=True).read_text()
    section = _section(html, "occlusion")
    for name, value in occlusion.quick.items():
        assert f"<code>{name}={value!r}</code>" in section


def test_tools_running_several_methods_run_the_reports_methods(tmp_path: Path) -> None:
    """A tool with a ``methods`` option (the spec's list, else its default) runs those of the report's methods."""
    seen = {}

    @register("throwaway_ranking", family="trust", takes="images", returns="table", paper="-",
              report=ReportSpec(options={"methods": ["gradcam", "saliency", "occlusion"],
                                         "options": {"occlusion": {"window": 0.5}}}))
    def throwaway_ranking(model: Any, x: torch.Tensor, *, methods: tuple[str, ...] = ("gradcam",),
                          options: dict[str, dict[str, Any]] | None = None) -> Table:
        """Ranks methods."""
        seen["ranking"] = (list(methods), options)
        return _table(",".join(methods))

    @register("throwaway_grid", family="workflow", takes="models", returns="table", paper="-")
    def throwaway_grid(models: Any, images: Any, methods: tuple[str, ...] = ("gradcam", "saliency")) -> Table:
        """Compares methods."""
        seen["grid"] = list(methods)
        return _table(",".join(methods))

    names = ["throwaway_ranking", "throwaway_grid"]
    try:
        cs.report(_tiny(), ["cat"], tmp_path / "a", methods=["saliency", "occlusion"], sections=names)
        assert seen == {"ranking": (["saliency", "occlusion"], {"occlusion": {"window": 0.5}}), "grid": ["saliency"]}
        cs.report(_tiny(), ["cat"], tmp_path / "b", methods=["cam"], sections=names)  # none of them: all they list
        assert seen == {"ranking": (["gradcam", "saliency", "occlusion"], {"occlusion": {"window": 0.5}}),
                        "grid": ["gradcam", "saliency"]}
        cs.report(_tiny(), ["cat"], tmp_path / "c", sections=names)
        assert seen["ranking"][0] == ["gradcam", "saliency", "occlusion"] and seen["grid"] == ["gradcam", "saliency"]
    finally:
        for name in names:
            unregister(name)


def test_tools_without_a_report_spec_are_left_out(tmp_path: Path) -> None:
    @register("throwaway_hidden", family="features", takes="model", returns="table", paper="-", report=None)
    def throwaway_hidden(model: Any) -> Table:
        """Hidden."""
        return _table("hidden")

    @register("throwaway_shown", family="features", takes="model", returns="table", paper="-")
    def throwaway_shown(model: Any) -> Table:
        """Shown."""
        return _table("shown")

    try:
        with pytest.raises(ConvscopeError, match="no section 'throwaway_hidden'"):
            cs.report(_tiny(), ["cat"], tmp_path, sections=["throwaway_hidden"])
        html = cs.report(_tiny(), ["cat"], tmp_path, sections=["throwaway_shown"]).read_text()
    finally:
        unregister("throwaway_hidden")
        unregister("throwaway_shown")
    assert "throwaway_hidden" not in html and "<td>shown</td>" in _section(html, "throwaway_shown")


def test_bad_names_fail_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConvscopeError, match="did you mean 'gradcam'"):
        cs.report(_tiny(), ["cat"], tmp_path, methods=["gradcma"])
    with pytest.raises(ConvscopeError, match="no section 'atribution'; did you mean 'attribution'"):
        cs.report(_tiny(), ["cat"], tmp_path, sections=["atribution"])
    assert not (tmp_path / "index.html").exists()


def test_progress_has_a_stage_per_section_and_a_cancel_stops_the_report(tmp_path: Path) -> None:
    steps: list[int] = []

    @register("throwaway_loop", family="features", takes="model", returns="table", paper="-")
    def throwaway_loop(model: Any, *, progress: Any = None) -> Table:
        """Loops."""
        with tracker(progress, 3, "looping") as bar:
            for step in range(3):
                steps.append(step)
                bar.advance()
        return _table("looped")

    calls: list[tuple[int, int, str]] = []

    def cancel_in_the_tool(done: int, total: int, what: str) -> None:
        calls.append((done, total, what))
        if len(calls) == 2:  # the tool's first progress report
            raise Cancelled("stopped by the user")

    try:
        cs.report(_tiny(), ["cat"], tmp_path / "a", sections=["throwaway_loop"], progress=lambda *call: calls.append(call))
        # two stages (the model card, the tool); the tool's own progress reaches the report's callback
        assert calls == [(1, 2, "report")] * 4 + [(2, 2, "report")] and steps == [0, 1, 2]
        calls.clear(), steps.clear()
        with pytest.raises(Cancelled):
            cs.report(_tiny(), ["cat"], tmp_path / "b", sections=["throwaway_loop"], progress=cancel_in_the_tool)
    finally:
        unregister("throwaway_loop")
    assert steps == [0] and not (tmp_path / "b" / "index.html").exists()


def test_report_escapes_what_it_did_not_draw(tmp_path: Path) -> None:
    model = _tiny()
    model.name = "<b>tiny</b>"

    @register("throwaway_note", family="features", takes="model", returns="table", paper="<i>paper</i>",
              report=ReportSpec(title="a <title>", note="x < y & z"))
    def throwaway_note(model: Any) -> Table:
        """Note."""
        return _table("<td>cell</td>")

    try:
        html = cs.report(model, ["cat"], tmp_path, sections=["throwaway_note"]).read_text()
    finally:
        unregister("throwaway_note")
    assert "<b>tiny</b>" not in html and "&lt;b&gt;tiny&lt;/b&gt;" in html
    section = _section(html, "throwaway_note")
    assert "a &lt;title&gt;" in section and "x &lt; y &amp; z" in section and "&lt;i&gt;paper&lt;/i&gt;" in section
    assert "&lt;td&gt;cell&lt;/td&gt;" in section  # render escapes the table's cells


# -- a report a person reads top to bottom (the quick report on Lite0 and the cat, made once) ----------------------
def _html(quick_report: tuple[Path, str]) -> str:
    return (quick_report[0] / "index.html").read_text()


def test_contents_links_resolve_and_list_every_part_and_section(quick_report: tuple[Path, str]) -> None:
    html = _html(quick_report)
    ids = re.findall(r' id="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    links = re.findall(r'href="#([^"]+)"', html)
    assert links and set(links) <= set(ids)  # every link lands somewhere
    toc = _toc(html)
    parts = re.findall(r'<h2 class="part" id="([^"]+)"', html)
    sections = re.findall(r'<section id="([^"]+)"', html)
    assert parts and sections and all(f'href="#{i}"' in toc for i in [*parts, *sections])
    # every part says what it is for, every section how to read it
    assert html.count('<p class="intro">') == len(parts)
    for section in sections:
        assert '<p class="note">' in _section(html, section), section


def test_no_picture_is_wider_than_the_page(quick_report: tuple[Path, str]) -> None:
    """A 1280-px window holds every figure: each <img> says its size, at most the content width, and no inline
    picture has more pixels across than that."""
    from convscope.render.encode import CONTENT_WIDTH

    html = _html(quick_report)
    tags = re.findall(r"<img [^>]*>", html)
    assert len(tags) > 30
    widths = [int(w) for tag in tags for w in re.findall(r' width="(\d+)"', tag)]
    assert len(widths) >= len(tags) - 2 and max(widths) <= CONTENT_WIDTH  # (the region crops say no size: 224 px)
    assert all(picture.shape[1] <= CONTENT_WIDTH for picture in _inline_images(html))
    assert "max-width:1200px" in html and "img{max-width:100%" in html  # and the page scales what it holds


def test_the_quick_report_is_small(quick_report: tuple[Path, str]) -> None:
    """Photos and overlays as JPEG, charts as PNG: the quick report is 1.7 MB (5.7 MB before; the full report
    2.3 MB — 2,311,981 bytes measured at a5fa00a — 11.8 MB before; too slow to make here)."""
    html = _html(quick_report)
    assert len(html.encode()) < 2_500_000
    kinds = re.findall(r"data:image/([a-z]+);", html)
    assert kinds.count("jpeg") > kinds.count("png") > 0
    assert 'data:image/png' in _section(html, "rank") and 'data:image/jpeg' in _section(html, "dream")


def test_notes_are_written_for_a_person(quick_report: tuple[Path, str]) -> None:
    text = _text(_html(quick_report))
    for internal in ("seed 0", "(B,", "(N,", "meta[", "meta&#34;", "``", "ReLU&#39;d"):
        assert internal not in text, internal
    assert "<h3>saliency</h3>" not in text and "<h3>Saliency (the gradient)</h3>" in text


def test_the_trust_ranking_has_a_verdict(quick_report: tuple[Path, str]) -> None:
    section = _section(_html(quick_report), "rank")
    verdict = re.search(r'<p class="verdict">(.*?)</p>', section)
    assert verdict and re.match(r"(Believe \w+ here|No method beats a random map)", verdict.group(1))
    assert "against random" in section  # each method's standing in the table


def test_a_near_tie_is_said_in_the_robustness_section(quick_report: tuple[Path, str]) -> None:
    section = _section(_html(quick_report), "robustness")  # the cat: tiger cat 38% vs Egyptian cat 37%
    assert "near-tie" in section and "swapped between the two tied classes" in section and 'class="verdict"' in section


def test_cam_variants_that_agree_are_shown_once_with_their_agreement(quick_report: tuple[Path, str]) -> None:
    html = _html(quick_report)
    group = _section(html, "gradcam")
    assert "draw the same map" in group and '<table class="agreement">' in group
    members = re.findall(r'<li id="([^"]+)"', group)
    assert {"gradcam_pp", "xgradcam", "layercam", "hirescam"} <= set(members)
    assert len(re.findall(r"<img ", group)) == 2  # one overlay and its map, for all of them
    values = [float(v) for v in re.findall(r"<td>(-?\d\.\d\d)</td>", group)]
    assert values and min(values) >= 0.9
    for member in members:  # each variant still says what it is, and the contents reach it through its group
        assert f'id="{member}"' in group and _section(html, member) == group
    assert 'href="#gradcam">Grad-CAM and' in _toc(html)


def test_feature_maps_are_legible_and_filters_read_for_their_size(quick_report: tuple[Path, str]) -> None:
    html = _html(quick_report)
    said = re.search(r"<figcaption>[^<]*map sizes: ([^<]*)</figcaption>", _section(html, "feature_maps"))
    sizes = [int(h) for h in re.findall(r" (\d+)×\d+", said.group(1))] if said else []
    assert len(sizes) == 4 and min(sizes) >= 10  # no 7×7 mosaics
    filters = _section(html, "filters")  # Lite0's stem is 3×3: said so, not AlexNet's 11×11 story
    assert "3×3 kernels" in filters and "too small for the oriented edges" in filters


def test_groups_form_only_where_maps_agree(tmp_path: Path) -> None:
    """Two variants of one family that draw the same map (up to scale) are one section; one that disagrees keeps its own."""
    def ramp(x: torch.Tensor, rising: bool, scale: float = 1.0) -> torch.Tensor:
        line = torch.linspace(0, 1, x.shape[-1]) if rising else torch.linspace(1, 0, x.shape[-1])
        return scale * line.expand(x.shape[0], 1, x.shape[-2], -1).clone()

    @register("throwaway_left", family="attribution", group="perturbation", takes="images", returns="map", paper="-",
              report=ReportSpec(title="Left", note="The left half."))
    def throwaway_left(model: Any, x: torch.Tensor) -> cs.Result:
        """Left."""
        return cs.Result(data=ramp(x, False), method="throwaway_left", kind="map", inputs=x)

    @register("throwaway_twin", family="attribution", group="perturbation", takes="images", returns="map", paper="-",
              report=ReportSpec(title="Twin", note="The same left half, twice as strong."))
    def throwaway_twin(model: Any, x: torch.Tensor) -> cs.Result:
        """Twin."""
        return cs.Result(data=ramp(x, False, 2.0), method="throwaway_twin", kind="map", inputs=x)

    @register("throwaway_right", family="attribution", group="perturbation", takes="images", returns="map", paper="-",
              report=ReportSpec(title="Right", note="The right half."))
    def throwaway_right(model: Any, x: torch.Tensor) -> cs.Result:
        """Right."""
        return cs.Result(data=ramp(x, True), method="throwaway_right", kind="map", inputs=x)

    names = ["throwaway_left", "throwaway_twin", "throwaway_right"]
    try:
        html = cs.report(_tiny(), ["cat"], tmp_path, sections=names, methods=names).read_text()
    finally:
        for name in names:
            unregister(name)
    group = _section(html, "throwaway_left")
    assert "<h3>Left and Twin draw the same map</h3>" in group and '<li id="throwaway_twin">' in group
    assert "<td>1.00</td>" in group and "The same left half, twice as strong." in group
    assert '<section id="throwaway_right"' in html and "throwaway_right" not in group  # it disagrees: its own section


def test_a_tool_without_a_note_gets_its_summary_in_plain_words(tmp_path: Path) -> None:
    @register("throwaway_shapes", family="features", takes="model", returns="table", paper="-")
    def throwaway_shapes(model: Any) -> Table:
        """Shapes: one value per pixel, (B, 1, H, W). ``meta["count"]`` says how many."""
        return _table("shapes")

    try:
        html = cs.report(_tiny(), ["cat"], tmp_path, sections=["throwaway_shapes"]).read_text()
    finally:
        unregister("throwaway_shapes")
    assert '<p class="note">Shapes: one value per pixel.</p>' in _section(html, "throwaway_shapes")


def test_an_explain_dataset_folder_gives_the_audit_section_and_only_it(tmp_path: Path) -> None:
    """``--folder`` a folder written by explain_dataset: the tools that read explanations (the audit: SpRAy from the
    maps there) get it; the dataset tools that need pictures (the embedding map) are left out, not failed."""
    from convscope.zoo.shapes import shapes_dataset

    model = cs.load_model("shapes_biased")
    data = shapes_dataset(40, split="test")
    cs.explain_dataset(model, (data.inputs(model), data.labels), out=tmp_path / "maps", progress=False)
    dataset_tools = [t.name for t in cs.registry.tools() if t.takes == "dataset" and t.report is not None]
    html = cs.report(model, ["cat"], tmp_path / "report", sections=dataset_tools, folder=tmp_path / "maps",
                     progress=False).read_text()
    section = _section(html, "audit")
    assert "Shortcut audit of the dataset" in section and "verdict" in section and "<img" in section
    assert 'id="embed"' not in html
