"""Encode a dataset once with a frozen tokenizer, and train generators on the cached codes.

    tokenizer = minivar.load("runs/emoji-vqvae-l2")
    train_codes = token_dataset(tokenizer, "emoji", "train", cache_dir="runs/emoji-vqvae-l2/tokens")
    codes, label = train_codes[0]          # a token map (8, 8), one row of all scales (130,), or latents

The tokenizer is frozen while a generator trains, so encoding every image at every step would only repeat the
same work: we encode each image (and its mirror image, the augmentation the tokenizer was trained with) once and
store the codes in their own dtype (integer tokens as int16 when they fit, float latents as they are) in
`cache_dir`, usually <tokenizer run>/tokens/. The cache remembers what made it (a checksum of the tokenizer's
state dict, and a fingerprint of the images: the dataset, its folder, its files' names, sizes and times) and is
rebuilt when either has changed, or when the file is damaged.
"""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import dataset_fingerprint, dataset_labels, limit_dataset, limit_indices, load_captions, load_dataset
from .models import model_class, weights_checksum
from .text import Vocabulary

CACHE_KEYS = ("codes", "labels", "made_by")


def code_rows(codes) -> torch.Tensor:
    """What a tokenizer's encode returns -> one tensor with a row per image: token maps (B, h, w) and latents
    (B, C, h, w) stay as they are; a list of per-scale maps becomes (B, L), all scales flattened, coarsest first
    (split_scales undoes it)."""
    if isinstance(codes, (list, tuple)):
        return torch.cat([c.flatten(1) for c in codes], dim=1)
    return codes


def storage_dtype(codes: torch.Tensor) -> torch.dtype:
    """Integer codes as int16 when they fit (4x smaller than int64 on disk), else int32; floats unchanged."""
    if codes.is_floating_point():
        return codes.dtype
    return torch.int16 if codes.numel() == 0 or int(codes.max()) < 2**15 else torch.int32


@torch.no_grad()
def encode_dataset(tokenizer, dataset, flip=False, batch_size=256, progress=True, desc="encoding"):
    """-> codes (N, ...) and labels (N,); with flip=True (2N, ...): item N + i is image i's mirror image."""
    codes, mirrored, labels = [], [], []
    device = tokenizer.device
    tokenizer.eval()  # frozen: in training mode a quantizer would update its codebook statistics
    for images, y in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, disable=not progress, leave=False):
        images = images.to(device)
        codes.append(code_rows(tokenizer.encode(images)).cpu())
        if flip:
            mirrored.append(code_rows(tokenizer.encode(images.flip(-1))).cpu())
        labels.append(y)
    codes, labels = torch.cat(codes + mirrored), torch.cat(labels * (2 if flip else 1)).long()
    return codes.to(storage_dtype(codes)), labels


def token_dataset(tokenizer, dataset: str, split: str, cache_dir, root=None, flip=True,
                  progress=True, limit: int = 0) -> TensorDataset:
    """The (codes, label) dataset of `split` encoded by `tokenizer` (loaded once by the caller), cached in
    cache_dir. Flipped copies are added to the training split only (flip=True). Integer codes come back as
    int64 (what embeddings take), float codes as stored. limit > 0: only a fixed random subset of that many images
    (data.limit_dataset), cached under its own name."""
    flip = flip and split == "train"
    size = tokenizer.code_format()["image_size"]
    cache = Path(cache_dir) / f"{dataset}_{split}_{size}{'_flip' if flip else ''}{f'_n{limit}' if limit else ''}.pt"
    # everything that decides the codes: the tokenizer's weights and the images (dataset, its folder, its files);
    # split, size and flip are in the file's name
    made_by = f"{weights_checksum(tokenizer)}:{dataset_fingerprint(dataset, split, root)}"
    saved = None
    if cache.exists():
        try:
            saved = load_checkpoint(cache, required=CACHE_KEYS)
        except CheckpointError:  # a damaged (or older) cache is only lost time: build it again
            saved = None
    if saved is None or saved["made_by"] != made_by:
        images = limit_dataset(load_dataset(dataset, split, image_size=size, root=root), limit)
        codes, labels = encode_dataset(tokenizer, images, flip, progress=progress,
                                       desc=f"encoding {dataset}/{split} once")
        saved = {"codes": codes, "labels": labels, "made_by": made_by}
        save_checkpoint(saved, cache)
    codes = saved["codes"]
    return TensorDataset(codes if codes.is_floating_point() else codes.long(), saved["labels"])


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


def with_captions(codes: TensorDataset, cfg, split: str, flip: bool = False) -> TensorDataset:
    """(codes, caption word ids (N, max_words)): what a text-conditioned generator trains on, each image's caption
    in place of its class (the mirror images' codes, the second half when flipped, keep their image's caption).
    Words the model's vocabulary lacks (the test split's new words) are read as <unk>."""
    captions = load_captions(cfg.dataset, split, cfg.data_root or None)
    keep = limit_indices(len(captions), cfg.data_limit)
    captions = captions if keep is None else [captions[i] for i in keep]
    ids, _ = Vocabulary(cfg.model_config.words).encode(captions, cfg.model_config.max_words)
    return TensorDataset(codes.tensors[0], torch.cat([ids, ids]) if flip and split == "train" else ids)


__all__ = ["token_dataset", "training_data", "with_captions", "encode_dataset", "code_rows", "storage_dtype"]
