import zipfile

import numpy as np
import pytest
import torch
from PIL import Image

from minivar import data
from minivar.data import load_cifar10, load_dataset, npz_member_memmap, write_official_format


def test_emoji_images_labels_and_fixed_split():
    train, test = load_dataset("emoji", "train"), load_dataset("emoji", "test")
    assert len(train) + len(test) == 3655 and len(test) == 365
    x, y = train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and x.min() >= -1 and x.max() <= 1
    assert len(train.classes) == 9 and train.classes[0] == "Smileys & Emotion"
    # the split is stratified: every group is in both halves, in about the same proportion
    tr, te = np.bincount(train.labels, minlength=9), np.bincount(test.labels, minlength=9)
    assert (te > 0).all() and np.allclose(te / (tr + te), 0.1, atol=0.02)
    # corners are white background
    assert torch.allclose(x[:, 0, 0], torch.ones(3))
    big = load_dataset("emoji", "test", image_size=64)
    assert big[0][0].shape == (3, 64, 64) and len(big) == len(test)


def test_emoji_flip_augmentation():
    d = load_dataset("emoji", "train", flip=True)
    torch.manual_seed(0)
    views = {tuple(d[5][0].flatten()[:200].tolist()) for _ in range(20)}
    assert len(views) == 2  # the image and its mirror


def write_cifar(root, n_per_batch=4):
    return write_official_format("cifar10", root, n_train=5 * n_per_batch, n_test=n_per_batch)


def test_cifar10_reads_the_python_pickle_batches(tmp_path):
    batches = write_cifar(tmp_path)
    train = load_dataset("cifar10", "train", root=tmp_path)
    test = load_dataset("cifar10", "test", root=tmp_path)
    assert len(train) == 20 and len(test) == 4 and train.classes[3] == "cat"
    data, labels = batches["data_batch_2"]
    x, y = train[5]  # second image of the second batch
    expected = torch.from_numpy(data[1].reshape(3, 32, 32)).float() / 127.5 - 1
    torch.testing.assert_close(x, expected)
    assert y == labels[1]


def test_cifar10_missing_says_how_to_get_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-python.tar.gz"):
        load_cifar10("train", root=tmp_path, download=False)


def cifar_archive(tmp_path):
    """cifar-10-python.tar.gz as the official site serves it (cifar-10-batches-py/ inside), and its MD5."""
    import hashlib
    import tarfile
    batches = write_cifar(tmp_path / "made")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "made" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    return archive, hashlib.md5(archive.read_bytes()).hexdigest(), batches


def test_cifar10_download_checks_extracts_and_loads(tmp_path, monkeypatch):
    archive, md5, batches = cifar_archive(tmp_path)
    monkeypatch.setattr(data, "CIFAR_URL", archive.as_uri())  # a file:// URL: urllib reads it as it would https
    monkeypatch.setattr(data, "CIFAR_MD5", md5)
    test = load_cifar10("test", root=tmp_path / "root", download=True)
    assert len(test) == 4 and test.classes[0] == "airplane" and test[1][1] == batches["test_batch"][1][1]
    assert sorted(p.name for p in (tmp_path / "root").iterdir()) == ["cifar-10-batches-py"]  # the archive is gone


def test_cifar10_download_refuses_a_corrupt_archive(tmp_path, monkeypatch):
    archive, md5, _ = cifar_archive(tmp_path)
    monkeypatch.setattr(data, "CIFAR_URL", archive.as_uri())
    with pytest.raises(RuntimeError, match="corrupt.*run again.*by hand"):
        load_cifar10("train", root=tmp_path / "root", download=True)
    assert list((tmp_path / "root").iterdir()) == []  # nothing half-written is left to be mistaken for data


def test_cifar10_download_without_internet_fails_at_once_saying_what_to_fetch(tmp_path, monkeypatch):
    import socket
    with socket.socket() as s:  # a local port nobody listens on: the connection is refused, as offline
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(data, "CIFAR_URL", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    with pytest.raises(RuntimeError, match=r"could not download CIFAR-10.*by hand.*extract it into .*root"):
        load_cifar10("train", root=tmp_path / "root", download=True)

    def silent(*args, **kwargs):  # a firewall that drops packets: urllib's timeout fires, no hang
        raise TimeoutError("timed out")
    monkeypatch.setattr("urllib.request.urlopen", silent)
    with pytest.raises(RuntimeError, match="timed out.*MINIVAR_DATA"):
        load_cifar10("train", root=tmp_path / "root", download=True)


def test_the_data_folder_can_be_set_once_for_every_lab(tmp_path, monkeypatch):
    write_official_format("cifar10", tmp_path / "shared", n_train=10, n_test=3)
    write_official_format("imagenet64", tmp_path / "shared", n_train=4, n_test=2)
    monkeypatch.setenv("MINIVAR_DATA", str(tmp_path / "shared"))
    assert len(load_dataset("cifar10", "test")) == 3 and len(load_dataset("imagenet64", "test", image_size=64)) == 2
    assert len(load_dataset("emoji", "test")) == 365  # the bundled set is still read from the package
    assert data.dataset_fingerprint("cifar10", "test") == data.dataset_fingerprint("cifar10", "test",
                                                                                 tmp_path / "shared")


def write_imagenet64(folder, compress=False):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    save = np.savez_compressed if compress else np.savez
    files = {}
    for name, n in (("train_data_batch_1", 3), ("train_data_batch_2", 2), ("val_data", 2)):
        data = rng.integers(0, 256, size=(n, 12288), dtype=np.uint8)
        labels = rng.integers(1, 1001, size=n).tolist()  # 1-based, as the official files
        save(folder / f"{name}.npz", data=data, labels=labels, mean=np.zeros(12288))
        files[name] = (data, labels)
    return files


@pytest.mark.parametrize("compress", [False, True])
def test_imagenet64_npz_batches(tmp_path, compress):
    files = write_imagenet64(tmp_path / "imagenet64", compress)
    train = load_dataset("imagenet64", "train", image_size=64, root=tmp_path)
    val = load_dataset("imagenet64", "test", image_size=64, root=tmp_path)
    assert len(train) == 5 and len(val) == 2
    data, labels = files["train_data_batch_2"]
    x, y = train[4]
    plane = data[1].reshape(3, 64, 64)  # channel-major: all R, then all G, then all B
    torch.testing.assert_close(x, torch.from_numpy(plane).float() / 127.5 - 1)
    assert y == labels[1] - 1
    memmapped = isinstance(train.parts[0][0], np.memmap)
    assert memmapped  # never the whole array in RAM: either mapped in place or extracted once, then mapped


def test_uncompressed_npz_is_mapped_in_place(tmp_path):
    a = np.arange(12288 * 2, dtype=np.uint8).reshape(2, 12288)
    np.savez(tmp_path / "x.npz", data=a)
    m = npz_member_memmap(tmp_path / "x.npz", "data")
    assert isinstance(m, np.memmap) and np.array_equal(m, a)
    np.savez_compressed(tmp_path / "y.npz", data=a)
    assert npz_member_memmap(tmp_path / "y.npz", "data") is None
    with zipfile.ZipFile(tmp_path / "x.npz") as zf:
        assert zf.getinfo("data.npy").compress_type == zipfile.ZIP_STORED


def test_imagenet64_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="imagenet64"):
        load_dataset("imagenet64", "train", image_size=64, root=tmp_path)


def test_folder_dataset(tmp_path):
    for cls, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (tmp_path / cls).mkdir()
        for i in range(2):
            Image.new("RGB", (40, 30), colour).save(tmp_path / cls / f"{i}.png")
    d = load_dataset("folder", "train", image_size=16, root=tmp_path)
    assert len(d) == 4 and d.classes == ["blue", "red"]
    x, y = d[0]
    assert x.shape == (3, 16, 16) and d.classes[y] == "blue"
    torch.testing.assert_close(x[:, 8, 8], torch.tensor([-1.0, -1.0, 1.0]))


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="emoji, cifar10, imagenet64, folder"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="'train' or 'test'"):
        load_dataset("emoji", "val")
    with pytest.raises(ValueError, match="32 or 64"):
        load_dataset("emoji", image_size=48)
