"""Which switches make a recipe's training step faster on this machine? Images/s of the same step with each.

    python benchmarks/train_speedups.py                                  # emoji-msvq and emoji-var, every variant
    python benchmarks/train_speedups.py emoji-raster --variants baseline bf16 fused

Variants (each changes one thing against `baseline`, the loop's step as train.py runs it):
    fused          AdamW(fused=True): one kernel for every parameter's update instead of a loop over tensors
    foreach_off    AdamW(foreach=False): the per-tensor loop (what fused and foreach replace)
    bf16           bfloat16 autocast on the CPU (fast where the CPU has AVX512-BF16 / AMX, slow elsewhere)
    channels_last  the model and images in channels-last memory layout (convolutions: the tokenizers)
    compile        torch.compile of the model's loss (the first steps compile: they are not timed)
    threads1       one thread instead of all of them (what two parallel runs get each)

The variants run interleaved, round after round (baseline, fused, ..., baseline, fused, ...), so a machine whose
speed drifts (other jobs, turbo) biases none of them; the table gives each one's median images/s over the rounds
and its ratio to baseline, and is appended to <out>/train_speedups.csv. Wall time is measured here, never asserted.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from common import RESULTS, build_recipe_model, record

from minivar.token_cache import code_rows

VARIANTS = ("baseline", "fused", "foreach_off", "bf16", "channels_last", "compile", "threads1")


class Step:
    """One recipe's training step under one variant, ready to be timed."""

    def __init__(self, name, variant, batch_size=None):
        self.variant = variant
        model, cfg, tokenizer = build_recipe_model(name, torch.device("cpu"))
        B = batch_size or cfg.batch_size
        s = (tokenizer if tokenizer is not None else model).code_format()["image_size"]
        g = torch.Generator().manual_seed(0)
        x = torch.rand(B, 3, s, s, generator=g) * 2 - 1
        if tokenizer is not None:  # generators train on their tokenizer's codes, as the token cache stores them
            x = code_rows(tokenizer.encode(x))
        elif variant == "channels_last":
            model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
        self.batch = (x, torch.zeros(B, dtype=torch.long))
        options = {"fused": {"fused": True}, "foreach_off": {"foreach": False}}.get(variant, {})
        self.opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, **options)
        self.loss = torch.compile(model.loss) if variant == "compile" else model.loss
        self.model, self.images = model.train(), B

    def run(self, steps: int) -> float:
        """images/s over `steps` steps."""
        threads = torch.get_num_threads()
        if self.variant == "threads1":
            torch.set_num_threads(1)
        try:
            t0 = time.perf_counter()
            for _ in range(steps):
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.variant == "bf16"):
                    loss, _ = self.loss(self.batch, 0.5)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
            return self.images * steps / (time.perf_counter() - t0)
        finally:
            torch.set_num_threads(threads)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("recipes", nargs="*", default=["emoji-msvq", "emoji-var"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    p.add_argument("--steps", type=int, default=4, help="timed steps per variant and round (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (compile: 3 more)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--out", type=Path, default=RESULTS, help="folder of the results CSV (default benchmarks/results)")
    args = p.parse_args()
    variants = ["baseline"] + [v for v in args.variants if v != "baseline"]
    rows = []
    for name in args.recipes:
        steps = {v: Step(name, v, args.batch_size) for v in variants}
        for v, s in steps.items():
            s.run(args.warmup + 3 * (v == "compile"))
        speeds = {v: [] for v in variants}
        for _ in range(args.rounds):
            for v, s in steps.items():
                speeds[v].append(s.run(args.steps))
        base = statistics.median(speeds["baseline"])
        for v in variants:
            median = statistics.median(speeds[v])
            rows.append({"recipe": name, "variant": v, "batch": steps[v].images, "images_per_s": round(median, 1),
                         "vs_baseline": round(median / base, 2), "min": round(min(speeds[v]), 1),
                         "max": round(max(speeds[v]), 1), "rounds": args.rounds, "steps": args.steps})
    stamp = record(args.out / "train_speedups.csv", rows, torch.device("cpu"))
    print(f"{'recipe':<16} {'variant':<14} {'images/s':>9} {'x base':>7}  (min - max over {args.rounds} rounds)")
    for r in rows:
        print(f"{r['recipe']:<16} {r['variant']:<14} {r['images_per_s']:>9} {r['vs_baseline']:>7}  "
              f"({r['min']} - {r['max']})")
    print(f"{stamp['machine']} · torch {torch.__version__} · CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()} · {stamp['date']}")


if __name__ == "__main__":
    main()
