"""Training throughput (images/s) and peak memory of recipes' training steps, on this machine.

    python benchmarks/train_throughput.py                      # every emoji-* recipe, CPU
    python benchmarks/train_throughput.py cifar10-vqvae --device cuda

Times `--steps` optimizer steps (forward, backward, AdamW) on random images (generators: random token maps)
of the recipe's shape after `--warmup` untimed ones, prints a table and appends it to
benchmarks/results/train_throughput.csv together with the command, the machine and the date.
Wall time is measured here, never asserted in a test.
"""

import argparse
import csv
import datetime
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivar import recipes  # noqa: E402
from minivar.train import GeneratorLoss, attach_tokenizer, build_model, compute_loss, is_generator  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "train_throughput.csv"


def measure(name, device, steps, warmup, batch_size=None):
    cfg = recipes.get(name)
    B = batch_size or cfg.batch_size
    torch.manual_seed(0)
    model = build_model(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    s = cfg.model_config.image_size
    images = torch.rand(B, 3, s, s, device=device) * 2 - 1
    labels = torch.zeros(B, dtype=torch.long, device=device)
    if is_generator(cfg.model):  # generators train on token maps (random ones cost the same)
        images = torch.randint(0, cfg.model_config.vocab_size, (B, cfg.model_config.seq_len), device=device)
        attach_tokenizer(model, build_model(recipes.get(Path(cfg.tokenizer).name)).to(device))  # VAR needs it
        model = GeneratorLoss(model)
    amp = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda" and cfg.amp)
    for i in range(warmup + steps):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        with amp:
            loss, _, _ = compute_loss(model, images, labels)
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
    args = p.parse_args()
    device = torch.device(args.device)
    rows = [measure(r, device, args.steps, args.warmup, args.batch_size) for r in args.recipes]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name()
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    stamp = datetime.date.today().isoformat()
    command = "python " + " ".join(sys.argv)
    print(f"{'recipe':<18} {'batch':>5} {'params':>8} {'images/s':>9} {'ms/step':>8}")
    for r in rows:
        print(f"{r['recipe']:<18} {r['batch']:>5} {r['params_M']:>7}M {r['images_per_s']:>9} {r['ms_per_step']:>8}")
    print(f"peak memory {peak_mb:.0f} MB · {machine} · torch {torch.__version__} · {stamp}")
    new = not RESULTS.exists()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["date", "command", "machine", "torch", "device", *rows[0], "peak_mb"])
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"date": stamp, "command": command, "machine": machine, "torch": torch.__version__,
                        "device": str(device), **r, "peak_mb": round(peak_mb)})


if __name__ == "__main__":
    main()
