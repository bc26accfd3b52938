"""The token cache at CIFAR-10 and ImageNet-64 scale: how fast a frozen tokenizer encodes on this machine, what the
cache costs on disk and in memory for the whole datasets, and that a killed build goes on where it stopped.

    python benchmarks/token_cache.py                       # the six GPU tokenizer recipes, random weights, CPU
    python benchmarks/token_cache.py --recipes cifar10-vqvae --images 128 --no-kill --out /tmp/tc   # a quick look

For each tokenizer recipe it writes `--images` random training images in the dataset's official on-disk format
(what the download unpacks), builds the cache (every image and its mirror image, as a generator's run does) and
times it, then reads every row once in shuffled batches of 256 through a DataLoader, as training does. Memory is the
process's anonymous resident memory (RssAnon: what it holds itself; the pages of a memory-mapped file are the OS's
page cache, which it may drop at any time), sampled every 10 ms; "held" is its peak above the level before the
build. The whole-dataset columns scale the measured rate and row size to 50,000 CIFAR-10 and 1,281,167 ImageNet-64
training images (x2 rows with the mirror images), beside what the earlier cache (one file, loaded whole, integer codes
widened to int64) held in memory. The kill check (cifar10-vqvae) runs a build in a child process, kills it with
SIGKILL once it has saved a chunk, and finishes it here: the rows must equal an uninterrupted build's.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import torch
from common import RESULTS, record
from torch.utils.data import DataLoader

from minivar import recipes
from minivar.data import StepBatches, write_official_format
from minivar.models import build
from minivar.token_cache import token_dataset

TOKENIZERS = ["cifar10-vqvae", "cifar10-msvq", "cifar10-kl", "imagenet64-vqvae", "imagenet64-msvq", "imagenet64-kl"]
FULL = {"cifar10": 50_000, "imagenet64": 1_281_167}  # training images of the real datasets


def rss_anon() -> int:
    """Bytes of anonymous resident memory of this process (Linux); 0 where /proc is missing."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class PeakMemory:
    """`with PeakMemory() as m: ...` -> m.held: the peak RssAnon above its level at entry, sampled every 10 ms."""

    def __enter__(self):
        self.start = self.peak = rss_anon()
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, rss_anon())
            time.sleep(0.01)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_anon())
        self.held = self.peak - self.start


def tokenizer(name: str):
    cfg = recipes.get(name)
    torch.manual_seed(0)
    return build(cfg.model, cfg.model_config).eval(), cfg


def measure(name: str, images: int, work: Path, batch_size: int) -> dict:
    model, cfg = tokenizer(name)
    root = work / cfg.dataset
    if not root.exists():
        write_official_format(cfg.dataset, root, images, 16)
    kw = dict(root=root, progress=False, batch_size=batch_size, chunk=4 * batch_size)
    token_dataset(model, cfg.dataset, "test", work / "tokens" / name, flip=False, **kw)  # warm-up: 16 images
    with PeakMemory() as build_mem:
        t0 = time.perf_counter()
        cache = token_dataset(model, cfg.dataset, "train", work / "tokens" / name, flip=True, **kw)
        seconds = time.perf_counter() - t0
    rows, row_bytes = len(cache), cache.codes[0].nbytes
    assert rows == 2 * images, (rows, images)
    loader = DataLoader(cache, batch_sampler=StepBatches(rows, min(256, rows), seed=0))
    with PeakMemory() as read_mem:
        t0, steps = time.perf_counter(), max(1, rows // min(256, rows))
        for _, batch in zip(range(steps), loader):
            codes = batch[0]
        read_seconds = time.perf_counter() - t0
    full = FULL[cfg.dataset]
    wide = row_bytes * (8 // cache.codes.dtype.itemsize if cache.codes.dtype.kind == "i" else 1)  # int64 in RAM
    return {"recipe": name, "dataset": cfg.dataset, "images": images, "row_shape": "x".join(map(str, codes.shape[1:])),
            "dtype": cache.codes.dtype.name, "row_bytes": row_bytes,
            "encode_img_per_s": round(images / seconds, 1),  # each image encoded twice (itself and its mirror)
            "build_held_mib": round(build_mem.held / 2**20, 1), "read_rows_per_s": round(steps * 256 / read_seconds),
            "read_held_mib": round(read_mem.held / 2**20, 1),
            "full_images": full, "full_encode_hours_here": round(full / (images / seconds) / 3600, 2),
            "full_disk_gib": round(2 * full * row_bytes / 2**30, 2),
            "full_labels_mib": round(2 * full * 8 / 2**20, 1),  # the only part of the set held in memory
            "old_cache_ram_gib": round(2 * full * wide / 2**30, 2)}


def kill_and_resume(work: Path, images: int) -> dict:
    """Build cifar10-vqvae's cache in a child process, SIGKILL it after its first saved chunk, finish it here."""
    name, batch = "cifar10-vqvae", 32
    model, cfg = tokenizer(name)
    root = work / "kill" / cfg.dataset
    write_official_format(cfg.dataset, root, images, 16)
    kw = dict(root=root, progress=False, batch_size=batch, chunk=batch)
    whole = token_dataset(model, cfg.dataset, "train", work / "kill" / "whole", **kw)
    folder = work / "kill" / "killed"
    meta_file = folder / f"{cfg.dataset}_train_32_flip" / "meta.json"
    child = subprocess.Popen([sys.executable, __file__, "--child", str(folder), str(root), str(batch)])
    while child.poll() is None:
        try:
            if json.loads(meta_file.read_text())["done"] > 0:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_at_kill = json.loads(meta_file.read_text())["done"]
    t0 = time.perf_counter()
    resumed = token_dataset(model, cfg.dataset, "train", folder, **kw)
    same = torch.equal(resumed.all_codes(), whole.all_codes()) and torch.equal(resumed.labels, whole.labels)
    print(f"kill -9 after {done_at_kill} of {images} images saved; finished the other {images - done_at_kill} in "
          f"{time.perf_counter() - t0:.1f} s; rows equal to an uninterrupted build: {same}")
    if not same:
        raise SystemExit("the resumed cache differs from an uninterrupted build")
    return {"recipe": name, "dataset": cfg.dataset, "images": images, "killed_after_images": done_at_kill,
            "resumed_equal": same}


def child(folder, root, batch):
    """The build the kill check kills (run as its own process)."""
    model, cfg = tokenizer("cifar10-vqvae")
    token_dataset(model, cfg.dataset, "train", folder, root=Path(root), progress=False, batch_size=int(batch),
                  chunk=int(batch))


def readme_paragraph(rows: dict) -> str:
    """What the README says of the cache at full scale, from recorded rows (its test compares the two)."""
    msvq, kl, vq = rows["imagenet64-msvq"], rows["imagenet64-kl"], rows["cifar10-vqvae"]
    rates = [float(r["encode_img_per_s"]) for r in rows.values()]
    text = (f"The cache over ImageNet-64's {int(kl['full_images']):,} training images and their mirrors takes "
            f"{float(msvq['full_disk_gib']):.1f} GiB on disk for `imagenet64-msvq`'s tokens and "
            f"{float(kl['full_disk_gib']):.1f} GiB for `imagenet64-kl`'s latents, read through memory maps: the "
            f"process holds only the labels ({float(kl['full_labels_mib']):.0f} MiB) and the batch at hand, where the "
            f"earlier cache held {float(msvq['old_cache_ram_gib']):.1f} and {float(kl['old_cache_ram_gib']):.1f} GiB "
            f"in memory; CIFAR-10's takes {float(vq['full_disk_gib']) * 1024:.0f} MiB for `cifar10-vqvae`. On this "
            f"2-core CPU a tokenizer encodes {min(rates):.0f}-{max(rates):.0f} images/s, so a whole ImageNet-64 "
            f"cache is a GPU's job (the rates above). A build that is killed (`kill -9` in `python "
            f"benchmarks/token_cache.py`, which records all of this) goes on from its last saved chunk and ends with "
            f"the rows an uninterrupted build writes.")
    return textwrap.fill(text, 118, break_on_hyphens=False)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(*sys.argv[2:5])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--recipes", nargs="+", default=TOKENIZERS, choices=TOKENIZERS)
    p.add_argument("--images", type=int, default=256, help="training images written per dataset")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--no-kill", action="store_true", help="skip the kill-and-resume check")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.recipes:
            rows.append(measure(name, args.images, Path(tmp), args.batch_size))
            r = rows[-1]
            print(f"{name:>17}  {r['row_shape']:>9} {r['dtype']:>7}  encode {r['encode_img_per_s']:>6} img/s  held "
                  f"{r['build_held_mib']:>6} MiB building, {r['read_held_mib']:>5} MiB reading  |  all "
                  f"{r['full_images']:,}: {r['full_encode_hours_here']} h here, {r['full_disk_gib']} GiB on disk, "
                  f"{r['full_labels_mib']} MiB labels in RAM (the old cache held {r['old_cache_ram_gib']} GiB)")
        kill = None if args.no_kill else kill_and_resume(Path(tmp), args.images)
    torch_threads = torch.get_num_threads()
    print(f"({torch_threads} threads)")
    record(args.out / "token_cache.csv", rows, torch.device("cpu"))
    if kill:
        record(args.out / "token_cache_resume.csv", [kill], torch.device("cpu"))


if __name__ == "__main__":
    main()
