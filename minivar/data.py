"""Datasets: one entry point, `load_dataset(name, split, image_size=..., root=...)`.

Every dataset yields (image, label) with image a float tensor in [-1, 1] of shape (3, H, W), and carries
`.classes` (the class names). The names:

- "emoji"      3,655 colour emoji on white at 32x32 or 64x64, labels = 9 Unicode groups. Bundled in
               data/emoji.npz (built by data/build_emoji.py), so it works offline: CPU runs, tests, CI.
- "cifar10"    50k/10k 32x32 images, 10 classes, downloaded into <root>/ on first use.
- "imagenet64" the official downsampled ImageNet 64x64 npz batches, placed by the user in
               <root>/imagenet64/. Read through memory maps: the 1.28M images never sit in RAM at once.
- "folder"     any ImageFolder tree (root/<class>/<image>), resized and centre-cropped.

<root> is the `root` argument (`--set data_root=...`), else the folder in the environment variable MINIVAR_DATA
(one copy of CIFAR-10 or ImageNet-64 for every lab and notebook), else the repo's data/.

The training loop's data order lives here too: `StepBatches` and `flip_batch` make every batch a pure function
of the step, so a resumed run sees exactly the batches an uninterrupted one would have seen (`batch_for_step`).
"""

import os
import pickle
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, Subset, TensorDataset, default_collate

DATA_DIR = Path(__file__).resolve().parent.parent / "data"  # the repo's data/ (bundled set, downloads)
DATA_ENV = "MINIVAR_DATA"  # a folder for the downloaded datasets instead of data/ (one copy shared by every lab)
DATASETS = ("emoji", "cifar10", "imagenet64", "folder")
SPLITS = ("train", "test")

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"


def data_root(name: str, root=None) -> Path:
    """Where dataset `name` is read from: `root` if given; else, for the downloaded datasets, the folder named by
    the environment variable MINIVAR_DATA if set; else the repo's data/ (where emoji ships)."""
    if root:
        return Path(root)
    if name != "emoji" and os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return DATA_DIR


def to_tensor_images(uint8_hwc: np.ndarray) -> torch.Tensor:
    """(N, H, W, 3) or (H, W, 3) uint8 -> float in [-1, 1], channels first."""
    x = torch.from_numpy(np.ascontiguousarray(uint8_hwc)).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3)


def to_uint8_images(images: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, for saving and plotting."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).cpu().numpy()


class ArrayDataset(Dataset):
    """Images held as one uint8 (N, H, W, 3) array (in memory or memory-mapped) plus int labels."""

    def __init__(self, images, labels, classes, flip=False):
        self.images, self.labels, self.flip = images, np.asarray(labels), flip
        self.classes = [str(c) for c in classes]

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        x = to_tensor_images(self.images[i])
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(self.labels[i])


# ---------------------------------------------------------------------------------------------- emoji

def load_emoji(split, image_size=32, root=None, flip=False):
    path = Path(root or DATA_DIR) / "emoji.npz"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: it ships with the repository (git checkout data/emoji.npz), "
                                f"or rebuild it with `python data/build_emoji.py` (needs Debian's "
                                f"fonts-noto-color-emoji and unicode-data)")
    if image_size not in (32, 64):
        raise ValueError(f"emoji comes at image_size 32 or 64, got {image_size}")
    with np.load(path) as f:
        keep = f["is_test"] == (split == "test")
        return ArrayDataset(f[f"images{image_size}"][keep], f["labels"][keep], f["class_names"], flip)


# -------------------------------------------------------------------------------------------- cifar10

def read_cifar_batches(folder: Path, split: str):
    """Read the CIFAR-10 python pickle batches: data (N, 3072) uint8 channel-major, labels, meta. A missing,
    truncated or foreign batch is named, with how to get a good copy."""
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    again = (f"delete {folder} and run again with internet access (it is downloaded and checked), or extract a "
             f"good cifar-10-python.tar.gz from {CIFAR_URL} there")

    def read(name, keys):
        try:
            with open(folder / name, "rb") as fh:
                obj = pickle.load(fh, encoding="latin1")
        except FileNotFoundError:
            raise FileNotFoundError(f"{folder / name} is missing: the CIFAR-10 folder is incomplete; {again}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as e:
            raise ValueError(f"{folder / name} is truncated or not a CIFAR-10 batch ({type(e).__name__}); "
                             f"{again}") from None
        if not isinstance(obj, dict) or any(k not in obj for k in keys):
            raise ValueError(f"{folder / name} is not a CIFAR-10 batch (it lacks {', '.join(keys)}); {again}")
        return obj

    data, labels = [], []
    for name in names:
        batch = read(name, ("data", "labels"))
        rows = np.asarray(batch["data"], dtype=np.uint8)
        if rows.ndim != 2 or rows.shape[1] != 3 * 32 * 32 or len(rows) != len(batch["labels"]):
            raise ValueError(f"{folder / name}: expected rows of 3072 bytes, one per label, got {rows.shape} for "
                             f"{len(batch['labels'])} labels; {again}")
        data.append(rows)
        labels.extend(batch["labels"])
    classes = read("batches.meta", ("label_names",))["label_names"]
    labels = np.asarray(labels, dtype=np.int64)
    if labels.min() < 0 or labels.max() >= len(classes):
        raise ValueError(f"{folder}: labels {labels.min()}..{labels.max()} outside the {len(classes)} classes of "
                         f"batches.meta; {again}")
    images = np.concatenate(data).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return images, labels, classes


DOWNLOAD_TIMEOUT = 30  # seconds without a byte before a download gives up (a firewall that drops packets would
# otherwise hold a lab's first cell for minutes)


def download_cifar10(root: Path, url: str = None, md5: str = None) -> Path:
    """Fetch cifar-10-python.tar.gz (163 MB) into root, check its MD5, extract cifar-10-batches-py/ there and delete
    the archive. Without internet it fails within DOWNLOAD_TIMEOUT seconds, saying what to download by hand."""
    import hashlib
    import tarfile
    import urllib.request

    from tqdm.auto import tqdm
    url, md5 = url or CIFAR_URL, md5 or CIFAR_MD5
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "cifar-10-python.tar.gz.part"
    by_hand = (f"Download {CIFAR_URL} by hand and extract it into {root} (it holds cifar-10-batches-py/), set "
               f"{DATA_ENV} to a folder that has it, or use the offline dataset: --set dataset=emoji")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT) as response, open(archive, "wb") as out:
            total, digest = int(response.headers.get("Content-Length") or 0) or None, hashlib.md5()
            with tqdm(total=total, unit="B", unit_scale=True, desc="CIFAR-10") as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
    except OSError as e:  # no internet, DNS, a proxy, a timeout, disk full: all OSErrors (URLError is one)
        archive.unlink(missing_ok=True)
        raise RuntimeError(f"could not download CIFAR-10 from {url} ({e}). {by_hand}") from e
    if digest.hexdigest() != md5:
        archive.unlink()
        raise RuntimeError(f"the CIFAR-10 download from {url} is corrupt (MD5 {digest.hexdigest()}, expected {md5}); "
                           f"run again. {by_hand}")
    with tarfile.open(archive, "r:gz") as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # python >= 3.11.4 / 3.10.12
        tar.extractall(root, **safe)  # "data": no absolute paths, links or devices out of the archive
    archive.unlink()
    return root / "cifar-10-batches-py"


def load_cifar10(split, image_size=32, root=None, flip=False, download=True):
    if image_size != 32:
        raise ValueError(f"cifar10 images are 32x32, got image_size={image_size}")
    root = data_root("cifar10", root)
    folder = root / "cifar-10-batches-py"
    if not (folder / "batches.meta").exists():
        if not download:
            raise FileNotFoundError(f"{folder} not found: run once with internet access (download=True), or "
                                    f"place the extracted cifar-10-python.tar.gz from {CIFAR_URL} in {root}")
        download_cifar10(root)
    images, labels, classes = read_cifar_batches(folder, split)
    return ArrayDataset(images, labels, classes, flip)


# ----------------------------------------------------------------------------------------- imagenet64

def npz_member_memmap(path: Path, key: str) -> np.ndarray:
    """Memory-map one array stored *uncompressed* inside an .npz (a zip of .npy files).

    The official downsampled-ImageNet batches are written with np.savez (no compression), so the raw
    array bytes sit contiguously in the file: we find where, and map them instead of reading 1-2 GB.
    Returns None when the member is compressed (then it must be extracted first).
    """
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
        if info.compress_type != zipfile.ZIP_STORED:
            return None
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)  # zip local file header: name and extra-field lengths sit at bytes 26..29
        name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
        fh.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(fh)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def extract_npz_member(path: Path, key: str, out: Path, chunk=1 << 26) -> np.ndarray:
    """Stream a compressed .npz member to a plain .npy next to it (once), in chunks, then memory-map it."""
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        with zipfile.ZipFile(path) as zf, zf.open(f"{key}.npy") as src, open(tmp, "wb") as dst:
            while block := src.read(chunk):
                dst.write(block)
        tmp.replace(out)
    return np.load(out, mmap_mode="r")


class ImageNet64(Dataset):
    """Downsampled ImageNet 64x64: rows of 12288 uint8 (R plane, G plane, B plane), labels 1..1000."""

    def __init__(self, files, flip=False):
        self.parts, self.flip = [], flip
        for f in files:
            try:
                data = npz_member_memmap(f, "data")
                if data is None:
                    data = extract_npz_member(f, "data", f.with_suffix(".data.npy"))
                with np.load(f) as z:
                    labels = np.asarray(z["labels"], dtype=np.int64)
            except (KeyError, zipfile.BadZipFile, EOFError, OSError, ValueError) as e:
                raise ValueError(f"{f} is truncated or not a downsampled-ImageNet batch (it needs arrays 'data' and "
                                 f"'labels'; {type(e).__name__}: {str(e)[:120]}); {IMAGENET64_AGAIN}") from None
            if data.ndim != 2 or data.shape[1] != 3 * 64 * 64 or len(data) != len(labels):
                raise ValueError(f"{f}: expected 'data' of shape (N, 12288) and N labels, got {data.shape} and "
                                 f"{len(labels)}; {IMAGENET64_AGAIN}")
            self.parts.append((data, imagenet64_labels(labels, f)))
        self.offsets = np.cumsum([0] + [len(lab) for _, lab in self.parts])
        self.classes = [str(i) for i in range(1000)]

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([lab for _, lab in self.parts])

    def __len__(self):
        return int(self.offsets[-1])

    def __getitem__(self, i):
        p = int(np.searchsorted(self.offsets, i, side="right")) - 1
        data, labels = self.parts[p]
        j = i - self.offsets[p]
        x = to_tensor_images(np.asarray(data[j]).reshape(3, 64, 64).transpose(1, 2, 0))
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        return x, int(labels[j])


IMAGENET64_AGAIN = ("download that file again (Imagenet64_train_part1/2.zip, Imagenet64_val.zip from image-net.org) "
                    "and unzip it in place")


def imagenet64_labels(labels: np.ndarray, path) -> np.ndarray:
    """The official files count classes 1..1000; a file already converted to 0..999 (it holds a 0) is taken as it
    is. Anything else is an error naming the file (a 0-based file whose class 0 is absent cannot be told apart;
    the official train batches and val file hold every class)."""
    if len(labels) and labels.min() >= 1 and labels.max() <= 1000:
        labels = labels - 1
    if len(labels) and (labels.min() < 0 or labels.max() > 999):
        raise ValueError(f"{path}: labels {labels.min()}..{labels.max()} are neither 1..1000 (the official files) "
                         f"nor 0..999; {IMAGENET64_AGAIN}")
    return labels


def load_imagenet64(split, image_size=64, root=None, flip=False):
    import re
    if image_size != 64:
        raise ValueError(f"imagenet64 images are 64x64, got image_size={image_size}")
    folder = data_root("imagenet64", root) / "imagenet64"
    if split == "train":  # train_data_batch_1.npz ... _10.npz; other names (a _1_old.npz copy) are not read
        numbered = {int(m.group(1)): p for p in folder.glob("train_data_batch_*.npz")
                    if (m := re.fullmatch(r"train_data_batch_(\d+)\.npz", p.name))}
        gaps = sorted(set(range(1, max(numbered, default=0) + 1)) - set(numbered))
        if gaps:
            raise FileNotFoundError(f"{folder} lacks train_data_batch_{gaps[0]}.npz (it has batches up to "
                                    f"{max(numbered)}): the training split would silently miss it; "
                                    f"{IMAGENET64_AGAIN}")
        files = [numbered[k] for k in sorted(numbered)]
        pattern = "train_data_batch_<k>.npz"
    else:
        pattern = "val_data.npz"
        files = [folder / pattern] if (folder / pattern).is_file() else []
    if not files:
        raise FileNotFoundError(
            f"no {pattern} in {folder}: download the 64x64 'Downsampled ImageNet' npz batches "
            f"(Imagenet64_train_part1/2.zip and Imagenet64_val.zip from image-net.org, after registering) "
            f"and unzip them into {folder}")
    return ImageNet64(files, flip)


# ------------------------------------------------------------- synthetic copies in the official formats

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def write_official_format(name: str, root, n_train: int, n_test: int, seed: int = 0, batches: int = 1) -> dict:
    """Write random images in a dataset's official on-disk format under `root`, as its download unpacks:
    cifar10 -> cifar-10-batches-py/ (data_batch_1..5, test_batch, batches.meta: python pickles of (N, 3072) uint8
    channel-major rows and 0-based labels); imagenet64 -> imagenet64/ (train_data_batch_1..<batches>.npz and
    val_data.npz: `data` (N, 12288) uint8, 1-based `labels`, `mean`). So the download paths, the GPU recipes and the
    notebooks run offline on files a real copy would hold. Returns {file stem: (data, labels as written)}."""
    rng, root, written = np.random.default_rng(seed), Path(root), {}

    def sizes(n, k):
        return [n // k + (i < n % k) for i in range(k)]
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        files = [(f"data_batch_{i + 1}", n) for i, n in enumerate(sizes(n_train, 5))] + [("test_batch", n_test)]
        for stem, n in files:
            data, labels = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()
            with open(folder / stem, "wb") as fh:
                pickle.dump({"batch_label": stem, "data": data, "labels": labels}, fh)
            written[stem] = (data, labels)
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": list(CIFAR_CLASSES), "num_cases_per_batch": files[0][1]}, fh)
    elif name == "imagenet64":
        folder = root / "imagenet64"
        folder.mkdir(parents=True, exist_ok=True)
        files = [(f"train_data_batch_{i + 1}", n) for i, n in enumerate(sizes(n_train, batches))]
        for stem, n in files + [("val_data", n_test)]:
            data, labels = rng.integers(0, 256, size=(n, 12288), dtype=np.uint8), rng.integers(1, 1001, n).tolist()
            np.savez(folder / f"{stem}.npz", data=data, labels=labels, mean=np.zeros(12288, dtype=np.float32))
            written[stem] = (data, labels)
    else:
        raise ValueError(f"no official format to write for {name!r}; choose cifar10 or imagenet64")
    return written


# ---------------------------------------------------------------------------------------------- folder

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".gif")


def image_files(folder: Path) -> list:
    """Every image file under `folder`, each once: symbolic links are followed (a class folder may be a link to
    another disk) but a folder already visited is not entered again (a link loop would never end), and two links to
    one file count once."""
    import os
    seen_dirs, seen_files, files = set(), set(), []
    for here, dirs, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(here)
        if real in seen_dirs:
            dirs[:] = []
            continue
        seen_dirs.add(real)
        dirs.sort()
        for name in sorted(names):
            path = Path(here) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                key = os.path.realpath(path)
                if key not in seen_files:
                    seen_files.add(key)
                    files.append(path)
    return files


def read_rgb(path):
    """A PIL image as the user sees it, in RGB with 8 bits a channel: transparent pixels over white (not the colour
    hidden under them), 16-bit images scaled to 8 bits (not clipped to white), palettes and greyscale widened."""
    from PIL import Image
    with Image.open(path) as img:
        img.load()
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit (or 32-bit integer) greyscale
            a = np.asarray(img).astype(np.float64)
            top = 65535.0 if a.max() > 255 else 255.0
            img = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
        elif img.mode == "F":
            a = np.asarray(img)
            img = Image.fromarray(np.clip(a * (255 if a.max() <= 1 else 1) + 0.5, 0, 255).astype(np.uint8), "L")
        if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
            rgba = img.convert("RGBA")
            white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(white, rgba).convert("RGB")
        return img.convert("RGB")


class ImageFolderDataset(Dataset):
    """root/<class>/<image> (any depth below the class folder). `classes`: the class list to index by (the
    training split's, so that a test split missing a class keeps every label meaning the same class)."""

    def __init__(self, root, image_size, flip=False, classes=None):
        from torchvision import transforms
        root = Path(root)
        here = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        self.classes = list(classes) if classes is not None else here
        unknown = sorted(set(here) - set(self.classes))
        if unknown:
            raise ValueError(f"{root} has class folders the training split lacks: {', '.join(unknown[:5])}; every "
                             f"class of the test split needs training images (or remove those folders)")
        self.samples = [(path, self.classes.index(c)) for c in here for path in image_files(root / c)]
        if not self.samples:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in the class folders of {root}")
        self.transform = transforms.Compose([
            transforms.Resize(image_size), transforms.CenterCrop(image_size),
            transforms.RandomHorizontalFlip() if flip else transforms.Lambda(lambda x: x),
            transforms.PILToTensor()])

    @property
    def labels(self) -> np.ndarray:
        return np.asarray([y for _, y in self.samples], dtype=np.int64)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, i):
        path, y = self.samples[i]
        try:
            x = self.transform(read_rgb(path))
        except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for truncated or unreadable files
            raise ValueError(f"cannot read the image {path} ({type(e).__name__}: {e}); remove or replace that "
                             f"file") from None
        return x.float() / 127.5 - 1.0, y


def load_folder(split, image_size=32, root=None, flip=False):
    if root is None:
        raise ValueError("dataset 'folder' needs root=<path to an ImageFolder tree> (or --set data_root=...)")
    root = Path(root)
    sub = root / split
    tree = sub if sub.is_dir() else root  # root/train, root/test if present, else the whole tree
    if not tree.is_dir():
        raise FileNotFoundError(f"{tree} is not a folder of class sub-folders")
    if tree is root and split == "test":
        warnings.warn(f"{root} has no train/ and test/ sub-folders, so the test split is the training images: test "
                      f"metrics will flatter the model. Split it into {root}/train/<class>/ and {root}/test/<class>/",
                      stacklevel=3)
    classes = None
    if split == "test" and tree is sub and (root / "train").is_dir():  # labels index the training split's classes
        classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir() and not d.name.startswith("."))
    return ImageFolderDataset(tree, image_size, flip, classes)


LOADERS = {"emoji": load_emoji, "cifar10": load_cifar10, "imagenet64": load_imagenet64, "folder": load_folder}


def dataset_labels(dataset) -> torch.Tensor:
    """Every label of a dataset of this module (or of a token cache's CachedCodes, a TensorDataset, or a Subset of
    any of them), without loading its images or codes."""
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1]
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices, dtype=torch.long)]
    return torch.as_tensor(np.asarray(dataset.labels), dtype=torch.long)


def shown_classes(dataset, k: int = 10) -> tuple:
    """The classes a figure shows -> (class indices (n,) long, short names): every class when there are at most k
    (emoji's 9, CIFAR's 10), else k spread evenly over the classes the split holds (ImageNet's 1,000). Short names:
    "Smileys" for "Smileys & Emotion", "class 207" for an ImageNet label."""
    present = torch.unique(dataset_labels(dataset))
    picked = present if len(dataset.classes) <= k else present[torch.linspace(0, len(present) - 1, min(k, len(
        present))).round().long().unique()]
    names = [dataset.classes[c].split(" & ")[0] for c in picked.tolist()]
    return picked, [f"class {n}" if n.isdigit() else n for n in names]


# where each dataset's files live under its root (the repo's data/ by default)
DATA_FILES = {"emoji": "emoji.npz", "cifar10": "cifar-10-batches-py", "imagenet64": "imagenet64", "folder": "."}


def dataset_fingerprint(name: str, split: str, root=None) -> str:
    """A short hash of what decides a split's images without reading them: the dataset, the folder it is read from,
    and every data file's name, size and modification time there. Two roots, or a file added, replaced or touched,
    give another fingerprint (what the token cache is keyed by, beside the tokenizer's weights)."""
    import hashlib
    if name not in DATA_FILES:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    base = data_root(name, root).resolve() / DATA_FILES[name]
    h = hashlib.sha256(f"{name}\0{split}\0{base}".encode())
    paths = [base] if base.is_file() else sorted(
        Path(folder) / f for folder, _, names in os.walk(base) for f in names)  # os.walk: no symlink loops
    for p in paths:
        try:
            st = p.stat()
        except OSError:  # a dangling link: not an image anyone can read
            continue
        h.update(f"{p.relative_to(base.parent)}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def load_dataset(name: str, split: str = "train", image_size: int = 32, root=None, flip: bool = False) -> Dataset:
    """Return a Dataset of (image in [-1, 1] with shape (3, H, W), label); `.classes` holds class names.

    `flip=True` adds random horizontal flips (training augmentation).
    """
    if name not in LOADERS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    return LOADERS[name](split, image_size=image_size, root=root, flip=flip)


def load_captions(name: str, split: str = "train", root=None) -> list:
    """The caption of each image of a split, in load_dataset's order: emoji's names ("red apple", "cat face",
    "woman farmer: medium skin tone"). The other datasets have class labels only, and say so."""
    if name != "emoji":
        raise ValueError(f"{name} has no captions (only class labels); text-to-image trains on emoji, whose images "
                         f"are named (--set dataset=emoji, and captions=emoji for the t2i model)")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose 'train' or 'test'")
    path = Path(root or DATA_DIR) / "emoji.npz"
    if not path.exists():
        load_emoji(split, root=root)  # raises the missing-file message
    with np.load(path) as f:
        return [str(n) for n in f["names"][f["is_test"] == (split == "test")]]


def limit_indices(n_items: int, n: int):
    """The items limit_dataset keeps: all (None) when n = 0 or n >= n_items, else a fixed random n of them, sorted."""
    if n <= 0 or n >= n_items:
        return None
    return torch.randperm(n_items, generator=torch.Generator().manual_seed(0))[:n].sort().values.tolist()


# ------------------------------------------------------------------ the training data order = f(step)

class StepBatches(Sampler):
    """Yields the index list of this rank's part of the global batch for step, step + 1, ... forever.

    Epoch e is a permutation drawn from seed + e; step s takes the next `batch_size` indices of it
    (the last incomplete batch of an epoch is dropped). Rank r takes the r-th contiguous slice.
    """

    def __init__(self, n, batch_size, seed=0, start_step=0, rank=0, world=1):
        if batch_size % world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of processes {world}")
        if n < batch_size:
            raise ValueError(f"the dataset has {n} images, fewer than one batch of {batch_size}; "
                             f"lower batch_size (--set batch_size=...)")
        self.n, self.batch_size, self.seed, self.start_step = n, batch_size, seed, start_step
        self.rank, self.world = rank, world
        self.steps_per_epoch = n // batch_size
        self._epoch, self._perm = None, None  # the current epoch's permutation, drawn once

    def indices(self, step):
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch = epoch
            self._perm = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + epoch))
        batch = self._perm[i * self.batch_size:(i + 1) * self.batch_size]
        local = self.batch_size // self.world
        return batch[self.rank * local:(self.rank + 1) * local].tolist()

    def __iter__(self):
        step = self.start_step
        while True:
            yield self.indices(step)
            step += 1

    def __len__(self):  # infinite in spirit; DataLoader only needs a number
        return 1 << 62


def flip_batch(images, step, seed, rank, world):
    """Flip half the images, chosen by a generator seeded by the step (over the global batch)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    mask = torch.rand(images.shape[0] * world, generator=g) < 0.5
    mask = mask[rank * images.shape[0]:(rank + 1) * images.shape[0]].to(images.device)
    return torch.where(mask[:, None, None, None], images.flip(-1), images)


def batch_for_step(dataset, step, batch_size, seed=0, rank=0, world=1, flip=False):
    """This rank's (x, labels) at `step`, exactly as the training loop builds them (image flips included when
    flip=True; a generator's codes are never flipped here: their mirror images are cached)."""
    idx = StepBatches(len(dataset), batch_size, seed, step, rank, world).indices(step)
    x, labels = default_collate([dataset[i] for i in idx])
    return (flip_batch(x, step, seed, rank, world) if flip else x), labels


def limit_dataset(dataset, n: int):
    """The whole dataset (n = 0 or n >= its size), or a fixed random subset of n of its items, in their order (the
    same n items whatever the run's seed: TrainConfig.data_limit)."""
    keep = limit_indices(len(dataset), n)
    return dataset if keep is None else Subset(dataset, keep)


def preview_batch(dataset, n=16):
    """The first test item of each of the first n classes: what every preview shows, from the same items. (Items
    whose condition is a caption, not a class: n items spread evenly over the set.)"""
    labels = dataset_labels(dataset)
    if labels.ndim > 1:
        return default_collate([dataset[i] for i in torch.linspace(0, len(dataset) - 1, min(n, 9)).long().tolist()])
    return default_collate([dataset[int((labels == c).nonzero()[0])] for c in labels.unique()[:n]])
