"""Sampling speed of the generators: images/s and tokens/s, with and without the KV cache.

    python benchmarks/sampling.py          # emoji-raster, emoji-rar, emoji-var, emoji-flowar: CPU fp32, batch 1, 64
    python benchmarks/sampling.py --recipes cifar10-raster cifar10-var --device cuda --batches 1 64 256

Builds each recipe's generator (random weights: the cost of a forward pass does not depend on their values),
generates with classifier-free guidance (`--guidance`, default 2: the batch runs twice, as in real use), and times
`--repeats` runs after one untimed warm-up; the median is reported. "steps" is the number of sequential
forward passes a sample needs. Raster and RAR models run with and without the KV cache (RAR samples in raster
order, one token per step, like the raster model); VAR (always cached) is also
compared with the raster model at the same batch size, next to the bound raster steps / VAR steps (64 / 6 for
the emoji recipes, which have about the same number of parameters and the same final 8x8 grid).
Prints a table and appends it to <out>/sampling.csv (default benchmarks/results/) with the command, the machine
and the date. Wall time is measured here, never asserted in a test. VAR ramps its guidance over the scales,
RAR over the tokens, LlamaGen applies it to every token; the cost (a doubled batch) is the same.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import RESULTS, build_recipe_model, record

from minivar.flow_matching import time_grid


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


def measure(name, device, batches, repeats, guidance, ode_steps):
    model, cfg, _ = build_recipe_model(name, device)
    model.eval()
    if cfg.model == "flowar":
        return measure_flowar(name, model, device, batches, repeats, guidance, ode_steps)
    params = sum(p.numel() for p in model.parameters())
    tokens = model.cfg.seq_len
    multiscale = cfg.model == "var"  # one step per scale, always with its KV cache
    steps = len(model.cfg.scales) if multiscale else tokens
    rows = []
    for batch in batches:
        seconds = {}
        for cache in (True,) if multiscale else (True, False):
            kw = {} if multiscale else {"use_cache": cache}
            seconds[cache] = time_generate(model, batch, device, repeats, guidance=guidance, **kw)
            rows.append({"recipe": name, "model": cfg.model, "params_M": round(params / 1e6, 2), "batch": batch,
                         "kv_cache": cache, "guidance": guidance, "tokens_per_image": tokens, "steps": steps,
                         "seconds": round(seconds[cache], 3), "images_per_s": round(batch / seconds[cache], 2),
                         "tokens_per_s": round(batch * tokens / seconds[cache], 1), "speedup_vs_no_cache": "",
                         "speedup_vs_raster": "", "step_bound": ""})
        if not multiscale:
            rows[-2]["speedup_vs_no_cache"] = round(seconds[False] / seconds[True], 2)
    return rows


def measure_flowar(name, model, device, batches, repeats, guidance, ode_steps):
    """FlowAR: one transformer pass per scale (KV cache), then an Euler solve of `steps` head calls per scale; the
    sequential network calls are scales x (1 + steps actually taken: FlowAR's time grid runs an odd count as one
    fewer). Timed for several step counts: the speed-quality knob."""
    params = sum(p.numel() for p in model.parameters())
    K, tokens = len(model.scales), sum(s * s for s in model.scales)
    rows = []
    for batch in batches:
        for steps in ode_steps:
            seconds = time_generate(model, batch, device, repeats, guidance=guidance, sample_steps=steps)
            rows.append({"recipe": f"{name} ({steps} Euler)", "model": "flowar", "params_M": round(params / 1e6, 2),
                         "batch": batch, "kv_cache": True, "guidance": guidance, "tokens_per_image": tokens,
                         "steps": K * len(time_grid(steps)), "seconds": round(seconds, 3),
                         "images_per_s": round(batch / seconds, 2), "tokens_per_s": round(batch * tokens / seconds, 1),
                         "speedup_vs_no_cache": "", "speedup_vs_raster": "", "step_bound": ""})
    return rows


def compare_with_raster(rows):
    """Other models' rows: how much faster than the (cached) raster model at the same batch, and the step-count
    bound."""
    raster = {r["batch"]: r for r in rows if r["model"] == "raster" and r["kv_cache"]}
    for r in rows:
        if r["model"] != "raster" and r["batch"] in raster:
            ref = raster[r["batch"]]
            r["speedup_vs_raster"] = round(ref["seconds"] / r["seconds"], 2)
            r["step_bound"] = round(ref["steps"] / r["steps"], 2)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--recipes", nargs="*", default=["emoji-raster", "emoji-rar", "emoji-var", "emoji-flowar"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batches", type=int, nargs="*", default=[1, 64])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--guidance", type=float, default=2.0, help="guidance scale (1 = none: half the work)")
    p.add_argument("--ode-steps", type=int, nargs="*", default=[5, 10, 25, 50],
                   help="FlowAR: Euler steps per scale to time (default 5 10 25 50)")
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results CSV (default benchmarks/results)")
    args = p.parse_args()
    device = torch.device(args.device)
    rows = [r for name in args.recipes
            for r in measure(name, device, args.batches, args.repeats, args.guidance, args.ode_steps)]
    compare_with_raster(rows)
    stamp = record(args.out / "sampling.csv", rows, device)
    print(f"{'recipe':<26} {'params':>7} {'batch':>5} {'cache':>5} {'steps':>5} {'seconds':>8} {'images/s':>9} "
          f"{'tokens/s':>9}  {'vs no cache':>11}  {'vs raster (bound)':>17}")
    for r in rows:
        vs_cache = f"{r['speedup_vs_no_cache']}x" if r["speedup_vs_no_cache"] != "" else ""
        vs_raster = f"{r['speedup_vs_raster']}x ({r['step_bound']}x)" if r["speedup_vs_raster"] != "" else ""
        print(f"{r['recipe']:<26} {r['params_M']:>6}M {r['batch']:>5} {'yes' if r['kv_cache'] else 'no':>5} "
              f"{r['steps']:>5} {r['seconds']:>8} {r['images_per_s']:>9} {r['tokens_per_s']:>9}  {vs_cache:>11}  "
              f"{vs_raster:>17}")
    print(f"fp32, guidance {args.guidance} · {stamp['machine']} · torch {torch.__version__} · {stamp['date']}")


if __name__ == "__main__":
    main()
