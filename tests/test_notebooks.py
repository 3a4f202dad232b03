"""Execute every teaching notebook in notebooks/ top to bottom, offline, and check what it shows.

Each notebook runs in a fresh kernel started with *this* interpreter (a kernelspec written to a
temporary directory that JUPYTER_PATH points at, so no `ipykernel install` is needed and a
user-level "python3" kernelspec cannot shadow it), with its working directory in a temporary
directory so that nothing is written into the repository. A cell that raises fails the test.
Every notebook must display at least one audio player and one figure.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import nbclient  # the [dev] extra: nbmake brings nbclient and nbformat; ipykernel runs the kernel
import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
MARK = "__interpreter__"
CHECK = f"import json, sys; print({MARK!r} + json.dumps([sys.executable, sys.prefix]))"


def test_notebooks_exist():
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"


def test_notebooks_are_stored_without_outputs():
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
        assert not dirty, f"{path.name}: cells {dirty} have stored outputs; clear them before committing"


def _this_interpreter_kernel(root: Path) -> Path:
    """A kernelspec named python3 that runs sys.executable; returns the directory for JUPYTER_PATH."""
    spec = root / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": "Python 3 (test)", "language": "python"}))
    return root


def _outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("JUPYTER_PATH", str(_this_interpreter_kernel(tmp_path / "jupyter")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    repo_files = sorted(NOTEBOOK_DIR.iterdir())

    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))  # in memory only: which Python ran the kernel?
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(workdir)}})
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first failing cell
    print(f"{path.name}: executed in {time.perf_counter() - start:.1f} s")

    outputs = _outputs(nb)
    errors = [o for o in outputs if o.get("output_type") == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"

    printed = next(o["text"] for o in outputs if o.get("output_type") == "stream" and MARK in o.get("text", ""))
    executable, prefix = json.loads(printed.split(MARK, 1)[1])
    assert Path(prefix) == Path(sys.prefix), f"the kernel ran {executable} (prefix {prefix}), not this environment ({sys.prefix})"

    displays = [o["data"] for o in outputs if o.get("output_type") in ("display_data", "execute_result")]
    n_audio = sum("<audio" in d.get("text/html", "") for d in displays)
    n_figures = sum("image/png" in d for d in displays)
    assert n_audio >= 1, f"{path.name} shows no audio player (IPython.display.Audio)"
    assert n_figures >= 1, f"{path.name} shows no figure"
    assert sorted(NOTEBOOK_DIR.iterdir()) == repo_files, f"{path.name} wrote files into {NOTEBOOK_DIR}"
