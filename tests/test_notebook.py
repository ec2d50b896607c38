"""A notebook shows every kind inline: one cell per kind (the snippets of ``test_display.py``) whose value is
the object, ``cs.summary`` as a table, and ``show()`` drawing inline; executed by nbclient.

The kernel is this Python (a kernel spec written to a temporary JUPYTER_PATH that runs ``sys.executable``),
with IPython's and Jupyter's folders in a temporary directory too: nothing is read from or written to the
home folder and nothing is downloaded, so it runs the same offline and in a clean CI job.
"""

from __future__ import annotations

import base64
import io
import json
import re
import sys
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell, new_notebook
from test_display import KINDS, PENDING, SETUP, SNIPPETS, check_png

from convscope import render

KERNEL = "convscope-tests"
SUMMARY = "cs.summary(lite0)"
SHOW = "cs.gradcam(lite0, cat).show()"
# the last cell: what each cell's value was (execution count -> [type, kind]), from IPython's Out
VALUES = "import json\nprint(json.dumps({n: [type(v).__name__, str(getattr(v, 'kind', None))] for n, v in Out.items()}))"


class Executed:
    """The executed notebook, its cells found by name."""

    def __init__(self, notebook: nbformat.NotebookNode) -> None:
        self.cells = {cell.metadata["convscope"]: cell for cell in notebook.cells}
        printed = "".join(o.get("text", "") for o in self.cells["values"].outputs if o.output_type == "stream")
        self.values = {int(n): tuple(value) for n, value in json.loads(printed).items()}

    def problem(self, name: str, kind: str | None = None) -> str | None:
        """What is wrong with cell ``name`` (an error, or a value that is not of ``kind``), or None."""
        cell = self.cells[name]
        for output in cell.outputs:
            if output.output_type == "error":
                return f"`{cell.source}` raised {output.ename}: {output.evalue}"
        if kind is not None:
            found = self.values.get(cell.execution_count, ("no value", "None"))
            if found[1] != kind:
                return f"`{cell.source}` gives a {found[0]} of kind {found[1]}"
            if kind not in render.kinds():
                return "render has no drawer for it"
        return None

    def data(self, name: str, output_type: str = "execute_result") -> dict[str, Any]:
        """The mime bundle of cell ``name``'s output of ``output_type``."""
        found = [o for o in self.cells[name].outputs if o.output_type == output_type]
        assert len(found) == 1, f"{name}: {[o.output_type for o in self.cells[name].outputs]}"
        return found[0]["data"]


def _notebook() -> nbformat.NotebookNode:
    cells = [("setup", SETUP), *((kind, SNIPPETS[kind]) for kind in KINDS if kind in SNIPPETS),
             ("summary", SUMMARY), ("show", SHOW), ("values", VALUES)]
    notebook = new_notebook(cells=[new_code_cell(code, metadata={"convscope": name}) for name, code in cells])
    notebook.metadata["kernelspec"] = {"name": KERNEL, "display_name": "convscope tests", "language": "python"}
    return notebook


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> Executed:
    folder = tmp_path_factory.mktemp("notebook")
    spec = folder / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "convscope tests", "language": "python"}))
    with pytest.MonkeyPatch.context() as env:
        env.setenv("JUPYTER_PATH", str(folder / "jupyter"))
        env.setenv("JUPYTER_RUNTIME_DIR", str(folder / "runtime"))
        env.setenv("JUPYTER_CONFIG_DIR", str(folder / "config"))
        env.setenv("IPYTHONDIR", str(folder / "ipython"))
        notebook = _notebook()
        NotebookClient(notebook, kernel_name=KERNEL, timeout=300, allow_errors=True, startup_timeout=120,
                       resources={"metadata": {"path": str(folder)}}).execute()
    nbformat.validate(notebook)
    (folder / "kinds.ipynb").write_text(nbformat.writes(notebook))  # to look at when a test fails
    return Executed(notebook)


def test_the_setup_runs(executed: Executed) -> None:
    assert executed.problem("setup") is None, executed.problem("setup")
    assert executed.problem("values") is None, executed.problem("values")


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_displays_inline(kind: str, executed: Executed) -> None:
    if kind not in SNIPPETS:
        pytest.fail(f"render draws kind {kind!r} but tests/test_display.py has no snippet that makes one")
    problem = executed.problem(kind, kind)
    if problem is not None:
        if kind in PENDING:
            pytest.xfail(f"kind {kind!r} is not displayable yet ({PENDING[kind]}): {problem}")
        pytest.fail(f"kind {kind!r}: {problem}")
    data = executed.data(kind)
    found = render.dispatch.drawer_of(kind)
    if found.html is not None:  # kinds that are more than a picture: their HTML
        assert "<" in data["text/html"]
    else:
        check_png(base64.b64decode(data["image/png"]))
    if found.textual:
        assert "image/png" not in data and "<table" in data["text/html"]


def test_summary_is_a_table_not_an_escaped_string(executed: Executed) -> None:
    problem = executed.problem("summary", "table")
    if problem is not None and "table" in PENDING:
        pytest.xfail(f"cs.summary does not display as a table yet ({PENDING['table']}): {problem}")
    assert problem is None, problem
    data = executed.data("summary")
    assert "<table" in data["text/html"] and "&lt;" not in data["text/html"]
    assert data["text/plain"].startswith("Model:"), data["text/plain"][:80]  # the text itself, not its repr


def test_show_draws_inline(executed: Executed) -> None:
    assert executed.problem("show") is None, executed.problem("show")
    assert all(o.output_type != "execute_result" for o in executed.cells["show"].outputs)
    data = executed.data("show", "display_data")
    if "image/png" in data:
        check_png(base64.b64decode(data["image/png"]))
    else:  # a kind with its own HTML (an explanation: overlay and map per picture): its pictures inline
        found = re.findall(r'src="data:image/(png|jpeg);base64,([^"]+)"', data["text/html"])
        assert found, data["text/html"][:200]
        for fmt, encoded in found:
            if fmt == "png":
                check_png(base64.b64decode(encoded))
            else:  # photo-like panels (overlays) are JPEG
                from PIL import Image

                with Image.open(io.BytesIO(base64.b64decode(encoded))) as picture:
                    picture.load()
                    assert picture.format == "JPEG" and min(picture.size) >= 16

