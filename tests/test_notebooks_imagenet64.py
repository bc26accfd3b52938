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
    run_on(notebook, "imagenet64", data_root, tmp_path, monkeypatch)
