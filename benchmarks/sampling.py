"""Sampling speed of the generators: images/s and tokens/s, with and without the KV cache.

    python benchmarks/sampling.py                      # emoji-raster's model, CPU, fp32, batch 1 and 64
    python benchmarks/sampling.py --recipes cifar10-raster --device cuda --batches 1 64 256

Builds each recipe's generator (random weights: the cost of a forward pass does not depend on their values),
generates with classifier-free guidance (`--cfg`, default 2: the batch runs twice, as in real use), and times
`--repeats` runs after one untimed warm-up; the median is reported. "steps" is the number of sequential
forward passes a sample needs. Prints a table and appends it to benchmarks/results/sampling.csv with the
command, the machine and the date. Wall time is measured here, never asserted in a test.
"""

import argparse
import csv
import datetime
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from minivar import recipes  # noqa: E402
from minivar.train import build_model  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "sampling.csv"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_generate(model, batch, device, repeats, **kw):
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    times = []
    for i in range(repeats + 1):
        g = torch.Generator(device).manual_seed(i)
        sync(device)
        t0 = time.perf_counter()
        model.generate(labels, generator=g, **kw)
        sync(device)
        if i:  # the first run warms up allocators and kernels
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(name, device, batches, repeats, cfg_scale):
    cfg = recipes.get(name)
    torch.manual_seed(0)
    model = build_model(cfg).to(device).eval()
    params = sum(p.numel() for p in model.parameters())
    tokens = model.cfg.seq_len
    rows = []
    for batch in batches:
        seconds = {}
        for cache in (True, False):
            seconds[cache] = time_generate(model, batch, device, repeats, cfg_scale=cfg_scale, use_cache=cache)
            rows.append({"recipe": name, "model": cfg.model, "params_M": round(params / 1e6, 2), "batch": batch,
                         "kv_cache": cache, "cfg": cfg_scale, "tokens_per_image": tokens, "steps": tokens,
                         "seconds": round(seconds[cache], 3), "images_per_s": round(batch / seconds[cache], 2),
                         "tokens_per_s": round(batch * tokens / seconds[cache], 1)})
        rows[-2]["speedup_vs_no_cache"] = round(seconds[False] / seconds[True], 2)
        rows[-1]["speedup_vs_no_cache"] = 1.0
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="*", default=["emoji-raster"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cfg", type=float, default=2.0)
    args = p.parse_args()
    device = torch.device(args.device)
    rows = [r for name in args.recipes for r in measure(name, device, args.batches, args.repeats, args.cfg)]
    machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    if device.type == "cuda":
        machine = torch.cuda.get_device_name()
    stamp = datetime.date.today().isoformat()
    command = "python " + " ".join(sys.argv)
    print(f"{'recipe':<16} {'params':>7} {'batch':>5} {'cache':>5} {'steps':>5} {'seconds':>8} {'images/s':>9} "
          f"{'tokens/s':>9} {'speedup':>7}")
    for r in rows:
        print(f"{r['recipe']:<16} {r['params_M']:>6}M {r['batch']:>5} {'yes' if r['kv_cache'] else 'no':>5} "
              f"{r['steps']:>5} {r['seconds']:>8} {r['images_per_s']:>9} {r['tokens_per_s']:>9} "
              f"{r['speedup_vs_no_cache']:>6}x")
    print(f"fp32, cfg {args.cfg} · {machine} · torch {torch.__version__} · {stamp}")
    new = not RESULTS.exists()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    fields = ["date", "command", "machine", "torch", "device", *rows[0].keys()]
    with open(RESULTS, "a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if new:
            w.writeheader()
        for r in rows:
            w.writerow({"date": stamp, "command": command, "machine": machine, "torch": torch.__version__,
                        "device": str(device), **r})


if __name__ == "__main__":
    main()
