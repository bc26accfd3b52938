"""Training throughput (images/s) and peak memory of recipes' training steps, on this machine.

    python benchmarks/train_throughput.py                      # every emoji-* recipe, CPU
    python benchmarks/train_throughput.py cifar10-vqvae --device cuda

Times `--steps` optimizer steps (the model's loss, backward, AdamW) on random images of the recipe's shape (a
generator: their codes under a randomly initialised tokenizer of its tokenizer's recipe) after `--warmup`
untimed ones, prints a table and appends it to <out>/train_throughput.csv (default benchmarks/results/) with the
command, the machine and the date. Wall time is measured here, never asserted in a test.
"""

import argparse
import resource
import time
from pathlib import Path

import torch
from common import RESULTS, build_recipe_model, record

from minivar import recipes
from minivar.token_cache import code_rows


def measure(name, device, steps, warmup, batch_size=None):
    model, cfg, tokenizer = build_recipe_model(name, device)
    model.train()
    B = batch_size or cfg.batch_size
    s = (tokenizer if tokenizer is not None else model).code_format()["image_size"]
    x = torch.rand(B, 3, s, s, device=device) * 2 - 1
    if tokenizer is not None:  # generators train on their tokenizer's codes, as the token cache stores them
        x = code_rows(tokenizer.encode(x))
    labels = torch.zeros(B, dtype=torch.long, device=device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.amp)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with amp:
            loss, _ = model.loss((x, labels), 0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    params = sum(p.numel() for p in model.parameters())
    return {"recipe": name, "batch": B, "params_M": round(params / 1e6, 2), "images_per_s": round(B * steps / dt, 1),
            "ms_per_step": round(1000 * dt / steps, 1)}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", default=[r for r in recipes.RECIPES if r.startswith("emoji")])
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results CSV (default benchmarks/results)")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = [measure(r, device, args.steps, args.warmup, args.batch_size) for r in args.recipes]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    for r in rows:
        r["peak_mb"] = round(peak_mb)
    stamp = record(args.out / "train_throughput.csv", rows, device)
    print(f"{'recipe':<18} {'batch':>5} {'params':>8} {'images/s':>9} {'ms/step':>8}")
    for r in rows:
        print(f"{r['recipe']:<18} {r['batch']:>5} {r['params_M']:>7}M {r['images_per_s']:>9} {r['ms_per_step']:>8}")
    print(f"peak memory {peak_mb:.0f} MB · {stamp['machine']} · torch {torch.__version__} · {stamp['date']}")


if __name__ == "__main__":
    main()
