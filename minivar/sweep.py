"""The codebook experiment of LlamaGen / ViT-VQGAN, as a resumable sweep.

    python -m minivar sweep codebook --dataset emoji            # CPU: 24 cells, about 40 minutes on 2 cores
    python -m minivar sweep codebook --dataset cifar10          # one GPU

Every cell trains the dataset's VQ-VAE recipe for the same number of steps with one codebook size, code
dimension and l2 setting, then measures on the test split: PSNR, SSIM, codebook usage, perplexity and
fd_emoji (emoji only). Each finished cell appends a row (with the command, machine and date) to
<out_dir>/codebook_sweep_<dataset>.csv (default benchmarks/results/, relative to where it runs: the repository's
recorded results when run from its root) and saves its codebook, code counts and a reconstruction strip next to
it; cells already in the CSV are skipped, so an interrupted sweep continues where it stopped.
"""

import csv
import datetime
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import recipes
from .data import load_dataset
from .metrics import evaluate_tokenizer
from .viz import save_grid

GRIDS = {  # dataset -> codebook sizes, code dims, l2 settings, steps per cell
    "emoji": dict(sizes=(64, 256, 1024, 4096), dims=(4, 16, 64), l2=(False, True), steps=150),
    "cifar10": dict(sizes=(256, 1024, 4096, 16384), dims=(4, 8, 32, 256), l2=(False, True), steps=20_000),
}
FIELDS = ["dataset", "codebook_size", "code_dim", "l2_norm", "steps", "psnr", "ssim", "usage", "perplexity",
          "fd_emoji", "train_seconds", "date", "machine", "command"]


def cell_name(size, dim, l2):
    return f"k{size}-d{dim}-{'l2' if l2 else 'plain'}"


def read_rows(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_codebook_sweep(dataset="emoji", steps=None, sizes=None, dims=None, l2=None, out_dir="benchmarks/results",
                       runs_dir="runs/sweep-codebook", progress=True) -> list:
    if dataset not in GRIDS:
        raise ValueError(f"no codebook grid for {dataset!r}; choose one of {', '.join(GRIDS)}")
    grid = GRIDS[dataset]
    steps = steps or grid["steps"]
    csv_path = Path(out_dir) / f"codebook_sweep_{dataset}.csv"
    art_dir = Path(out_dir) / f"codebook_sweep_{dataset}"
    art_dir.mkdir(parents=True, exist_ok=True)
    done = {(r["codebook_size"], r["code_dim"], r["l2_norm"], r["steps"]) for r in read_rows(csv_path)}
    machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
    if torch.cuda.is_available():
        machine = torch.cuda.get_device_name()
    cells = [(k, d, n) for n in (l2 or grid["l2"]) for d in (dims or grid["dims"]) for k in (sizes or grid["sizes"])]
    test = load_dataset(dataset, "test", image_size=32)
    loader = torch.utils.data.DataLoader(test, batch_size=128)
    picks = torch.linspace(0, len(test) - 1, 12).long().tolist()
    fixed = torch.stack([test[i][0] for i in picks])
    from .train import train
    for i, (size, dim, l2_norm) in enumerate(cells):
        key = (str(size), str(dim), str(l2_norm), str(steps))
        name = cell_name(size, dim, l2_norm)
        if key in done:
            continue
        print(f"[{i + 1}/{len(cells)}] {dataset} {name}, {steps} steps", flush=True)
        cfg = recipes.get(f"{dataset}-vqvae", [f"codebook_size={size}", f"embed_dim={dim}", f"l2_norm={l2_norm}",
                                              f"max_steps={steps}", f"name={name}", f"out_dir={runs_dir}/{dataset}",
                                              f"eval_every={steps}", f"ckpt_every={max(50, steps // 4)}",
                                              "minutes=0"])
        t0 = time.time()
        result = train(cfg, resume=True, progress=progress)
        model = result["model"]
        dev = next(model.parameters()).device
        ev = evaluate_tokenizer(model, loader, dev, fd=dataset == "emoji")
        with torch.no_grad():
            recon = model.decode(model.encode(fixed.to(dev))).float().clamp(-1, 1).cpu()
            tokens = torch.cat([model.encode(x.to(dev)).flatten().cpu() for x, _ in loader])
        save_grid(art_dir / f"{name}.png", torch.cat([fixed, recon]), nrow=len(fixed), scale=1)
        np.savez_compressed(art_dir / f"{name}.npz", codebook=model.quantizer.codes().detach().cpu().half().numpy(),
                            counts=torch.bincount(tokens, minlength=size).numpy())
        row = {"dataset": dataset, "codebook_size": size, "code_dim": dim, "l2_norm": l2_norm, "steps": steps,
               **{k: round(v, 4) for k, v in ev.items()}, "train_seconds": round(result["elapsed"], 1),
               "date": datetime.date.today().isoformat(), "machine": machine,
               "command": "python -m minivar " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py")
               else "run_codebook_sweep()"}
        new = not csv_path.exists()
        with open(csv_path, "a", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=FIELDS)
            if new:
                w.writeheader()
            w.writerow({k: row.get(k, "") for k in FIELDS})
        print(f"    psnr {ev['psnr']:.2f} dB, usage {ev['usage']:.0%}, perplexity {ev['perplexity']:.0f}"
              + (f", fd_emoji {ev['fd_emoji']:.1f}" if "fd_emoji" in ev else "") + f" ({time.time() - t0:.0f} s)",
              flush=True)
    return read_rows(csv_path)
