"""Checkpoints: written atomically, loaded safely.

A checkpoint is a plain dict of tensors, numbers, strings and lists (model and optimizer state, step,
config, RNG state), so `torch.load(weights_only=True)` can read it without unpickling arbitrary code.
It is written to a temporary file in the same folder, flushed to disk, then renamed over the old one:
a run killed mid-write leaves the previous checkpoint intact, never a half-written file.
"""

import os
import pickle
import zipfile
from pathlib import Path

import torch


class CheckpointError(RuntimeError):
    pass


def save_checkpoint(obj: dict, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path, map_location="cpu", required=("model", "config")) -> dict:
    """torch.load(weights_only=True) with errors that say what to do; `required`: the keys the dict must hold."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (python -m minivar train <recipe>)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "Unsupported global" not in str(e):  # not a refused class: the bytes themselves are bad
            raise CheckpointError(f"{path} is corrupt or truncated and cannot be loaded ({type(e).__name__}: {e}). "
                                  f"Delete it and train again, or point to an earlier checkpoint") from e
        raise CheckpointError(f"{path} holds Python objects that safe loading refuses (weights_only=True allows "
                              f"tensors, numbers, strings, lists and dicts): it was not written by minivar, or it "
                              f"was tampered with ({str(e).split('WeightsUnpickler error: ')[-1][:200]})") from e
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is corrupt or truncated and cannot be loaded ({type(e).__name__}: {e}). "
                              f"Delete it and train again, or point to an earlier checkpoint") from e
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in required):
        raise CheckpointError(f"{path} is not a minivar checkpoint (expected a dict with {', '.join(required)})")
    return ckpt


def rng_state() -> dict:
    """The random number generators' states (CPU, and every CUDA device), to save with a checkpoint."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict):
    """Restore rng_state(): a resumed run then draws the same dropout masks as an uninterrupted one."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
