"""Tokenize a dataset once with a trained tokenizer, and train generators on the cached token maps.

    tokenizer = load_tokenizer("runs/emoji-vqvae-l2")             # a run folder or its ckpt.pt
    train_tokens = token_dataset(tokenizer_path, "emoji", "train")  # items: (tokens (L,), label)

The tokenizer is frozen while a generator trains, so encoding every image at every step would only repeat the
same work: we encode each image (and its mirror image, the augmentation the tokenizer was trained with) once
and store the token maps next to the tokenizer's checkpoint, in <tokenizer run>/tokens/. The cache remembers
which weights made it (step and a checksum of the weights) and is rebuilt when the tokenizer has changed.
"""

from pathlib import Path

import torch
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import load_dataset

CACHE_KEYS = ("tokens", "labels", "made_by")
TOKENIZERS = {}  # model kind in a checkpoint -> class with from_checkpoint(); filled by register_tokenizer


def register_tokenizer(kind: str, cls):
    TOKENIZERS[kind] = cls


def tokenizer_checkpoint(path) -> Path:
    """A run folder or a checkpoint file -> the checkpoint file, with an error that says how to make it."""
    path = Path(path)
    ckpt = path / "ckpt.pt" if path.is_dir() or not path.suffix else path
    if not ckpt.exists():
        from .recipes import RECIPES  # here, not at the top: recipes imports the training loop, which imports us
        how = (f"`python -m minivar train {ckpt.parent.name}`" if ckpt.parent.name in RECIPES else
               "`python -m minivar train emoji-vqvae-l2` (`emoji-msvq` for VAR)")
        raise FileNotFoundError(f"no tokenizer checkpoint at {ckpt}: train it first, e.g. {how}, "
                                f"or point --set tokenizer=... at a run folder")
    return ckpt


def load_tokenizer(path, map_location="cpu"):
    """The frozen tokenizer of a run (eval mode, no gradients)."""
    ckpt_path = tokenizer_checkpoint(path)
    kind = load_checkpoint(ckpt_path, map_location)["config"].get("model")
    if kind not in TOKENIZERS:
        raise ValueError(f"{ckpt_path} holds a {kind!r} model, not a tokenizer ({', '.join(TOKENIZERS)})")
    model = TOKENIZERS[kind].from_checkpoint(ckpt_path, map_location)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def tokenize_images(tokenizer, images: torch.Tensor) -> torch.Tensor:
    """Images (B, 3, H, W) -> flat tokens (B, L): raster order, or all scales coarsest first for VAR."""
    return tokenizer.encode(images).flatten(1)  # MultiScaleVQVAE.encode already flattens its scales


@torch.no_grad()
def tokenize_dataset(tokenizer, dataset, flip=False, batch_size=256, device="cpu", progress=True, desc="tokenizing"):
    """-> tokens (N or 2N, L) int16/int32 and labels; with flip=True every image's mirror image follows."""
    tokens, labels = [], []
    for images, y in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc, disable=not progress, leave=False):
        images = images.to(device)
        batch = [tokenize_images(tokenizer, images)]
        if flip:
            batch.append(tokenize_images(tokenizer, images.flip(-1)))
        tokens += batch
        labels += [y] * len(batch)
    dtype = torch.int16 if tokenizer.cfg.codebook_size <= 2**15 else torch.int32  # 4x smaller than int64
    return torch.cat(tokens).to("cpu", dtype), torch.cat(labels).long()


def fingerprint(ckpt: dict) -> str:
    """Which tokenizer weights a checkpoint holds: its step and a checksum of every weight (two runs that
    stopped at the same step with other settings differ in the checksum)."""
    total = sum(float(t.double().abs().sum()) for t in ckpt["model"].values() if t.is_floating_point())
    return f"step {ckpt['step']}, |w| {total:.9e}"


def token_dataset(tokenizer_path, dataset: str, split: str, image_size: int = 32, root=None, flip=True,
                  device="cpu", progress=True) -> TensorDataset:
    """The (tokens (L,) long, label) dataset of `split`, tokenized once and cached beside the tokenizer.
    Flipped copies are added to the training split only (flip=True)."""
    ckpt_path = tokenizer_checkpoint(tokenizer_path)
    flip = flip and split == "train"
    cache = ckpt_path.parent / "tokens" / f"{dataset}_{split}_{image_size}{'_flip' if flip else ''}.pt"
    made_by = fingerprint(load_checkpoint(ckpt_path))
    if cache.exists():
        try:
            saved = load_checkpoint(cache, required=CACHE_KEYS)
        except CheckpointError:  # a damaged cache is only lost time: build it again
            saved = {"made_by": None}
        if saved["made_by"] == made_by:
            return TensorDataset(saved["tokens"].long(), saved["labels"])
    tokenizer = load_tokenizer(ckpt_path, device)
    if tokenizer.cfg.image_size != image_size:
        raise ValueError(f"the tokenizer at {ckpt_path} takes {tokenizer.cfg.image_size}px images, the generator "
                         f"{image_size}px; set the generator's image_size to {tokenizer.cfg.image_size}")
    images = load_dataset(dataset, split, image_size=image_size, root=root)
    tokens, labels = tokenize_dataset(tokenizer, images, flip, device=device, progress=progress,
                                      desc=f"tokenizing {dataset}/{split}")
    save_checkpoint({"tokens": tokens, "labels": labels, "made_by": made_by}, cache)
    return TensorDataset(tokens.long(), labels)


def _register_builtin():
    from .autoencoder import VQVAE
    from .msvq import MultiScaleVQVAE
    register_tokenizer("vqvae", VQVAE)
    register_tokenizer("msvqvae", MultiScaleVQVAE)


_register_builtin()

__all__ = ["load_tokenizer", "tokenize_images", "tokenize_dataset", "token_dataset", "register_tokenizer",
           "tokenizer_checkpoint"]
