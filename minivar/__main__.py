"""Command line: python -m minivar {demo,train,sample,sweep,course} ...

    python -m minivar demo                         # the main job: tokenizer + VAR on the bundled emoji, on CPU
    python -m minivar train emoji-vqvae --set lr=1e-3 --set codebook_size=1024
    python -m minivar train emoji-vqvae --resume    # continue a killed run from its last checkpoint
    python -m minivar train emoji-raster            # a generator over the shipped emoji-vqvae-l2 tokenizer
    python -m minivar sample runs/emoji-raster --n 64 --guidance 2   # a grid of samples, one column per class
    python -m minivar sample pretrained:emoji-var                    # a shipped model (minivar.pretrained)
    python -m minivar sweep codebook --dataset emoji  # codebook size x dim x l2 grid, recorded in benchmarks/
    python -m minivar sweep ablation --sheet 03       # an ablation sheet's runs, recorded in benchmarks/
    torchrun --nproc_per_node 2 -m minivar train cifar10-vqvae   # several GPUs (or CPU processes)
    python -m minivar course release --out student-copy   # instructors: the course without its solutions
    python -m minivar course grade submissions/           # ... and grading one folder per student
"""

import argparse
import json
import math
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
    """The main job, on a laptop CPU: train a small VAR from scratch on the bundled emoji over the shipped multi-scale
    tokenizer (--from-scratch: train that tokenizer here too), then draw every scale of its samples beside the shipped
    VAR's (runs/demo/scales.png), write a sample grid per class and measure its fd_emoji."""
    import torch

    from . import pretrained
    from .data import load_dataset
    from .sampling import check_options
    from .train import train
    from .viz import plot_scales, save_grid
    t0 = time.time()
    if not (math.isfinite(args.minutes) and args.minutes > 0):
        raise ValueError(f"--minutes is the demo's training budget, a number > 0 (default 4), got {args.minutes:g}")
    if args.fd < 0 or 0 < args.fd < FD_MIN_SAMPLES:
        raise ValueError(f"--fd N measures fd_emoji on N samples: 0 to skip, or at least {FD_MIN_SAMPLES} (default "
                         f"1000), got {args.fd}")
    out = Path(args.out)
    sampling = {"top_k": args.top_k, "top_p": args.top_p}
    check_options(**sampling)  # a bad --top-k or --top-p is named now, not after minutes of training
    shipped = pretrained.available()
    own_tokenizer = args.from_scratch or "emoji-msvq" not in shipped
    if args.set_tokenizer and not own_tokenizer:
        raise ValueError("--set-tokenizer changes the tokenizer the demo trains; add --from-scratch to train one")
    # Minutes, not the recipes' quarter hours: a shorter warmup, a higher learning rate and, for VAR, a smaller
    # network at half the batch (recipes.DEMO_VAR: many more updates in the same time) do the most with them.
    var_share = 0.48 if own_tokenizer else 0.85  # the rest: tokenizing once, sampling, measuring
    print(f"minivar demo: about {args.minutes:g} minutes on this machine (re-running reuses what {out} holds)")
    if own_tokenizer:
        tok_minutes = 0.42 * args.minutes
        print(f"1/3 training VAR's multi-scale tokenizer on the bundled emoji for {tok_minutes:.1f} min")
        tok_cfg = recipes.get("emoji-msvq", ["name=tokenizer", f"out_dir={out}", f"minutes={tok_minutes}",
                                             "max_steps=100000", "eval_every=100000", "lr=3e-3", "warmup_steps=20",
                                             *args.set_tokenizer])
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
                                        f"minutes={var_share * args.minutes}", "max_steps=100000",
                                        "eval_every=100000", *recipes.DEMO_VAR, *args.set])
    print(f"2/3 training a {var_cfg.model_config.depth}-block VAR from scratch on its tokens for "
          f"{var_share * args.minutes:.1f} min (the tokens are computed once, first)")
    var = train(var_cfg, resume=True)
    model = var["model"].eval()
    tokenizer = model.tokenizer
    print(f"   test loss {var['test_loss']:.3f} nats/token after {var['step']} steps\n3/3 sampling")
    classes = load_dataset("emoji", "test").classes
    g = torch.Generator(model.device).manual_seed(args.seed)  # cuda/mps when trained there
    labels = torch.arange(len(classes))

    def every_scale(generator):
        maps = generator.generate(labels.to(generator.device), guidance=args.guidance, **sampling,
                                  generator=torch.Generator(generator.device).manual_seed(args.seed))
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
                title=f"your VAR: after {minutes:.1f} minutes on this machine (guidance {args.guidance:g}, "
                      f"top-p {args.top_p:g})")
    for c, name in enumerate(classes):
        grid = model.generate(torch.full((16,), c), guidance=args.guidance, **sampling, generator=g)
        save_grid(out / "classes" / f"{c}_{name.lower().replace(' & ', '_').replace(' ', '_')}.png",
                  tokenizer.decode(grid), nrow=8)
    print(f"\nwrote {out / 'scales.png'} (rows: one sample per class; columns: the image after each scale, "
          f"{' -> '.join(f'{s}x{s}' for s in tokenizer.cfg.scales)}"
          f"{'; right: the shipped VAR, same seed' if compare else ''})\n"
          f"wrote {out / 'classes'}/ (16 samples per class)")
    record = {"command": args.command_line,
              "date": time.strftime("%Y-%m-%d"), "machine": pretrained.machine(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "minutes_budget": args.minutes,
              "var_sets": [*recipes.DEMO_VAR, *args.set], "var_parameters": sum(p.numel() for p in model.parameters()),
              "var_steps": var["step"], "var_minutes": round(minutes, 2), "var_test_loss": round(var["test_loss"], 4),
              "tokenizer": tok_ref, "guidance": args.guidance, **sampling, "seed": args.seed}
    if args.fd:
        scores = pretrained.measure(model, n=args.fd, guidance=args.guidance, seed=args.seed, progress=False,
                                    **sampling)
        record.update({k: scores[k] for k in ("samples", "fd_emoji", "fd_emoji_ci95", "precision", "recall")})
        low, high = scores["fd_emoji_ci95"]
        shipped_fd = (f"; the shipped VAR: {ref_info['metrics']['fd_emoji']:.2f} at guidance "
                      f"{ref_info['metrics']['guidance']:g}" if compare else "")
        print(f"fd_emoji of {args.fd} samples: {scores['fd_emoji']:.2f} [{low:.2f}, {high:.2f}], precision "
              f"{scores['precision']:.2f}, recall {scores['recall']:.2f} (lower fd is better{shipped_fd})")
    record.update(wall_seconds=round(time.time() - t0), peak_memory_mb=round(peak_memory_mb()))
    pretrained.write_json(out / "demo.json", record)  # what this run measured, with its command and machine
    print(f"wall time {record['wall_seconds']} s, peak memory {record['peak_memory_mb']} MB; the numbers: "
          f"{out / 'demo.json'}\n"
          f"your VAR stays in {var_cfg.run_dir}: python -m minivar sample {var_cfg.run_dir} --n 64")


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 where the OS does not say)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


FD_MIN_SAMPLES = 10  # fd_emoji's covariance (and its bootstrap) from fewer is noise


def cmd_sample(args):
    """Sample a trained generator; write a grid (one column per class) and optionally fd_emoji."""
    import torch

    from . import device_named
    from .train import load_run
    from .viz import check_picture_path, save_grid
    if args.n < 1 or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be at least 1, got {args.n} and {args.batch_size}")
    if args.fd and args.n < FD_MIN_SAMPLES:
        raise ValueError(f"--fd compares the spread of the samples with the test split's: it needs at least "
                         f"{FD_MIN_SAMPLES} samples (--n 1000 is the course's standard), got --n {args.n}")
    if args.out:
        check_picture_path(args.out)
    dev = device_named(args.device)
    model, cfg, tokenizer = load_run(args.run, dev)
    if tokenizer is None:
        raise ValueError(f"{args.run} is a {cfg.model} run (a tokenizer), not a generator; sample a run of a "
                         f"generator recipe")
    guidance = model.guidance_or_default(args.guidance)
    options = {k: v for k, v in (("temperature", args.temperature), ("top_k", args.top_k), ("top_p", args.top_p),
                                 ("steps", args.steps), ("guidance_high", args.guidance_high),
                                 ("heun", args.heun or None), ("guidance_power", args.guidance_power),
                                 ("guidance_ramp", False if args.constant_guidance else None))
               if v is not None}  # only what was given: each generator
    from .sampling import check_options  # has its own defaults and options
    check_options(**{k: v for k, v in options.items() if k in ("temperature", "top_k", "top_p")})  # now, not later
    if options.get("steps", 1) < 1:
        raise ValueError(f"--steps must be at least 1, got {options['steps']}")
    if not 0 <= options.get("guidance_high", 0) <= 1:
        raise ValueError(f"--guidance-high is a time in [0, 1] (1 = guide at every step), "
                         f"got {options['guidance_high']}")
    if options.get("guidance_power", 0) < 0:
        raise ValueError(f"--guidance-power must be >= 0 (0 = constant guidance), got {options['guidance_power']}")
    import inspect
    takes = inspect.signature(model.generate).parameters
    for name in options:
        if name not in takes:
            flag = {"guidance_ramp": "constant_guidance"}
            known = [f"--{flag.get(p, p).replace('_', '-')}" for p in ("guidance", "temperature", "top_k", "top_p",
                     "steps", "guidance_high", "heun", "guidance_power", "guidance_ramp") if p in takes]
            raise ValueError(f"a {cfg.model} model does not take --{flag.get(name, name).replace('_', '-')}; its "
                             f"options: {', '.join(known)}")
    side = tokenizer.code_format()["image_size"]
    need, have = args.n * 3 * side * side * 4, physical_memory()  # the samples are kept as float images
    if have and need > have // 2:
        raise ValueError(f"--n {args.n} would hold {need / 2**30:.1f} GiB of images in memory (this machine has "
                         f"{have / 2**30:.0f} GiB): draw fewer, e.g. --n {max(1, have // 4 // (need // args.n))}, or "
                         f"several smaller runs with other --seed values")
    n_cls = model.cfg.num_classes
    classes = parse_classes(args.classes, n_cls) if args.classes else list(range(n_cls))
    labels = torch.tensor(classes * (args.n // len(classes) + 1))[:args.n]
    if args.fd:
        if cfg.dataset != "emoji":
            raise ValueError("--fd computes fd_emoji, which needs an emoji run; use torch-fidelity for FID")
        from .data import dataset_labels, load_dataset
        test = load_dataset("emoji", "test", image_size=tokenizer.code_format()["image_size"])
        real = torch.stack([test[i][0] for i in range(len(test))])
        if not args.classes:  # compare like with like: the test split's class frequencies, not uniform classes
            test_labels = dataset_labels(test)
            labels = test_labels[torch.arange(args.n) % len(test_labels)]
    from .checkpoint import PRETRAINED  # a shipped model's samples go under runs/pretrained/, not into the package
    folder = Path("runs") / "pretrained" / args.run[len(PRETRAINED):] if args.run.startswith(PRETRAINED) else \
        Path(args.run)
    # the default name carries everything that changes the picture, so another seed or option never overwrites it
    given = {k: v for k, v in options.items() if k != "guidance_ramp"}
    name = "_".join([f"samples_guidance{guidance:g}", *(["constant"] if args.constant_guidance else []),
                     *(f"{k.replace('_', '-')}{v:g}" if not isinstance(v, bool) else k for k, v in given.items()),
                     f"seed{args.seed}", f"n{args.n}", *(["fd"] if args.fd else []),
                     *([f"classes{'-'.join(map(str, classes))}"] if args.classes else [])])
    out = check_picture_path(args.out) if args.out else folder / f"{name}.png"
    check_writable(out)  # before the sampling, not after it
    if args.npz:
        npz = Path(args.npz)
        if npz.is_dir():
            raise ValueError(f"--npz {npz} is a folder; name the file to write, e.g. {npz / 'samples.npz'}")
        if npz.suffix != ".npz":
            raise ValueError(f"--npz names the file to write, ending in .npz (numpy would add it), got {args.npz!r}")
        check_writable(npz, "--npz")
    labels = labels.to(dev)
    g = torch.Generator(dev).manual_seed(args.seed)
    t0 = time.time()
    images = model.sample_images(labels, args.batch_size, guidance=guidance, generator=g, progress=True, **options)
    seconds = time.time() - t0
    shown = min(len(images), 256)
    save_grid(out, images[:shown], nrow=16 if args.fd and not args.classes else min(len(classes), 16))
    layout = "labels follow the test split" if args.fd and not args.classes else f"one column per class: {classes[:16]}"
    print(f"wrote {out}: {shown} of {len(images)} samples ({layout}), guidance {guidance:g}"
          f"{' at every scale' if args.constant_guidance else ''}, "
          f"{seconds:.1f} s ({len(images) / seconds:.1f} images/s)")
    if args.npz:  # the layout of the ADM evaluator (guided-diffusion/evaluations) that published FIDs come from
        import numpy as np

        from .data import to_uint8_images
        from .files import atomic_write
        with atomic_write(args.npz, "wb") as fh:  # a kill or a full disk mid-write keeps an earlier file whole
            np.savez(fh, arr_0=to_uint8_images(images), labels=labels.cpu().numpy())
        print(f"wrote {args.npz}: arr_0 {tuple(images.shape[:1]) + tuple(images.shape[2:]) + (3,)} uint8 (NHWC), "
              f"labels ({len(labels)},)")
    if args.fd:
        from .metrics import fd_emoji_ci
        fd, low, high = fd_emoji_ci(images, real)
        print(f"fd_emoji({len(images)} samples vs {len(real)} test emoji) = {fd:.2f}  (95% bootstrap interval "
              f"{low:.2f} - {high:.2f})")


def parse_classes(text: str, n_cls: int) -> list:
    try:
        classes = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise ValueError(f"--classes takes comma-separated class indices, e.g. 0,3,5; got {text!r}") from None
    if not classes or min(classes) < 0 or max(classes) >= n_cls:
        raise ValueError(f"--classes must lie in [0, {n_cls}), got {text!r}")
    return classes


def check_writable(path: Path, option="--out"):
    """Fail now, with the path, rather than after minutes of work."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.parent / f".{path.name}.write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"cannot write {path} ({e.strerror or e}); choose another {option}") from None


def cmd_sweep(args):
    if args.experiment == "ablation":
        from .sweep import ABLATIONS, run_ablation
        if not args.sheet:
            raise ValueError(f"name the ablation sheet: --sheet {' | '.join(ABLATIONS)}")
        if args.steps is not None or args.dataset != "emoji":
            raise ValueError("an ablation sheet fixes its own steps and data (emoji); --steps and --dataset are for "
                             "'sweep codebook'")
        rows = run_ablation(args.sheet, out_dir=args.out, n=args.n)
        print(f"{len(rows)} rows recorded in {Path(args.out) / f'ablations_{args.sheet}.csv'}")
        return
    from .sweep import run_codebook_sweep
    rows = run_codebook_sweep(args.dataset, steps=args.steps, out_dir=args.out)
    print(f"{len(rows)} cells recorded in {Path(args.out) / f'codebook_sweep_{args.dataset}.csv'}")


def cmd_course_release(args):
    from .course import release
    clear = [c.strip() for c in args.clear_outputs.split(",") if c.strip()]
    summary = release(args.out, force=args.force, clear_outputs=clear)
    cleared = f", outputs left out of {summary['cleared']} notebooks" if summary.get("cleared") else ""
    print(f"wrote the student copy to {args.out}: {summary['files']} files, {summary['blanked_cells']} notebook "
          f"cells blanked, answer keys taken out of {summary['keys']} files{cleared}, no solutions\n"
          f"students check their work with `pytest -m exNN` in it; `pytest` there runs each notebook up to its "
          f"first blank")


def cmd_course_grade(args):
    from .course import grade
    exercises = [e.strip() for e in args.exercises.split(",") if e.strip()]
    t0 = time.perf_counter()
    rows = grade(args.submissions, exercises=exercises or None, timeout=args.timeout, jobs=args.jobs,
                 import_timeout=args.import_timeout, memory_gb=args.memory)
    students = len({r["student"] for r in rows})
    flagged = len({r["student"] for r in rows if r["flags"]})
    print(f"graded {students} submissions: {sum(r['points'] for r in rows)} of {len(rows)} parts passed "
          f"({time.perf_counter() - t0:.0f} s)" + (f"; {flagged} flagged for a human to read" if flagged else "")
          + f"\nwrote {Path(args.submissions) / 'grades.md'} and grades.csv")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minivar", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="train a VAR on the bundled emoji (CPU), draw each scale")
    p.add_argument("--minutes", type=float, default=4.0, help="training time budget (default 4)")
    p.add_argument("--out", default="runs/demo", help="run folder (default runs/demo)")
    p.add_argument("--guidance", type=float, default=4.0,
                   help="guidance at VAR's last scale, ramped up from 1 (no guidance) at the first (default 4; "
                        "with --top-p 0.8 the best of ablation sheet 05c for the demo's VAR)")
    p.add_argument("--top-k", type=int, default=0, help="keep the k most likely tokens (0 = all)")
    p.add_argument("--top-p", type=float, default=0.8,
                   help="keep the most likely tokens that hold this share of probability (default 0.8; 1 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a VAR recipe field")
    p.add_argument("--set-tokenizer", action="append", default=[], metavar="KEY=VALUE",
                   help="override a tokenizer recipe field (with --from-scratch)")
    p.add_argument("--from-scratch", action="store_true",
                   help="train the multi-scale tokenizer here too, instead of loading the shipped one")
    p.add_argument("--fd", type=int, default=1000, metavar="N",
                   help="measure fd_emoji, precision and recall on N samples (default 1000; 0 = skip)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a named recipe")
    p.add_argument("recipe", help=f"one of: {', '.join(recipes.RECIPES)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set lr=1e-3 --set codebook_size=1024")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a trained generator run and write a grid")
    p.add_argument("run", help="the run folder, e.g. runs/emoji-raster, or a shipped model, e.g. pretrained:emoji-var")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    p.add_argument("--guidance", type=float, default=None,
                   help="classifier-free guidance s in uncond + s (cond - uncond), 1 = none (default: the model's); "
                        "VAR ramps it up over the scales, from 1 at the first to s at the last; RAR over its tokens "
                        "(see --guidance-power)")
    p.add_argument("--temperature", type=float, default=None, help="softmax temperature (default 1)")
    p.add_argument("--top-k", type=int, default=None, help="keep the k most likely tokens (default 0 = all)")
    p.add_argument("--top-p", type=float, default=None,
                   help="nucleus: keep the top tokens holding this mass (default 1 = all)")
    p.add_argument("--steps", type=int, default=None,
                   help="FlowAR: Euler steps of each scale's ODE solve (default: the model's, 25; FlowAR's time "
                        "grid makes an odd count one step fewer)")
    p.add_argument("--guidance-high", type=float, default=None,
                   help="FlowAR: guide only while t <= this in each ODE solve (default: the model's, 0.9; 1 = always)")
    p.add_argument("--heun", action="store_true",
                   help="FlowAR: Heun's second-order steps (two network calls a step, one on the last)")
    p.add_argument("--guidance-power", type=float, default=None,
                   help="RAR: power of its cosine guidance schedule, s_t = 1 + (s - 1)(1 - cos(pi (t/N)^power)) / 2 "
                        "(default: the model's; 0 = constant s)")
    p.add_argument("--constant-guidance", action="store_true",
                   help="VAR, FlowAR: guide every scale with --guidance instead of ramping it up from 1 at the first")
    p.add_argument("--classes", default="", help="comma-separated class indices (default: all, in turn)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--fd", action="store_true",
                   help="also print fd_emoji against the emoji test split (labels then follow its class frequencies)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")
    p.add_argument("--out", default="",
                   help="the picture to write (default <run>/samples_guidance<s>_..._seed<k>_n<n>.png: its name "
                        "carries every option given, so another seed or option never overwrites it)")
    p.add_argument("--npz", default="", help="also write every sample to this .npz: arr_0 (N, H, W, 3) uint8 and "
                                             "labels (N,), the ADM evaluator's format (FID with the standard tools)")
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("sweep", help="run a recorded experiment grid (resumable)")
    p.add_argument("experiment", choices=["codebook", "ablation"],
                   help="codebook: size x dim x l2 (LlamaGen / ViT-VQGAN); ablation: the rows of an ablation sheet")
    p.add_argument("--dataset", default="emoji", help="codebook: emoji (CPU) or cifar10 (GPU)")
    p.add_argument("--sheet", default="", help="ablation: the sheet's number (exercises/ablations/NN_*.md), e.g. 03")
    p.add_argument("--n", type=int, default=1000, help="ablation: samples per generator row for fd_emoji")
    p.add_argument("--steps", type=int, default=None, help="training steps per cell (default: the grid's)")
    p.add_argument("--out", default="benchmarks/results", help="folder of the results (default benchmarks/results)")
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("course", help="the instructor's commands: a student release, grading submissions")
    course = p.add_subparsers(dest="action", required=True)
    q = course.add_parser("release", help="write the student copy: no solutions, no answer keys, graders included")
    q.add_argument("--out", required=True, help="an empty (or new) folder for the student copy")
    q.add_argument("--force", action="store_true", help="replace what --out holds")
    q.add_argument("--clear-outputs", default="", help="notebooks whose outputs the copy leaves out, e.g. 03,05 "
                   "or all (for labs that ask students to predict them; default: none)")
    q.set_defaults(func=cmd_course_release)
    q = course.add_parser("grade", help="grade a folder of submissions (one folder per student) -> grades.csv/md")
    q.add_argument("submissions", help="a folder holding one folder per student, each with its exercises/")
    q.add_argument("--exercises", default="", help="comma-separated, e.g. ex01,ex03 (default: every grader)")
    q.add_argument("--timeout", type=float, default=120.0,
                   help="seconds one part of a grader may run per student (default 120)")
    q.add_argument("--import-timeout", type=float, default=60.0,
                   help="seconds to import a student's file, torch included (default 60)")
    q.add_argument("--memory", type=float, default=8.0,
                   help="GB of address space for a student's process (default 8; torch alone maps about 3.3)")
    q.add_argument("--jobs", type=int, default=1, help="students graded at once (default 1; up to your cores)")
    q.set_defaults(func=cmd_course_grade)

    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.command_line = " ".join(["python -m minivar", *argv])  # what a record says was run
    try:
        args.func(args)
    except (ValueError, OSError, RuntimeError) as e:  # course.ReleaseError, files.FolderInUse and disk errors too
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM: training has saved its last finished step
        print(f"\n{e}" if str(e) else "\ninterrupted", file=sys.stderr)
        return 128 + int(getattr(e, "signum", 2))  # the shell's convention: 130 for Ctrl-C, 143 for SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
