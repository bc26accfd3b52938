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
import sys
import time
import warnings
from pathlib import Path

from . import recipes


def cmd_train(args):
    cfg = recipes.get(args.recipe, args.set)
    from .train import train
    result = train(cfg, resume=args.resume)
    result.pop("model")
    print(json.dumps(result, indent=2))


def cmd_demo(args):
    from .demo import run_demo
    run_demo(minutes=args.minutes, out=args.out, guidance=args.guidance, top_k=args.top_k, top_p=args.top_p,
             seed=args.seed, sets=args.set, set_tokenizer=args.set_tokenizer, from_scratch=args.from_scratch,
             fd=args.fd, command_line=args.command_line)


def physical_memory() -> int:
    """Bytes of RAM on this machine (0 where the OS does not say)."""
    import os
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 0


def cmd_sample(args):
    """Sample a trained generator; write a grid (one column per class) and optionally fd_emoji."""
    import torch

    from . import device_named
    from .runs import load_run
    from .viz import check_picture_path, save_grid
    if args.n < 1 or args.batch_size < 1:
        raise ValueError(f"--n and --batch-size must be at least 1, got {args.n} and {args.batch_size}")
    from .demo import FD_MIN_SAMPLES
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
    given = given_options(args, model)
    if "compile" in model.options_class.field_types() and "compile" not in given:  # the faster path, where it pays
        from .sampling import COMPILE_PAYS_AFTER, compile_pays
        given["compile"] = compile_pays(model.kind, args.n, args.batch_size, dev)
        if given["compile"]:
            print(f"compiling the sampling step: on a CPU it pays for itself after a few thousand samples "
                  f"({model.kind}: {COMPILE_PAYS_AFTER[model.kind]}, by batch size; benchmarks/sampling_speed.py), "
                  f"and {args.n:,} are more; --no-compile samples without (the same images)")
    options = model.sampling_options(**given)  # checked: before any sampling
    side = tokenizer.code_format()["image_size"]
    need, have = args.n * 3 * side * side * 4, physical_memory()  # the samples are kept as float images
    if have and need > have // 2:
        raise ValueError(f"--n {args.n} would hold {need / 2**30:.1f} GiB of images in memory (this machine has "
                         f"{have / 2**30:.0f} GiB): draw fewer, e.g. --n {max(1, have // 4 // (need // args.n))}, or "
                         f"several smaller runs with other --seed values")
    if args.fd and cfg.dataset != "emoji":
        raise ValueError("--fd computes fd_emoji, which needs an emoji run; use torch-fidelity for FID")
    labels, columns, layout = sample_conditions(args, model)
    if args.fd:
        from .data import load_dataset
        test = load_dataset("emoji", "test", image_size=tokenizer.code_format()["image_size"])
        real = torch.stack([test[i][0] for i in range(len(test))])
    from .checkpoint import PRETRAINED  # a shipped model's samples go under runs/pretrained/, not into the package
    folder = Path("runs") / "pretrained" / args.run[len(PRETRAINED):] if args.run.startswith(PRETRAINED) else \
        Path(args.run)
    # the default name carries everything that changes the picture, so another seed or option never overwrites it
    changed = options.changed(model.sampling_options())
    name = "_".join([f"samples_guidance{options.guidance:g}",
                     *(name_part(k, v) for k, v in changed.items() if k not in ("guidance", "compile")),
                     f"seed{args.seed}", f"n{args.n}", *(["fd"] if args.fd else []),
                     *([f"classes{'-'.join(map(str, columns))}"] if args.classes else []),
                     *([f"prompts{len(columns)}"] if args.prompt else [])])
    out = check_picture_path(args.out) if args.out else folder / f"{name}.png"
    check_writable(out)  # before the sampling, not after it
    if args.npz:
        npz = Path(args.npz)
        if npz.is_dir():
            raise ValueError(f"--npz {npz} is a folder; name the file to write, e.g. {npz / 'samples.npz'}")
        if npz.suffix != ".npz":
            raise ValueError(f"--npz names the file to write, ending in .npz (numpy would add it), got {args.npz!r}")
        check_writable(npz, "--npz")
    labels = labels.to(dev) if torch.is_tensor(labels) else labels
    g = torch.Generator(dev).manual_seed(args.seed)
    t0 = time.time()
    images = model.sample_images(labels, args.batch_size, options, generator=g, progress=True)
    seconds = time.time() - t0
    shown = min(len(images), 256)
    save_grid(out, images[:shown], nrow=min(len(columns), 16))
    print(f"wrote {out}: {shown} of {len(images)} samples ({layout}), guidance {options.guidance:g} "
          f"({options.guidance_schedule}), {seconds:.1f} s ({len(images) / seconds:.1f} images/s)")
    if args.npz:  # the layout of the ADM evaluator (guided-diffusion/evaluations) that published FIDs come from
        import numpy as np

        from .data import to_uint8_images
        from .files import atomic_write
        with atomic_write(args.npz, "wb") as fh:  # a kill or a full disk mid-write keeps an earlier file whole
            np.savez(fh, arr_0=to_uint8_images(images), labels=np.asarray(labels if not torch.is_tensor(labels)
                                                                            else labels.cpu()))
        print(f"wrote {args.npz}: arr_0 {tuple(images.shape[:1]) + tuple(images.shape[2:]) + (3,)} uint8 (NHWC), "
              f"labels ({len(labels)},)")
    if args.fd:
        from .metrics import fd_emoji_ci
        fd, low, high = fd_emoji_ci(images, real)
        print(f"fd_emoji({len(images)} samples vs {len(real)} test emoji) = {fd:.2f}  (95% bootstrap interval "
              f"{low:.2f} - {high:.2f})")


def sample_conditions(args, model):
    """What `sample` draws for -> (conditions, one per sample; the grid's columns; the layout in words). A class
    model: --classes in turn (or, with --fd, the test split's labels: like compared with like); a text model:
    the --prompt captions in turn (or, with --fd, the test split's captions)."""
    import torch

    from .pretrained import test_conditions
    captions = getattr(model, "conditions", "classes") == "captions"
    if captions and args.classes:
        raise ValueError(f"a {model.kind} model draws for captions, not classes: --prompt \"red apple\" (repeatable)")
    if not captions and args.prompt:
        raise ValueError(f"a {model.kind} model draws for class labels, not captions: --classes 0,3 (the t2i "
                         f"models take --prompt)")
    if captions:
        if args.fd and not args.prompt:  # the test split's own captions, in order
            return test_conditions(model, args.n), list(range(16)), "captions of the test split"
        if not args.prompt:
            raise ValueError(f"a {model.kind} model draws for captions: give one or more --prompt \"red apple\"")
        prompts = list(args.prompt)
        return (prompts * (args.n // len(prompts) + 1))[:args.n], prompts, f"one column per prompt: {prompts[:16]}"
    n_cls = model.cfg.num_classes
    classes = parse_classes(args.classes, n_cls) if args.classes else list(range(n_cls))
    if args.fd and not args.classes:  # compare like with like: the test split's class frequencies, not uniform
        return test_conditions(model, args.n), list(range(16)), "labels follow the test split"
    labels = torch.tensor(classes * (args.n // len(classes) + 1))[:args.n]
    return labels, classes, f"one column per class: {classes[:16]}"


def option_flags() -> dict:
    """{field: (type, help, choices, {kind: default})} over the SamplingOptions of every registered generator: the
    sampling flags of `sample`, built from the options dataclasses, so a new generator's knobs need no line here."""
    from .models import MODELS, Generator
    flags = {}
    for kind, cls in MODELS.items():
        if not issubclass(cls, Generator):
            continue
        for name, (typ, default, _) in cls.options_class.field_types().items():
            if name not in flags:
                first = cls.options_class.first_declared(name)
                flags[name] = (typ, first.metadata.get("help", ""), first.metadata.get("choices", ()), {})
            flags[name][3][kind] = "the model's" if default is None else default
    return flags


def add_option_flags(parser):
    for name, (typ, text, choices, defaults) in option_flags().items():
        by_default = {}  # default -> the kinds that have it: "[var, flowar: linear; raster: constant]"
        for kind, default in defaults.items():
            by_default.setdefault(str(default), []).append(kind)
        takes = "; ".join(f"{', '.join(kinds)}: {d}" for d, kinds in by_default.items())
        flag, kw = f"--{name.replace('_', '-')}", dict(dest=f"option_{name}", default=None, help=f"{text} [{takes}]")
        if typ is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:  # a value out of range is refused by the options' check(), in one line naming the range
            metavar = "{" + ",".join(choices) + "}" if choices else typ.__name__.upper()
            parser.add_argument(flag, type=typ, metavar=metavar, **kw)


def given_options(args, model) -> dict:
    """The sampling flags given on the command line, as overrides of the loaded model's options; a flag its
    options do not have is an error listing the ones they do."""
    given = {name: getattr(args, f"option_{name}") for name in option_flags()
             if getattr(args, f"option_{name}", None) is not None}
    takes = model.options_class.field_types()
    alien = [n for n in given if n not in takes]
    if alien:
        raise ValueError(f"a {model.kind} model does not take {', '.join('--' + n.replace('_', '-') for n in alien)}; "
                         f"its sampling options: {', '.join('--' + n.replace('_', '-') for n in takes)}")
    return given


def name_part(name: str, value) -> str:
    """One option of a sample file's name: guidance-power2.75, heun, no-use-cache, guidance-schedule-constant."""
    flag = name.replace("_", "-")
    if isinstance(value, bool):
        return flag if value else f"no-{flag}"
    return f"{flag}{value:g}" if isinstance(value, (int, float)) else f"{flag}-{value}"


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

    import textwrap
    listed = "\n".join(textwrap.fill(f"{name}: {r.about}", 100, initial_indent="  ", subsequent_indent="      ")
                       for name, r in recipes.RECIPES.items())
    p = sub.add_parser("train", help="train a named recipe", formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=f"recipes (minivar/recipes.py):\n{listed}")
    p.add_argument("recipe", help=f"one of: {', '.join(recipes.RECIPES)}")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set lr=1e-3 --set codebook_size=1024")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("sample", help="sample a trained generator run and write a grid")
    p.add_argument("run", help="the run folder, e.g. runs/emoji-raster, or a shipped model, e.g. pretrained:emoji-var")
    p.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    add_option_flags(p)  # one flag per field of the generators' SamplingOptions (sampling.py)
    p.add_argument("--classes", default="", help="comma-separated class indices (default: all, in turn)")
    p.add_argument("--prompt", action="append", default=[],
                   help="a caption to draw for (text-to-image models; repeat for more, one column each)")
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
        with warnings.catch_warnings():  # a warning on the command line is one plain line, not a source line
            warnings.showwarning = lambda message, *_, **__: print(f"note: {message}", file=sys.stderr)
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
