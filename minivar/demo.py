"""The main job, `python -m minivar demo`: a VAR trained from scratch on the bundled emoji on a laptop CPU, and a
picture of every scale of its samples.

    from minivar.demo import run_demo
    run_demo(minutes=4)          # runs/demo/scales.png, runs/demo/classes/, runs/demo/demo.json

The command line only reads the flags; everything the demo does is here, in the order it does it: (1) the shipped
multi-scale tokenizer (or one trained here, from_scratch=True), (2) a small VAR trained over its tokens for most of
the budget, (3) the image after each scale for one sample per class, beside the shipped VAR's, a grid per class and
fd_emoji, precision and recall of `fd` samples, recorded with the command, machine and times in demo.json.
"""

import math
import sys
import time
from pathlib import Path

from . import recipes

FD_MIN_SAMPLES = 10  # fd_emoji's covariance (and its bootstrap) from fewer is noise


def peak_memory_mb() -> float:
    """Peak resident memory of this process (Linux/macOS; NaN where the resource module is missing)."""
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def run_demo(minutes: float = 4.0, out="runs/demo", guidance: float = 4.0, top_k: int = 0, top_p: float = 0.8,
             seed: int = 0, sets=(), set_tokenizer=(), from_scratch: bool = False, fd: int = 1000,
             command_line: str = "python -m minivar demo") -> dict:
    """The main job, on a laptop CPU: train a small VAR from scratch on the bundled emoji over the shipped multi-scale
    tokenizer (--from-scratch: train that tokenizer here too), then draw every scale of its samples beside the shipped
    VAR's (runs/demo/scales.png), write a sample grid per class and measure its fd_emoji."""
    import torch

    from . import pretrained
    from .data import load_dataset
    from .train import train
    from .var import VARSampling
    from .viz import plot_scales, save_grid
    t0 = time.time()
    if not (math.isfinite(minutes) and minutes > 0):
        raise ValueError(f"--minutes is the demo's training budget, a number > 0 (default 4), got {minutes:g}")
    if fd < 0 or 0 < fd < FD_MIN_SAMPLES:
        raise ValueError(f"--fd N measures fd_emoji on N samples: 0 to skip, or at least {FD_MIN_SAMPLES} (default "
                         f"1000), got {fd}")
    out = Path(out)
    options = VARSampling(guidance=guidance, top_k=top_k, top_p=top_p)
    options.check()  # a bad --guidance, --top-k or --top-p is named now, not after minutes of training
    shipped = pretrained.available()
    own_tokenizer = from_scratch or "emoji-msvq" not in shipped
    if set_tokenizer and not own_tokenizer:
        raise ValueError("--set-tokenizer changes the tokenizer the demo trains; add --from-scratch to train one")
    # Minutes, not the recipes' quarter hours: a shorter warmup, a higher learning rate and, for VAR, a smaller
    # network at half the batch (recipes.DEMO_VAR: many more updates in the same time) do the most with them.
    var_share = 0.48 if own_tokenizer else 0.85  # the rest: tokenizing once, sampling, measuring
    print(f"minivar demo: about {minutes:g} minutes on this machine (re-running reuses what {out} holds)")
    if own_tokenizer:
        tok_minutes = 0.42 * minutes
        print(f"1/3 training VAR's multi-scale tokenizer on the bundled emoji for {tok_minutes:.1f} min")
        tok_cfg = recipes.get("emoji-msvq", ["name=tokenizer", f"out_dir={out}", f"minutes={tok_minutes}",
                                             "max_steps=100000", "eval_every=100000", "lr=3e-3", "warmup_steps=20",
                                             *set_tokenizer])
        tok = train(tok_cfg, resume=True)
        tok_ref, var_name = str(tok_cfg.run_dir), "var-scratch"
        print(f"   test PSNR {tok['test_psnr']:.2f} dB, codebook usage {tok['test_usage']:.0%} "
              f"after {tok['step']} steps")
    else:
        info = pretrained.manifest("emoji-msvq")
        tok_ref, var_name = "pretrained:emoji-msvq", "var"
        print(f"1/3 the shipped multi-scale tokenizer (notebook 04): test PSNR {info['metrics']['psnr']:.1f} dB after "
              f"{info['minutes']:g} minutes of training (--from-scratch trains one here instead)")
    var_cfg = recipes.get("emoji-var", [f"name={var_name}", f"out_dir={out}", f"tokenizer={tok_ref}",
                                        f"minutes={var_share * minutes}", "max_steps=100000",
                                        "eval_every=100000", *recipes.DEMO_VAR, *sets])
    print(f"2/3 training a {var_cfg.model_config.depth}-block VAR from scratch on its tokens for "
          f"{var_share * minutes:.1f} min (the tokens are computed once, first)")
    var = train(var_cfg, resume=True)
    model = var["model"].eval()
    tokenizer = model.tokenizer
    print(f"   test loss {var['test_loss']:.3f} nats/token after {var['step']} steps\n3/3 sampling")
    classes = load_dataset("emoji", "test").classes
    g = torch.Generator(model.device).manual_seed(seed)  # cuda/mps when trained there
    labels = torch.arange(len(classes))

    def every_scale(generator):
        maps = generator.generate(labels.to(generator.device), options,
                                  generator=torch.Generator(generator.device).manual_seed(seed))
        return [x.cpu() for x in generator.tokenizer.decode_scales(maps, every_scale=True)]  # coarse to fine

    compare, reference = [], None
    if "emoji-var" in shipped:
        reference = pretrained.load("emoji-var", model.device)
        if tuple(reference.tokenizer.cfg.scales) == tuple(tokenizer.cfg.scales):
            ref_info = pretrained.manifest("emoji-var")
            compare = [(f"shipped emoji-var: {ref_info['minutes']:g} minutes of training", every_scale(reference))]
    minutes = var["elapsed"] / 60
    plot_scales(every_scale(model), tokenizer.cfg.scales, row_labels=[c.split(" & ")[0] for c in classes],
                path=out / "scales.png", compare=compare,
                title=f"your VAR: after {minutes:.1f} minutes on this machine (guidance {guidance:g}, "
                      f"top-p {top_p:g})")
    for c, name in enumerate(classes):
        grid = model.generate(torch.full((16,), c), options, generator=g)
        save_grid(out / "classes" / f"{c}_{name.lower().replace(' & ', '_').replace(' ', '_')}.png",
                  tokenizer.decode(grid), nrow=8)
    print(f"\nwrote {out / 'scales.png'} (rows: one sample per class; columns: the image after each scale, "
          f"{' -> '.join(f'{s}x{s}' for s in tokenizer.cfg.scales)}"
          f"{'; right: the shipped VAR, same seed' if compare else ''})\n"
          f"wrote {out / 'classes'}/ (16 samples per class)")
    record = {"command": command_line,
              "date": time.strftime("%Y-%m-%d"), "machine": pretrained.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "minutes_budget": minutes,
              "var_sets": [*recipes.DEMO_VAR, *sets], "var_parameters": sum(p.numel() for p in model.parameters()),
              "var_steps": var["step"], "var_minutes": round(minutes, 2), "var_test_loss": round(var["test_loss"], 4),
              "tokenizer": tok_ref, "guidance": guidance, "top_k": top_k, "top_p": top_p, "seed": seed}
    if fd:
        scores = pretrained.measure(model, n=fd, guidance=guidance, seed=seed, progress=False, top_k=top_k,
                                    top_p=top_p)
        record.update({k: scores[k] for k in ("samples", "fd_emoji", "fd_emoji_ci95", "precision", "recall")})
        low, high = scores["fd_emoji_ci95"]
        shipped_fd = (f"; the shipped VAR: {ref_info['metrics']['fd_emoji']:.2f} at guidance "
                      f"{ref_info['metrics']['guidance']:g}" if compare else "")
        print(f"fd_emoji of {fd} samples: {scores['fd_emoji']:.2f} [{low:.2f}, {high:.2f}], precision "
              f"{scores['precision']:.2f}, recall {scores['recall']:.2f} (lower fd is better{shipped_fd})")
    record.update(wall_seconds=round(time.time() - t0), peak_memory_mb=round(peak_memory_mb()))
    pretrained.write_json(out / "demo.json", record)  # what this run measured, with its command and machine
    print(f"wall time {record['wall_seconds']} s, peak memory {record['peak_memory_mb']} MB; the numbers: "
          f"{out / 'demo.json'}\n"
          f"your VAR stays in {var_cfg.run_dir}: python -m minivar sample {var_cfg.run_dir} --n 64")
    return record


__all__ = ["run_demo", "peak_memory_mb", "FD_MIN_SAMPLES"]
