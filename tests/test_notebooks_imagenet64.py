"""Every notebook that offers imagenet64 runs on it, end to end in smoke mode, on ImageNet 64x64 files in the official
format (the npz batches of the downsampled-ImageNet zips, 1-based labels over 1,000 classes): the GPU path, without a
GPU or the internet."""

import pytest

from tests.notebook_datasets import cases, run_on, write_data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


@pytest.mark.parametrize("notebook", cases("imagenet64"))
def test_the_notebook_runs_on_imagenet64(notebook, data_root, tmp_path, monkeypatch):
    nb = run_on(notebook, "imagenet64", data_root, tmp_path, monkeypatch)
    shown = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "labels must lie" not in shown and "Traceback" not in shown
    trained = sorted(p.name for p in (tmp_path / "runs").glob("*")) if (tmp_path / "runs").exists() else []
    assert not [r for r in trained if r.startswith("emoji-")], f"{notebook} trained emoji runs on imagenet64: {trained}"
