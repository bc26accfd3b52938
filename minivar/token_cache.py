"""Encode a dataset once with a frozen tokenizer, and train generators on the cached codes.

    tokenizer = minivar.load("runs/emoji-vqvae-l2")
    train_codes = token_dataset(tokenizer, "emoji", "train", cache_dir="runs/emoji-vqvae-l2/tokens")
    codes, label = train_codes[0]          # a token map (8, 8), one row of all scales (130,), or latents

The tokenizer is frozen while a generator trains, so encoding every image at every step would only repeat the
same work: we encode each image (and its mirror image, the augmentation the tokenizer was trained with) once and
store the codes in their own dtype (integer tokens as int16 when the codebook fits, float latents as float32).

A cache is a folder, usually <tokenizer run>/tokens/<dataset>_<split>_<size>[_flip]/, holding

    codes.npy    one row per image (the mirror images' rows after all the others), read through a memory map:
                 ImageNet-64's 2.56 M rows of imagenet64-kl latents are 42 GB on disk, and a batch reads only its
                 rows, so the process never holds the set (the OS keeps what it reads in its page cache, which
                 it may drop at any time)
    labels.npy   one label per row (small: read into memory)
    meta.json    what made it (a checksum of the tokenizer's weights and a fingerprint of the images: the dataset,
                 its folder, its files' names, sizes and times), its shape and dtype, and how many images are done

It is written in chunks, each flushed to disk before meta.json counts it, so a build that is killed (or loses
its machine) goes on from its last chunk the next time; a cache made by other weights or other images, or a
damaged one, is built again. Two processes asking for the same cache (the ranks of torchrun, two notebooks) take
turns: the second waits, then reads what the first built.
"""

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm.auto import tqdm

from .data import dataset_fingerprint, dataset_labels, limit_dataset, limit_indices, load_captions, load_dataset
from .files import PathLock, write_json
from .models import model_class, weights_checksum
from .text import Vocabulary

FORMAT = 2  # the cache's layout: 2 = the folder above (1 was a single .pt file, loaded whole into memory)


def code_rows(codes) -> torch.Tensor:
    """What a tokenizer's encode returns -> one tensor with a row per image: token maps (B, h, w) and latents
    (B, C, h, w) stay as they are; a list of per-scale maps becomes (B, L), all scales flattened, coarsest first
    (split_scales undoes it)."""
    if isinstance(codes, (list, tuple)):
        return torch.cat([c.flatten(1) for c in codes], dim=1)
    return codes


def storage_dtype(codes: torch.Tensor, codebook_size: int = None) -> torch.dtype:
    """Integer codes as int16 when every code of the codebook fits (4x smaller than int64), else int32; float
    latents as float32. Without a codebook size, the codes at hand decide."""
    if codes.is_floating_point():
        return torch.float32
    largest = codebook_size - 1 if codebook_size else (int(codes.max()) if codes.numel() else 0)
    return torch.int16 if largest < 2**15 else torch.int32


@torch.no_grad()
def encode_batches(tokenizer, dataset, flip=False, batch_size=256, start=0):
    """Yield (index of the batch's first image, codes, the mirror images' codes or None, labels) for the images
    of `dataset` from `start` on, a batch at a time: the cache writes each batch as it comes."""
    tokenizer.eval()  # frozen: in training mode a quantizer would update its codebook statistics
    rest = dataset if start == 0 else Subset(dataset, range(start, len(dataset)))
    i = start
    for images, labels in DataLoader(rest, batch_size=batch_size):
        images = images.to(tokenizer.device)
        codes = code_rows(tokenizer.encode(images)).cpu()
        mirrored = code_rows(tokenizer.encode(images.flip(-1))).cpu() if flip else None
        yield i, codes, mirrored, labels.long()
        i += len(labels)


def encode_dataset(tokenizer, dataset, flip=False, batch_size=256, progress=True, desc="encoding"):
    """-> codes (N, ...) and labels (N,) in memory; with flip=True (2N, ...): item N + i is image i's mirror image.
    (For a set that fits in memory; token_dataset writes the same rows to disk instead.)"""
    codes, mirrored, labels = [], [], []
    for _, c, m, y in tqdm(encode_batches(tokenizer, dataset, flip, batch_size), desc=desc, disable=not progress,
                           total=-(-len(dataset) // batch_size), leave=False):
        codes.append(c)
        mirrored += [m] if flip else []
        labels.append(y)
    codes, labels = torch.cat(codes + mirrored), torch.cat(labels * (2 if flip else 1))
    return codes.to(storage_dtype(codes)), labels


class CachedCodes(Dataset):
    """The (codes, label) items of a cache folder: codes read through a memory map a batch at a time, labels (or,
    for text-to-image, caption word ids: with_labels) in memory. Integer codes come back as int64 (what embeddings
    take), float latents as float32. Safe to hand to DataLoader workers: each opens its own map."""

    def __init__(self, folder, labels: torch.Tensor = None):
        self.folder = Path(folder)
        self.labels = torch.from_numpy(np.load(self.folder / "labels.npy")) if labels is None else labels
        self._codes = None  # the memory map, opened on first use in each process

    @property
    def codes(self) -> np.ndarray:
        if self._codes is None:
            self._codes = np.load(self.folder / "codes.npy", mmap_mode="r")
        return self._codes

    def __getstate__(self):  # a worker process gets the path, not a copy of the mapped rows
        return {**self.__dict__, "_codes": None}

    def __len__(self):
        return len(self.labels)

    @staticmethod
    def _tensor(rows) -> torch.Tensor:
        t = torch.from_numpy(np.array(rows))  # a copy: the map itself stays read-only
        return t if t.is_floating_point() else t.long()

    def __getitem__(self, i):
        return self._tensor(self.codes[i]), self.labels[i]

    def __getitems__(self, indices):  # a whole batch in one read of the map (DataLoader calls this when present)
        codes = self._tensor(self.codes[np.asarray(indices, dtype=np.int64)])
        return list(zip(codes, self.labels[torch.as_tensor(indices, dtype=torch.long)]))

    def all_codes(self) -> torch.Tensor:
        """Every row in memory at once (small caches and tests; training reads batches)."""
        return self._tensor(self.codes)

    def with_labels(self, labels: torch.Tensor) -> "CachedCodes":
        """The same codes with other labels, one per row (captions' word ids for a text-conditioned generator)."""
        if len(labels) != len(self):
            raise ValueError(f"{len(labels)} labels for the {len(self)} rows of {self.folder}")
        return CachedCodes(self.folder, labels)


def read_meta(folder, made_by: str):
    """The cache's meta.json when it is this format, made by `made_by`, and its files open with the shape and dtype
    it records (a finished or a partly built cache); None when it is absent, stale or damaged."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != FORMAT or meta.get("made_by") != made_by:
            return None
        codes = np.load(folder / "codes.npy", mmap_mode="r")
        labels = np.load(folder / "labels.npy", mmap_mode="r")
        if (codes.shape != (meta["rows"], *meta["shape"]) or str(codes.dtype) != meta["dtype"]
                or labels.shape != (meta["rows"],) or not 0 <= meta["done"] <= meta["images"]):
            return None
        return meta
    except (OSError, ValueError, KeyError, TypeError, AttributeError):  # missing, truncated, or not ours
        return None


def build_cache(tokenizer, images, folder, made_by: str, flip: bool, meta=None, progress=True, desc="encoding",
                batch_size=256, chunk=8192):
    """Encode `images` into the cache folder, from the first image (meta None) or from where a killed build
    stopped (meta["done"]). Every `chunk` images the rows are flushed to disk, then meta.json counts them: a kill
    at any moment loses at most the chunk in flight."""
    folder, n = Path(folder), len(images)
    batches = encode_batches(tokenizer, images, flip, batch_size, start=meta["done"] if meta else 0)
    if meta is None:  # a new cache: the first batch says the rows' shape and dtype
        first = next(batches, None)
        if first is None:
            raise ValueError(f"no images to encode into {folder}: the dataset split is empty")
        dtype = np.dtype(str(storage_dtype(first[1], tokenizer.code_format().get("codebook_size"))).removeprefix(
            "torch."))
        rows = n * (2 if flip else 1)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        shape = tuple(first[1].shape[1:])
        np.lib.format.open_memmap(folder / "codes.npy", "w+", dtype, (rows, *shape)).flush()
        np.lib.format.open_memmap(folder / "labels.npy", "w+", np.int64, (rows,)).flush()
        meta = {"format": FORMAT, "made_by": made_by, "images": n, "rows": rows, "flip": flip, "shape": list(shape),
                "dtype": dtype.name, "done": 0, "complete": False}
        write_json(folder / "meta.json", meta)
        batches = itertools.chain([first], batches)
    codes_file = np.load(folder / "codes.npy", mmap_mode="r+")
    labels_file = np.load(folder / "labels.npy", mmap_mode="r+")
    since = 0
    with tqdm(total=n, initial=meta["done"], desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for i, codes, mirrored, labels in batches:
            b = len(labels)
            codes_file[i:i + b], labels_file[i:i + b] = codes.numpy(), labels.numpy()
            if flip:
                codes_file[n + i:n + i + b], labels_file[n + i:n + i + b] = mirrored.numpy(), labels.numpy()
            bar.update(b)
            since += b
            if since >= chunk or i + b == n:
                codes_file.flush()
                labels_file.flush()  # on disk before meta.json says so
                meta = {**meta, "done": i + b, "complete": i + b == n}
                write_json(folder / "meta.json", meta)
                since = 0
    if not meta["complete"]:  # nothing was left to encode (an older build stopped between its last two writes)
        meta = {**meta, "complete": True}
        write_json(folder / "meta.json", meta)
    return meta


def token_dataset(tokenizer, dataset: str, split: str, cache_dir, root=None, flip=True,
                  progress=True, limit: int = 0, chunk: int = 8192, batch_size: int = 256) -> CachedCodes:
    """The (codes, label) dataset of `split` encoded by `tokenizer` (loaded once by the caller), cached in a
    folder under cache_dir (built, or finished, the first time). Flipped copies are added to the training split
    only (flip=True). limit > 0: only a fixed random subset of that many images (data.limit_dataset), cached under
    its own name. chunk: images encoded between two saves of the build's progress; batch_size: images per encode."""
    flip = flip and split == "train"
    size = tokenizer.code_format()["image_size"]
    folder = Path(cache_dir) / f"{dataset}_{split}_{size}{'_flip' if flip else ''}{f'_n{limit}' if limit else ''}"
    # everything that decides the codes: the tokenizer's weights and the images (dataset, its folder, its files);
    # split, size and flip are in the folder's name
    made_by = f"{weights_checksum(tokenizer)}:{dataset_fingerprint(dataset, split, root)}"
    with PathLock(folder, "a token cache", wait=True):
        meta = read_meta(folder, made_by)
        if meta is None or not meta["complete"]:
            images = limit_dataset(load_dataset(dataset, split, image_size=size, root=root), limit)
            verb = "encoding" if meta is None else f"finishing ({meta['done']} done)"
            build_cache(tokenizer, images, folder, made_by, flip, meta, progress, batch_size=batch_size, chunk=chunk,
                        desc=f"{verb} {dataset}/{split} once")
            folder.with_suffix(".pt").unlink(missing_ok=True)  # an older minivar's cache of the same codes
    return CachedCodes(folder)


def training_data(cfg, tokenizer, progress=True):
    """What a run (a recipes.TrainConfig) trains on -> (train set, test set, flip images in the loop?). A tokenizer
    trains on images, flipped at random as a function of the step; a generator on its tokenizer's codes, encoded
    once and cached beside the tokenizer (the mirror images' codes included)."""
    root, limit = cfg.data_root or None, cfg.data_limit
    if tokenizer is None:
        size = cfg.model_config.image_size
        return (limit_dataset(load_dataset(cfg.dataset, "train", image_size=size, root=root), limit),
                limit_dataset(load_dataset(cfg.dataset, "test", image_size=size, root=root), limit), cfg.flip)
    kw = dict(cache_dir=cfg.token_cache_dir, root=root, progress=progress, limit=limit)
    train_set = token_dataset(tokenizer, cfg.dataset, "train", flip=cfg.flip, **kw)
    test_set = token_dataset(tokenizer, cfg.dataset, "test", flip=False, **kw)
    if getattr(model_class(cfg.model), "conditions", "classes") == "captions":
        return with_captions(train_set, cfg, "train", cfg.flip), with_captions(test_set, cfg, "test"), False
    n_classes = int(dataset_labels(train_set).max()) + 1
    if n_classes > cfg.model_config.num_classes:
        raise ValueError(f"{cfg.dataset} has {n_classes} classes but the generator's num_classes is "
                         f"{cfg.model_config.num_classes}; --set num_classes={n_classes}")
    return train_set, test_set, False


def with_captions(codes: CachedCodes, cfg, split: str, flip: bool = False) -> CachedCodes:
    """(codes, caption word ids (N, max_words)): what a text-conditioned generator trains on, each image's caption
    in place of its class (the mirror images' codes, the second half when flipped, keep their image's caption).
    Words the model's vocabulary lacks (the test split's new words) are read as <unk>."""
    captions = load_captions(cfg.dataset, split, cfg.data_root or None)
    keep = limit_indices(len(captions), cfg.data_limit)
    captions = captions if keep is None else [captions[i] for i in keep]
    ids, _ = Vocabulary(cfg.model_config.words).encode(captions, cfg.model_config.max_words)
    return codes.with_labels(torch.cat([ids, ids]) if flip and split == "train" else ids)


__all__ = ["token_dataset", "training_data", "with_captions", "CachedCodes", "build_cache", "read_meta",
           "encode_batches", "encode_dataset", "code_rows", "storage_dtype"]
