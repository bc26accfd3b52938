"""Checkpoints: written atomically, loaded safely; a run's metrics log, read back after a crash; and the stop
(Ctrl-C, SIGTERM) that the training loop turns into a saved checkpoint.

A checkpoint is a plain dict of tensors, numbers, strings and lists (model and optimizer state, step,
config, RNG state), so `torch.load(weights_only=True)` can read it without unpickling arbitrary code.
It is written to a temporary file in the same folder, flushed to disk, then renamed over the old one:
a run killed mid-write leaves the previous checkpoint intact, never a half-written file (and the next save
removes the temporary file such a kill left behind).
"""

import hashlib
import json
import math
import os
import pickle
import signal
import threading
import zipfile
from pathlib import Path

import torch

from .files import write_json, write_text


class CheckpointError(RuntimeError):
    pass


def state_checksum(state: dict) -> str:
    """sha256 (16 hex digits) of a state dict's tensors: names, shapes, dtypes and bytes, in name order."""
    h = hashlib.sha256()
    for name, t in sorted(state.items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()[:16]


def weights_of(ckpt: dict) -> dict:
    """The tensors a checkpoint's weights checksum covers: the model's, and their moving average if kept."""
    return {**{f"model.{k}": v for k, v in ckpt["model"].items()},
            **{f"ema.{k}": v for k, v in (ckpt.get("ema") or {}).items()}}


def save_checkpoint(obj: dict, path) -> Path:
    """Write obj atomically; a model's checkpoint also carries the checksum of its weights, which load_checkpoint
    verifies (a flipped bit or a bad copy is then named instead of loaded)."""
    path = Path(path)
    if isinstance(obj.get("model"), dict):
        obj = {**obj, "weights_sha256": state_checksum(weights_of(obj))}
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.name}.tmp*"):  # left by a process killed while it was saving
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # atomic on POSIX and Windows: readers see the old file or the new one
    except (OSError, RuntimeError) as e:  # torch reports a full disk as a RuntimeError of its zip writer
        kept = "the previous checkpoint is kept" if path.exists() else "nothing was saved"
        raise CheckpointError(f"could not write {path}: disk full or write failed ({str(e).splitlines()[0][:160]}); "
                              f"{kept}. Free some space (or choose another out_dir) and resume") from None
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
        detail = next((line for line in str(e).splitlines() if "nsupported" in line), str(e)).strip()[:200]
        if "unsupported global" not in str(e).lower():  # not a refused class: the bytes themselves are bad
            raise CheckpointError(f"{path} is corrupt or truncated (or not a checkpoint at all) and cannot be loaded "
                                  f"({detail}). Delete it and train again, or point to an earlier checkpoint") from e
        raise CheckpointError(f"{path} was refused as unsafe: it holds Python objects that safe loading refuses "
                              f"(weights_only=True allows tensors, numbers, strings, lists and dicts), so it was not "
                              f"written by minivar, or it was tampered with. Nothing in it was run. ({detail})"
                              ) from e  # (torch words it "unsupported GLOBAL posix.system": compare case-blind)
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as e:
        text = str(e)
        if isinstance(e, RuntimeError) and any(w in text for w in ("CUDA", "MPS", "device")):  # the place, not the file
            raise CheckpointError(f"{path} cannot be loaded onto {map_location}: {text.splitlines()[0][:200]}. The "
                                  f"file is fine; choose a device this machine has (--device cpu, or auto)") from None
        if isinstance(e, OSError) and "zip" not in text.lower():  # (BadZipFile is no OSError: it is the bytes)
            raise CheckpointError(f"{path} cannot be read ({e.strerror or text}); check the path and its "
                                  f"permissions") from None
        raise CheckpointError(f"{path} is corrupt or truncated and cannot be loaded ({type(e).__name__}: "
                              f"{text.splitlines()[0][:200] if text else ''}). Point to an earlier checkpoint, or "
                              f"delete it and train again") from e
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in required):
        raise CheckpointError(f"{path} is not a minivar checkpoint (expected a dict with {', '.join(required)})")
    expected = ckpt.get("weights_sha256")
    if expected is not None and isinstance(ckpt.get("model"), dict) and state_checksum(weights_of(ckpt)) != expected:
        raise CheckpointError(f"{path} is damaged: its weights no longer match the checksum saved with them (a "
                              f"flipped bit, a bad copy). Point to an earlier checkpoint or a good copy, or train "
                              f"again")
    return ckpt


# The shipped emoji checkpoints (minivar.pretrained): NAME.pt beside its manifest NAME.json, inside the package so
# they install with it. Anything that takes a run folder also takes "pretrained:NAME".
SHIPPED_DIR = Path(__file__).resolve().parent / "weights"
PRETRAINED = "pretrained:"


def shipped_names(folder=None) -> list:
    """The names of the shipped checkpoints (those with a manifest)."""
    return sorted(p.stem for p in Path(folder or SHIPPED_DIR).glob("*.json"))


def shipped_manifest(name: str, folder=None) -> dict:
    """The manifest of a shipped checkpoint; an unknown name lists the known ones."""
    name = name.removeprefix(PRETRAINED)
    path = Path(folder or SHIPPED_DIR) / f"{name}.json"
    if not path.is_file():
        known = ", ".join(shipped_names(folder)) or "none (this copy of minivar ships without weights)"
        raise FileNotFoundError(f"no shipped checkpoint named {name!r}; the shipped ones: {known}")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"the manifest {path} is damaged ({e}); reinstall minivar (pip install -e .)") from None
    fields = {"file": str, "sha256": str, "kind": str}
    bad = [k for k, t in fields.items() if not isinstance(info, dict) or not isinstance(info.get(k), t)]
    if bad or len(info["sha256"]) != 64:
        raise CheckpointError(f"the manifest {path} is not a shipped model's manifest (it lacks a valid "
                              f"{', '.join(bad) or 'sha256'}): restore it with `git checkout -- {path}` or reinstall "
                              f"minivar")
    return info


def file_sha256(path) -> str:
    """The sha256 of a file's bytes (hex), read a megabyte at a time."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shipped_checkpoint(name: str, folder=None) -> Path:
    """"pretrained:NAME" (or NAME) -> the shipped NAME.pt, after checking its sha256 against the manifest: a file
    that was damaged, truncated, or replaced without its manifest is refused before it is read."""
    manifest = shipped_manifest(name, folder)
    path = Path(folder or SHIPPED_DIR) / manifest["file"]
    if not path.is_file():
        raise FileNotFoundError(f"the shipped checkpoint {path} is missing (its manifest is there): reinstall minivar, "
                                f"or in a git checkout restore it with `git checkout -- {path}`")
    digest = file_sha256(path)
    if digest != manifest["sha256"]:
        raise CheckpointError(f"{path} does not match its manifest (sha256 {digest[:12]}... instead of "
                              f"{manifest['sha256'][:12]}...): the file is damaged or was replaced. Reinstall "
                              f"minivar or restore it with `git checkout -- {path}`")
    return path


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


def read_log(path, upto_step=None) -> list:
    """The records of a run's metrics.jsonl (one JSON object per line), up to `upto_step`. A last line cut off by a
    crash is skipped; a damaged line elsewhere is an error naming it."""
    path = Path(path)
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    records = []
    for i, line in enumerate(lines):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # half-written when the run died: the checkpoint is older anyway
                break
            raise CheckpointError(f"{path} line {i + 1} is not a JSON record ({line[:60]!r}...): delete that line "
                                  f"and resume") from None
    return [r for r in records if upto_step is None or r["step"] <= upto_step]


def prepare_run_dir(run_dir, config: dict, step: int):
    """Create a run's folder (a clear error where it cannot be written), write its config.json, and keep the log
    lines up to `step`, the checkpoint a resumed run continues from (0: a new run, an empty log)."""
    run_dir = Path(run_dir)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "config.json", config)
    except OSError as e:
        raise ValueError(f"cannot write the run folder {run_dir} ({e.strerror or e}); choose another place with "
                         f"--set out_dir=...") from None
    log = run_dir / "metrics.jsonl"
    write_text(log, "".join(json.dumps(r) + "\n" for r in read_log(log, upto_step=step)))


# the fields a resumed run may change: when it stops, how often it reports and saves, where it runs
RESUMABLE = {"max_steps", "minutes", "eval_every", "ckpt_every", "ckpt_minutes", "log_every", "eval_batches",
             "num_workers", "device", "amp", "grad_accum", "name", "out_dir"}  # (a run folder may be moved or renamed)


def check_resume(saved: dict, asked: dict, run_dir):
    """A resumed run keeps what it learns from (learning rate, seed, batch, data, ...), or its records would describe
    neither run; its budget and bookkeeping (RESUMABLE) may change, and config.json then records them. The model
    and its tokenizer are checked by the loop itself (their configs and weights)."""
    def plain(config):  # tuples as lists: a checkpoint may hold either
        return json.loads(json.dumps(config))
    asked, saved = plain(asked), plain(saved)
    changed = [k for k in asked if k in saved and k not in RESUMABLE
               and k not in ("model", "model_config", "tokenizer") and saved[k] != asked[k]]
    if changed:
        was = ", ".join(f"{k}={saved[k]!r}" for k in changed)
        now = ", ".join(f"{k}={asked[k]!r}" for k in changed)
        raise ValueError(f"{run_dir} was trained with {was}; this resume asks {now}. A resumed run keeps what it "
                         f"learns from (only {', '.join(sorted(RESUMABLE))} may change): resume without those "
                         f"--set options, or start a new run with them (--set name=...)")


class TrainingDiverged(RuntimeError):
    """The loss or its gradient stopped being a finite number; the last checkpoint (finite) is kept."""


def diverged(step: int, records: list, ckpt_path: Path, saved_step: int, lr: float) -> TrainingDiverged:
    """The sentence a diverged run stops with: which step, the last finite loss, what is kept, the usual causes."""
    finite = [r for r in records if math.isfinite(r.get("loss", math.nan))]
    last = (f"the last finite loss logged was {finite[-1]['loss']:.4g} at step {finite[-1]['step']}" if finite else
            "no finite loss was logged")
    kept = f"{ckpt_path} still holds step {saved_step}, from before it" if ckpt_path.exists() else \
        "no checkpoint was saved before it"
    return TrainingDiverged(f"training diverged at step {step}: the loss or its gradient is no longer a finite number "
                            f"({last}); {kept}. Usual causes: a learning rate too high (lr={lr:g}; try a tenth of "
                            f"it), half-precision overflow (--set amp=false), or a NaN/inf in the data. Train again "
                            f"with the fix under a new name (--set name=...)")


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped training; the finished steps are saved. The message says how to go on."""

    def __init__(self, message, signum=signal.SIGINT):
        super().__init__(message)
        self.signum = signum


def stopped(signum, ckpt_path: Path, saved_step: int) -> TrainingInterrupted:
    """The one line a stopped run ends with: what is saved and how to go on."""
    what = "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"
    if not ckpt_path.exists():
        return TrainingInterrupted(f"{what} before the first checkpoint: nothing saved, start the run again", signum)
    return TrainingInterrupted(f"{what}: {ckpt_path} holds step {saved_step}; continue with --resume (resume=True)",
                               signum)


class StopSignals:
    """While training, SIGTERM (a cluster's pre-emption, `docker stop`) and SIGINT (Ctrl-C, a notebook's stop button)
    only ask the loop to stop once the step in progress is finished: weights, optimizer, data position and random
    state are then all at a step's end, so the saved run resumes exactly. A second signal stops at once (a step
    that hangs). Handlers are installed in the main thread only (the only one where Python receives signals)."""

    def __init__(self):
        self.signum, self.previous = None, {}

    def install(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self.ask) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def ask(self, signum, frame):
        if self.signum is not None:  # asked twice: do not wait for the step
            raise TrainingInterrupted("asked twice", signum)
        self.signum = signum

    def restore(self):
        for s, handler in self.previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
