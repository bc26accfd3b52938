"""Every notebook that offers cifar10 runs on it, end to end in smoke mode, on CIFAR-10 files in the official format
(the python pickle batches the download unpacks): the GPU path, without a GPU or the internet."""

import pytest

from minivar.data import DATASETS
from tests.notebook_datasets import NOTEBOOKS, cases, offered, run_on, write_data


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return write_data(tmp_path_factory.mktemp("data"))


def test_every_notebook_says_which_datasets_it_runs_on():
    for path in NOTEBOOKS:
        datasets = offered(path)
        assert "emoji" in datasets and set(datasets) <= set(DATASETS), (path.name, datasets)
    # the course's GPU path: every lesson that trains a model offers both GPU datasets (02 reads a sweep recorded on
    # emoji, 08 the shipped emoji models, 09 needs captions)
    trains = {"00_start_here", "01_vector_quantization", "03_raster_autoregression", "04_multiscale_tokenizer",
              "05_next_scale_prediction", "06_flow_matching", "07_randomized_ar"}
    assert set(cases("cifar10")) == set(cases("imagenet64")) == trains


@pytest.mark.parametrize("notebook", cases("cifar10"))
def test_the_notebook_runs_on_cifar10(notebook, data_root, tmp_path, monkeypatch):
    run_on(notebook, "cifar10", data_root, tmp_path, monkeypatch)
