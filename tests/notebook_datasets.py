"""Running a notebook on another dataset than emoji, as a lab on a GPU would: the parameters cell's DATASET line
changed, the dataset's files in their official formats (random pixels, a few hundred images) in the folder
MINIVAR_DATA names, smoke mode. Used by test_notebooks_cifar10.py and test_notebooks_imagenet64.py (two files, so
the two test workers share them)."""

import ast
import re
from pathlib import Path

import nbformat

from minivar.data import write_official_format

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
DATASET_LINE = re.compile(r'^DATASET = "emoji"', re.M)


def parameters_cell(nb):
    """The code cell that sets DATASET (the notebook's parameters)."""
    cells = [c for c in nb.cells if c.cell_type == "code" and DATASET_LINE.search(c.source)]
    if not cells:
        raise AssertionError("no code cell sets DATASET = \"emoji\"")
    return cells[0]


def offered(path: Path) -> list:
    """The datasets a notebook says it runs on: the keywords of the first minivar.per_dataset(DATASET, ...) call in
    its parameters cell (none: emoji only)."""
    source = parameters_cell(nbformat.read(path, as_version=4)).source
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "per_dataset":
            return [k.arg for k in node.keywords]
    return ["emoji"]


def cases(dataset: str) -> list:
    return [p.stem for p in NOTEBOOKS if dataset in offered(p)]


def write_data(root: Path) -> Path:
    write_official_format("cifar10", root, n_train=300, n_test=100, seed=0)
    write_official_format("imagenet64", root, n_train=300, n_test=100, seed=1, batches=2)
    return root


def run_on(notebook: str, dataset: str, data_root: Path, work: Path, monkeypatch):
    """Execute every cell of the notebook with DATASET = dataset, in a kernel whose working folder is `work` (its
    runs land there, never beside the notebooks); no cell may fail, and no emoji model may be trained for it."""
    from nbclient import NotebookClient
    monkeypatch.setenv("MINIVAR_DATA", str(data_root))
    monkeypatch.setenv("MINIVAR_SMOKE", "1")
    nb = nbformat.read(ROOT / "notebooks" / f"{notebook}.ipynb", as_version=4)
    cell = parameters_cell(nb)
    cell.source = DATASET_LINE.sub(f'DATASET = "{dataset}"', cell.source, count=1)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}}).execute()
    shown = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "labels must lie" not in shown and "Traceback" not in shown
    trained = sorted(p.name for p in (work / "runs").glob("*")) if (work / "runs").exists() else []
    assert not [r for r in trained if r.startswith("emoji-")], f"{notebook} trained emoji runs on {dataset}: {trained}"
    return nb
