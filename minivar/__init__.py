"""minivar: visual autoregressive image generation rebuilt from its parts, one small module per idea.

The module map lives in the README; the course walks it in `notebooks/`.

    model = minivar.load("runs/emoji-var")            # any checkpoint; a generator comes with its tokenizer
    images = model.tokenizer.decode(model.generate(torch.arange(9)))
"""

import os

import torch

__version__ = "0.1.0"


def device() -> torch.device:
    """The best device here: cuda > mps > cpu. Everything in minivar also runs on the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def smoke() -> bool:
    """True when MINIVAR_SMOKE=1: notebooks and loops shrink so they run in seconds (CI, quick checks)."""
    return os.environ.get("MINIVAR_SMOKE", "0") not in ("", "0", "false", "False")


# The registry of model kinds (models.MODELS): importing a model's module registers it. A new model is its
# own file plus its name on this line.
from . import autoencoder, flowar, kl_autoencoder, maskgit_vq, msvq, rar, raster_ar, var  # noqa: E402, F401
from .models import load  # noqa: E402, F401
