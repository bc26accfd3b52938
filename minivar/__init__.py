"""minivar: visual autoregressive image generation rebuilt from its parts, one small module per idea.

The module map lives in the README; the course walks it in `notebooks/`.
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
