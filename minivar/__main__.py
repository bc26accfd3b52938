"""Command line: python -m minivar {demo,train,sweep} ...

    python -m minivar demo                         # the main job: train on the bundled emoji, on CPU
    python -m minivar train emoji-vqvae --set lr=1e-3 --set codebook_size=1024
    python -m minivar train emoji-vqvae --resume    # continue a killed run from its last checkpoint
    python -m minivar sweep codebook --dataset emoji  # codebook size x dim x l2 grid, recorded in benchmarks/
    torchrun --nproc_per_node 2 -m minivar train cifar10-vqvae   # several GPUs (or CPU processes)
"""

import argparse
import json
import sys
import time
from pathlib import Path

from . import recipes


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux/macOS; NaN where the resource module is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def cmd_train(args):
    cfg = recipes.get(args.recipe, args.set)
    from .train import train
    result = train(cfg, resume=args.resume)
    result.pop("model")
    print(json.dumps(result, indent=2))


def cmd_demo(args):
    """Train the emoji tokenizer on CPU within the time budget and write reconstructions.png."""
    from .train import train
    t0 = time.time()
    out = Path(args.out)
    cfg = recipes.get("emoji-vqvae", [f"name={out.name}", f"out_dir={out.parent}", f"minutes={args.minutes}",
                                      "max_steps=100000", *args.set])
    print(f"minivar demo: training a VQ-VAE tokenizer on the bundled emoji for up to {args.minutes:g} minutes "
          f"(re-running continues or reuses {cfg.run_dir})")
    result = train(cfg, resume=True)
    peak_mb = peak_memory_mb()
    print(f"\nwrote {cfg.run_dir / 'reconstructions.png'} (top: test images, bottom: reconstructions)")
    print(f"test PSNR {result['test_psnr']:.2f} dB, codebook usage {result['test_usage']:.0%} "
          f"(perplexity {result['test_perplexity']:.0f} of {cfg.model_config.codebook_size}), "
          f"{result['step']} steps; wall time {time.time() - t0:.0f} s, peak memory {peak_mb:.0f} MB")


def cmd_sweep(args):
    from .sweep import run_codebook_sweep
    rows = run_codebook_sweep(args.dataset, steps=args.steps)
    print(f"{len(rows)} cells recorded in benchmarks/results/codebook_sweep_{args.dataset}.csv")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivar", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a tokenizer on the bundled emoji (CPU) and write pictures")
    p.add_argument("--minutes", type=float, default=3.0, help="training time budget (default 3)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe field")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a named recipe")
    p.add_argument("recipe", help=f"one of: {', '.join(recipes.RECIPES)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set lr=1e-3 --set codebook_size=1024")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sweep", help="run a recorded experiment grid (resumable)")
    p.add_argument("experiment", choices=["codebook"], help="codebook: size x dim x l2 (LlamaGen / ViT-VQGAN)")
    p.add_argument("--dataset", default="emoji", help="emoji (CPU) or cifar10 (GPU)")
    p.add_argument("--steps", type=int, default=None, help="training steps per cell (default: the grid's)")
    p.set_defaults(func=cmd_sweep)

    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
