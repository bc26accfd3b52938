"""The recorded experiments, as resumable sweeps: the codebook grid of LlamaGen / ViT-VQGAN and the ablation sheets.

    python -m minivar sweep codebook --dataset emoji            # CPU: 24 cells, about 40 minutes on 2 cores
    python -m minivar sweep codebook --dataset cifar10          # one GPU
    python -m minivar sweep ablation --sheet 03                 # the rows of exercises/ablations/03_*.md (CPU)

Every cell trains the dataset's VQ-VAE recipe for the same number of steps with one codebook size, code
dimension and l2 setting, then measures on the test split: PSNR, SSIM, codebook usage, perplexity and
fd_emoji (emoji only). Each finished cell appends a row (with the command, machine and date) to
<out_dir>/codebook_sweep_<dataset>.csv (default benchmarks/results/, relative to where it runs: the repository's
recorded results when run from its root) and saves its codebook, code counts and a reconstruction strip next to
it; cells already in the CSV are skipped, so an interrupted sweep continues where it stopped.

An ablation sheet's rows (ABLATIONS below) work the same way: each trains a variant of a recipe (or measures a
shipped model with other sampling options), is measured, and appends a row to <out_dir>/ablations_<sheet>.csv with
its training curve in <out_dir>/ablations_<sheet>/; benchmarks/plot_ablation.py draws them.
"""

import csv
import datetime
import numbers
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from . import recipes
from .checkpoint import PRETRAINED
from .data import load_dataset
from .files import PathLock, append_csv_row, atomic_write, write_text
from .metrics import evaluate_tokenizer
from .viz import save_grid

GRIDS = {  # dataset -> codebook sizes, code dims, l2 settings, steps per cell
    "emoji": dict(sizes=(64, 256, 1024, 4096), dims=(4, 16, 64), l2=(False, True), steps=150),
    "cifar10": dict(sizes=(256, 1024, 4096, 16384), dims=(4, 8, 32, 256), l2=(False, True), steps=20_000),
}
FIELDS = ["dataset", "codebook_size", "code_dim", "l2_norm", "steps", "psnr", "ssim", "usage", "perplexity",
          "fd_emoji", "train_seconds", "date", "machine", "command"]


def cell_name(size, dim, l2):
    return f"k{size}-d{dim}-{'l2' if l2 else 'plain'}"


def append_row(path: Path, fields: list, row: dict):
    """One more row of a results CSV (its header first when the file is new); missing fields stay empty. The
    table is rewritten atomically (files.append_csv_row): a kill mid-write never breaks the rows before."""
    append_csv_row(path, fields, row)


def read_rows(path: Path) -> list:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def run_codebook_sweep(dataset="emoji", steps=None, sizes=None, dims=None, l2=None, out_dir="benchmarks/results",
                       runs_dir="runs/sweep-codebook", progress=True) -> list:
    if dataset not in GRIDS:
        raise ValueError(f"no codebook grid for {dataset!r}; choose one of {', '.join(GRIDS)}")
    grid = GRIDS[dataset]
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1):
        raise ValueError(f"--steps is each cell's training steps, a whole number >= 1 (default: the grid's, "
                         f"{grid['steps']}), got {steps!r}")
    steps = steps or grid["steps"]
    csv_path = Path(out_dir) / f"codebook_sweep_{dataset}.csv"
    with PathLock(csv_path, "this grid's table", "wait for that sweep to finish, or stop it"):
        art_dir = Path(out_dir) / f"codebook_sweep_{dataset}"
        art_dir.mkdir(parents=True, exist_ok=True)
        done = {(r["codebook_size"], r["code_dim"], r["l2_norm"], r["steps"]) for r in read_rows(csv_path)}
        machine = f"{platform.machine()}, {torch.get_num_threads()} threads"
        if torch.cuda.is_available():
            machine = torch.cuda.get_device_name()
        cells = [(k, d, n) for n in (l2 or grid["l2"]) for d in (dims or grid["dims"])
                 for k in (sizes or grid["sizes"])]
        test = load_dataset(dataset, "test", image_size=32)
        loader = torch.utils.data.DataLoader(test, batch_size=128)
        picks = torch.linspace(0, len(test) - 1, 12).long().tolist()
        fixed = torch.stack([test[i][0] for i in picks])
        from .train import train
        for i, (size, dim, l2_norm) in enumerate(cells):
            key = (str(size), str(dim), str(l2_norm), str(steps))
            name = cell_name(size, dim, l2_norm)
            if key in done:
                continue
            print(f"[{i + 1}/{len(cells)}] {dataset} {name}, {steps} steps", flush=True)
            cfg = recipes.get(f"{dataset}-vqvae", [f"codebook_size={size}", f"code_dim={dim}", f"l2_norm={l2_norm}",
                                                  f"max_steps={steps}", f"name={name}", f"out_dir={runs_dir}/{dataset}",
                                                  f"eval_every={steps}", f"ckpt_every={max(50, steps // 4)}",
                                                  "minutes=0"])
            t0 = time.time()
            result = train(cfg, resume=True, progress=progress)
            model = result["model"]
            dev = next(model.parameters()).device
            ev = evaluate_tokenizer(model, loader, dev, fd=dataset == "emoji")
            with torch.no_grad():
                recon = model.decode(model.encode(fixed.to(dev))).float().clamp(-1, 1).cpu()
                tokens = torch.cat([model.encode(x.to(dev)).flatten().cpu() for x, _ in loader])
            save_grid(art_dir / f"{name}.png", torch.cat([fixed, recon]), nrow=len(fixed), scale=1)
            with atomic_write(art_dir / f"{name}.npz", "wb") as fh:
                np.savez_compressed(fh, codebook=model.quantizer.codes().detach().cpu().half().numpy(),
                                    counts=torch.bincount(tokens, minlength=size).numpy())
            row = {"dataset": dataset, "codebook_size": size, "code_dim": dim, "l2_norm": l2_norm, "steps": steps,
                   **{k: round(v, 4) for k, v in ev.items()}, "train_seconds": round(result["elapsed"], 1),
                   "date": datetime.date.today().isoformat(), "machine": machine,
                   "command": "python -m minivar " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py")
                   else "run_codebook_sweep()"}
            append_row(csv_path, FIELDS, row)
            print(f"    psnr {ev['psnr']:.2f} dB, usage {ev['usage']:.0%}, perplexity {ev['perplexity']:.0f}"
                  + (f", fd_emoji {ev['fd_emoji']:.1f}" if "fd_emoji" in ev else "") + f" ({time.time() - t0:.0f} s)",
                  flush=True)
    return read_rows(csv_path)


# ------------------------------------------------------------------ the ablation sheets' recorded runs

# sheet -> what it asks and its rows: (row name, recipe, --set overrides, guidance to sample at or None[, sampling
# options]). A row trains for the sheet's number of steps unless its overrides set max_steps (short CPU budgets: the
# rows compare choices at equal cost, not finished models), then is measured by pretrained.measure on the emoji test
# split (tokenizers: PSNR, usage, reconstruction fd; generators: n samples, 1,000 by default, fd_emoji with its 95%
# interval, precision, recall). A row whose recipe is "pretrained:NAME" trains nothing: it measures the shipped
# model with its sampling options; one whose recipe is "row:ROW" measures the run an earlier row ROW of the same
# sheet trained (other sampling options on the same weights).
SAME_RUN = "row:"  # a row measuring the run of an earlier row of its sheet
_DEMO = ["depth=3", "dim=128", "lr=2e-3", "warmup_steps=20"]  # the demo's VAR before sheet 05c (now recipes.DEMO_VAR)

ABLATIONS = {
    "01": dict(title="VQ-VAE: commitment weight beta and codebook initialisation", steps=300, rows=[
        ("recipe (beta 0.25, uniform init)", "emoji-vqvae", [], None),
        ("beta 0.1", "emoji-vqvae", ["beta=0.1"], None),
        ("beta 1.0", "emoji-vqvae", ["beta=1.0"], None),
        ("data init", "emoji-vqvae", ["codebook_init=data"], None),
        ("data init, beta 1.0", "emoji-vqvae", ["codebook_init=data", "beta=1.0"], None),
    ]),
    "03": dict(title="raster GPT: RoPE, class dropout, depth against width", steps=400, rows=[
        ("recipe (2-D RoPE, 6 x 192)", "emoji-raster", [], 2.0),
        ("1-D RoPE", "emoji-raster", ["rope=1d"], 2.0),
        ("class dropout 0 (no guidance possible)", "emoji-raster", ["class_dropout=0"], 1.0),
        ("deep and narrow (12 x 128)", "emoji-raster", ["n_layer=12", "dim=128", "n_head=4"], 2.0),
        ("shallow and wide (3 x 256)", "emoji-raster", ["n_layer=3", "dim=256", "n_head=8"], 2.0),
    ]),
    "04": dict(title="multi-scale tokenizer: Phi and the scale schedule", steps=600, rows=[
        ("recipe (Phi 0.5, scales 1,2,3,4,6,8)", "emoji-msvq", [], None),
        ("no Phi (ratio 0)", "emoji-msvq", ["phi_ratio=0"], None),
        ("scales 1,2,4,8", "emoji-msvq", ["scales=1,2,4,8"], None),
    ]),
    "05": dict(title="VAR: the guidance ramp against constant guidance; depth against width", steps=0, rows=[
        *[(f"ramp to {g} (the release's schedule)", "pretrained:emoji-var", [], g) for g in (1.5, 2.5, 4.0)],
        *[(f"constant {g}", "pretrained:emoji-var", [], g, {"guidance_schedule": "constant"}) for g in (1.5, 2.5, 4.0)],
        # depth against width at equal parameters (2.87 M and 2.81 M), over the shipped tokenizer, 400 steps each
        ("4 blocks of 192 (the recipe), 400 steps", "emoji-var", ["max_steps=400"], 2.5),
        ("8 blocks of 136, 400 steps", "emoji-var", ["max_steps=400", "depth=8", "dim=136"], 2.5),
    ]),
    # why next-scale trails raster order on emoji (issue 23). First the sampling as VAR's release does it: top-k as a
    # fraction of the vocabulary (its FID runs keep 900 of 4096 codes, 22%, and top-p 0.96), for VAR (512 codes) and,
    # so the comparison stays fair, for the raster GPT (1024 codes) at each one's shipped guidance.
    "05b": dict(title="VAR against raster order: sampling, training signal, exposure bias", steps=400, rows=[
        *[(f"VAR, top-k {name}, top-p {p}, ramp to {g}", "pretrained:emoji-var", [], g, {"top_k": k, "top_p": p})
          for name, k, p, g in (("all", 0, 1.0, 2.5), ("22% (113)", 113, 0.96, 2.5), ("22% (113)", 113, 0.96, 1.5),
                                ("22% (113)", 113, 0.96, 4.0), ("5% (26)", 26, 1.0, 2.5), ("all", 0, 0.8, 2.5))],
        ("VAR, top-k 22% (113), top-p 0.96, constant 2.5", "pretrained:emoji-var", [], 2.5,
         {"top_k": 113, "top_p": 0.96, "guidance_schedule": "constant"}),
        *[(f"raster, top-k {name}, top-p {p}, guidance {g}", "pretrained:emoji-raster", [], g, {"top_k": k, "top_p": p})
          for name, k, p, g in (("all", 0, 1.0, 2.0), ("22% (225)", 225, 0.96, 2.0), ("5% (51)", 51, 1.0, 2.0),
                                ("all", 0, 0.8, 2.0))],

        # the training signal at the sheet's 400 steps (sheet 05 recorded the recipe itself at 400 steps: fd 25.7,
        # test loss 4.71; sheet 03 the raster GPT: fd 9.9): a short warmup and a higher rate (what the demo uses),
        # stochastic depth against overfitting, and the demo's own smaller network
        ("VAR, lr 3e-3, warmup 20, 400 steps", "emoji-var", ["lr=3e-3", "warmup_steps=20"], 2.5),
        ("VAR, drop-path 0.1, 400 steps", "emoji-var", ["drop_path=0.1"], 2.5),
        ("VAR, the demo's 3 x 128, lr 2e-3, warmup 20, 400 steps", "emoji-var", _DEMO, 2.5),

        # scale: the demo's 3 x 128 (1.0 M parameters against the recipes' ~3 M) for both orders, at 400 and 2000 steps
        # (the recipes at 400 steps are sheet 03's and sheet 05's recipe rows; at 2000 steps the shipped models)
        ("raster, 3 x 128, lr 2e-3, warmup 20, 400 steps", "emoji-raster",
         ["n_layer=3", "dim=128", "n_head=4", "lr=2e-3", "warmup_steps=20"], 2.0),
        ("raster, 3 x 128, lr 2e-3, warmup 20, 2000 steps", "emoji-raster",
         ["n_layer=3", "dim=128", "n_head=4", "lr=2e-3", "warmup_steps=20", "max_steps=2000"], 2.0),
        ("VAR, 3 x 128, lr 2e-3, warmup 20, 2000 steps", "emoji-var",
         [*_DEMO, "max_steps=2000"], 2.5),

        # the loss itself: label smoothing (the release's `ls`, off in its runs) and each scale weighted alike
        # (the release weighs tokens alike, so the 8x8 scale carries half of the loss)
        ("VAR, label smoothing 0.1, 400 steps", "emoji-var", ["label_smoothing=0.1"], 2.5),
        ("VAR, every scale weighted alike, 400 steps", "emoji-var", ["loss_weighting=scale"], 2.5),

        # guidance past 4 (VAR and FlowAR were best at the largest guidance notebook 08 swept), alone and with top-p
        # 0.8, the nucleus that helped VAR most above; raster at its own best knobs with a stronger guidance too
        *[(f"VAR, top-k all, top-p {p}, ramp to {g}", "pretrained:emoji-var", [], g, {"top_p": p})
          for p, g in ((1.0, 6.0), (1.0, 8.0), (0.8, 4.0), (0.8, 6.0))],
        ("raster, top-k all, top-p 1.0, guidance 3.0", "pretrained:emoji-raster", [], 3.0, {"top_p": 1.0}),
        *[(f"FlowAR, ramp to {g}", "pretrained:emoji-flowar", [], g) for g in (6.0, 8.0)],

        # more updates for the same images: the lever that moved the demo's VAR most (sheet 05c), at the recipe's size
        ("VAR, batch 32, 800 steps (the same images)", "emoji-var", ["batch_size=32", "max_steps=800"], 2.5),
        # ... and at the shipped model's length: the images emoji-var saw (2000 steps of 64), in twice the updates
        ("VAR, batch 32, 4000 steps (the shipped model's images)", "emoji-var",
         ["batch_size=32", "max_steps=4000", "eval_every=500", "ckpt_every=500"], 2.5),
        ("VAR, batch 32, 4000 steps: top-p 0.8, ramp to 4.0",
         SAME_RUN + "VAR, batch 32, 4000 steps (the shipped model's images)", [], 4.0, {"top_p": 0.8}),
    ]),
    # The demo (python -m minivar demo) trains VAR for about 3.4 of its 4 minutes: ~400 steps of the 3 x 128 network
    # it had before this sheet, on 2 quiet cores. Which network and settings buy the most in that budget? Rows at the
    # demo's steps, or at the same images seen or minutes, each measured as the demo measures its own (1,000
    # samples, guidance 2.5). The sheet's best row is the demo's VAR now (recipes.DEMO_VAR).
    "05c": dict(title="the demo's VAR: what its few CPU minutes buy", steps=400, rows=[
        ("3 x 128, lr 2e-3, warmup 20 (the demo before this sheet)", "emoji-var", _DEMO, 2.5),
        ("3 x 128, every scale weighted alike", "emoji-var", [*_DEMO, "loss_weighting=scale"], 2.5),
        ("3 x 128, AdaLN gates start at 1e-3 (the release's d16 script)", "emoji-var", [*_DEMO, "init_gate=1e-3"],
         2.5),
        ("3 x 128, lr 4e-3", "emoji-var", [*_DEMO, "lr=4e-3"], 2.5),
        ("3 x 128, batch 32, 800 steps (the same images)", "emoji-var", [*_DEMO, "batch_size=32", "max_steps=800"],
         2.5),
        # smaller networks for as many steps as fit in the time 3 x 128 takes for 400 (a step of 2 x 96 costs ~0.45 of
        # one of 3 x 128, 2 x 64 ~0.3: measured on this CPU at batch 64)
        ("2 x 96, lr 3e-3, 900 steps (the same minutes)", "emoji-var",
         ["depth=2", "dim=96", "lr=3e-3", "warmup_steps=20", "max_steps=900"], 2.5),
        ("2 x 64, lr 4e-3, 1300 steps (the same minutes)", "emoji-var",
         ["depth=2", "dim=64", "lr=4e-3", "warmup_steps=20", "max_steps=1300"], 2.5),
        # the two levers that helped, together: the small network at half the batch, for twice its steps
        ("2 x 96, lr 3e-3, batch 32, 1800 steps (the same minutes)", "emoji-var",
         ["depth=2", "dim=96", "lr=3e-3", "warmup_steps=20", "batch_size=32", "max_steps=1800"], 2.5),
        # the same weights sampled otherwise: guidance up to 4 and top-p 0.8 (sheet 05b's best knobs for emoji-var)
        *[(f"2 x 96, batch 32, 1800 steps: {what}",
           SAME_RUN + "2 x 96, lr 3e-3, batch 32, 1800 steps (the same minutes)", [], g, opts)
          for what, g, opts in (("ramp to 4.0", 4.0, {}), ("top-p 0.8", 2.5, {"top_p": 0.8}),
                                ("ramp to 4.0, top-p 0.8", 4.0, {"top_p": 0.8}))],
    ]),
    # text-to-image (notebook 09): what the caption's path into the GPT needs, at sheet 03's 400 steps; sampled for
    # the test split's captions (their new words read as <unk>), fd_emoji against the test emoji as everywhere
    "09": dict(title="text-to-image: the text encoder's depth, learned or frozen words, caption dropout", steps=400,
               rows=[
        ("recipe (2 text blocks, learned words, caption dropout 0.1)", "emoji-t2i", [], 2.0),
        ("no text blocks (word embeddings + positions)", "emoji-t2i", ["text_depth=0"], 2.0),
        ("4 text blocks", "emoji-t2i", ["text_depth=4"], 2.0),
        ("frozen random word embeddings", "emoji-t2i", ["frozen_words=true"], 2.0),
        ("caption dropout 0 (no guidance possible)", "emoji-t2i", ["caption_dropout=0"], 1.0),
        ("recipe, guidance 1 (no guidance)", SAME_RUN + "recipe (2 text blocks, learned words, caption dropout 0.1)",
         [], 1.0),
    ]),
}
ABLATION_FIELDS = ["row", "recipe", "sets", "options", "steps", "params_m", "train_loss", "test_loss", "psnr", "ssim",
                   "usage", "perplexity", "fd_emoji_recon", "guidance", "fd_emoji", "fd_low", "fd_high", "precision",
                   "recall", "train_seconds", "date", "machine", "command"]


def row_slug(row: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in row.lower()).strip("-").replace("--", "-")


def run_ablation(sheet: str, out_dir="benchmarks/results", runs_dir="runs/ablations", n=1000, progress=True) -> list:
    """Train and measure every row of ablation sheet `sheet` (exercises/ablations/<sheet>_*.md) not yet in
    <out_dir>/ablations_<sheet>.csv; each row's training curve is copied to <out_dir>/ablations_<sheet>/<row>.jsonl
    for the sheet's plots. Interrupted, it continues: finished rows are skipped, a started run resumes."""
    from . import models, pretrained
    from .train import train
    if sheet not in ABLATIONS:
        raise ValueError(f"no ablation sheet {sheet!r}; choose one of {', '.join(ABLATIONS)}")
    spec = ABLATIONS[sheet]
    csv_path = Path(out_dir) / f"ablations_{sheet}.csv"
    with PathLock(csv_path, f"sheet {sheet}'s table", "wait for that sweep to finish, or stop it"):
        curves = Path(out_dir) / f"ablations_{sheet}"
        curves.mkdir(parents=True, exist_ok=True)
        done = {r["row"] for r in read_rows(csv_path)}
        for i, (row, recipe, sets, guidance, *options) in enumerate(spec["rows"]):
            options = options[0] if options else {}
            if row in done:
                continue
            own = {k.strip(): v.strip() for k, v in (item.split("=", 1) for item in sets)}
            steps = int(own.get("max_steps", spec["steps"]))  # a row may set its own
            sampling_only = recipe.startswith((PRETRAINED, SAME_RUN))
            what = "sampling only" if sampling_only else f"{steps} steps"
            print(f"[{i + 1}/{len(spec['rows'])}] sheet {sheet}: {row} ({recipe} {' '.join(sets)}, {what})", flush=True)
            if recipe.startswith(PRETRAINED):
                model, result = pretrained.load(recipe), pretrained.run_result(recipe)
            elif recipe.startswith(SAME_RUN):
                source = recipe[len(SAME_RUN):]
                trained_above = {r[0]: r[1] for r in spec["rows"][:i]}
                if trained_above.get(source, PRETRAINED).startswith((PRETRAINED, SAME_RUN)):
                    raise ValueError(f"row {row!r} of sheet {sheet} measures {recipe!r}, but no earlier row of the "
                                     f"sheet named {source!r} trains a run; name one of the rows above it")
                run_dir = Path(runs_dir) / sheet / row_slug(source)
                model, result = models.load(run_dir), pretrained.run_result(str(run_dir))
            else:  # the sheet's defaults, then the row's own settings, then where the run lives (not overridable)
                cfg = recipes.get(recipe, [f"max_steps={steps}", "minutes=0", f"eval_every={max(50, steps // 5)}",
                                           f"ckpt_every={max(50, steps // 4)}", *sets, f"name={row_slug(row)}",
                                           f"out_dir={runs_dir}/{sheet}"])
                result = train(cfg, resume=True, progress=progress)
                if result["step"] != steps:
                    raise ValueError(f"{cfg.run_dir} holds a finished run of {result['step']} steps, not this row's "
                                     f"{steps}: delete that folder and run the sheet again")
                model = models.load(cfg.run_dir)
                write_text(curves / f"{row_slug(row)}.jsonl", (cfg.run_dir / "metrics.jsonl").read_text())
            stats = pretrained.measure(model, n=n, guidance=guidance, progress=progress, **options)
            low, high = stats.pop("fd_emoji_ci95", ("", ""))
            out = {"row": row, "recipe": recipe, "sets": " ".join(sets), "options": " ".join(
                   f"{k}={v}" for k, v in options.items()), "steps": result["step"],
                   "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 3),
                   **{k: round(result[v], 4) for k, v in (("train_loss", "loss"), ("test_loss", "test_loss"))
                      if v in result},
                   **stats, "fd_low": low, "fd_high": high, "train_seconds": round(result["elapsed"], 1),
                   "date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, "
                   f"{torch.get_num_threads()} threads", "command": f"python -m minivar sweep ablation --sheet {sheet}"}
            append_row(csv_path, ABLATION_FIELDS, out)
            shown = ("test_loss", "psnr", "usage", "fd_emoji", "fd_emoji_recon")
            print("    " + ", ".join(f"{k} {out[k]}" for k in shown if k in out), flush=True)
    return read_rows(csv_path)
