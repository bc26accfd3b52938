"""Sampling speed of the four generators, KV cache against KV cache: the growing one (torch.cat at every step, as
minivar sampled until issue 31) and the static one (one buffer for the whole sequence, written in place); and for
the generators that offer it (the raster GPT and RAR), the compiled one-token step (sampling option compile).

    python benchmarks/sampling_speed.py                          # the shipped emoji models on the CPU
    python benchmarks/sampling_speed.py --models emoji-raster --batches 1 64 --rounds 3 --out /tmp/speed

Each model samples `--batches` labels with its default options (guidance: the batch runs twice), in interleaved
rounds (growing, static, compiled, growing, ...: a machine that slows down mid-run slows all alike); the median
images/s per variant and their ratios are printed and recorded in <out>/sampling_speed.csv with the machine. The
first call of each variant and batch is a warm-up, not timed; for the compiled step it is also the compile, whose
seconds (its time less a static call's) and break-even (the samples after which compiling has paid for itself)
are recorded. Wall time is measured here, never asserted in a test.
`MINIVAR_MALLOC=0 python benchmarks/sampling_speed.py` measures the same with glibc's allocator left as it is
(minivar.steady_allocator; the CSV's steady_allocator column says which).

    python benchmarks/sampling_speed.py --llamagen ~/src/LlamaGen   # and LlamaGen's own sampler, in the same run

With --llamagen (a checkout of FoundationVision/LlamaGen; nothing of it is copied here) the official GPT at
emoji-raster's size (random weights: speed does not depend on them) samples the same batches with its own
`generate`, eagerly and compiled as its sample_c2i.py --compile does (torch.compile(model, mode="reduce-overhead",
fullgraph=True)), interleaved with minivar's rounds; its rows are recorded as model "llamagen-official".
"""

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# a cold compile each run: torch's compiled-code cache (by default under /tmp, kept between runs) would otherwise
# make the second run's compile seconds those of a cache lookup
os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="minivar-inductor-")

import torch
from common import RESULTS, record

import minivar
from minivar import pretrained, transformer

MODELS = ["emoji-raster", "emoji-rar", "emoji-var", "emoji-flowar"]


@contextlib.contextmanager
def growing_cache():
    """Every KVCache made inside the block grows by concatenation (capacity ignored): the sampler before issue 31."""
    init = transformer.KVCache.__init__

    def growing(self, capacity: int = 0, fixed_address: bool = False):
        init(self, 0)

    transformer.KVCache.__init__ = growing
    try:
        yield
    finally:
        transformer.KVCache.__init__ = init


def images_per_s(model, batch: int, variant: str, device) -> float:
    labels = torch.arange(batch, device=device) % model.cfg.num_classes
    kw = {"compile": True} if variant == "compiled" else {}
    with growing_cache() if variant == "growing" else contextlib.nullcontext():
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.generate(labels, generator=torch.Generator(device).manual_seed(0), **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return batch / (time.perf_counter() - t0)


class LlamaGen:
    """LlamaGen's class-to-image GPT and sampler, from a checkout, at a minivar raster model's size."""

    def __init__(self, root: Path, like, device):
        sys.path.insert(0, str(root))
        from autoregressive.models.generate import generate
        from autoregressive.models.gpt import ModelArgs, Transformer
        c = like.cfg
        args = ModelArgs(dim=c.dim, n_layer=c.n_layer, n_head=c.n_head, multiple_of=c.multiple_of,
                         vocab_size=c.codebook_size, num_classes=c.num_classes, block_size=c.grid ** 2,
                         cls_token_num=1, model_type="c2i")
        self.model = Transformer(args).to(device).eval()
        self.compiled = torch.compile(self.model, mode="reduce-overhead", fullgraph=True)
        self.sample, self.cfg, self.tokens, self.device = generate, like.cfg, c.grid ** 2, device
        print(f"llamagen-official: {sum(p.numel() for p in self.model.parameters()) / 1e6:.2f}M parameters "
              f"(minivar's {like.kind}: {sum(p.numel() for p in like.parameters()) / 1e6:.2f}M)")

    def images_per_s(self, batch: int, variant: str) -> float:
        labels = torch.arange(batch, device=self.device) % self.cfg.num_classes
        model = self.compiled if variant == "compiled" else self.model
        torch.manual_seed(0)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        self.sample(model, labels, self.tokens, cfg_scale=self.cfg.guidance, temperature=1.0, top_k=0, top_p=1.0)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        return batch / (time.perf_counter() - t0)


def compiles(model) -> bool:
    return "compile" in model.options_class.field_types()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    p.add_argument("--batches", nargs="+", type=int, default=[1, 64, 256])
    p.add_argument("--rounds", type=int, default=3, help="timed calls of each variant (after one warm-up)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--llamagen", type=Path, help="a checkout of FoundationVision/LlamaGen: time its sampler too")
    args = p.parse_args()
    device = torch.device(args.device)
    if args.llamagen and not (args.llamagen / "autoregressive" / "models" / "generate.py").is_file():
        p.error(f"--llamagen {args.llamagen}: no autoregressive/models/generate.py there; give the folder of a "
                f"FoundationVision/LlamaGen checkout")
    rows = []
    print(f"{'model':<14} {'batch':>5} {'growing img/s':>14} {'static img/s':>13} {'static / growing':>17} "
          f"{'compiled img/s':>15} {'compiled / growing':>19} {'compile s':>10} {'break-even':>11}")
    for name in args.models:
        model = pretrained.load(name).to(device).eval()
        official = LlamaGen(args.llamagen, model, device) if args.llamagen and name == "emoji-raster" else None
        for batch in args.batches:
            rates = {"growing": [], "static": [], **({"compiled": []} if compiles(model) else {})}
            if official:
                rates.update({"llamagen eager": [], "llamagen compiled": []})
            first = {}
            for r in range(args.rounds + 1):
                for variant in rates:
                    if variant.startswith("llamagen"):
                        rate = official.images_per_s(batch, variant.split()[1])
                    else:
                        rate = images_per_s(model, batch, variant, device)
                    if r:  # round 0 warms up (and compiles)
                        rates[variant].append(rate)
                    else:
                        first[variant] = batch / rate
            grow, static = (statistics.median(rates[v]) for v in ("growing", "static"))
            row = {"model": name, "batch": batch, "rounds": args.rounds,
                   "steady_allocator": minivar.STEADY_ALLOCATOR, "growing_img_per_s": round(grow, 2),
                   "static_img_per_s": round(static, 2), "static_over_growing": round(static / grow, 3)}
            line = f"{name:<14} {batch:>5} {grow:>14.2f} {static:>13.2f} {static / grow:>16.2f}x"
            if "compiled" in rates:
                fast = statistics.median(rates["compiled"])
                compile_s = max(0.0, first["compiled"] - batch / fast)  # the first call less a compiled call
                saved = 1 / static - 1 / fast  # seconds saved per image once compiled
                even = round(compile_s / saved) if saved > 0 else "never"
                row.update(compiled_img_per_s=round(fast, 2), compiled_over_growing=round(fast / grow, 3),
                           compile_s=round(compile_s, 1), break_even_images=even)
                line += f" {fast:>15.2f} {fast / grow:>18.2f}x {compile_s:>10.1f} {even:>11}"
            rows.append(row)
            print(line, flush=True)
            if official:  # their cache is static too (setup_caches): their eager sits in the static column
                eager, fast = (statistics.median(rates[f"llamagen {v}"]) for v in ("eager", "compiled"))
                compile_s = max(0.0, first["llamagen compiled"] - batch / fast)
                rows.append({"model": "llamagen-official", "batch": batch, "rounds": args.rounds,
                             "steady_allocator": minivar.STEADY_ALLOCATOR, "static_img_per_s": round(eager, 2),
                             "compiled_img_per_s": round(fast, 2), "compile_s": round(compile_s, 1)})
                print(f"{'llamagen':<14} {batch:>5} {'':>14} {eager:>13.2f} {'':>17} {fast:>15.2f} {'':>19} "
                      f"{compile_s:>10.1f}   minivar compiled / llamagen compiled: "
                      f"{row.get('compiled_img_per_s', 0) / fast:.2f}x", flush=True)
    record(args.out / "sampling_speed.csv", rows, device)


if __name__ == "__main__":
    main()
