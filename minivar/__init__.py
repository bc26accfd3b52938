"""minivar: visual autoregressive image generation rebuilt from its parts, one small module per idea.

The module map lives in the README; the course walks it in `notebooks/`.

    model = minivar.load("runs/emoji-var")            # any checkpoint; a generator comes with its tokenizer
    images = model.tokenizer.decode(model.generate(torch.arange(9)))
"""

import ctypes
import os
import sys

import torch

__version__ = "0.1.0"


def steady_allocator() -> bool:
    """Fix glibc malloc's mmap and trim thresholds (32 MiB, 256 MiB), on Linux, unless MINIVAR_MALLOC=0.

    Left to itself, glibc serves a block above its mmap threshold from fresh pages, returns it to the OS when freed,
    and moves the threshold with what it has seen freed. A sampler that keeps a few large buffers alive for the
    whole run (the static KV cache) then gets every step's temporaries from fresh pages (twice the page faults of
    a cache grown by torch.cat). With the thresholds fixed, temporaries are reused from the heap, and sampling and
    training on the CPU are faster (`MINIVAR_MALLOC=0 python benchmarks/sampling_speed.py` against the same without
    it; PyTorch's CPU tuning guide makes the same point with jemalloc or tcmalloc). -> whether they were set."""
    if os.environ.get("MINIVAR_MALLOC", "1") in ("0", "false", "False") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # musl or another libc: leave it be
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt's parameter numbers (malloc.h)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, 32 << 20)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 256 << 20))


STEADY_ALLOCATOR = steady_allocator()  # set at import, before any large tensor exists


def device() -> torch.device:
    """The best device here: cuda > mps > cpu. Everything in minivar also runs on the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def device_named(name: str) -> torch.device:
    """"auto" (the best here), "cpu", "cuda", "cuda:N" or "mps" -> the device, after checking this machine has it:
    a missing one is named now, with the way out, not as an error from deep inside loading or training."""
    if name == "auto":
        return device()
    if name not in ("cpu", "cuda", "mps") and not (name.startswith("cuda:") and name[5:].isdigit()):
        raise ValueError(f"unknown device {name!r}; choose auto, cpu, cuda, cuda:N or mps")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {name!r}: this machine has no CUDA GPU that torch can use; choose cpu (or auto)")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s), numbered from 0")
    if name == "mps" and not (getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()):
        raise ValueError("device 'mps': this machine has no Apple GPU that torch can use; choose cpu (or auto)")
    return torch.device(name)


def per_dataset(dataset: str, **choices):
    """What a notebook uses on each dataset it runs on (its parameters cell: the recipes, image size...) ->
    choices[dataset]. The keywords are the datasets the notebook offers; any other is an error that lists them."""
    if dataset not in choices:
        raise ValueError(f"this notebook runs on {', '.join(choices)}; got DATASET = {dataset!r} (set DATASET in "
                         f"the parameters cell to one of those)")
    return choices[dataset]


def smoke() -> bool:
    """True when MINIVAR_SMOKE=1: notebooks and loops shrink so they run in seconds (CI, quick checks)."""
    return os.environ.get("MINIVAR_SMOKE", "0") not in ("", "0", "false", "False")


# The registry of model kinds (models.MODELS): importing a model's module registers it. A new model is its
# own file plus its name on this line.
from . import autoencoder, flowar, kl_autoencoder, maskgit_vq, msvq, rar, raster_ar, text_to_image, var  # noqa: E402, F401
from .models import load  # noqa: E402, F401
